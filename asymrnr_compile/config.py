"""The one configuration object of the backend.

:class:`AsymRnRConfig` is frozen and validated on construction; :meth:`AsymRnRConfig.from_options`
builds it from the ``options={...}`` dict that ``torch.compile(..., backend="asymrnr",
options=...)`` passes, rejecting unknown keys with the closest valid key.

Paper references are to AsymRnR (Sun et al., ICML 2025, arXiv 2412.11706).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from asymrnr_compile._validate import check_choice, check_int, check_ratio, check_triple
from asymrnr_compile.ops import (
    DEFAULT_DST_STRIDE,
    DEFAULT_MATCH_CHUNK_BYTES,
    MATCH_KERNELS,
    REDUCE_MODES,
    SIMILARITIES,
    TOKEN_SELECTIONS,
)
from asymrnr_compile.ops.match_triton import triton_available
from asymrnr_compile.vocabulary import DEFAULT_TIMESTEP_ARGS, FEATURES

if TYPE_CHECKING:
    from asymrnr_compile.plan.schedule import Schedule

class AsymRnRWarning(UserWarning):
    """Something the user should change: the model runs, but not as fast or as clean as it could
    (e.g. nothing was reduced, or the step signal cannot be read); the message says how."""


#: Matching cache window of the defaults: a matching is computed every 2 steps. The published runs
#: reuse one for 3-5 steps (paper Sec. 3.4, :data:`PUBLISHED_SETTINGS`); with the quality options
#: on, every 2 steps kept the trained 1024-token model within 1 point of its unaccelerated videos,
#: every 5 lost 7 points (docs/defaults.md).
DEFAULT_CACHE_STEPS = 2
#: What q and kv are matched on (``AsymRnRConfig.match_on``). ``"features"``: the reduced
#: features themselves, per head (the queries after QK-norm and RoPE, the values; paper
#: Sec. 3.2). ``"hidden_states"``: the attention block's input hidden states, before the q/k/v
#: projections, one matching per batch element shared by all heads.
MATCH_SOURCES = ("features", "hidden_states")

#: Sites with fewer video tokens are left alone by default. On the trained 256-token model every
#: uniform setting tried lost 12 to 73 points of "all right" (at most 1.18x ideal); on the
#: 1024-token one the defaults lose none (docs/defaults.md).
DEFAULT_MIN_VIDEO_TOKENS = 1024
#: Default ``match_dims``: the matching on a 32-dim random projection where that saves FLOPs. On
#: the trained 1024-token model it kept 98.4% of 384 videos right against 98.7% for the exact
#: matching, with a 2.4x faster matcher on the CPU attention preset (docs/defaults.md).
DEFAULT_MATCH_DIMS = 32

#: The published AsymRnR (Sun et al., ICML 2025, arXiv 2412.11706) as this backend implements it:
#: what ``AsymRnRConfig(preset="published")`` sets, under any field given explicitly. These were
#: the backend's defaults until they were chosen by measured quality (docs/defaults.md).
PUBLISHED_SETTINGS: Mapping[str, Any] = MappingProxyType({
    "q_ratio": 0.5,
    "kv_ratio": 0.3,
    "cache_steps": 5,
    "match_on": "features",
    "redraw_split": True,
    "proportional_attention": False,
    "match_dims": None,
    "min_video_tokens": 256,
})

#: Named starting points of a configuration (``AsymRnRConfig.preset``): ``"default"`` (the
#: dataclass defaults, chosen by measured quality) and ``"published"`` (:data:`PUBLISHED_SETTINGS`).
CONFIG_PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType({
    "default": MappingProxyType({}),
    "published": PUBLISHED_SETTINGS,
})


@dataclass(frozen=True)
class AsymRnRConfig:
    """Settings of the AsymRnR backend. All fields are validated on construction.

    The defaults are chosen by measured quality, not copied from the paper: q 0.5 / kv 0.3 with
    the matching on the block's hidden states, a new split per matching window, proportional
    attention for the kept keys and a matching every 2 steps on a 32-dim random projection of
    the hidden states, on sites of at least 1024 video tokens (docs/defaults.md has the
    numbers). ``AsymRnRConfig(preset="published")`` is the published method
    (:data:`PUBLISHED_SETTINGS`); fields given explicitly override a preset's.

    Attributes:
        q_ratio: fraction of video *query* tokens removed before attention; the attention output
            is restored to full length (paper Sec. 3.2). In [0, 1). Default 0.5.
        kv_ratio: fraction of video *key/value* tokens removed (matched on V, the same indices
            applied to K; paper Sec. 3.2). Nothing to restore. In [0, 1). Default 0.3.
        h_ratio: fraction of the attention block's input hidden states removed before the q/k/v
            projections, restored after the output projection. When > 0 at a site, q and kv are
            off there. In [0, 1). Default 0.
        cache_steps: matching-cache window in denoising steps (paper Sec. 3.4): the split and the
            matching are computed on the first step of each window and reused for the rest.
            Int >= 1. Default 2 (published: 5).
        dst_stride: chunk size (frames, height, width) of the destination/source split; one
            destination token per chunk (paper Sec. 3.3). Three ints >= 1. Default (2, 2, 2).
        similarity: ``"euclidean"`` (squared distance, the paper's default), ``"cosine"`` or
            ``"dot"``.
        reduce_mode: ``"replace"`` (drop matched sources, the published default) or ``"mean"``
            (average them into their destination).
        proportional_attention: with kv reduction, add ``log(tokens a kept key stands for)`` to
            its attention logits (ToMe's proportional attention, Bolya et al. 2023, Sec. 3; not
            in the published AsymRnR), so dropped near-duplicate keys keep their share of the
            softmax. Costs one elementwise bias in the attention; on GPUs an SDPA call with a
            bias cannot use the FlashAttention kernel. Bool. Default True (published: False).
        match_on: what q and kv are matched on, one of :data:`MATCH_SOURCES`. ``"features"``
            (the published method): queries (after QK-norm and RoPE) and values, per
            head. ``"hidden_states"``: the block's hidden states entering the q/k/v projections,
            one matching per batch element shared by every head; RoPE's rotation makes
            post-RoPE queries of like content at different positions look unlike, and content
            of one head is a thin slice of a token. A site whose hidden states the analysis
            cannot find (or whose layout is not ``(B, L, C)`` against ``(B, H, L, d)``
            attention inputs) falls back to ``"features"`` with a logged reason. Not in the
            published AsymRnR; on the trained synthetic model it is what keeps q 0.5 / kv 0.3
            within the quality bound (benchmarks/RESULTS.md). Default ``"hidden_states"``
            (published: ``"features"``).
        redraw_split: draw a new destination token per chunk for every matching window (seeded
            by ``seed``, the site, the feature and the window index) instead of one split per
            site for the whole run, so that the tokens standing in for others change from window
            to window and the errors of restoring do not pile up on the same positions across
            steps. The published code draws its splits this way: per block, per feature and per
            window of ``cache_steps`` steps counted from the first step, the same for every video
            (paper Sec. 3.4). Bool. Default True in both presets; False keeps one split per site
            and feature for the whole run.
        seed: seed of the random destination choice within each chunk. Default 0.
        grid: (frames, height, width) of the video token grid, overriding what the analysis
            recovers from the graph; None (default) uses the analysis.
        min_video_tokens: sites with fewer video tokens are left alone. Int >= 1. Default 1024
            (published: 256): below that the trained 256-token model lost 12+ points under
            every uniform setting (:data:`DEFAULT_MIN_VIDEO_TOKENS`).
        warmup_steps: no reduction during the first ``warmup_steps`` denoising steps (the paper
            finds the early steps most sensitive). Int >= 0. Default 0.
        skip_blocks: blocks to leave alone, by index (``3``) or module path
            (``"transformer_blocks.3"``). Default: none.
        match_chunk_bytes: memory budget for one block of the matching distance matrix (the
            ``"aten"`` matching kernel). Default 64 MiB.
        match_dims: match on a fixed random projection of the matched features onto this many
            dimensions (Johnson-Lindenstrauss; seeded by ``seed``) instead of all their channels:
            the score matmul costs ``match_dims / channels`` of the exact one, and a dst almost
            as near as the nearest may be picked instead (:func:`asymrnr_compile.ops.match_tokens`).
            Not in the published AsymRnR. Int >= 1, or None (the exact matching). Where the
            projection would not save FLOPs (few dst tokens, or no more channels than this) the
            features are matched as they are. Default 32 (published: None).
        match_kernel: how matchings are computed: ``"auto"`` (default: the fused Triton kernel
            on CUDA devices when Triton is installed, else ``"aten"``), ``"triton"`` (one
            kernel per matching, no score matrix; CUDA, or Triton's CPU interpreter) or
            ``"aten"`` (chunked matmuls, any device); see :mod:`asymrnr_compile.ops.match`.
        token_selection: ``"matched"`` (default: AsymRnR's similarity matching) or ``"random"``
            (a plain token-dropping baseline: same split and kept counts, but the src tokens to
            drop and the dst each one copies from are drawn at random, seeded by ``seed``; no
            similarity computed; see :func:`asymrnr_compile.ops.random_matching`).
        schedule: a :class:`~asymrnr_compile.plan.schedule.Schedule` (or the path of one saved with
            ``Schedule.save``) giving the ratio per block row, step and feature; it replaces
            ``q_ratio`` / ``kv_ratio`` / ``h_ratio``. Row ``r`` is the ``r``-th block, in graph
            order, holding a reducible attention site; all sites of one block share its row
            (:func:`~asymrnr_compile.plan.schedule.site_rows`). Default None (fixed ratios).
        num_steps: denoising steps of the run, used with ``schedule`` when it was made for
            another step count: step ``j`` then reads the schedule at progress
            ``j / (num_steps - 1)`` (:meth:`~asymrnr_compile.plan.schedule.Schedule.source_steps`).
            None (default): the run has the schedule's own step count. Int >= 1.
        timestep_arg: the name of the model's argument that carries the denoising timestep, the
            step signal of the matching cache and of schedules. None (default) takes
            ``timestep`` or ``timesteps`` (diffusers' names); set it when the model calls it
            something else (``"t"``, ``"sigma"``). Pass it as a tensor: a Python number is baked
            into the graph, so every step recompiles (the backend warns). Without a timestep
            input every call counts as a step.
        preset: the starting point, one of :data:`CONFIG_PRESETS`: ``"default"`` (these
            defaults) or ``"published"`` (the paper's method, :data:`PUBLISHED_SETTINGS`, filled
            in for every field not given explicitly). Default ``"default"``.
    """

    q_ratio: float = 0.5
    kv_ratio: float = 0.3
    h_ratio: float = 0.0
    cache_steps: int = DEFAULT_CACHE_STEPS
    dst_stride: tuple[int, int, int] = DEFAULT_DST_STRIDE
    similarity: str = "euclidean"
    reduce_mode: str = "replace"
    proportional_attention: bool = True
    match_on: str = "hidden_states"
    redraw_split: bool = True
    seed: int = 0
    grid: tuple[int, int, int] | None = None
    min_video_tokens: int = DEFAULT_MIN_VIDEO_TOKENS
    warmup_steps: int = 0
    skip_blocks: tuple[int | str, ...] = ()
    match_chunk_bytes: int = DEFAULT_MATCH_CHUNK_BYTES
    match_kernel: str = "auto"
    match_dims: int | None = DEFAULT_MATCH_DIMS
    token_selection: str = "matched"
    schedule: Schedule | str | os.PathLike[str] | None = None
    num_steps: int | None = None
    timestep_arg: str | None = None
    preset: str = "default"

    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        check_choice("preset", self.preset, tuple(CONFIG_PRESETS))
        for name in ("q_ratio", "kv_ratio", "h_ratio"):
            set_(name, check_ratio(name, getattr(self, name)))
        set_("cache_steps", check_int("cache_steps", self.cache_steps, minimum=1))
        set_("dst_stride", check_triple("dst_stride", self.dst_stride, minimum=1))
        check_choice("similarity", self.similarity, SIMILARITIES)
        check_choice("reduce_mode", self.reduce_mode, REDUCE_MODES)
        if not isinstance(self.proportional_attention, bool):
            raise TypeError(f"proportional_attention must be a bool, got {self.proportional_attention!r}")
        check_choice("match_on", self.match_on, MATCH_SOURCES)
        if not isinstance(self.redraw_split, bool):
            raise TypeError(f"redraw_split must be a bool, got {self.redraw_split!r}")
        check_choice("token_selection", self.token_selection, TOKEN_SELECTIONS)
        set_("seed", check_int("seed", self.seed, minimum=0))
        if self.grid is not None:
            set_("grid", check_triple("grid", self.grid, minimum=1))
        set_("min_video_tokens", check_int("min_video_tokens", self.min_video_tokens, minimum=1))
        set_("warmup_steps", check_int("warmup_steps", self.warmup_steps, minimum=0))
        set_("match_chunk_bytes", check_int("match_chunk_bytes", self.match_chunk_bytes, minimum=1))
        check_choice("match_kernel", self.match_kernel, MATCH_KERNELS)
        if self.match_dims is not None:
            set_("match_dims", check_int("match_dims", self.match_dims, minimum=1))
        if self.match_kernel == "triton" and not triton_available():
            raise ValueError("match_kernel='triton' needs the triton package, which is not installed; "
                             "use 'auto' (Triton where it can run) or 'aten'")
        skip = self.skip_blocks
        if isinstance(skip, (int, str)):
            skip = (skip,)
        skip = tuple(skip)
        for block in skip:
            if isinstance(block, bool) or not isinstance(block, (int, str)):
                raise TypeError(f"skip_blocks entries must be block indices (int) or module paths (str), got {block!r}")
        set_("skip_blocks", skip)
        if self.schedule is not None:
            set_("schedule", _load_schedule(self.schedule))
        if self.num_steps is not None:
            set_("num_steps", check_int("num_steps", self.num_steps, minimum=1))
        if self.timestep_arg is not None and not (isinstance(self.timestep_arg, str)
                                                  and self.timestep_arg.isidentifier()):
            raise ValueError(f"timestep_arg must be the name of the model's timestep argument (a Python "
                             f"identifier such as 't' or 'sigma') or None, got {self.timestep_arg!r}")

    @property
    def timestep_args(self) -> tuple[str, ...]:
        """The argument names the step signal is read from (``timestep_arg``, or the defaults)."""

        return (self.timestep_arg,) if self.timestep_arg is not None else DEFAULT_TIMESTEP_ARGS

    def ratio(self, feature: str) -> float:
        """The fixed ratio of ``feature`` (``"q"``, ``"kv"`` or ``"h"``)."""
        check_choice("feature", feature, FEATURES)
        return getattr(self, f"{feature}_ratio")

    @classmethod
    def option_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_options(cls, options: Mapping[str, Any] | None) -> AsymRnRConfig:
        """Build from the ``options`` dict of ``torch.compile``; unknown keys raise ValueError."""
        if options is None:
            return cls()
        if isinstance(options, AsymRnRConfig):
            return options
        if not isinstance(options, Mapping):
            raise TypeError(f"options must be a dict of AsymRnRConfig fields, got {type(options).__name__}")
        _check_option_names(options)
        return cls(**dict(options))

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["schedule"] = self.schedule.to_dict() if self.schedule is not None else None
        out["dst_stride"] = list(self.dst_stride)
        out["grid"] = list(self.grid) if self.grid is not None else None
        out["skip_blocks"] = list(self.skip_blocks)
        return out


def _check_option_names(options: Mapping[str, Any]) -> None:
    """ValueError naming an unknown option and the closest valid one."""
    names = AsymRnRConfig.option_names()
    for key in options:
        if key not in names:
            hint = difflib.get_close_matches(str(key), names, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ValueError(f"unknown asymrnr option {key!r}{extra} Allowed options: {', '.join(names)}")


_dataclass_init = AsymRnRConfig.__init__


@functools.wraps(_dataclass_init)
def _init_checking_names(self: AsymRnRConfig, *args: Any, **kwargs: Any) -> None:
    # AsymRnRConfig(q_raito=0.5) raises the ValueError with the closest name that the dict form
    # raises, instead of the dataclass's bare TypeError.
    _check_option_names(kwargs)
    preset = kwargs.get("preset", "default")
    if isinstance(preset, str) and preset in CONFIG_PRESETS:
        # A preset fills in the fields not given, by name or by position.
        given = {f.name for f in dataclasses.fields(AsymRnRConfig)[:len(args)]} | set(kwargs)
        kwargs = {**{k: v for k, v in CONFIG_PRESETS[preset].items() if k not in given}, **kwargs}
    _dataclass_init(self, *args, **kwargs)


AsymRnRConfig.__init__ = _init_checking_names  # type: ignore[method-assign]


def _load_schedule(value: object) -> Schedule:
    """A Schedule, or one loaded from a path (``Schedule.load``)."""
    from asymrnr_compile.plan.schedule import Schedule

    if isinstance(value, Schedule):
        return value
    if isinstance(value, (str, os.PathLike)):
        try:
            return Schedule.load(value)
        except (OSError, ValueError) as error:
            raise ValueError(f"schedule: cannot load {os.fspath(value)!r} as a saved Schedule: {error}") from error
    raise TypeError(f"schedule must be an asymrnr_compile.Schedule or the path of a saved one, "
                    f"got {type(value).__name__}")
