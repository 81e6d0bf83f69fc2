"""The backend object: per captured graph, analysis -> plan -> rewrite -> Inductor.

Per captured graph :class:`AsymRnRBackend` finds the attention sites
(:func:`asymrnr_compile.analysis.find_attention_sites`), decides which sites and features to reduce
and how many tokens to keep (:func:`asymrnr_compile.plan.select_sites.plan_site_reduction`), and
returns an :class:`~asymrnr_compile.runtime.AsymRnRRuntime` that compiles one Inductor variant per
distinct step plan. A graph with nothing to reduce, or one the backend cannot handle
(:mod:`~asymrnr_compile.backend.graph_checks`), is compiled unchanged by Inductor, with the reason
logged and reported (:mod:`~asymrnr_compile.backend.report`).

A graph compiled inside a model call's
:class:`~asymrnr_compile.runtime.forward_context.ForwardContext` (regional compilation through
:func:`asymrnr_compile.regional.compile_repeated_blocks`: a transformer block compiled alone) has
no video source of its own; its inputs are seeded with the grid the context declares
(:mod:`asymrnr_compile.analysis.declared_layout`) and its runtime reads steps and the block
instance from the context of each call.

``inductor_compiler`` and ``analyse_graph`` are read from the package,
``asymrnr_compile.backend``, on every call (``seams`` below), so that a test or benchmark can
stand in for Inductor or the analysis with ``monkeypatch.setattr("asymrnr_compile.backend.inductor_compiler", ...)``.
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from types import CodeType
from typing import Any

import torch
import torch.fx
from torch._dynamo.exc import RestartAnalysis

import asymrnr_compile.backend as seams
from asymrnr_compile.analysis.cost import CostEstimate, graph_flops
from asymrnr_compile.analysis.declared_layout import DeclaredLayout, declared_layout_seeds
from asymrnr_compile.analysis.graph_outputs import handed_off_seeds, video_output_layouts
from asymrnr_compile.analysis.other_attention import OtherAttention
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.backend.graph_checks import (
    WITHOUT_SDPA,
    computes_attention_by_hand,
    has_symbolic_shapes,
    regional_refusal,
)
from asymrnr_compile.backend.recompiles import has_compiled_entries, video_state_key
from asymrnr_compile.backend.report import AsymRnRReport, PlainGraph
from asymrnr_compile.config import AsymRnRConfig, AsymRnRWarning
from asymrnr_compile.passes.decompose_multi_head_attention import (
    decompose_multi_head_attention,
    is_multi_head_attention,
)
from asymrnr_compile.plan.schedule_driver import ScheduleDriver, ScheduleMismatchError
from asymrnr_compile.plan.select_sites import SiteReduction, plan_site_reduction
from asymrnr_compile.reasons import DYNAMIC_FALSE_FIX, GENERIC_FIX, Reason, ReasonKind, fix_of, kind_of, prefixed
from asymrnr_compile.runtime import AsymRnRRuntime, MatchingRecord
from asymrnr_compile.runtime.compile_subgraphs import Compiler, mode_uses_cudagraphs
from asymrnr_compile.runtime.forward_context import ClaimSites, ForwardContext, current_forward
from asymrnr_compile.runtime.layout_handoff import LayoutHandoff
from asymrnr_compile.runtime.steps import constant_timestep_argument, find_timestep_input
from asymrnr_compile.runtime.video_scope import VideoScope, video
from asymrnr_compile.runtime.video_state import VideoStates
from asymrnr_compile.vocabulary import FEATURES

logger = logging.getLogger("asymrnr_compile")

#: Why a video site may stay unreduced beside reduced ones without a warning: the settings chose
#: it, it is below ``min_video_tokens``, or the method does not apply there (temporal attention,
#: other tokens attending to the video). Any other reason warns once with its fix.
SITE_REASONS_BY_DESIGN = (ReasonKind.CHOSEN, ReasonKind.TOO_SMALL, ReasonKind.NOT_APPLICABLE,
                          ReasonKind.NO_VIDEO_TOKENS)

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
        self.graphs: list[AsymRnRRuntime | PlainGraph] = []
        # Steps and matchings (outside a video scope) per compiled code object, then shapes and sites,
        # shared by Dynamo's recompiles of that code; code objects held weakly.
        self._video_states: weakref.WeakKeyDictionary[CodeType, dict[tuple[Any, ...], VideoStates]] = \
            weakref.WeakKeyDictionary()
        # Under regional compilation, per reduced sites (with their kept counts): the block instances'
        # steps and matchings, shared by every graph compiled inside a model call with those sites.
        # One block instance (global attention offset) may run several graphs: its first call's
        # strided input, recompiles, and the graphs a step cache's hooks break it into, which Dynamo
        # compiles from other code objects (resume functions), at steps the cache decides.
        self._regional_video_states: dict[tuple[Any, ...], VideoStates] = {}
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
        compile_graph = seams.inductor_compiler(gm, mode)
        forward = current_forward()  # set while a model call runs under the regional layout hook
        if forward is None:
            self._check_step_signal(gm)
        video_outputs: dict[int, Any] = {}
        others: list[OtherAttention] = []
        try:
            analysis = seams.analyse_graph(gm)
            sites = analysis.sites
            reasons: list[str] = []
            declared = None
            if forward is None and sites and not any(site.video_tokens for site in sites):
                # after a graph break: the video tokens may come from an earlier graph's outputs (under
                # regional compilation the model call declares the grid instead, checked on every call)
                handed = handed_off_seeds(gm, example_inputs, self._handoff.layout_of)
                if handed.seeds:
                    analysis = seams.analyse_graph(gm, seeds=handed.seeds)
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
                    (refusal := regional_refusal(self.config, forward.block is not None)):
                return self._plain(gm, example_inputs, sites, compile_graph, refusal, video_outputs=video_outputs,
                                   others=others)
            driver = None if self.config.schedule is None else \
                ScheduleDriver(self.config.schedule, sites, self.config.num_steps)
            if has_symbolic_shapes(gm):
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
                if not sites and computes_attention_by_hand(gm):
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
                        kind_of(site_reason) not in SITE_REASONS_BY_DESIGN:
                    self._warn_once(f"site unreduced: {site_reason}",
                                    f"asymrnr: attention {site.name} over video tokens runs unreduced: {site_reason}.")
            code, video_key = video_state_key(example_inputs, reductions, regional=forward is not None)
            shared = None
            regional_key = video_key[2]  # the reduced sites and their kept counts
            if forward is not None:
                shared = self._regional_video_states.get(regional_key)
            elif code is not None:
                states_of_code = self._video_states.get(code)
                if states_of_code is None or not has_compiled_entries(code):
                    # the code's first compile since Dynamo started or was reset: no earlier video to continue
                    states_of_code = self._video_states[code] = {}
                shared = states_of_code.get(video_key)
            if shared is not None:
                logger.info("asymrnr: a graph of %s continues its video's steps and matchings",
                            getattr(code, "co_name", "a block"))
            if mode_uses_cudagraphs(mode):
                self._warn_once("cudagraphs", (
                    f"asymrnr: mode={mode!r} asks for CUDA graphs; the graphs asymrnr reduces are compiled with the "
                    "mode's other settings but without CUDA graphs, because the runtime keeps each matching for the "
                    "next steps of its window and CUDA graph trees reuse the memory of earlier outputs (torch would "
                    "fail with 'accessing tensor output of CUDAGraphs that has been overwritten by a subsequent "
                    "run'). Pass mode='max-autotune-no-cudagraphs' or no mode to silence this."))
                compile_graph = seams.inductor_compiler(gm, mode, cudagraphs=False)
            runtime = AsymRnRRuntime(gm, sites, reductions, self.config, compile_graph, driver,
                                     on_matching=self.on_matching, regional=forward is not None,
                                     declared_layout=declared, video_states=shared)
            if forward is not None:
                self._regional_video_states.setdefault(regional_key, runtime.video_states)
            elif code is not None:
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
        return seams.analyse_graph(gm, seeds=seeded.seeds).sites, forward.layout, None

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
        self.graphs.append(PlainGraph(sites, reason, time.perf_counter() - start, CostEstimate(flops, flops, 0),
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
