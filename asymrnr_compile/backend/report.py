"""The backend's report: per captured graph its sites, variants, calls, steps and cache use.

:class:`AsymRnRReport` is what ``AsymRnRBackend.report()`` returns; :class:`PlainGraph` is the
report entry of a graph compiled unchanged (a runtime reports itself, ``AsymRnRRuntime.to_dict``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asymrnr_compile.analysis.cost import CostEstimate, ideal_speedup
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.plan.select_sites import unreduced_site_dict


@dataclass
class PlainGraph:
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
        # a regional graph's sites run once per block instance it serves (those in skip_blocks unreduced)
        count = sum(len(graph.get("sites", [])) * graph.get("instances", 1) for graph in self.graphs)
        count_reduced = sum(sum(1 for site in graph.get("sites", []) if site.get("applied"))
                            * (graph.get("instances", 1) - graph.get("skipped_instances", 0)) for graph in self.graphs)
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
