"""The backend against an independent eager AsymRnR (tests/asymrnr_oracle.py), call by call.

A whole cached sampling loop (5 steps, matching windows of 2 steps: matchings computed at steps
0, 2 and 4 and reused at 1 and 3) runs twice: through ``torch.compile(model,
backend=AsymRnRBackend(config))`` and through the eager oracle, which implements the method from
docs/method.md without the package's ops, passes or runtime. Every model call's output must
agree within float tolerance, and every matching the backend computed must be the oracle's
(same kept tokens, same stand-in for each dropped one).

Two models, so that the video span sits at both ends of the sequence:

- ``reference``: the bundled reference DiT (``tiny``: 2 blocks, joint attention with the 8 text
  tokens **first**, QK-norm and RoPE, a 2x4x4 grid), cond and uncond batched in one call;
- ``text_last``: :class:`TextLastDiT` below: per block a joint attention with the text
  **last** and a key-padding mask, then a cross-attention from the video to the text (only q
  reducible), a 2x8x8 grid; cond and uncond as two calls per step (separate matchings per call).

And, marked slow (its compile takes over a minute on 2 cores), diffusers' HunyuanVideo: a
text-only site first, then text-last joint attention with a padding mask in two block kinds.

The comparison is not vacuous: the unreduced model is far from both, and an oracle broken on
purpose (matchings of two sites with equal kept counts swapped, no cache, the wrong tokens kept,
no restore; ``asymrnr_oracle.MUTATIONS``) is far from the backend.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from asymrnr_oracle import MUTATIONS, Oracle, OracleSite
from helpers import max_relative_error
from reduction_checks import assert_reduced
from torch import nn

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_lab.models import build_reference_model, reference_inputs
from asymrnr_lab.sampling import SamplerConfig, sample

STEPS = 5
RATIOS = {"q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2, "seed": 3}
#: Largest allowed max |backend - oracle| / max |oracle| of one call's output. Measured: at most
#: 7.3e-6 on the reference DiT, 4.9e-7 on the text-last model (float32 rounding: Inductor's fused
#: kernels against eager ones, gathers against masks).
TOLERANCE = 5e-5
#: A broken oracle must miss the backend by at least this multiple of the tolerance.
MUTATION_FACTOR = 100


class TextLastBlock(nn.Module):
    """Joint attention ``[video, text]`` with a key-padding mask, cross-attention video -> text, MLP."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.hidden, self.heads = hidden, heads
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(hidden) for _ in range(3))
        self.to_q, self.to_k, self.to_v, self.to_out = (nn.Linear(hidden, hidden) for _ in range(4))
        self.cross_q, self.cross_k, self.cross_v, self.cross_out = (nn.Linear(hidden, hidden) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Linear(2 * hidden, hidden))

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.view(x.shape[0], -1, self.heads, self.hidden // self.heads).transpose(1, 2)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.transpose(1, 2).reshape(x.shape[0], -1, self.hidden)

    def forward(self, video: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        num_video = video.shape[1]
        tokens = self.norm1(torch.cat([video, text], dim=1))
        q, k, v = (self._split_heads(proj(tokens)) for proj in (self.to_q, self.to_k, self.to_v))
        mask = torch.cat([torch.ones_like(video[..., 0], dtype=torch.bool), text_mask], dim=1)[:, None, None]
        out = self.to_out(self._merge_heads(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)))
        video, text = video + out[:, :num_video], text + out[:, num_video:]
        q = self._split_heads(self.cross_q(self.norm2(video)))
        k, v = self._split_heads(self.cross_k(text)), self._split_heads(self.cross_v(text))
        cross = F.scaled_dot_product_attention(q, k, v, attn_mask=text_mask[:, None, None])
        video = video + self.cross_out(self._merge_heads(cross))
        return video + self.mlp(self.norm3(video)), text


class TextLastDiT(nn.Module):
    """A small video DiT with the text tokens last (HunyuanVideo/Mochi order) and cross-attention.

    ``forward(hidden_states (B, 4, 2, 16, 16), encoder_hidden_states (B, 6, 16), timestep (B,))``;
    patch (1, 2, 2) -> a 2x8x8 grid of 128 video tokens; text tokens that are all zeros are
    padding (masked out as keys).
    """

    LATENT = (4, 2, 16, 16)
    GRID = (2, 8, 8)
    TEXT, TEXT_DIM, HIDDEN, HEADS, BLOCKS = 6, 16, 32, 2, 2
    ATTENTION_GAIN = 4.0

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.patch = nn.Conv3d(self.LATENT[0], self.HIDDEN, kernel_size=(1, 2, 2), stride=(1, 2, 2))
            self.text = nn.Linear(self.TEXT_DIM, self.HIDDEN)
            self.time = nn.Linear(1, self.HIDDEN)
            self.blocks = nn.ModuleList(TextLastBlock(self.HIDDEN, self.HEADS) for _ in range(self.BLOCKS))
            self.out = nn.Linear(self.HIDDEN, self.LATENT[0] * 4)
        with torch.no_grad():  # attention carries more of the output than a default init gives it
            for block in self.blocks:
                block.to_out.weight.mul_(self.ATTENTION_GAIN)
                block.cross_out.weight.mul_(self.ATTENTION_GAIN)
        self.eval()

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor,
                timestep: torch.Tensor) -> torch.Tensor:
        b, c, f, h, w = hidden_states.shape
        video = self.patch(hidden_states).flatten(2).transpose(1, 2)
        video = video + self.time(timestep[:, None] / 1000.0)[:, None]
        text_mask = encoder_hidden_states.abs().amax(-1) > 0
        text = self.text(encoder_hidden_states)
        for block in self.blocks:
            video, text = block(video, text, text_mask)
        out = self.out(video).view(b, f, h // 2, w // 2, c, 2, 2)
        return out.permute(0, 4, 1, 2, 5, 3, 6).reshape(b, c, f, h, w)


@dataclass
class Case:
    """One model, its sampling inputs, the oracle's view of its attention calls, and the backend run."""

    name: str
    model: nn.Module
    sites: list[OracleSite | None]  # per attention call of one forward
    noise: torch.Tensor
    text: torch.Tensor
    null_text: torch.Tensor
    cfg_mode: str
    swap_pair: tuple[int, int]  # two sites with equal kept counts
    reduced_sites: dict[int, set[str]]
    # how the sampler's model(hidden_states=, encoder_hidden_states=, timestep=) calls the model
    adapt: Callable[[Callable[..., Any]], Callable[..., torch.Tensor]] = lambda model: model
    outputs: list[torch.Tensor] | None = None  # the backend's, per call
    latent: torch.Tensor | None = None
    backend: AsymRnRBackend | None = None
    records: list[Any] | None = None


def _reference_case() -> Case:
    model = build_reference_model("tiny")
    inputs = reference_inputs("tiny")
    text = inputs["encoder_hidden_states"]
    site = OracleSite(video_start=text.shape[1], grid=model.config.grid)  # text first
    blocks = model.config.num_blocks
    return Case("reference", model, [site] * blocks, inputs["hidden_states"][:1], text[:1], text[1:],
                "batched", (0, 1), {i: {"q", "kv"} for i in range(blocks)})


def _text_last_case() -> Case:
    model = TextLastDiT()
    generator = torch.Generator().manual_seed(1)
    noise = torch.randn(1, *model.LATENT, generator=generator)
    text = torch.randn(1, model.TEXT, model.TEXT_DIM, generator=generator)
    null_text = torch.randn(1, model.TEXT, model.TEXT_DIM, generator=generator)
    null_text[:, -2:] = 0  # two padding tokens in the uncond prompt
    joint, cross = OracleSite(0, model.GRID), OracleSite(0, model.GRID, kv=False)
    sites = [joint, cross] * model.BLOCKS
    reduced = {i: {"q", "kv"} if site.kv else {"q"} for i, site in enumerate(sites)}
    return Case("text_last", model, sites, noise, text, null_text, "split", (0, 2), reduced)


def _hunyuan_case() -> Case:
    """HunyuanVideo (diffusers, tiny config): a text-only refiner attention first (left alone, so the
    reduced sites are 1 and 2), then a dual-stream and a single-stream block, text last with a
    padding mask; two calls per step."""
    pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers])")
    from asymrnr_lab.models.diffusers_models import build

    model, inputs = build("hunyuan", frames=2, size=8)
    mask = inputs["encoder_attention_mask"].clone()
    mask[:, -4:] = 0  # a padded prompt
    extra = {"pooled_projections": inputs["pooled_projections"], "guidance": inputs["guidance"],
             "encoder_attention_mask": mask, "return_dict": False}
    generator = torch.Generator().manual_seed(1)
    null_text = torch.randn(inputs["encoder_hidden_states"].shape, generator=generator)
    grid = tuple(inputs["hidden_states"].shape[2:])  # patch 1x1x1
    joint = OracleSite(0, grid)
    return Case("hunyuan", model, [None, joint, joint], inputs["hidden_states"], inputs["encoder_hidden_states"],
                null_text, "split", (1, 2), {1: {"q", "kv"}, 2: {"q", "kv"}},
                adapt=lambda model: lambda **kw: model(**kw, **extra)[0])


CASES = {"reference": _reference_case, "text_last": _text_last_case, "hunyuan": _hunyuan_case}


def _sample(model_fn, case: Case) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The sampling loop; every model call's output and the final latent."""
    outputs = []

    def recorded(**inputs: Any) -> torch.Tensor:
        out = model_fn(**inputs)
        outputs.append(out.detach().clone())
        return out

    with torch.no_grad():
        latent = sample(recorded, case.noise, case.text, case.null_text,
                        SamplerConfig(steps=STEPS, cfg_mode=case.cfg_mode))
    return outputs, latent


def _oracle(case: Case, mutation: str | None = None, **ratios: Any) -> tuple[list[torch.Tensor], torch.Tensor, Oracle]:
    oracle = Oracle(case.sites, **{**RATIOS, **ratios}, mutation=mutation, swap_pair=case.swap_pair)
    outputs, latent = _sample(oracle.wrap(case.adapt(case.model)), case)
    return outputs, latent, oracle


def _errors(outputs: list[torch.Tensor], reference: list[torch.Tensor]) -> list[float]:
    assert len(outputs) == len(reference)
    return [max_relative_error(out, ref) for out, ref in zip(outputs, reference)]


@pytest.fixture(scope="module", params=["reference", "text_last",
                                        pytest.param("hunyuan", marks=pytest.mark.slow)])
def case(request) -> Case:
    """The case with its backend run (compiled once per module)."""
    case = CASES[request.param]()
    torch._dynamo.reset()
    records: list[Any] = []
    # the oracle implements the published method (docs/method.md)
    config = AsymRnRConfig(preset="published", **RATIOS, min_video_tokens=16)
    backend = AsymRnRBackend(config, on_matching=records.append)
    compiled = torch.compile(case.model, backend=backend, fullgraph=True, dynamic=False)
    case.outputs, case.latent = _sample(case.adapt(compiled), case)
    case.backend, case.records = backend, records
    torch._dynamo.reset()
    return case


def test_backend_agrees_with_the_oracle_call_by_call(case):
    assert_reduced(case.backend, sites=set(case.reduced_sites), features=case.reduced_sites)
    outputs, latent, oracle = _oracle(case)
    calls_per_step = 2 if case.cfg_mode == "split" else 1
    assert len(outputs) == STEPS * calls_per_step
    errors = _errors(case.outputs, outputs)
    assert max(errors) <= TOLERANCE, f"per-call relative errors {errors}"
    assert max_relative_error(case.latent, latent) <= TOLERANCE
    # matchings computed on the windows' first steps, per call of the step, and reused between
    assert sorted(oracle.computed) == sorted(
        (step, call, site, feature) for step in (0, 2, 4) for call in range(calls_per_step)
        for site, features in case.reduced_sites.items() for feature in features)
    # not vacuous: the unreduced model is far from the oracle (and the backend) at every call
    unreduced, _ = _sample(case.adapt(case.model), case)
    assert min(_errors(unreduced, outputs)) > MUTATION_FACTOR * TOLERANCE


def test_every_matching_of_the_backend_is_the_oracles(case):
    """Same matchings computed (step, call, site, feature), same dst tokens, the same tokens kept
    and the same stand-in (dst token) for every dropped one, per batch element and head."""
    _, _, oracle = _oracle(case)
    backend = {(r.step, r.call_index, r.site.index, r.feature): r for r in case.records}
    assert sorted(backend) == sorted(oracle.computed)
    for key, record in backend.items():
        expected = oracle.computed[key]
        dst, _ = oracle.split(key[2], key[3], window=key[0] // oracle.cache_steps)
        assert record.split.dst.tolist() == dst, key
        keep, restore = record.indices
        kept = torch.zeros(*keep.shape[:-1], restore.shape[-1], dtype=torch.bool).scatter_(-1, keep, True)
        stand_in = torch.gather(keep, -1, restore)  # the token whose row each token's row is
        assert torch.equal(kept.expand_as(expected.kept), expected.kept), key
        assert torch.equal(stand_in.expand_as(expected.stand_in), expected.stand_in), key


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_a_broken_oracle_disagrees_with_the_backend(case, mutation):
    """Each deliberate error in the oracle puts it far outside the tolerance: the agreement above
    would catch the same error in the backend (e.g. ``swap_sites``: the cached indices of two sites
    with equal kept counts exchanged)."""
    assert_reduced(case.backend)  # against an unreduced backend any oracle would disagree
    outputs, _, _ = _oracle(case, mutation)
    errors = _errors(case.outputs, outputs)
    assert max(errors) > MUTATION_FACTOR * TOLERANCE, f"{mutation}: per-call relative errors {errors}"


def test_the_oracle_without_reduction_is_the_model(case):
    outputs, _, oracle = _oracle(case, q_ratio=0.0, kv_ratio=0.0)
    unreduced, _ = _sample(case.adapt(case.model), case)
    assert not oracle.computed
    for out, ref in zip(outputs, unreduced, strict=True):
        torch.testing.assert_close(out, ref, rtol=0, atol=0)
