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
import time
import warnings
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.fx

from asymrnr_compile import ops
from asymrnr_compile.analysis.cost import CostEstimate, GraphCostModel, estimate_cost
from asymrnr_compile.analysis.declared_layout import DeclaredLayout
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.config import AsymRnRConfig, AsymRnRWarning
from asymrnr_compile.passes.reduce_attention_tokens import RewriteResult, reduce_attention_tokens
from asymrnr_compile.plan.reduction_plan import CacheSlot, FeaturePlan, ReductionPlan, SitePlan
from asymrnr_compile.plan.seeds import site_seed
from asymrnr_compile.plan.select_sites import Grid, SiteReduction, unreduced_site_dict
from asymrnr_compile.runtime.compile_subgraphs import Compiler, SubgraphCompiler, compile_subgraphs
from asymrnr_compile.runtime.forward_context import current_forward
from asymrnr_compile.runtime.matching_cache import CacheKey, MatchingCache, MatchingRecord
from asymrnr_compile.runtime.steps import StepEvent, StepTracker, find_timestep_input, read_timestep
from asymrnr_compile.runtime.video_scope import current_video
from asymrnr_compile.vocabulary import Feature

if TYPE_CHECKING:
    from asymrnr_compile.plan.schedule_driver import ScheduleDriver

logger = logging.getLogger("asymrnr_compile")


@dataclass
class CompiledVariant:
    """One compiled version of the graph for one plan (a driver over compiled subgraphs)."""

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


@dataclass(eq=False)
class VideoState:
    """What one caller's sampling loop builds up: its steps, matchings and splits.

    Each thread calling a compiled model has its own (two threads sampling two videos through one
    model do not share steps or matchings); compiled variants are shared. Under regional
    compilation each block instance has its own too, named by ``site_offset``: the global index
    of its first attention call in the model call (0 for a whole-model graph), which the split
    seeds add to the graph's own site indices.
    """

    tracker: StepTracker = field(default_factory=StepTracker)
    cache: MatchingCache = field(default_factory=MatchingCache)
    splits: dict[tuple[int, Feature], tuple[int, ops.TokenSplit]] = field(default_factory=dict)
    # The steps of the current video at which a matching was computed.
    matching_steps: list[int] = field(default_factory=list)
    site_offset: int = 0

    def reset(self) -> None:
        """A new video: forget steps, matchings and splits."""
        self.tracker.reset()
        self.new_video()

    def new_video(self) -> None:
        self.cache.reset()
        self.splits.clear()
        self.matching_steps.clear()


class _HeldState(NamedTuple):
    """A video state and the parameter object (held weakly) of the model instance it belongs to;
    None: an unknown model."""

    weights: weakref.ref[torch.Tensor] | None
    state: VideoState


class VideoStates:
    """The video states of one sampling loop's callers: one :class:`VideoState` per calling
    thread, block instance (``offset``) and model instance (``weights``), all reachable for
    :meth:`reset` and reports.

    Model instances: Dynamo shares compiled code per code object, so a second model of the same
    class compiled with equal ``backend="asymrnr"`` options runs this graph too (its guards pass);
    its weights come in as other tensors. Keyed by them, each model keeps its own steps and
    matchings (Wan 2.2's ``transformer_2`` taking over mid-window computes its own matching
    instead of reusing the first transformer's).

    A runtime owns one; the runtimes of the graphs Dynamo compiles again for the same code (a
    recompile mid-video, after a guard failed) share it, so the new graph continues the video's
    steps and reuses its matchings instead of starting over at step 0.
    """

    def __init__(self) -> None:
        self._local = threading.local()
        self._all: weakref.WeakSet[VideoState] = weakref.WeakSet()
        self._lock = threading.Lock()

    def get(self, offset: int, weights: torch.Tensor | None = None) -> VideoState:
        """The calling thread's state of block instance ``offset`` of the model whose first lifted
        parameter is ``weights`` (:func:`weights_of`; None: unknown, one state for all; made on
        first use).

        A model instance is known by that parameter object, held weakly, so that two live models
        keep two states. A parameter object seen for the first time takes over the state at this
        block instance whose parameter is gone, if there is one: the same model whose parameters
        offloading hooks re-create for every call (accelerate's sequential offload), or a model
        loaded in place of a deleted one (whose first call, a timestep rise, starts a new video).
        Other states whose parameters are gone are dropped then.
        """
        states: dict[tuple[int, int], _HeldState] | None = getattr(self._local, "states", None)
        if states is None:
            states = self._local.states = {}
        key = (offset, 0 if weights is None else id(weights))
        entry = states.get(key)
        if entry is not None and (entry.weights is None or entry.weights() is weights):
            return entry.state
        state = None
        if weights is not None:
            # insertion order: the last one is the state most recently made or taken over
            gone = [k for k, held in states.items()
                    if k[0] == offset and held.weights is not None and held.weights() is None]
            if gone:
                state = states[gone[-1]].state
                for stale in gone:
                    del states[stale]
        if state is None:
            state = VideoState(site_offset=offset)
            with self._lock:
                self._all.add(state)
        states[key] = _HeldState(None if weights is None else weakref.ref(weights), state)
        return state

    def all(self) -> list[VideoState]:
        """Every live state, of every thread and block instance."""
        with self._lock:
            return list(self._all)

    def reset(self) -> None:
        """Start a new video: every state forgets its steps and cached matchings."""
        for state in self.all():
            state.reset()


#: Marks a lifted parameter's placeholder: Dynamo names it after the module path,
#: ``L_self_modules_<path>_parameters_<name>_``.
PARAMETER_PLACEHOLDER_MARK = "_parameters_"


def find_weights_input(gm: torch.fx.GraphModule) -> int | None:
    """Position among the graph's inputs of its first lifted parameter (the model's weights come
    in as inputs under Dynamo's ``inline_inbuilt_nn_modules``), or None (no lifted parameter:
    e.g. weights frozen into the graph)."""
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    for position, node in enumerate(placeholders):
        if PARAMETER_PLACEHOLDER_MARK in str(node.target) and isinstance(node.meta.get("example_value"), torch.Tensor):
            return position
    return None


def weights_of(args: Sequence[Any], position: int | None) -> torch.Tensor | None:
    """Which model instance makes this call: its first lifted parameter (two models of one class
    running one graph pass different parameter objects; known by identity, not by storage, so
    that tensor subclasses without storage, e.g. quantised weights, work too), None when
    unknown."""
    if position is None or position >= len(args) or not isinstance(args[position], torch.Tensor):
        return None
    return args[position]


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
        self._lock = threading.RLock()  # variants, counters
        self.calls = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.fallback_reason: str | None = None
        self.warned_warmup = False
        # The backend that made this runtime: kept alive as long as Dynamo keeps this graph.
        self.owner: object | None = None
        self.schedule = schedule
        self._drivers_by_steps: dict[int, ScheduleDriver] = {}  # per video step count declared by a scope
        self.scope_steps = 0  # the most steps of a video scope this graph ran up to (for the report)
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
        then read at the video's progress), else ``config.num_steps``."""
        config = self.config
        site_plans: list[SitePlan] = []
        schedule = self._schedule_for(num_steps)
        if self.fallback_reason is None and event.step >= config.warmup_steps:
            window = self._window(event.step)
            for reduction in self.reductions:
                features: dict[str, FeaturePlan] = {}
                keeps = reduction.num_keep if schedule is None else \
                    schedule.keeps(reduction, event.step, record=event.call_index == 0)
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

    def _schedule_for(self, num_steps: int | None) -> ScheduleDriver | None:
        """The schedule driver for a video of ``num_steps`` steps (None: the config's)."""
        if self.schedule is None or num_steps is None or num_steps == self.config.num_steps:
            return self.schedule
        with self._lock:
            driver = self._drivers_by_steps.get(num_steps)
            if driver is None:
                from asymrnr_compile.plan.schedule_driver import ScheduleDriver

                driver = self._drivers_by_steps[num_steps] = ScheduleDriver(self.config.schedule, self.sites,
                                                                            num_steps)
            return driver

    # -- compilation --------------------------------------------------------------------------

    def _split(self, site: AttentionSite, feature: Feature, grid: Grid | None, stride: tuple[int, int, int],
               device: torch.device, window: int) -> ops.TokenSplit:
        """The dst/src split of one (site, feature): one for the whole run, or with
        ``config.redraw_split`` one per matching window (only the current window's is kept)."""
        window = window if self.config.redraw_split else 0
        key = (site.index, feature)
        splits = self.state.splits
        held = splits.get(key)
        if held is None or held[0] != window:
            seed = site_seed(self.config.seed, self.state.site_offset + site.index, feature, window)
            held = splits[key] = (window, ops.split_tokens(site.video_tokens, grid, stride,
                                                                seed=seed, device=device))
        return held[1]

    def _window(self, step: int) -> int:
        """Index of the matching window holding denoising step ``step`` (after warm-up)."""
        return (step - self.config.warmup_steps) // self.config.cache_steps

    def _extra_input(self, slot: CacheSlot, plan: ReductionPlan, step: StepEvent,
                     device: torch.device) -> torch.Tensor:
        reduction = self.reduction_by_site[slot.site_index]
        split = self._split(reduction.site, slot.feature, reduction.grid, reduction.dst_stride, device,
                            self._window(step.step))
        if slot.field in ("dst", "src"):
            return getattr(split, slot.field)
        num_keep = plan.feature_plan(slot.site_index, slot.feature).num_keep
        indices = self.cache.indices((step.call_index, slot.site_index, slot.feature), num_keep, split)
        return getattr(indices, slot.field)

    def _compile(self, plan: ReductionPlan) -> CompiledVariant:
        """Rewrite for ``plan`` and split at attention calls; the subgraphs compile on their first call."""
        rewrite = None if plan.is_identity else reduce_attention_tokens(self.gm, self.sites, plan)
        graph = self.gm if rewrite is None else rewrite.gm
        return CompiledVariant(plan, compile_subgraphs(graph, self.subgraphs), rewrite)

    def _fall_back(self, reason: str) -> ReductionPlan:
        self.fallback_reason = reason
        self.variants.clear()
        logger.warning("asymrnr: running this graph unreduced (plain Inductor): %s", reason)
        return ReductionPlan.for_config(self.config)

    # -- calling ----------------------------------------------------------------------------

    def _call_context(self, args: Sequence[Any]) -> tuple[int, float | None, str | None]:
        """``(site offset, timestep, why this call runs unreduced or None)`` of one call: from
        the graph's own timestep input, or for a regional graph from the model call's context."""
        if not self.regional:
            position = self.timestep_position
            return 0, read_timestep(args[position]) if position is not None else None, None
        forward = current_forward()
        if forward is None:
            return 0, None, "called outside a call of the model its layout hook is on"
        offset = forward.claim_sites(len(self.sites))
        declared = self.declared_layout
        if declared is not None and forward.layout.grid != declared.grid:
            return offset, forward.timestep, (f"the model call's grid {forward.layout.grid} is not the grid "
                                              f"{declared.grid} this graph was analysed with")
        return offset, forward.timestep, None

    def _run_unreduced(self, reason: str) -> None:
        with self._lock:
            self.unreduced_calls[reason] = self.unreduced_calls.get(reason, 0) + 1
            first = self.unreduced_calls[reason] == 1
        if first:
            logger.warning("asymrnr: a regional graph runs unreduced: %s", reason)

    def __call__(self, *args: Any) -> Any:
        outputs = self._call(*args)
        if self.on_outputs is not None:
            self.on_outputs(outputs)
        return outputs

    def _call(self, *args: Any) -> Any:
        offset, timestep, unreduced = self._call_context(args)
        weights = weights_of(args, self.weights_position)
        scope = current_video()
        self.served_offsets.add(offset)
        if scope is not None:  # the video scope says which step, and holds this video's state
            state = self._local.state = scope.state_for(self, offset, weights, lambda: VideoState(site_offset=offset))
            own_count = state.tracker.observe(timestep).step  # only used when the scope cannot tell
            event = scope.event_for(self, offset, weights, timestep, own_count)
            with self._lock:  # steps reached in the video (a second expert joins at a later step)
                self.scope_steps = max(self.scope_steps, event.step + 1)
        else:  # no scope: steps and new videos guessed from the timestep (runtime/steps.py)
            state = self._local.state = self.video_states.get(offset, weights)
            event = state.tracker.observe(timestep)
            if event.new_video:
                state.new_video()
            elif state.tracker.extra_first_step_calls and event.call_index == 0 and event.step == 2:
                self._forget_warmup_call(state)
        if unreduced is None:
            plan = self.plan(event, None if scope is None else scope.num_steps)
        else:
            self._run_unreduced(unreduced)
            plan = ReductionPlan.for_config(self.config)
        device = next((a.device for a in args if isinstance(a, torch.Tensor)), torch.device("cpu"))
        with self._lock:  # one thread compiles a new variant; the others wait for it
            self.calls += 1
            variant = self.variants.get(plan)
            if variant is None:
                try:
                    variant = self.variants[plan] = self._compile(plan)
                    return self._run(variant, args, event, device)
                except Exception as error:  # never break the user's model because of a rewrite
                    self.variants.pop(plan, None)
                    plan = self._fall_back(f"{type(error).__name__}: {error}")
                    variant = self.variants[plan] = self._compile_whole(plan, args)
                    return self._run(variant, args, event, device)
        return self._run(variant, args, event, device)

    def _forget_warmup_call(self, state: VideoState) -> None:
        """The video's first step had more calls than its second: the extra ones (a warm-up call
        at the first timestep) were counted as part of the video, and steps since reused a
        matching computed on them. Recompute the matchings from this step on, and say how to
        avoid it."""
        first, second = state.tracker.first_step_calls[:2]
        state.cache.reset()
        if not self.warned_warmup:
            self.warned_warmup = True
            warnings.warn(
                f"asymrnr: the first step of this video had {first} call(s) at its timestep but the next step "
                f"had {second}: the extra call (a warm-up call at the first timestep?) was counted as part of "
                "the video and step 1 reused a matching computed on it; matchings are recomputed from step 2. "
                "Call backend.reset() (asymrnr_compile.last_backend().reset() with backend='asymrnr') after "
                "warming up, so that the video starts clean.", AsymRnRWarning, stacklevel=2)

    def _compile_whole(self, plan: ReductionPlan, args: Sequence[Any]) -> CompiledVariant:
        """The unchanged graph compiled in one piece (the fallback: plain Inductor)."""
        start = time.perf_counter()
        fn = self.compile_graph(self.gm, list(args))
        return CompiledVariant(plan, fn, None, time.perf_counter() - start)

    def _run(self, variant: CompiledVariant, args: Sequence[Any], event: StepEvent, device: torch.device) -> Any:
        extra = [self._extra_input(slot, variant.plan, event, device) for slot in variant.extra_inputs]
        compiled_before = self.subgraphs.seconds
        outputs = variant.fn(*args, *extra)
        variant.compile_seconds += self.subgraphs.seconds - compiled_before
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
                    self.cache.store(key, window, feature_plan.num_keep, returned[(site_plan.site_index, feature)],
                                     keep_matching=self.schedule is not None)
                    if self.on_matching is not None:
                        self._report_matching(key, event, feature_plan.num_keep, device)
        computed = [p.compute_matching for site_plan in variant.plan.sites for _, p in site_plan.items()]
        with self._lock:
            self.cache_misses += sum(computed)
            self.cache_hits += len(computed) - sum(computed)
        steps = self.state.matching_steps
        if any(computed) and (not steps or steps[-1] != event.step):
            steps.append(event.step)
        return outputs[:original]

    def _report_matching(self, key: CacheKey, event: StepEvent, num_keep: int, device: torch.device) -> None:
        call_index, site_index, feature = key
        reduction = self.reduction_by_site[site_index]
        split = self._split(reduction.site, feature, reduction.grid, reduction.dst_stride, device,
                            self._window(event.step))
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
            "steps": max([self.scope_steps, *(state.tracker.steps_seen for state in self.video_states.all())]),
            # block instances served (regional compilation; 1 for a whole-model graph)
            "instances": max(1, len(self.served_offsets)),
            "regional": self.regional,
            "unreduced_calls": dict(self.unreduced_calls),
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "timestep_input": self.timestep_position is not None,
            "fallback_reason": self.fallback_reason,
            "continues_earlier_compile": self.continues_earlier_compile,
            "cost": self.cost.to_dict(),
            **({"schedule": self.schedule.to_dict()} if self.schedule is not None else {}),
        }
