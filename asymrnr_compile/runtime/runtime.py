"""The callable the backend returns to Dynamo: step tracking, variant choice, matching cache.

One :class:`AsymRnRRuntime` exists per captured graph. On every call it

1. reads the timestep input and turns it into a denoising step
   (:class:`~asymrnr_compile.runtime.steps.StepSignal`),
2. plans the reduction of that step (:class:`~asymrnr_compile.plan.reduction_plan.ReductionPlan`):
   per site and feature the kept token count, and whether the matching is computed now (first
   step of a ``cache_steps`` window) or reused from the
   :class:`~asymrnr_compile.runtime.matching_cache.MatchingCache`,
3. runs the variant of that plan, compiled region by region with Inductor
   (:mod:`~asymrnr_compile.runtime.regions`; lazily, once per distinct plan),
4. stores the matchings the variant returned and hands the model's own outputs back.

Nothing here triggers a Dynamo recompile: steps change which compiled variant runs, not the
Dynamo graph.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.fx

from asymrnr_compile import ops
from asymrnr_compile.analysis.cost import CostEstimate, GraphCostModel, estimate_cost
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.passes.reduce_attention_tokens import RewriteResult, reduce_attention_tokens
from asymrnr_compile.plan.features import Feature
from asymrnr_compile.plan.reduction_plan import CacheSlot, FeaturePlan, ReductionPlan, SitePlan
from asymrnr_compile.plan.seeds import site_seed
from asymrnr_compile.plan.select_sites import Grid, SiteReduction
from asymrnr_compile.runtime.matching_cache import CacheKey, MatchingCache, MatchingRecord
from asymrnr_compile.runtime.regions import Compiler, RegionCompiler, compile_regions
from asymrnr_compile.runtime.steps import StepEvent, StepSignal

if TYPE_CHECKING:
    from asymrnr_compile.plan.schedule_driver import ScheduleDriver

logger = logging.getLogger("asymrnr_compile")


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


class AsymRnRRuntime:
    """Runs one captured graph with per-step token reduction (see module docstring).

    Args:
        gm: the Dynamo graph.
        sites: its attention sites (analysis), all of them; ``reductions`` picks the active ones.
        reductions: per active site what to reduce (built by the backend from the config).
        config: the backend configuration.
        compile_graph: compiles a graph module for given example inputs (``compile_fx``).
        schedule: per-step kept tokens when the config has a schedule
            (:class:`~asymrnr_compile.plan.schedule_driver.ScheduleDriver`), else None (fixed
            ratios).
        on_matching: called with a :class:`MatchingRecord` for every matching a call computes
            (not for reused ones); for inspection, e.g. which tokens a block drops.
    """

    def __init__(self, gm: torch.fx.GraphModule, sites: list[AttentionSite],
                 reductions: list[SiteReduction], config: AsymRnRConfig, compile_graph: Compiler,
                 schedule: ScheduleDriver | None = None,
                 on_matching: Callable[[MatchingRecord], None] | None = None) -> None:
        self.gm = gm
        self.on_matching = on_matching
        self.sites = sites
        self.reductions = reductions
        self.reduction_by_site = {r.site.index: r for r in reductions}
        self.config = config
        self.compile_graph = compile_graph
        self.steps = StepSignal(gm)
        self.cache = MatchingCache()
        self.variants: dict[ReductionPlan, CompiledVariant] = {}
        self.regions = RegionCompiler(compile_graph)
        self.splits: dict[tuple[int, Feature], tuple[int, ops.TokenSplit]] = {}  # -> (window, split)
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
        self.steps.tracker.reset()
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
        return ReductionPlan.for_config(config, tuple(site_plans))

    # -- compilation --------------------------------------------------------------------------

    def _split(self, site: AttentionSite, feature: Feature, grid: Grid | None, device: torch.device,
               window: int) -> ops.TokenSplit:
        """The dst/src split of one (site, feature): one for the whole run, or with
        ``config.redraw_split`` one per matching window (only the current window's is kept)."""
        window = window if self.config.redraw_split else 0
        key = (site.index, feature)
        held = self.splits.get(key)
        if held is None or held[0] != window:
            seed = site_seed(self.config.seed, site.index, feature, window)
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
        return CompiledVariant(plan, compile_regions(graph, self.regions), rewrite)

    def _fall_back(self, reason: str) -> ReductionPlan:
        self.fallback_reason = reason
        self.variants.clear()
        logger.warning("asymrnr: running this graph unreduced (plain Inductor): %s", reason)
        return ReductionPlan.for_config(self.config)

    # -- calling ----------------------------------------------------------------------------

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        event = self.steps.observe(args)
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
            "steps": self.steps.tracker.steps_seen,
            "cache_hits": self.cache.hits,
            "cache_misses": self.cache.misses,
            "timestep_input": self.steps.has_timestep,
            "fallback_reason": self.fallback_reason,
            "cost": self.cost.to_dict(),
            **({"schedule": self.schedule.to_dict()} if self.schedule is not None else {}),
        }
