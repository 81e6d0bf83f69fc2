"""The callable the backend returns to Dynamo: step tracking, variant choice, matching cache.

One :class:`AsymRnRRuntime` exists per captured graph. On every call it

1. reads the timestep input and turns it into a denoising step (:class:`StepTracker`),
2. plans the reduction of that step (:class:`~asymrnr_compile.plan.ReductionPlan`): per site and
   feature the kept token count, and whether the matching is computed now (first step of a
   ``cache_steps`` window) or reused from :class:`MatchingCache`,
3. runs the Inductor-compiled variant of that plan (compiled lazily, once per distinct plan),
4. stores the matchings the variant returned and hands the model's own outputs back.

Nothing here triggers a Dynamo recompile: steps change which compiled variant runs, not the
Dynamo graph.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
import torch.fx

from asymrnr_compile import ops
from asymrnr_compile.analysis.cost import CostEstimate, GraphCostModel, estimate_cost
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.passes.reduce_attention_tokens import RewriteResult, reduce_attention_tokens
from asymrnr_compile.passes.split_attention_regions import split_attention_regions
from asymrnr_compile.plan import INDEX_FIELDS, MATCHING_FIELDS, CacheSlot, FeaturePlan, ReductionPlan, SitePlan

logger = logging.getLogger("asymrnr_compile")

TIMESTEP_NAME = "timestep"
# Distinct seeds per (site, feature) so that sites do not share one destination pattern.
_SITE_SEED_STRIDE = 7919
_FEATURE_SEED_OFFSET = {"q": 0, "kv": 1, "h": 2}
# With redraw_split, window w adds w * this to the seed (a prime apart from the site stride).
_WINDOW_SEED_STRIDE = 104729

Compiler = Callable[[torch.fx.GraphModule, Sequence[Any]], Callable[..., Any]]


@dataclass(frozen=True)
class MatchingRecord:
    """One matching computed during a call, as handed to a backend's ``on_matching`` observer.

    Attributes:
        step: denoising step of the call (0-based, from the timestep input).
        call_index: which call within the step (0 = first; 1 = e.g. the unconditional call of a
            split CFG pipeline).
        site: the attention site (``site.block_index``, ``site.grid``, ``site.name``...).
        feature: ``"q"``, ``"kv"`` or ``"h"``.
        split: the dst/src partition of the site's ``N`` video tokens.
        indices: ``keep (*, K)`` and ``restore (*, N)`` (leading dims: the batch, and heads when
            matched per head); video token ``i`` is computed by token ``keep[..., restore[..., i]]``,
            itself when kept. On the model's device.
    """

    step: int
    call_index: int
    site: AttentionSite
    feature: str
    split: ops.TokenSplit
    indices: ops.ReductionIndices


@dataclass(frozen=True)
class StepEvent:
    """Where a call falls in the sampling loop.

    Attributes:
        step: denoising step index within the current video (0-based).
        call_index: which call within the step (0 = first; pipelines that run cond and uncond
            as two calls with the same timestep make a 1).
        new_video: this call starts a new video (first call, or the timestep jumped back up).
    """

    step: int
    call_index: int
    new_video: bool


class StepTracker:
    """Turns successive timestep values into steps.

    A change of timestep value starts a new step; the same value again is another call of the
    same step. Samplers move the timestep monotonically, but not always the same way: most count
    down (1000 -> 0), Mochi's pipeline counts up (0 -> 1000, its scheduler inverts the sigmas).
    The direction of a video is taken from its first two distinct values; a value that moves
    against it starts a new video. Without a timestep (``None``) every call is a step.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.step = -1
        self.call_index = 0
        self.last_timestep: float | None = None
        self.direction = 0  # +1 counting up, -1 counting down, 0 not known yet
        self.steps_seen = 0

    def observe(self, timestep: float | None) -> StepEvent:
        new_video = self.step < 0
        if timestep is None:
            self.step += 1
            self.call_index = 0
        elif self.last_timestep is None:
            new_video = True
            self.step, self.call_index, self.direction = 0, 0, 0
        elif timestep == self.last_timestep:
            self.call_index += 1
        else:
            direction = 1 if timestep > self.last_timestep else -1
            if self.direction not in (0, direction):
                new_video = True
                self.step, self.call_index, self.direction = 0, 0, 0
            else:
                self.direction = direction
                self.step += 1
                self.call_index = 0
        self.last_timestep = timestep
        if self.call_index == 0:
            self.steps_seen += 1
        return StepEvent(self.step, self.call_index, new_video)


@dataclass
class _CachedMatching:
    window: int
    matching: dict[str, torch.Tensor] = field(default_factory=dict)
    indices: dict[int, ops.ReductionIndices] = field(default_factory=dict)


CacheKey = tuple[int, int, str]  # (call in step, site index, feature)


class MatchingCache:
    """Matchings per (call in step, site, feature), valid for one cache window.

    Each entry keeps the matching (``src_order``, ``nearest``, ``distance``) and the reduction
    indices already derived from it, per kept-token count.
    """

    def __init__(self) -> None:
        self.entries: dict[CacheKey, _CachedMatching] = {}
        self.hits = 0
        self.misses = 0

    def reset(self) -> None:
        """Forget every matching (a new video). Hit/miss counters are kept for the report."""
        self.entries.clear()

    def has(self, key: CacheKey, window: int) -> bool:
        entry = self.entries.get(key)
        return entry is not None and entry.window == window

    def store(self, key: CacheKey, window: int, num_keep: int, fields: dict[str, torch.Tensor]) -> None:
        """Store what a computing variant returned for one (call, site, feature)."""
        entry = self.entries[key] = _CachedMatching(window)
        entry.matching = {name: fields[name] for name in MATCHING_FIELDS}
        entry.indices[num_keep] = ops.ReductionIndices(*(fields[name] for name in INDEX_FIELDS))

    def indices(self, key: CacheKey, num_keep: int, split: ops.TokenSplit) -> ops.ReductionIndices:
        """The cached reduction indices for ``num_keep`` tokens (derived once if new)."""
        entry = self.entries[key]
        if num_keep not in entry.indices:
            matching = ops.Matching(*(entry.matching[name] for name in MATCHING_FIELDS))
            indices = ops.reduction_indices(split, matching, num_keep)
            stored = next(iter(entry.indices.values()))
            if stored.keep.dim() > matching.src_order.dim():  # matched on hidden states: no head axis
                indices = ops.indices_over_heads(indices)
            entry.indices[num_keep] = indices
        return entry.indices[num_keep]


def _input_signature(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return ("tensor", tuple(value.shape), tuple(value.stride()), value.dtype, value.device.type,
                value.requires_grad)
    return ("value", type(value).__name__, value if isinstance(value, (int, float, bool)) else None)


class RegionCompiler:
    """Compiles graph regions with Inductor, once per distinct code and input layout.

    Variants share their segments (the code between attention regions is the same in every
    variant), so only the attention regions of a new plan are compiled. Structurally identical
    segments of different blocks also hit Inductor's FX graph cache.
    """

    def __init__(self, compile_graph: Compiler) -> None:
        self.compile_graph = compile_graph
        self.compiled: dict[tuple[str, tuple[Any, ...]], Callable[..., Any]] = {}
        self.seconds = 0.0
        self.reused = 0

    def get(self, region: torch.fx.GraphModule, args: Sequence[Any]) -> Callable[..., Any]:
        key = (region.code, tuple(_input_signature(a) for a in args))
        fn = self.compiled.get(key)
        if fn is None:
            start = time.perf_counter()
            fn = self.compiled[key] = self.compile_graph(region, list(args))
            self.seconds += time.perf_counter() - start
        else:
            self.reused += 1
        return fn


class CompiledRegion(torch.nn.Module):
    """Stands in for one submodule of a split graph; compiles it on its first call."""

    def __init__(self, region: torch.fx.GraphModule, compiler: RegionCompiler) -> None:
        super().__init__()
        self.region = region
        self.compiler = compiler
        self.fn: Callable[..., Any] | None = None

    def forward(self, *args: Any) -> Any:
        if self.fn is None:
            self.fn = self.compiler.get(self.region, args)
        return self.fn(*args)


@dataclass
class CompiledVariant:
    """One compiled version of the graph for one plan (a driver over compiled regions)."""

    plan: ReductionPlan
    fn: Callable[..., Any]
    rewrite: RewriteResult | None
    compile_seconds: float = 0.0
    calls: int = 0

    @property
    def extra_inputs(self) -> list[CacheSlot]:
        return self.rewrite.extra_inputs if self.rewrite else []

    @property
    def extra_outputs(self) -> list[CacheSlot]:
        return self.rewrite.extra_outputs if self.rewrite else []

    def describe(self) -> dict[str, Any]:
        return {
            "sites": [
                {"site": site.site_index, **{name: {"keep": p.num_keep, "of": p.num_tokens,
                                                    "compute_matching": p.compute_matching}
                                             for name, p in site.items()}}
                for site in self.plan.sites
            ],
            "compile_seconds": round(self.compile_seconds, 3),
            "calls": self.calls,
        }


@dataclass
class SiteReduction:
    """What the runtime applies at one site: per feature the ratio asked and the tokens kept."""

    site: AttentionSite
    grid: tuple[int, int, int] | None
    num_dst: dict[str, int] = field(default_factory=dict)
    requested_ratio: dict[str, float] = field(default_factory=dict)
    num_keep: dict[str, int] = field(default_factory=dict)
    capped: dict[str, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        num_tokens = self.site.video_tokens or 0
        return {
            **self.site.to_dict(),
            "split_grid": list(self.grid) if self.grid else None,
            "applied": {
                feature: {
                    "requested_ratio": self.requested_ratio[feature],
                    "applied_ratio": round(1 - keep / num_tokens, 6),
                    "kept_tokens": keep,
                    "video_tokens": num_tokens,
                    "capped": self.capped[feature],
                }
                for feature, keep in self.num_keep.items()
            },
        }


def find_timestep_input(gm: torch.fx.GraphModule) -> int | None:
    """Position of the timestep among the graph's inputs (a placeholder named like it), or None."""
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    for position, node in enumerate(placeholders):
        if TIMESTEP_NAME in node.name.lower():
            value = node.meta.get("example_value")
            if value is None or isinstance(value, torch.Tensor):
                return position
    return None


def read_timestep(value: Any) -> float | None:
    """The timestep of a call as a Python float (first element), or None if it is not one."""
    if isinstance(value, torch.Tensor):
        return float(value.reshape(-1)[0].item()) if value.numel() else None
    if isinstance(value, (int, float)):
        return float(value)
    return None


class AsymRnRRuntime:
    """Runs one captured graph with per-step token reduction (see module docstring).

    Args:
        gm: the Dynamo graph.
        sites: its attention sites (analysis), all of them; ``reductions`` picks the active ones.
        reductions: per active site what to reduce (built by the backend from the config).
        config: the backend configuration.
        compile_graph: compiles a graph module for given example inputs (``compile_fx``).
        schedule: per-step kept tokens when the config has a schedule
            (:class:`~asymrnr_compile.schedule_runtime.ScheduleDriver`), else None (fixed ratios).
        on_matching: called with a :class:`MatchingRecord` for every matching a call computes
            (not for reused ones); for inspection, e.g. which tokens a block drops.
    """

    def __init__(self, gm: torch.fx.GraphModule, sites: list[AttentionSite],
                 reductions: list[SiteReduction], config: AsymRnRConfig, compile_graph: Compiler,
                 schedule: Any = None,
                 on_matching: Callable[[MatchingRecord], None] | None = None) -> None:
        self.gm = gm
        self.on_matching = on_matching
        self.sites = sites
        self.reductions = reductions
        self.reduction_by_site = {r.site.index: r for r in reductions}
        self.config = config
        self.compile_graph = compile_graph
        self.timestep_position = find_timestep_input(gm)
        self.tracker = StepTracker()
        self.cache = MatchingCache()
        self.variants: dict[ReductionPlan, CompiledVariant] = {}
        self.regions = RegionCompiler(compile_graph)
        self.splits: dict[tuple[int, str], tuple[int, ops.TokenSplit]] = {}  # -> (window, split)
        self.calls = 0
        # The step of every call that computed a matching (tests and reports count these).
        self.matching_steps: list[int] = []
        self.fallback_reason: str | None = None
        self.schedule = schedule
        if schedule is None:
            self.cost: CostEstimate = estimate_cost(
                gm, {r.site: {f: (r.num_dst[f], r.num_keep[f]) for f in r.num_keep} for r in reductions},
                config.cache_steps,
            )
        else:  # mean over the scheduled steps
            model = GraphCostModel(gm, sites)
            full, reduced = model.schedule_flops(schedule.kept_per_step(reductions), config.cache_steps)
            self.cost = CostEstimate(model.full_flops, reduced * model.full_flops / full, model.attention_flops)

    def reset(self) -> None:
        """Start a new video: forget the step state and every cached matching."""
        self.tracker.reset()
        self.cache.reset()

    # -- planning ---------------------------------------------------------------------------

    def plan(self, event: StepEvent) -> ReductionPlan:
        """The reduction plan of one call (empty during warm-up or after a fallback)."""
        config = self.config
        site_plans: list[SitePlan] = []
        if self.fallback_reason is None and event.step >= config.warmup_steps:
            window = self._window(event.step)
            for reduction in self.reductions:
                features: dict[str, FeaturePlan] = {}
                keeps = reduction.num_keep if self.schedule is None else \
                    self.schedule.keeps(reduction, event.step, record=event.call_index == 0)
                for feature, keep in keeps.items():
                    key = (event.call_index, reduction.site.index, feature)
                    features[feature] = FeaturePlan(
                        num_tokens=reduction.site.video_tokens,  # type: ignore[arg-type]
                        num_keep=keep,
                        compute_matching=not self.cache.has(key, window),
                    )
                if features:
                    site_plans.append(SitePlan(reduction.site.index, **features))
        return ReductionPlan(tuple(site_plans), config.similarity, config.reduce_mode, config.match_chunk_bytes,
                             config.token_selection, config.seed, config.proportional_attention,
                             config.match_on)

    # -- compilation --------------------------------------------------------------------------

    def _split(self, site: AttentionSite, feature: str, grid, device: torch.device, window: int) -> ops.TokenSplit:
        """The dst/src split of one (site, feature): one for the whole run, or with
        ``config.redraw_split`` one per matching window (only the current window's is kept)."""
        window = window if self.config.redraw_split else 0
        key = (site.index, feature)
        held = self.splits.get(key)
        if held is None or held[0] != window:
            seed = (self.config.seed + _SITE_SEED_STRIDE * site.index + _FEATURE_SEED_OFFSET[feature]
                    + _WINDOW_SEED_STRIDE * window)
            held = self.splits[key] = (window, ops.split_tokens(site.video_tokens, grid, self.config.dst_stride,
                                                                seed=seed, device=device))
        return held[1]

    def _window(self, step: int) -> int:
        """Index of the matching window holding denoising step ``step`` (after warm-up)."""
        return (step - self.config.warmup_steps) // self.config.cache_steps

    def _extra_input(self, slot: CacheSlot, plan: ReductionPlan, step: StepEvent,
                     device: torch.device) -> torch.Tensor:
        reduction = self.reduction_by_site[slot.site_index]
        split = self._split(reduction.site, slot.feature, reduction.grid, device, self._window(step.step))
        if slot.field in ("dst", "src"):
            return getattr(split, slot.field)
        num_keep = plan.feature_plan(slot.site_index, slot.feature).num_keep
        indices = self.cache.indices((step.call_index, slot.site_index, slot.feature), num_keep, split)
        return getattr(indices, slot.field)

    def _compile(self, plan: ReductionPlan) -> CompiledVariant:
        """Rewrite for ``plan`` and split into regions; regions compile on the first call."""
        rewrite = None if plan.is_identity else reduce_attention_tokens(self.gm, self.sites, plan)
        graph = self.gm if rewrite is None else rewrite.gm
        split = split_attention_regions(graph)
        for name in [*split.attention_submodules, *split.segment_submodules]:
            setattr(split.driver, name, CompiledRegion(getattr(split.driver, name), self.regions))
        return CompiledVariant(plan, split.driver, rewrite)

    def _fall_back(self, reason: str) -> ReductionPlan:
        self.fallback_reason = reason
        self.variants.clear()
        logger.warning("asymrnr: running this graph unreduced (plain Inductor): %s", reason)
        return ReductionPlan((), self.config.similarity, self.config.reduce_mode, self.config.match_chunk_bytes)

    # -- calling ----------------------------------------------------------------------------

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        timestep = read_timestep(args[self.timestep_position]) if self.timestep_position is not None else None
        event = self.tracker.observe(timestep)
        if event.new_video:
            self.cache.reset()
        plan = self.plan(event)
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
        variant = self.variants.get(plan)
        first_call = variant is None
        try:
            if variant is None:
                variant = self.variants[plan] = self._compile(plan)
            return self._run(variant, args, event, device)
        except Exception as error:  # never break the user's model because of a rewrite
            if not first_call:
                raise
            self.variants.pop(plan, None)
            plan = self._fall_back(f"{type(error).__name__}: {error}")
            variant = self.variants[plan] = self._compile_whole(plan, args)
            return self._run(variant, args, event, device)

    def _compile_whole(self, plan: ReductionPlan, args: Sequence[Any]) -> CompiledVariant:
        """The unchanged graph compiled in one piece (the fallback: plain Inductor)."""
        start = time.perf_counter()
        fn = self.compile_graph(self.gm, list(args))
        return CompiledVariant(plan, fn, None, time.perf_counter() - start)

    def _run(self, variant: CompiledVariant, args: Sequence[Any], event: StepEvent, device: torch.device) -> Any:
        extra = [self._extra_input(slot, variant.plan, event, device) for slot in variant.extra_inputs]
        compiled_before = self.regions.seconds
        outputs = variant.fn(*args, *extra)
        variant.compile_seconds += self.regions.seconds - compiled_before
        variant.calls += 1
        if variant.rewrite is None:
            return outputs
        window = self._window(event.step)
        original = variant.rewrite.num_original_outputs
        returned: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        for slot, tensor in zip(variant.extra_outputs, outputs[original:]):
            returned.setdefault((slot.site_index, slot.feature), {})[slot.field] = tensor
        for site_plan in variant.plan.sites:
            for feature, feature_plan in site_plan.items():
                if feature_plan.compute_matching:
                    key = (event.call_index, site_plan.site_index, feature)
                    self.cache.store(key, window, feature_plan.num_keep, returned[(site_plan.site_index, feature)])
                    if self.on_matching is not None:
                        self._report_matching(key, event, feature_plan.num_keep, device)
        computed = [p.compute_matching for site_plan in variant.plan.sites for _, p in site_plan.items()]
        self.cache.misses += sum(computed)
        self.cache.hits += len(computed) - sum(computed)
        if any(computed):
            self.matching_steps.append(event.step)
        return outputs[:original]

    def _report_matching(self, key: CacheKey, event: StepEvent, num_keep: int, device: torch.device) -> None:
        call_index, site_index, feature = key
        reduction = self.reduction_by_site[site_index]
        split = self._split(reduction.site, feature, reduction.grid, device, self._window(event.step))
        self.on_matching(MatchingRecord(event.step, call_index, reduction.site, feature, split,
                                        self.cache.indices(key, num_keep, split)))

    # -- reporting ----------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "sites": [
                self.reduction_by_site[site.index].to_dict() if site.index in self.reduction_by_site
                else site.to_dict()
                for site in self.sites
            ],
            "variants": [variant.describe() for variant in self.variants.values()],
            "compile_seconds": round(sum(v.compile_seconds for v in self.variants.values()), 3),
            "regions_compiled": len(self.regions.compiled),
            "regions_reused": self.regions.reused,
            "calls": self.calls,
            "steps": self.tracker.steps_seen,
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
            "timestep_input": self.timestep_position is not None,
            "fallback_reason": self.fallback_reason,
            "cost": self.cost.to_dict(),
            **({"schedule": self.schedule.to_dict()} if self.schedule is not None else {}),
        }
