"""The callable the backend returns to Dynamo: step tracking, variant choice, matching cache.

One :class:`AsymRnRRuntime` exists per captured graph. On every call it

1. reads the timestep input and turns it into a denoising step
   (:class:`~asymrnr_compile.runtime.steps.StepTracker`, one per calling thread),
2. plans the reduction of that step (:class:`~asymrnr_compile.plan.reduction_plan.ReductionPlan`):
   per site and feature the kept token count, and whether the matching is computed now (first
   step of a ``cache_steps`` window) or reused from the
   :class:`~asymrnr_compile.runtime.matching_cache.MatchingCache`,
3. runs the variant of that plan, compiled subgraph by subgraph with Inductor
   (:mod:`~asymrnr_compile.runtime.compile_subgraphs`; lazily, once per distinct plan),
4. stores the matchings the variant returned and hands the model's own outputs back.

Its parts, by concern: the callers' video states (:mod:`~asymrnr_compile.runtime.video_state`)
and model instances (:mod:`~asymrnr_compile.runtime.model_instances`), per-call planning
(:mod:`~asymrnr_compile.runtime.plan_call`), the token splits and extra inputs
(:mod:`~asymrnr_compile.runtime.token_splits`), and the compiled variants and the fallback
(:mod:`~asymrnr_compile.runtime.variants`).

Under regional compilation (:mod:`asymrnr_compile.regional`) one runtime serves every block of
a repeated class: the step signal and the block instance come from the model call's
:class:`~asymrnr_compile.runtime.forward_context.ForwardContext`, and each block instance has its
own steps, matchings and splits, seeded with the global index its attention has under
whole-model compilation.

Nothing here triggers a Dynamo recompile: steps change which compiled variant runs, not the
Dynamo graph.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.fx

from asymrnr_compile.analysis.cost import CostEstimate, GraphCostModel, estimate_cost
from asymrnr_compile.analysis.declared_layout import DeclaredLayout
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.config import AsymRnRConfig, AsymRnRWarning
from asymrnr_compile.plan.reduction_plan import ReductionPlan
from asymrnr_compile.plan.select_sites import SiteReduction, unreduced_site_dict
from asymrnr_compile.reasons import Reason, ReasonKind, kind_of
from asymrnr_compile.runtime.compile_subgraphs import Compiler, SubgraphCompiler
from asymrnr_compile.runtime.forward_context import ForwardContext, current_forward
from asymrnr_compile.runtime.matching_cache import CacheKey, MatchingCache, MatchingRecord
from asymrnr_compile.runtime.model_instances import find_weights_input, weights_of
from asymrnr_compile.runtime.plan_call import ScheduleDrivers, matching_window, plan_call
from asymrnr_compile.runtime.steps import StepEvent, find_timestep_input, read_timestep
from asymrnr_compile.runtime.token_splits import draw_split, slot_input
from asymrnr_compile.runtime.variants import CompiledVariant, compile_unchanged, compile_variant
from asymrnr_compile.runtime.video_scope import current_video
from asymrnr_compile.runtime.video_state import RESET_VIDEO, VideoState, VideoStates

if TYPE_CHECKING:
    from asymrnr_compile.plan.schedule_driver import ScheduleDriver

logger = logging.getLogger("asymrnr_compile")

__all__ = ["AsymRnRRuntime", "CompiledVariant", "VideoState", "VideoStates"]


@dataclasses.dataclass(frozen=True)
class CallContext:
    """Where one call of a graph stands before it runs.

    Attributes:
        offset: the global index of the graph's first attention site in the model call (0 for a
            whole-model graph; under regional compilation, the block instance's place).
        timestep: the call's timestep, None where the graph has no timestep input.
        unreduced: why this call runs unreduced (a plain string or a :class:`Reason`), None to
            plan its reduction.
        forward: the model call's context (regional graphs only; None for a whole-model graph).
    """

    offset: int = 0
    timestep: float | None = None
    unreduced: str | None = None
    forward: ForwardContext | None = None


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
        regional: the graph was compiled inside a model call's
            :class:`~asymrnr_compile.runtime.forward_context.ForwardContext` (a block compiled
            alone, shared by the blocks of its class): steps, block instance and grid come from
            the context of each call; a call outside one runs unreduced. Default False.
        declared_layout: the layout the analysis was seeded with (regional graphs without a
            video source of their own); a call whose context declares another grid runs
            unreduced. Default None.
        video_states: the callers' steps and matchings, shared with the runtime of an earlier
            compile of the same code (a Dynamo recompile mid-video). Default None: its own.
    """

    def __init__(self, gm: torch.fx.GraphModule, sites: list[AttentionSite],
                 reductions: list[SiteReduction], config: AsymRnRConfig, compile_graph: Compiler,
                 schedule: ScheduleDriver | None = None,
                 on_matching: Callable[[MatchingRecord], None] | None = None, *,
                 regional: bool = False, declared_layout: DeclaredLayout | None = None,
                 video_states: VideoStates | None = None) -> None:
        self.gm = gm
        self.regional = regional
        # Called with the model outputs of every call (set by the backend: outputs that carry video
        # tokens into a graph compiled after a graph break); None: nothing to do.
        self.on_outputs: Callable[[Any], None] | None = None
        # Attention over video tokens that is not SDPA, left alone (set by the backend; for the report).
        self.other_attention: list[dict[str, Any]] = []
        self.declared_layout = declared_layout
        self.unreduced_calls: dict[str, int] = {}  # regional calls run unreduced, by reason
        self.on_matching = on_matching
        self.sites = sites
        self.reductions = reductions
        self.reduction_by_site = {r.site.index: r for r in reductions}
        self.config = config
        self.compile_graph = compile_graph
        self.timestep_position = find_timestep_input(gm, config.timestep_args)
        self.weights_position = find_weights_input(gm)
        self.variants: dict[ReductionPlan, CompiledVariant] = {}
        self.subgraphs = SubgraphCompiler(compile_graph)
        # Per calling thread, block instance and model instance, all reachable for reset() and reports.
        self.video_states = video_states if video_states is not None else VideoStates()
        self.continues_earlier_compile = video_states is not None
        self._local = threading.local()  # the calling thread's video state (its last call's)
        self.served_offsets: set[int] = set()  # block instances this graph ran (regional)
        self.skipped_offsets: set[int] = set()  # of those, the ones run unreduced by choice (skip_blocks)
        self._lock = threading.RLock()  # variants, counters
        self.calls = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.matching_calls = 0  # calls that computed a matching (of any site and feature)
        self.fallback_reason: str | None = None
        self.warned_warmup = False
        # The backend that made this runtime: kept alive as long as Dynamo keeps this graph.
        self.owner: object | None = None
        self.schedule = schedule
        self.schedule_drivers = ScheduleDrivers(config, sites, schedule)  # per video step count of a scope
        self.scope_steps = 0  # the most steps of a video scope this graph ran up to (for the report)
        # regional graphs outside a scope: steps of the model's calls run, over every video (for the report)
        self.model_steps = 0
        self._last_model_step: tuple[int | None, int] | None = None
        hidden_matched = {r.site.index for r in reductions if r.site.matches_on_hidden_states(config.match_on)}
        if schedule is None:
            self.cost: CostEstimate = estimate_cost(
                gm, {r.site: {f: (r.num_dst[f], r.num_keep[f]) for f in r.num_keep} for r in reductions},
                config.cache_steps, config.match_dims, hidden_matched,
            )
        else:  # mean over the scheduled steps
            self.cost = GraphCostModel(gm, sites).schedule_estimate(
                schedule.kept_per_step(reductions), config.cache_steps, config.match_dims, hidden_matched)

    def reset(self) -> None:
        """Start a new video: every calling thread forgets its steps and cached matchings."""
        self.video_states.reset()

    @property
    def state(self) -> VideoState:
        """The calling thread's video state: that of the block instance and model instance its
        current (or last) call of this graph runs (a whole-model graph has one block instance,
        offset 0); before its first call, that of block instance 0 of an unknown model."""
        state = getattr(self._local, "state", None)
        return state if state is not None else self.video_states.get(0)

    @property
    def cache(self) -> MatchingCache:
        """The calling thread's matching cache."""
        return self.state.cache

    @property
    def matching_steps(self) -> list[int]:
        """The steps of the calling thread's current video at which a matching was computed."""
        return self.state.matching_steps

    # -- planning ---------------------------------------------------------------------------

    def plan(self, event: StepEvent, num_steps: int | None = None) -> ReductionPlan:
        """The reduction plan of one call (empty during warm-up or after a fallback);
        ``num_steps``: the video's step count where a video scope declares it (a schedule is
        then read at the video's progress), else ``config.num_steps``
        (:func:`~asymrnr_compile.runtime.plan_call.plan_call`)."""
        schedule = self.schedule_drivers.for_steps(num_steps)
        if self.fallback_reason is not None:
            return ReductionPlan.for_config(self.config)
        return plan_call(self.config, self.reductions, event, self.cache, schedule)

    # -- compilation --------------------------------------------------------------------------

    def _fall_back(self, reason: str) -> ReductionPlan:
        self.fallback_reason = reason
        self.variants.clear()
        logger.warning("asymrnr: running this graph unreduced (plain Inductor): %s", reason)
        return ReductionPlan.for_config(self.config)

    # -- calling ----------------------------------------------------------------------------

    def _call_context(self, args: Sequence[Any]) -> CallContext:
        """Where one call stands: from the graph's own timestep input, or for a regional graph from
        the model call's context."""
        if not self.regional:
            position = self.timestep_position
            return CallContext(timestep=read_timestep(args[position]) if position is not None else None)
        forward = current_forward()
        if forward is None:
            return CallContext(unreduced="called outside a call of the model its layout hook is on")
        offset = forward.claim_sites(len(self.sites))
        if self.config.skip_blocks and forward.block is not None and forward.block.is_in(self.config.skip_blocks):
            return CallContext(offset, forward.timestep, Reason(f"block {forward.block.path!r} is in skip_blocks",
                                                                ReasonKind.CHOSEN), forward)
        declared = self.declared_layout
        if declared is not None and forward.layout.grid != declared.grid:
            return CallContext(offset, forward.timestep, f"the model call's grid {forward.layout.grid} is not the "
                                                         f"grid {declared.grid} this graph was analysed with", forward)
        return CallContext(offset, forward.timestep, None, forward)

    def _run_unreduced(self, reason: str) -> None:
        with self._lock:
            self.unreduced_calls[reason] = self.unreduced_calls.get(reason, 0) + 1
            first = self.unreduced_calls[reason] == 1
        if first and kind_of(reason) is not ReasonKind.CHOSEN:
            logger.warning("asymrnr: a regional graph runs unreduced: %s", reason)

    def __call__(self, *args: Any) -> Any:
        outputs = self._call(*args)
        if self.on_outputs is not None:
            self.on_outputs(outputs)
        return outputs

    def _call(self, *args: Any) -> Any:
        context = self._call_context(args)
        offset, forward = context.offset, context.forward
        weights = weights_of(args, self.weights_position)
        scope = current_video()
        self.served_offsets.add(offset)
        if scope is not None:  # the video scope says which step, and holds this video's state
            # keyed by the video states this graph shares with its recompiles and, under regional
            # compilation, with the other graphs of its block instances (a block whose hooks break
            # it into graphs, or recompile it at a cached step, continues its matchings)
            state = self._local.state = scope.state_for(self.video_states, offset, weights,
                                                        lambda: VideoState(site_offset=offset))
            own_count = state.tracker.observe(context.timestep).step  # only used when the scope cannot tell
            event = scope.event_for(self.video_states, offset, weights, context.timestep, own_count)
            with self._lock:  # steps reached in the video (a second expert joins at a later step)
                self.scope_steps = max(self.scope_steps, event.step + 1)
        elif forward is not None and forward.event is not None:
            # regional, no scope: the model call's step, counted by the layout hook over every model
            # call, so that steps at which a step cache skipped this block keep their place
            state = self._local.state = self.video_states.get(offset, weights)
            if state.video == RESET_VIDEO and not forward.event.new_video and forward.restart is not None:
                forward.restart()  # backend.reset(): this call starts a new video (and the model's count)
            event = forward.event
            first_calls = forward.first_step_calls
            if state.video != forward.video:
                state.new_video()
                state.video = forward.video
            elif len(first_calls) == 2 and first_calls[0] > first_calls[1] and event.call_index == 0 \
                    and event.step >= 2 and not state.forgot_warmup_call:
                state.forgot_warmup_call = True
                self._forget_warmup_call(state, first_calls)
            with self._lock:  # steps of the model's calls this graph ran in, over every video (for the report)
                if self._last_model_step != (forward.video, event.step):
                    self._last_model_step = (forward.video, event.step)
                    self.model_steps += 1
        else:  # no scope: steps and new videos guessed from the timestep (runtime/steps.py)
            state = self._local.state = self.video_states.get(offset, weights)
            event = state.tracker.observe(context.timestep)
            if event.new_video:
                state.new_video()
            elif state.tracker.extra_first_step_calls and event.call_index == 0 and event.step == 2:
                self._forget_warmup_call(state)
        if context.unreduced is None:
            plan = self.plan(event, None if scope is None else scope.num_steps)
        else:
            if kind_of(context.unreduced) is ReasonKind.CHOSEN:
                self.skipped_offsets.add(offset)
            self._run_unreduced(context.unreduced)
            plan = ReductionPlan.for_config(self.config)
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
        with self._lock:  # one thread compiles a new variant; the others wait for it
            self.calls += 1
            variant = self.variants.get(plan)
            if variant is None:
                try:
                    variant = self.variants[plan] = compile_variant(self.gm, self.sites, plan, self.subgraphs)
                    return self._run(variant, args, event, device)
                except Exception as error:  # never break the user's model because of a rewrite
                    self.variants.pop(plan, None)
                    plan = self._fall_back(f"{type(error).__name__}: {error}")
                    variant = self.variants[plan] = compile_unchanged(self.gm, plan, args, self.compile_graph)
                    return self._run(variant, args, event, device)
        return self._run(variant, args, event, device)

    def _forget_warmup_call(self, state: VideoState, first_step_calls: tuple[int, ...] | None = None) -> None:
        """The video's first step had more calls than its second: the extra ones (a warm-up call
        at the first timestep) were counted as part of the video, and steps since reused a
        matching computed on them. Recompute the matchings from this step on, and say how to
        avoid it. ``first_step_calls``: the calls of the video's first two steps where the model
        call's context counted them (regional compilation); None: from ``state``'s own tracker."""
        first, second = (state.tracker.first_step_calls if first_step_calls is None else first_step_calls)[:2]
        state.cache.reset()
        if not self.warned_warmup:
            self.warned_warmup = True
            warnings.warn(
                f"asymrnr: the first step of this video had {first} call(s) at its timestep but the next step "
                f"had {second}: the extra call (a warm-up call at the first timestep?) was counted as part of "
                "the video and step 1 reused a matching computed on it; matchings are recomputed from step 2. "
                "Call backend.reset() (asymrnr_compile.last_backend().reset() with backend='asymrnr') after "
                "warming up, so that the video starts clean.", AsymRnRWarning, stacklevel=2)

    def _run(self, variant: CompiledVariant, args: Sequence[Any], event: StepEvent, device: torch.device) -> Any:
        state = self.state
        extra = [slot_input(slot, self.reduction_by_site[slot.site_index], variant.plan, event, state, self.config,
                            device) for slot in variant.extra_inputs]
        compiled_before = self.subgraphs.seconds
        outputs = variant.fn(*args, *extra)
        variant.compile_seconds += self.subgraphs.seconds - compiled_before
        variant.calls += 1
        if variant.rewrite is None:
            return outputs
        window = matching_window(self.config, event.step)
        original = variant.rewrite.num_original_outputs
        returned: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        for slot, tensor in zip(variant.extra_outputs, outputs[original:]):
            returned.setdefault((slot.site_index, slot.feature), {})[slot.field] = tensor
        for site_plan in variant.plan.sites:
            for feature, feature_plan in site_plan.items():
                if feature_plan.compute_matching:
                    key = (event.call_index, site_plan.site_index, feature)
                    self.cache.store(key, window, feature_plan.num_keep, returned[(site_plan.site_index, feature)],
                                     keep_matching=self.schedule is not None)
                    if self.on_matching is not None:
                        self._report_matching(key, event, feature_plan.num_keep, device)
        computed = [p.compute_matching for site_plan in variant.plan.sites for _, p in site_plan.items()]
        with self._lock:
            self.cache_misses += sum(computed)
            self.cache_hits += len(computed) - sum(computed)
            self.matching_calls += any(computed)
        steps = self.state.matching_steps
        if any(computed) and (not steps or steps[-1] != event.step):
            steps.append(event.step)
        return outputs[:original]

    def _report_matching(self, key: CacheKey, event: StepEvent, num_keep: int, device: torch.device) -> None:
        call_index, site_index, feature = key
        reduction = self.reduction_by_site[site_index]
        split = draw_split(self.state, self.config, reduction, feature, device, event.step)
        site = reduction.site
        offset = self.state.site_offset
        if offset:  # a block instance under regional compilation: the site's whole-model index
            site = dataclasses.replace(site, index=offset + site.index)
        self.on_matching(MatchingRecord(event.step, call_index, site, feature, split,
                                        self.cache.indices(key, num_keep, split)))

    # -- reporting ----------------------------------------------------------------------------

    @property
    def rewritten_sites(self) -> set[int]:
        """Indices of the sites some compiled variant really rewrote (empty after a fallback): the
        proof of reduction that a report's planned ``applied`` entries alone are not."""
        if self.fallback_reason is not None:
            return set()
        return {index for variant in self.variants.values() if variant.rewrite is not None
                for index in variant.rewrite.rewritten_sites}

    def _cost_per_model_call(self) -> dict[str, float]:
        """The cost estimate of this graph's calls in one model call: one call for a whole-model
        graph; under regional compilation one per block instance served, those in ``skip_blocks``
        at their full cost."""
        if not self.regional:
            return self.cost.to_dict()
        instances = max(1, len(self.served_offsets))
        skipped = len(self.skipped_offsets)
        full = self.cost.full_flops * instances
        reduced = self.cost.reduced_flops * (instances - skipped) + self.cost.full_flops * skipped
        return CostEstimate(full, reduced, self.cost.attention_flops * instances).to_dict()

    def to_dict(self) -> dict[str, Any]:
        return {
            "sites": [
                self.reduction_by_site[site.index].to_dict() if site.index in self.reduction_by_site
                else unreduced_site_dict(site, self.config)
                for site in self.sites
            ],
            "other_attention": self.other_attention,
            "variants": [variant.describe() for variant in self.variants.values()],
            "compile_seconds": round(sum(v.compile_seconds for v in self.variants.values()), 3),
            "subgraphs_compiled": len(self.subgraphs.compiled),
            "subgraphs_reused": self.subgraphs.reused,
            "calls": self.calls,
            # steps of the longest video: in a video scope, or (outside one) counted from timesteps
            "steps": max([self.scope_steps, self.model_steps,
                          *(state.tracker.steps_seen for state in self.video_states.all())]),
            # block instances served (regional compilation; 1 for a whole-model graph)
            "instances": max(1, len(self.served_offsets)),
            # of those, the ones in skip_blocks, run unreduced (regional compilation)
            "skipped_instances": len(self.skipped_offsets),
            "regional": self.regional,
            "unreduced_calls": dict(self.unreduced_calls),
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "matching_calls": self.matching_calls,
            "timestep_input": self.timestep_position is not None,
            "fallback_reason": self.fallback_reason,
            "continues_earlier_compile": self.continues_earlier_compile,
            "cost": self._cost_per_model_call(),
            "cost_per_call": self.cost.to_dict(),  # one call of this graph, reduced as configured
            **({"schedule": self.schedule.to_dict()} if self.schedule is not None else {}),
        }
