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

This module must not call ``torch._dynamo.register_backend("asymrnr")``: the entry point
registers it, and a second registration raises "duplicate name".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx

from asymrnr_compile.analysis import find_attention_sites
from asymrnr_compile.analysis.cost import CostEstimate, graph_flops
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.plan.schedule_driver import ScheduleDriver, ScheduleMismatchError
from asymrnr_compile.plan.select_sites import SiteReduction, plan_site_reduction
from asymrnr_compile.runtime import AsymRnRRuntime, MatchingRecord
from asymrnr_compile.runtime.regions import Compiler, inductor_compiler

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

    def to_dict(self) -> dict[str, Any]:
        return {"sites": [site.to_dict() for site in self.sites], "variants": [],
                "compile_seconds": round(self.compile_seconds, 3), "fallback_reason": self.reason,
                "cost": self.cost.to_dict()}


@dataclass
class AsymRnRReport:
    """What the backend did: per captured graph its sites, variants, calls, steps and cache use."""

    config: AsymRnRConfig
    graphs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ideal_speedup(self) -> float:
        """FLOPs of all graphs unreduced over reduced (steady state, after warm-up)."""
        full = sum(g["cost"]["full_gflops"] for g in self.graphs)
        reduced = sum(g["cost"]["reduced_gflops"] for g in self.graphs)
        return full / reduced if reduced else 1.0

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


class AsymRnRBackend:
    """A ``torch.compile`` backend object holding one configuration and its state.

    Args:
        config: the settings; or pass them as keyword options (``AsymRnRBackend(q_ratio=0.5)``).
        on_matching: optional observer, called with a
            :class:`~asymrnr_compile.runtime.matching_cache.MatchingRecord` for every matching computed (which
            tokens each site keeps and which token stands for each dropped one). Default None.

    Call signature (Dynamo's): ``backend(gm, example_inputs, options=None, mode=None)``.
    ``mode`` (e.g. ``"max-autotune"``) is forwarded to Inductor for this compilation only.
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

    def __call__(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any],
                 options: Mapping[str, Any] | None = None, mode: str | None = None) -> Callable[..., Any]:
        if options and AsymRnRConfig.from_options(options) != self.config:
            raise ValueError("this AsymRnRBackend already has a config; do not also pass torch.compile(options=...)")
        compile_graph = inductor_compiler(gm, mode)
        try:
            sites = find_attention_sites(gm)
            driver = None if self.config.schedule is None else \
                ScheduleDriver(self.config.schedule, sites, self.config.num_steps)
            if _has_symbolic_shapes(gm):
                return self._plain(gm, example_inputs, sites, compile_graph,
                                   "graph has symbolic (dynamic) shapes; compile with dynamic=False to reduce")
            reductions: list[SiteReduction] = []
            reasons: list[str] = []
            for site in sites:
                planned = plan_site_reduction(site, self.config, driver)
                if isinstance(planned, str):
                    reasons.append(f"{site.name}: {planned}")
                else:
                    reductions.append(planned)
            if not reductions:
                reason = "no attention site to reduce" + (f" ({'; '.join(reasons)})" if reasons else "")
                return self._plain(gm, example_inputs, sites, compile_graph, reason)
            runtime = AsymRnRRuntime(gm, sites, reductions, self.config, compile_graph, driver,
                                     on_matching=self.on_matching)
        except ScheduleMismatchError:  # the user's schedule does not fit: say so, do not hide it
            raise
        except Exception as error:  # analysis must never break the user's model
            logger.warning("asymrnr: analysis failed, compiling unchanged: %s: %s", type(error).__name__, error)
            return self._plain(gm, example_inputs, [], compile_graph, f"analysis failed: {error}")
        self.graphs.append(runtime)
        logger.info("asymrnr: reducing %d of %d attention sites", len(reductions), len(sites))
        return runtime

    def _plain(self, gm: torch.fx.GraphModule, example_inputs: Sequence[Any], sites: list[AttentionSite],
               compile_graph: Compiler, reason: str) -> Callable[..., Any]:
        logger.info("asymrnr: graph compiled unchanged: %s", reason)
        start = time.perf_counter()
        compiled = compile_graph(gm, list(example_inputs))
        flops = graph_flops(gm)
        self.graphs.append(_PlainGraph(sites, reason, time.perf_counter() - start, CostEstimate(flops, flops, 0)))
        return compiled

    def reset(self) -> None:
        """Start a new video: every graph forgets its step state and cached matchings."""
        for graph in self.graphs:
            if isinstance(graph, AsymRnRRuntime):
                graph.reset()

    def report(self) -> AsymRnRReport:
        return AsymRnRReport(self.config, [graph.to_dict() for graph in self.graphs])


_string_form_backends: dict[int, tuple[Mapping[str, Any] | None, AsymRnRBackend]] = {}
_last_backend: list[AsymRnRBackend] = []


def asymrnr(gm: torch.fx.GraphModule, example_inputs: Sequence[Any],
            options: Mapping[str, Any] | None = None, mode: str | None = None) -> Callable[..., Any]:
    """The backend behind ``torch.compile(..., backend="asymrnr", options=...)``.

    All graphs compiled with the same ``options`` object share one :class:`AsymRnRBackend`;
    :func:`last_backend` returns the one used most recently (for its report).
    """
    key = id(options)
    entry = _string_form_backends.get(key)
    if entry is None or entry[0] is not options:
        entry = (options, AsymRnRBackend(AsymRnRConfig.from_options(options)))
        _string_form_backends[key] = entry
    backend = entry[1]
    _last_backend[:] = [backend]
    return backend(gm, example_inputs, mode=mode)


def last_backend() -> AsymRnRBackend:
    """The backend that served the most recent ``backend="asymrnr"`` compilation."""
    if not _last_backend:
        raise RuntimeError('no model has been compiled with backend="asymrnr" in this process yet')
    return _last_backend[0]
