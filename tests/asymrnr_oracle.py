"""An independent, eager AsymRnR: the test oracle of the backend (tests/backend/test_backend_oracle.py).

Written from docs/method.md, not from the package: nothing here imports ``asymrnr_compile.ops``,
``.passes``, ``.plan``, ``.runtime`` or ``.analysis``. It runs a model eagerly with
``torch.nn.functional.scaled_dot_product_attention`` replaced by :meth:`Oracle.attention`, which
applies the method to every attention call the caller declared a site (:class:`OracleSite`):

1. **split** (method step 1): the video grid is tiled with ``dst_stride`` chunks; one token per
   full chunk, drawn from a private CPU generator, is a destination (dst) token, every other
   token a source (src) token. The draw must equal the package's bit for bit so that the two can
   be compared exactly, so it is re-derived here: one ``torch.randint(prod(stride), chunks)``
   from a generator seeded ``seed + 7919 * site + {q: 0, kv: 1}[feature] + 104729 * window``,
   the flat offset of each chunk read as ``(f, h, w)`` inside the chunk. As in the published
   code, every matching window (``step // cache_steps``) draws a new split per site and feature;
   ``redraw_split=False`` keeps the window-0 split for the whole run.
2. **match** (step 2): per batch element and head, the full ``(N_src, N_dst)`` matrix of squared
   Euclidean distances (in float64, by differences, not by the norm expansion), each src token's
   nearest dst (first one on ties), then the src tokens sorted least similar first (stable).
3. **reduce** (step 3): kept = every dst token plus the ``n_keep_src`` least similar src tokens,
   ``n_keep_src = max(0, int(N * (1 - ratio)) - N_dst)``. q is matched on the queries as SDPA
   receives them (after QK-norm and RoPE); kv on the values, and the keys are dropped with them.
4. **restore** (step 4): every dropped query row of the attention output is a copy of the row of
   the dst token it was matched to.
5. **cache** (step 5): the matching of ``(call in step, site, feature)`` is computed on the
   first step of each window of ``cache_steps`` steps and reused for the rest of the window.
   Steps come from the ``timestep`` argument (a new value is a new step, the same value again
   another call of the step), counted by this module. Warm-up steps are not modelled.

The reduction is formulated differently from the package's gathers, on purpose: the attention
is run over **all** tokens, dropped keys are masked out (a boolean mask: the same softmax as
removing them), and dropped query rows are overwritten afterwards with their dst's row (a query
row's output does not depend on the other query rows). So the oracle shares no reduce, restore,
splice or mask-gather code with the package, only the mathematics.

``mutation`` deliberately breaks the oracle (the tests check that each breakage is visible).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

FEATURE_SEED_OFFSET = {"q": 0, "kv": 1}  # docs/method.md, step 1: the seed formula
SITE_SEED_STRIDE = 7919
WINDOW_SEED_STRIDE = 104729

MUTATIONS = (
    "swap_sites",  # reused matchings of the sites ``swap_pair`` are read from each other's cache entry
    "no_cache",  # matchings recomputed at every step
    "keep_most_similar",  # the most similar src tokens are kept, the least similar dropped
    "restore_self",  # dropped query rows keep their own (unreduced) output instead of their dst's
    "one_split",  # the window-0 split is kept for the whole run instead of a new one per window
)


@dataclass(frozen=True)
class OracleSite:
    """One attention call the oracle reduces.

    Attributes:
        video_start: index of the first video token on the query axis (and on the key axis
            when ``kv``); the video span has ``prod(grid)`` tokens.
        grid: video token grid ``(F, H, W)``, tokens in row-major ``(f, h, w)`` order.
        kv: the keys and values are the same sequence as the queries (joint or self
            attention), so kv is reduced too; False for cross attention (q only).
    """

    video_start: int
    grid: tuple[int, int, int]
    kv: bool = True

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)


@dataclass
class Matched:
    """One matching, as the oracle keeps it: per (batch, head) and video token."""

    window: int
    kept: torch.Tensor  # bool (B, H, N)
    stand_in: torch.Tensor  # long (B, H, N): the token whose row stands for this one (itself if kept)


def dst_src_split(grid: tuple[int, int, int], stride: tuple[int, int, int], seed: int) -> tuple[list[int], list[int]]:
    """The dst and src tokens (ascending) of one seeded split (docs/method.md, step 1)."""
    frames, height, width = grid
    sf, sh, sw = stride
    chunks = (frames // sf, height // sh, width // sw)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    offsets = torch.randint(sf * sh * sw, chunks, generator=generator)
    dst = []
    for cf in range(chunks[0]):
        for ch in range(chunks[1]):
            for cw in range(chunks[2]):
                offset = int(offsets[cf, ch, cw])
                f = cf * sf + offset // (sh * sw)
                h = ch * sh + (offset // sw) % sh
                w = cw * sw + offset % sw
                dst.append((f * height + h) * width + w)
    dst.sort()
    taken = set(dst)
    return dst, [i for i in range(frames * height * width) if i not in taken]


def kept_count(num_tokens: int, num_dst: int, ratio: float) -> int:
    """K = N_dst + max(0, int(N * (1 - ratio)) - N_dst) (docs/method.md, step 3)."""
    return num_dst + max(0, int(num_tokens * (1.0 - ratio)) - num_dst)


def match(video: torch.Tensor, dst: list[int], src: list[int], num_keep: int, window: int,
          keep_most_similar: bool = False) -> Matched:
    """Nearest-dst matching of the src tokens and the kept set (docs/method.md, steps 2-3).

    ``video (B, H, N, d)``. Returns which tokens are kept and, per token, the token that stands
    for it: itself when kept, its nearest dst token when dropped.
    """
    batch, heads, num_tokens, _ = video.shape
    features = video.detach().double().cpu()
    dst_index, src_index = torch.tensor(dst), torch.tensor(src)
    d = features[:, :, dst_index]  # (B, H, N_dst, c)
    s = features[:, :, src_index]  # (B, H, N_src, c)
    distances = (s.unsqueeze(-2) - d.unsqueeze(-3)).pow(2).sum(-1)  # (B, H, N_src, N_dst)
    nearest_distance, nearest = distances.min(dim=-1)  # first dst on ties
    order = torch.argsort(nearest_distance, dim=-1, descending=not keep_most_similar, stable=True)
    n_keep_src = num_keep - len(dst)

    kept = torch.zeros(batch, heads, num_tokens, dtype=torch.bool)
    kept[:, :, dst_index] = True
    stand_in = torch.arange(num_tokens).expand(batch, heads, num_tokens).clone()
    for b in range(batch):
        for h in range(heads):
            for rank, j in enumerate(order[b, h].tolist()):
                token = src[j]
                if rank < n_keep_src:
                    kept[b, h, token] = True
                else:
                    stand_in[b, h, token] = dst[int(nearest[b, h, j])]
    return Matched(window, kept, stand_in)


@dataclass
class Oracle:
    """Eager AsymRnR over the declared attention calls of a model (see the module docstring).

    Args:
        sites: one entry per SDPA call of one forward, in call order: an :class:`OracleSite`
            to reduce, or None to leave the call alone. A forward with another number of calls
            fails.
        q_ratio, kv_ratio: fractions of video tokens removed.
        cache_steps: matching window in steps.
        seed: base seed of the splits (``AsymRnRConfig.seed``).
        dst_stride: chunk holding one dst token.
        redraw_split: a new split per matching window (the published method); False: one split
            per site and feature for the run.
        mutation: one of :data:`MUTATIONS`, or None.
        swap_pair: the two sites whose matchings ``mutation="swap_sites"`` exchanges.
    """

    sites: list[OracleSite | None]
    q_ratio: float = 0.5
    kv_ratio: float = 0.3
    cache_steps: int = 5
    seed: int = 0
    dst_stride: tuple[int, int, int] = (2, 2, 2)
    redraw_split: bool = True
    mutation: str | None = None
    swap_pair: tuple[int, int] = (0, 1)
    cache: dict[tuple[int, int, str], Matched] = field(default_factory=dict)
    #: every matching computed, by (step, call in step, site, feature)
    computed: dict[tuple[int, int, int, str], Matched] = field(default_factory=dict)
    step: int = -1  # current step (0-based) and call within it
    call: int = 0
    _timestep: float | None = field(default=None, init=False, repr=False)
    _sdpa_calls: int = field(default=0, init=False, repr=False)  # attention calls so far in this forward
    _real_sdpa: Callable[..., torch.Tensor] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mutation is not None and self.mutation not in MUTATIONS:
            raise ValueError(f"mutation must be one of {MUTATIONS}, got {self.mutation!r}")

    # -- steps ----------------------------------------------------------------------------------

    def observe(self, timestep: torch.Tensor) -> None:
        """Count one model call: a new timestep value is a new step, the same one a further call."""
        value = float(timestep.reshape(-1)[0])
        if value == self._timestep:
            self.call += 1
        else:
            self.step, self.call, self._timestep = self.step + 1, 0, value

    def wrap(self, model: Callable[..., Any]) -> Callable[..., Any]:
        """``model`` called eagerly with the oracle's attention; keyword inputs with a ``timestep``."""

        def run(**inputs: Any) -> Any:
            self.observe(inputs["timestep"])
            self._sdpa_calls = 0
            with self.patched():
                out = model(**inputs)
            assert self._sdpa_calls == len(self.sites), (
                f"the model made {self._sdpa_calls} attention calls, the oracle knows {len(self.sites)}")
            return out

        return run

    @contextlib.contextmanager
    def patched(self) -> Iterator[None]:
        real = torch.nn.functional.scaled_dot_product_attention
        self._real_sdpa = real

        def attention(*args: Any, **kwargs: Any) -> torch.Tensor:
            return self.attention(*args, **kwargs)

        torch.nn.functional.scaled_dot_product_attention = attention
        try:
            yield
        finally:
            torch.nn.functional.scaled_dot_product_attention = real

    # -- the method -----------------------------------------------------------------------------

    def split(self, site_index: int, feature: str, window: int) -> tuple[list[int], list[int]]:
        """The split of one (site, feature) in matching window ``window``."""
        site = self.sites[site_index]
        assert site is not None
        if not self.redraw_split or self.mutation == "one_split":
            window = 0
        seed = self.seed + SITE_SEED_STRIDE * site_index + FEATURE_SEED_OFFSET[feature] + WINDOW_SEED_STRIDE * window
        return dst_src_split(site.grid, self.dst_stride, seed)

    def matching(self, site_index: int, feature: str, video: torch.Tensor, ratio: float) -> Matched:
        """This call's matching of one (site, feature): cached within a window, else computed."""
        window = self.step // self.cache_steps
        key = (self.call, site_index, feature)
        held = self.cache.get(key)
        if held is None or held.window != window or self.mutation == "no_cache":
            dst, src = self.split(site_index, feature, window)
            num_keep = kept_count(video.shape[-2], len(dst), ratio)
            held = self.cache[key] = match(video, dst, src, num_keep, window,
                                           keep_most_similar=self.mutation == "keep_most_similar")
            self.computed[self.step, self.call, site_index, feature] = held
        elif self.mutation == "swap_sites" and site_index in self.swap_pair:
            first, second = self.swap_pair
            other = self.cache.get((self.call, first + second - site_index, feature))
            if other is not None and other.window == window:
                held = other
        return held

    def attention(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attn_mask: torch.Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False,
                  scale: float | None = None, enable_gqa: bool = False) -> torch.Tensor:
        index = self._sdpa_calls
        self._sdpa_calls += 1
        site = self.sites[index] if index < len(self.sites) else None
        kwargs = {"dropout_p": dropout_p, "is_causal": is_causal, "scale": scale, "enable_gqa": enable_gqa}
        if site is None:
            return self._real_sdpa(query, key, value, attn_mask=attn_mask, **kwargs)
        start, num_tokens = site.video_start, site.num_tokens
        span = slice(start, start + num_tokens)

        if site.kv and self.kv_ratio > 0:
            kv = self.matching(index, "kv", value[..., span, :], self.kv_ratio)
            # Dropped keys (and their values) are masked out: the softmax of the kept ones only.
            attend = torch.ones(*kv.kept.shape[:2], 1, key.shape[-2], dtype=torch.bool)
            attend[..., span] = kv.kept.unsqueeze(-2)
            attend = attend.to(key.device)
            if attn_mask is None:
                attn_mask = attend
            elif attn_mask.dtype == torch.bool:
                attn_mask = attn_mask & attend
            else:
                attn_mask = attn_mask + torch.zeros(attend.shape, dtype=attn_mask.dtype, device=key.device
                                                    ).masked_fill(~attend, float("-inf"))
        out = self._real_sdpa(query, key, value, attn_mask=attn_mask, **kwargs)

        if self.q_ratio > 0:
            q = self.matching(index, "q", query[..., span, :], self.q_ratio)
            if self.mutation != "restore_self":
                # Each dropped query row becomes a copy of its dst token's row.
                video = out[..., span, :]
                batch, heads = q.stand_in.shape[:2]
                video = video.expand(batch, heads, *video.shape[-2:])
                rows = q.stand_in.to(out.device).unsqueeze(-1).expand(*q.stand_in.shape, video.shape[-1])
                restored = torch.gather(video, -2, rows)
                out = torch.cat([out[..., :start, :].expand(batch, heads, start, out.shape[-1]), restored,
                                 out[..., start + num_tokens:, :].expand(batch, heads, -1, out.shape[-1])], dim=-2)
        return out
