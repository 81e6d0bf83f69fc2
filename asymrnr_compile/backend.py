"""The ``torch.compile`` backend: analysis -> plan -> rewrite -> Inductor.

Two ways to use it::

    # 1. by name (registered through the ``torch_dynamo_backends`` entry point; no import needed)
    compiled = torch.compile(model, backend="asymrnr", options={"q_ratio": 0.5, "kv_ratio": 0.3})
    asymrnr_compile.last_backend().report()        # the report of the string form

    # 2. as an object, to keep a handle on its report and state
    backend = asymrnr_compile.AsymRnRBackend(asymrnr_compile.AsymRnRConfig(q_ratio=0.5))
    compiled = torch.compile(model, backend=backend)
    backend.report().to_dict(); backend.reset()    # new video: forget cached matchings

Per captured graph, the backend finds the attention sites
(:func:`asymrnr_compile.analysis.find_attention_sites`), decides which sites and features to reduce
and how many tokens to keep (:func:`asymrnr_compile.plan.select_sites.plan_site_reduction`), and
returns an :class:`~asymrnr_compile.runtime.AsymRnRRuntime` that compiles one Inductor variant per
distinct step plan. A graph with nothing to reduce, or
one the backend cannot handle, is compiled unchanged by Inductor, with the reason logged and
reported.

A graph compiled inside a model call's
:class:`~asymrnr_compile.runtime.forward_context.ForwardContext` (regional compilation through
:func:`asymrnr_compile.regional.compile_repeated_blocks`: a transformer block compiled alone) has
no video source of its own; its inputs are seeded with the grid the context declares
(:mod:`asymrnr_compile.analysis.declared_layout`) and its runtime reads steps and the block
instance from the context of each call.

This module must not call ``torch._dynamo.register_backend("asymrnr")``: the entry point
registers it, and a second registration raises "duplicate name".
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from types import CodeType
from typing import Any

import torch
import torch.fx
from torch._dynamo.exc import RestartAnalysis

from asymrnr_compile.analysis.cost import CostEstimate, graph_flops, ideal_speedup
from asymrnr_compile.analysis.declared_layout import DeclaredLayout, declared_layout_seeds
from asymrnr_compile.analysis.find_sites import analyse_graph
from asymrnr_compile.analysis.fx_nodes import op_name
from asymrnr_compile.analysis.graph_outputs import handed_off_seeds, video_output_layouts
from asymrnr_compile.analysis.other_attention import OtherAttention
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.config import AsymRnRConfig, AsymRnRWarning
from asymrnr_compile.passes.decompose_multi_head_attention import (
    decompose_multi_head_attention,
    is_multi_head_attention,
)
from asymrnr_compile.plan.schedule_driver import ScheduleDriver, ScheduleMismatchError
from asymrnr_compile.plan.select_sites import SiteReduction, plan_site_reduction, unreduced_site_dict
from asymrnr_compile.reasons import DYNAMIC_FALSE_FIX, GENERIC_FIX, Reason, ReasonKind, fix_of, kind_of, prefixed
from asymrnr_compile.runtime import AsymRnRRuntime, MatchingRecord
from asymrnr_compile.runtime.compile_subgraphs import Compiler, inductor_compiler, mode_uses_cudagraphs
from asymrnr_compile.runtime.forward_context import ClaimSites, ForwardContext, current_forward
from asymrnr_compile.runtime.layout_handoff import LayoutHandoff
from asymrnr_compile.runtime.runtime import VideoStates
from asymrnr_compile.runtime.steps import constant_timestep_argument, find_timestep_input
from asymrnr_compile.runtime.video_scope import VideoScope, video
from asymrnr_compile.vocabulary import FEATURES

logger = logging.getLogger("asymrnr_compile")


def _has_symbolic_shapes(gm: torch.fx.GraphModule) -> bool:
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        value = node.meta.get("example_value")
        if isinstance(value, torch.SymInt):
            return True
        if isinstance(value, torch.Tensor) and any(isinstance(s, torch.SymInt) for s in value.shape):
            return True
    return False


@dataclass
class _PlainGraph:
    """A graph compiled unchanged, kept for the report."""

    sites: list[AttentionSite]
    reason: str
    compile_seconds: float
    cost: CostEstimate
    config: AsymRnRConfig
    other_attention: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"sites": [unreduced_site_dict(site, self.config, self.reason) for site in self.sites],
                "other_attention": self.other_attention, "variants": [],
                "compile_seconds": round(self.compile_seconds, 3), "fallback_reason": str(self.reason),
                "cost": self.cost.to_dict()}


@dataclass
class AsymRnRReport:
    """What the backend did: per captured graph its sites, variants, calls, steps and cache use.

    ``str(report)`` / :meth:`summary` is a few readable lines; :meth:`to_dict` has everything.
    """

    config: AsymRnRConfig
    graphs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ideal_speedup(self) -> float:
        """FLOPs of all graphs unreduced over reduced (steady state, after warm-up)."""
        full = sum(g["cost"]["full_gflops"] for g in self.graphs)
        reduced = sum(g["cost"]["reduced_gflops"] for g in self.graphs)
        return ideal_speedup(full, reduced)

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "ideal_speedup": self.ideal_speedup,
            "graphs": self.graphs,
            "num_variants": sum(len(g.get("variants", [])) for g in self.graphs),
            "compile_seconds": round(sum(g.get("compile_seconds", 0.0) for g in self.graphs), 3),
            "calls": sum(g.get("calls", 0) for g in self.graphs),
            "steps": max((g.get("steps", 0) for g in self.graphs), default=0),
            "cache_hits": sum(g.get("cache_hits", 0) for g in self.graphs),
            "cache_misses": sum(g.get("cache_misses", 0) for g in self.graphs),
        }

    def summary(self) -> str:
        """A few lines: sites reduced and their kept tokens, steps, calls, matchings computed and
        reused, compiled variants, the predicted (ideal) speedup, and why a graph was left alone."""
        data = self.to_dict()
        sites = [site for graph in self.graphs for site in graph.get("sites", [])]
        reduced = [site for site in sites if site.get("applied")]
        # a regional graph's sites run once per block instance it serves
        count = sum(len(graph.get("sites", [])) * graph.get("instances", 1) for graph in self.graphs)
        count_reduced = sum(sum(1 for site in graph.get("sites", []) if site.get("applied")) * graph.get("instances", 1)
                            for graph in self.graphs)
        regional = [graph.get("instances", 1) for graph in self.graphs if graph.get("regional")]
        served = f" ({sum(regional)} block instances)" if regional else ""
        lines = [f"asymrnr: {count_reduced} of {count} attention sites reduced in {len(self.graphs)} graph(s){served}; "
                 f"predicted speedup {self.ideal_speedup:.2f}x (FLOP ratio, matching counted)"]
        kept = sorted({(feature, applied["kept_tokens"], applied["video_tokens"])
                       for site in reduced for feature, applied in site["applied"].items()})
        if kept:
            lines.append("  kept tokens: " + ", ".join(f"{feature} {keep} of {total}" for feature, keep, total in kept))
        lines.append(f"  {data['steps']} steps, {data['calls']} calls; matchings {data['cache_misses']} computed, "
                     f"{data['cache_hits']} reused; {data['num_variants']} compiled variants "
                     f"({data['compile_seconds']:.1f} s compiling)")
        for graph in self.graphs:
            if graph.get("fallback_reason"):
                lines.append(f"  a graph runs unreduced: {graph['fallback_reason']}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()


#: A graph whose attention is written out by hand (matmul, softmax, matmul).
WITHOUT_SDPA = Reason("attention is computed without scaled_dot_product_attention",
                      fix="compute attention with torch.nn.functional.scaled_dot_product_attention")
#: A block graph under regional compilation without the hook that declares the grid.
REGIONAL_HOOK_FIX = ("compile the repeated blocks with asymrnr_compile.compile_repeated_blocks(model, "
                     "options=...), which tells each block graph the video grid and the step")


def _first_fix(reasons: Sequence[str]) -> str | None:
    """The fix of the first reason that has one."""
    return next((fix for fix in map(fix_of, reasons) if fix), None)


class AsymRnRBackend:
    """A ``torch.compile`` backend object holding one configuration and its state.

    Args:
        config: the settings; or pass them as keyword options (``AsymRnRBackend(q_ratio=0.5)``).
        on_matching: optional observer, called with a
            :class:`~asymrnr_compile.runtime.matching_cache.MatchingRecord` for every matching
            computed (which tokens each site keeps and which token stands for each dropped one).
            Default None.

    Call signature (Dynamo's): ``backend(gm, example_inputs, options=None, mode=None)``.
    ``mode`` (e.g. ``"max-autotune"``) is forwarded to Inductor for this compilation only.

    A model that gets no reduction although it has attention (symbolic shapes, every site too
    small, attention not computed with ``scaled_dot_product_attention``...) still runs, compiled
    by Inductor, and the backend says so once with an :class:`~asymrnr_compile.config.AsymRnRWarning`
    naming the reason and the fix. So does a timestep passed as a Python number.
    """

    def __init__(self, config: AsymRnRConfig | None = None, *,
                 on_matching: Callable[[MatchingRecord], None] | None = None, **options: Any) -> None:
        if on_matching is not None and not callable(on_matching):
            raise TypeError(f"on_matching must be callable, got {type(on_matching).__name__}")
        self.on_matching = on_matching
        if config is not None and options:
            raise ValueError("pass either an AsymRnRConfig or keyword options, not both")
        self.config = config if config is not None else AsymRnRConfig.from_options(options)
        if not isinstance(self.config, AsymRnRConfig):
            raise TypeError(f"config must be an AsymRnRConfig, got {type(self.config).__name__}")
        self.graphs: list[AsymRnRRuntime | _PlainGraph] = []
        # Steps and matchings (outside a video scope) per compiled code object, then shapes and sites,
        # shared by Dynamo's recompiles of that code; code objects held weakly.
        self._video_states: weakref.WeakKeyDictionary[CodeType, dict[tuple[Any, ...], VideoStates]] = \
            weakref.WeakKeyDictionary()
        self._warned: set[str] = set()
        # Outputs that carry video tokens into graphs compiled after a graph break.
        self._handoff = LayoutHandoff()
        # The string form's options object (its id keys the backend in asymrnr()), else None.
        self.options: Mapping[str, Any] | None = None

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any],
                 options: Mapping[str, Any] | None = None, mode: str | None = None) -> Callable[..., Any]:
        if options and AsymRnRConfig.from_options(options) != self.config:
            raise ValueError("this AsymRnRBackend already has a config; do not also pass torch.compile(options=...)")
        left_alone: list[str] = []
        if any(is_multi_head_attention(node) for node in gm.graph.nodes):  # copy the graph only then
            decomposition = decompose_multi_head_attention(gm)  # nn.MultiheadAttention -> SDPA; never raises
            left_alone = decomposition.left_alone
            for reason in left_alone:
                logger.info("asymrnr: nn.MultiheadAttention left as is: %s", reason)
            if decomposition.decomposed:
                gm = decomposition.gm
        compile_graph = inductor_compiler(gm, mode)
        forward = current_forward()  # set while a model call runs under the regional layout hook
        if forward is None:
            self._check_step_signal(gm)
        video_outputs: dict[int, Any] = {}
        others: list[OtherAttention] = []
        try:
            analysis = analyse_graph(gm)
            sites = analysis.sites
            reasons: list[str] = []
            declared = None
            if forward is None and sites and not any(site.video_tokens for site in sites):
                # after a graph break: the video tokens may come from an earlier graph's outputs (under
                # regional compilation the model call declares the grid instead, checked on every call)
                handed = handed_off_seeds(gm, example_inputs, self._handoff.layout_of)
                if handed.seeds:
                    analysis = analyse_graph(gm, seeds=handed.seeds)
                    sites = analysis.sites
            # (a regional graph's inputs come from the model call's declared grid: nothing to hand off)
            video_outputs = video_output_layouts(gm, analysis.layouts) if forward is None else {}
            others = analysis.other_attention
            for other in others:
                self._warn_once(f"other attention: {other.kind}", f"asymrnr: {other.name}: {other.reason}.")
            if sites and not any(site.video_tokens for site in sites):
                sites, declared, why = self._declared_sites(gm, sites, forward)
                if why:
                    reasons.append(why)
            if forward is not None and any(site.video_tokens for site in sites) and \
                    (refusal := _regional_refusal(self.config)):
                return self._plain(gm, example_inputs, sites, compile_graph, refusal, video_outputs=video_outputs,
                                   others=others)
            driver = None if self.config.schedule is None else \
                ScheduleDriver(self.config.schedule, sites, self.config.num_steps)
            if _has_symbolic_shapes(gm):
                return self._plain(gm, example_inputs, sites, compile_graph,
                                   Reason("graph has symbolic (dynamic) shapes; compile with dynamic=False to reduce",
                                          fix=DYNAMIC_FALSE_FIX),
                                   video_outputs=video_outputs, others=others)
            reductions: list[SiteReduction] = []
            site_reasons: list[str] = []  # per site; "" where reduced
            for site in sites:
                planned = plan_site_reduction(site, self.config, driver)
                site_reasons.append(planned if isinstance(planned, str) else "")
                if isinstance(planned, str):
                    reasons.append(prefixed(f"{site.name}: ", planned))
                else:
                    reductions.append(planned)
            if not reductions:
                if not sites and _computes_attention_by_hand(gm):
                    reason = Reason(WITHOUT_SDPA + (f" ({'; '.join(left_alone)})" if left_alone else ""),
                                    fix=_first_fix([*left_alone, WITHOUT_SDPA]))
                    return self._plain(gm, example_inputs, sites, compile_graph, reason, video_outputs=video_outputs,
                                       others=others, has_attention=True)
                # Warn only when a video site is left alone for a reason the user did not choose
                # (all ratios 0 is a choice; text-only sites have nothing to reduce).
                nothing_asked = driver is None and not any(self.config.ratio(f) for f in FEATURES)
                regional_hint = any(kind_of(reason) is ReasonKind.NEEDS_REGIONAL_HOOK for reason in reasons)
                chosen = nothing_asked or (not regional_hint and all(
                    not site.video_tokens or kind_of(reason) is ReasonKind.CHOSEN
                    for site, reason in zip(sites, site_reasons)))
                reason = Reason("no attention site to reduce" + (f" ({'; '.join(reasons)})" if reasons else ""),
                                fix=_first_fix(reasons))
                return self._plain(gm, example_inputs, sites, compile_graph, reason, warn=not chosen,
                                   video_outputs=video_outputs, others=others)
            # Some sites reduced: a video site left alone for a reason the user did not choose still says so.
            for site, site_reason in zip(sites, site_reasons):
                if site_reason and site.video_tokens and \
                        kind_of(site_reason) not in (ReasonKind.CHOSEN, ReasonKind.TOO_SMALL):  # small: by design
                    self._warn_once(f"site unreduced: {site_reason}",
                                    f"asymrnr: attention {site.name} over video tokens runs unreduced: {site_reason}.")
            code, video_key = _video_state_key(example_inputs, reductions, regional=forward is not None)
            shared = None
            if code is not None:
                states_of_code = self._video_states.get(code)
                if states_of_code is None or not _has_compiled_entries(code):
                    # the code's first compile since Dynamo started or was reset: no earlier video to continue
                    states_of_code = self._video_states[code] = {}
                shared = states_of_code.get(video_key)
            if shared is not None:
                logger.info("asymrnr: a recompile of %s continues its video's steps and matchings", code.co_name)
            if mode_uses_cudagraphs(mode):
                self._warn_once("cudagraphs", (
                    f"asymrnr: mode={mode!r} asks for CUDA graphs; the graphs asymrnr reduces are compiled with the "
                    "mode's other settings but without CUDA graphs, because the runtime keeps each matching for the "
                    "next steps of its window and CUDA graph trees reuse the memory of earlier outputs (torch would "
                    "fail with 'accessing tensor output of CUDAGraphs that has been overwritten by a subsequent "
                    "run'). Pass mode='max-autotune-no-cudagraphs' or no mode to silence this."))
                compile_graph = inductor_compiler(gm, mode, cudagraphs=False)
            runtime = AsymRnRRuntime(gm, sites, reductions, self.config, compile_graph, driver,
                                     on_matching=self.on_matching, regional=forward is not None,
                                     declared_layout=declared, video_states=shared)
            if code is not None:
                self._video_states[code].setdefault(video_key, runtime.video_states)
        except ScheduleMismatchError:  # the user's schedule does not fit: say so, do not hide it
            raise
        except RestartAnalysis:  # Dynamo's own signal (e.g. to retrace with float scalars as tensors): not ours
            raise
        except Exception as error:  # analysis must never break the user's model
            logger.warning("asymrnr: analysis failed, compiling unchanged: %s: %s", type(error).__name__, error,
                           exc_info=logger.isEnabledFor(logging.DEBUG))
            return self._plain(gm, example_inputs, [], compile_graph,
                               Reason(f"analysis failed: {type(error).__name__}: {error}"), has_attention=True)
        runtime.owner = self  # the backend lives as long as Dynamo keeps a graph it compiled
        if video_outputs:
            runtime.on_outputs = functools.partial(self._handoff.record, layouts=video_outputs)
        runtime.other_attention = [other.to_dict() for other in others]
        self.graphs.append(runtime)
        logger.info("asymrnr: reducing %d of %d attention sites", len(reductions), len(sites))
        return runtime

    def _declared_sites(self, gm: torch.fx.GraphModule, sites: list[AttentionSite], forward: ForwardContext | None
                        ) -> tuple[list[AttentionSite], DeclaredLayout | None, str | None]:
        """A graph whose attention has no video tokens: analysed again with its inputs seeded by
        the layout the model call declares (a transformer block compiled alone). Returns the
        sites, the layout used (None: not seeded) and why not, where that is worth reporting."""
        if forward is None:
            # A graph with the model's timestep input is a whole model (or its first part), not a block
            # compiled alone: the regional-compilation hint would mislead there.
            block_alone = find_timestep_input(gm, self.config.timestep_args) is None
            long_enough = any((site.query_tokens or 0) >= self.config.min_video_tokens for site in sites)
            if block_alone and long_enough and len(self._handoff):
                return sites, None, Reason(
                    "no video tokens reached this graph: it follows a graph break, and none of its inputs is an "
                    "earlier graph's video output (compile with fullgraph=True to keep the model in one graph)",
                    fix="torch.compile(model, fullgraph=True, ...): Dynamo then traces data-dependent sizes instead "
                        "of cutting the model")
            if block_alone and long_enough:
                return sites, None, Reason("no video tokens in this graph (a transformer block compiled alone, "
                                           "without the grid? see regional compilation)",
                                           ReasonKind.NEEDS_REGIONAL_HOOK, fix=REGIONAL_HOOK_FIX)
            return sites, None, None
        seeded = declared_layout_seeds(gm, forward.layout)
        if not seeded.seeds:
            logger.info("asymrnr: no declared layout for this graph: %s", seeded.reason)
            return sites, None, None
        return analyse_graph(gm, seeds=seeded.seeds).sites, forward.layout, None

    def _plain(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any], sites: list[AttentionSite],
               compile_graph: Compiler, reason: str, *, warn: bool = True,
               video_outputs: Mapping[int, Any] | None = None,
               others: Sequence[OtherAttention] = (), has_attention: bool = False) -> Callable[..., Any]:
        """Compile ``gm`` unchanged; with ``warn``, say once why a graph with attention (``sites``,
        or ``has_attention`` where the analysis found none) is not accelerated, and the reason's
        fix (:func:`~asymrnr_compile.reasons.fix_of`)."""
        logger.info("asymrnr: graph compiled unchanged: %s", reason)
        if warn and (sites or has_attention):
            fix = fix_of(reason) or GENERIC_FIX
            self._warn_once(f"not accelerated: {reason}", f"asymrnr: a graph with attention runs unreduced (plain "
                                                          f"Inductor): {reason}. Fix: {fix}.")
        start = time.perf_counter()
        compiled = compile_graph(gm, list(example_inputs))
        flops = graph_flops(gm)
        self.graphs.append(_PlainGraph(sites, reason, time.perf_counter() - start, CostEstimate(flops, flops, 0),
                                       self.config, [other.to_dict() for other in others]))
        # The wrapper holds the backend as long as Dynamo keeps this graph (see asymrnr()): Dynamo does
        # not keep the function compile_fx returns, so an attribute on it would not. Under regional
        # compilation the graph's attention calls still count towards the model call's site indices.
        claimed = len(sites) if current_forward() is not None else 0
        on_outputs = functools.partial(self._handoff.record, layouts=video_outputs) if video_outputs else None
        return ClaimSites(compiled, claimed, owner=self, on_outputs=on_outputs)

    def _check_step_signal(self, gm: torch.fx.GraphModule) -> None:
        """Warn once when the timestep reaches the graph as a Python number (baked in as a
        constant: every new value recompiles the model)."""
        names = self.config.timestep_args
        if find_timestep_input(gm, names) is not None:
            return
        constant = constant_timestep_argument(names)
        if constant is not None:
            self._warn_once("python timestep", (
                f"asymrnr: the timestep argument {constant!r} is a Python number: Dynamo bakes it into the graph, "
                "so every step recompiles the model (after torch._dynamo.config.recompile_limit recompiles it runs "
                f"eagerly, unaccelerated). Pass it as a tensor, e.g. {constant}=torch.tensor([t])."))

    def _warn_once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            warnings.warn(message, AsymRnRWarning, stacklevel=2)

    def video(self, num_steps: int | None = None) -> AbstractContextManager[VideoScope]:
        """``with backend.video(num_steps=...) as scope:`` samples one video in a video scope
        (:func:`asymrnr_compile.video`; the same scope for every backend, so that two models
        compiled with two backends share the video's step). Inside it the step comes from
        ``scope.set_step(i)`` or from the timestep, and every model and block keeps its own
        matchings for this video only: no :meth:`reset` is needed between scopes."""
        return video(num_steps)

    def reset(self) -> None:
        """Start a new video: every graph forgets its step state and cached matchings (the
        states used outside video scopes; a scope starts fresh by itself)."""
        for graph in self.graphs:
            if isinstance(graph, AsymRnRRuntime):
                graph.reset()

    def report(self) -> AsymRnRReport:
        return AsymRnRReport(self.config, [graph.to_dict() for graph in self.graphs])


def _video_state_key(example_inputs: Sequence[Any], reductions: Sequence[SiteReduction], *,
                     regional: bool) -> tuple[CodeType | None, tuple[Any, ...]]:
    """What makes a graph a recompile of an earlier one of the same sampling loop: the code
    object Dynamo is compiling (the same for every recompile of a function), and then the
    input shapes and the reduced sites with their kept counts. ``(None, key)`` outside a Dynamo
    compile (the backend called directly): nothing is shared.

    Outside a video scope, a recompile mid-video (a guard failed: a new stride, a Python flag)
    then continues the video's steps and matchings instead of starting at step 0 with a matching
    of its own. Inside a scope the scope holds the step, and this is not needed."""
    shapes = tuple(tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                   for value in example_inputs)
    sites = tuple((r.site.index, r.site.video_tokens, tuple(sorted(r.num_keep.items()))) for r in reductions)
    return _compiling_code(), (regional, shapes, sites)


def _compiling_code() -> CodeType | None:
    """The code object Dynamo is compiling now, or None (not inside a Dynamo compile)."""
    try:
        from torch._dynamo.symbolic_convert import InstructionTranslator

        translator = InstructionTranslator.current_tx()
    except (ImportError, AttributeError, IndexError, AssertionError):
        return None
    code = getattr(translator, "f_code", None)
    return code if isinstance(code, CodeType) else None


def _has_compiled_entries(code: CodeType) -> bool:
    """Whether Dynamo's cache holds compiled entries for ``code``: a compile while it does is a
    recompile (a guard failed); without any, the first compile since Dynamo started or since
    ``torch._dynamo.reset()`` (nothing of an earlier video may be continued then)."""
    try:
        from torch._dynamo.eval_frame import _debug_get_cache_entry_list
    except ImportError:  # another torch: never share rather than share a stale state
        return False
    return bool(_debug_get_cache_entry_list(code))


def _regional_refusal(config: AsymRnRConfig) -> str | None:
    """Why a graph compiled under regional compilation cannot be reduced with ``config``, or None.
    One compiled block graph serves every block of its class, so settings that differ per block
    in the graph itself (a schedule's rows, skipped blocks, random-selection seeds baked into the
    graph) cannot be honoured."""
    whole_model = "compile the whole model: torch.compile(model, backend='asymrnr', ...)"
    if config.schedule is not None:
        return Reason("schedules are not supported under regional compilation (compile the whole model)",
                      fix=whole_model)
    if config.skip_blocks:
        return Reason("skip_blocks is not supported under regional compilation (compile the whole model)",
                      fix=whole_model)
    if config.token_selection == "random":
        return Reason("token_selection='random' is not supported under regional compilation: its seeds are "
                      "compiled into the graph all blocks share (compile the whole model)", fix=whole_model)
    return None


def _computes_attention_by_hand(gm: torch.fx.GraphModule) -> bool:
    """Whether the graph computes attention without SDPA: a softmax between two matrix products,
    or torch's fused ``multi_head_attention_forward``."""
    names = [op_name(node, gm) for node in gm.graph.nodes]
    if "multi_head_attention_forward" in names:
        return True
    matmuls = {"matmul", "bmm", "baddbmm", "einsum"}
    return "softmax" in names and sum(name in matmuls for name in names) >= 2


# The string form: one backend per options object, alive as long as a graph it compiled is (the
# runtimes hold it); so torch._dynamo.reset() frees backends, their graphs and device caches.
_string_form_backends: weakref.WeakValueDictionary[int, AsymRnRBackend] = weakref.WeakValueDictionary()
_last_backend: list[weakref.ref[AsymRnRBackend]] = []


def asymrnr(gm: torch.fx.GraphModule, example_inputs: Sequence[Any],
            options: Mapping[str, Any] | None = None, mode: str | None = None) -> Callable[..., Any]:
    """The backend behind ``torch.compile(..., backend="asymrnr", options=...)``.

    All graphs compiled with the same ``options`` object share one :class:`AsymRnRBackend` (so all
    ``options=None`` compilations share one; use an :class:`AsymRnRBackend` object per model for
    separate reports); :func:`last_backend` returns the one used most recently. Options are
    validated on the first call, when Dynamo hands over the first graph; errors name the option.
    """
    backend = _string_form_backends.get(id(options))
    if backend is None or backend.options is not options:
        try:
            config = AsymRnRConfig.from_options(options)
        except (ValueError, TypeError) as error:
            raise type(error)(f"torch.compile(backend='asymrnr', options=...): {error}") from None
        backend = AsymRnRBackend(config)
        backend.options = options  # held, so id(options) stays unique while the backend lives
        _string_form_backends[id(options)] = backend
    _last_backend[:] = [weakref.ref(backend)]
    return backend(gm, example_inputs, mode=mode)


def last_backend() -> AsymRnRBackend:
    """The backend that served the most recent ``backend="asymrnr"`` compilation."""
    backend = _last_backend[0]() if _last_backend else None
    if backend is None:
        raise RuntimeError('no model compiled with backend="asymrnr" is alive in this process (none was compiled, '
                           "or torch._dynamo.reset() released it)")
    return backend
