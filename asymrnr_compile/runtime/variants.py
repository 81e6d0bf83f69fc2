"""Compiled variants: one version of a captured graph per distinct
:class:`~asymrnr_compile.plan.reduction_plan.ReductionPlan`, and the fallback.

:func:`compile_variant` rewrites the graph for a plan (unless it reduces nothing) and splits it at
its attention calls; the subgraphs compile on their first call
(:mod:`~asymrnr_compile.runtime.compile_subgraphs`). :func:`compile_unchanged` compiles the
unchanged graph in one piece: what a runtime runs after a rewrite or compile failed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch.fx

from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.passes.reduce_attention_tokens import RewriteResult, reduce_attention_tokens
from asymrnr_compile.plan.reduction_plan import CacheSlot, ReductionPlan
from asymrnr_compile.runtime.compile_subgraphs import Compiler, SubgraphCompiler, compile_subgraphs


@dataclass
class CompiledVariant:
    """One compiled version of the graph for one plan (a driver over compiled subgraphs).

    Attributes:
        plan: the plan it was rewritten for.
        fn: the driver (or, for the fallback, the whole graph compiled).
        rewrite: the rewrite's result; None: the graph unchanged.
        compile_seconds: time spent compiling it so far (its subgraphs compile on first call).
        calls: how many calls it ran.
    """

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


def compile_variant(gm: torch.fx.GraphModule, sites: list[AttentionSite], plan: ReductionPlan,
                    subgraphs: SubgraphCompiler) -> CompiledVariant:
    """Rewrite ``gm`` for ``plan`` and split it at its attention calls; the subgraphs compile on
    their first call, by ``subgraphs`` (shared by the variants of one graph)."""
    rewrite = None if plan.is_identity else reduce_attention_tokens(gm, sites, plan)
    graph = gm if rewrite is None else rewrite.gm
    return CompiledVariant(plan, compile_subgraphs(graph, subgraphs), rewrite)


def compile_unchanged(gm: torch.fx.GraphModule, plan: ReductionPlan, args: Sequence[Any],
                      compile_graph: Compiler) -> CompiledVariant:
    """The unchanged graph compiled in one piece (the fallback: plain Inductor)."""
    start = time.perf_counter()
    fn = compile_graph(gm, list(args))
    return CompiledVariant(plan, fn, None, time.perf_counter() - start)
