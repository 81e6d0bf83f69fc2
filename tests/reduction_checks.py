"""Proof that a backend test really reduced: no fallback, matchings computed, the expected sites
rewritten.

A rewrite or variant that fails falls back to plain Inductor and the model still runs, so a
test that only compares outputs, checks the plan or the report's ``applied`` entries, or looks
for the absence of a log line passes just as well when nothing was reduced.
:func:`assert_reduced` closes that gap; every reducing backend test calls it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from asymrnr_compile import AsymRnRBackend
from asymrnr_compile.runtime import AsymRnRRuntime


def rewritten_sites(runtime: AsymRnRRuntime) -> set[int]:
    """Indices of the sites that some compiled variant of ``runtime`` rewrote."""
    return runtime.rewritten_sites


def assert_reduced(backend: AsymRnRBackend, *, sites: Collection[int] | None = None,
                   features: Mapping[int, Collection[str]] | None = None) -> dict[str, Any]:
    """Assert that every graph ``backend`` compiled ran reduced; return the report's dict.

    For every entry of ``backend.graphs``: it is a runtime (not a graph compiled unchanged), its
    ``fallback_reason`` is None, it computed matchings (its report counts cache misses, which an
    unreduced variant never does), and the sites its variants rewrote are the sites the report
    says it reduces (those with ``applied``) or, when given, exactly ``sites``. ``features``
    (site index -> features) also pins the features applied at each reduced site.
    """
    assert backend.graphs, "the backend compiled no graph"
    report = backend.report().to_dict()
    for runtime, graph in zip(backend.graphs, report["graphs"]):
        assert isinstance(runtime, AsymRnRRuntime), f"graph compiled unchanged: {graph['fallback_reason']}"
        assert runtime.fallback_reason is None, f"the rewrite fell back: {runtime.fallback_reason}"
        assert graph["fallback_reason"] is None
        assert graph["cache_misses"] > 0, "no matching was computed"
        applied = {site["index"]: set(site["applied"]) for site in graph["sites"] if site.get("applied")}
        expected = set(applied) if sites is None else set(sites)
        assert expected, "no site is reduced"
        assert set(applied) == expected, f"sites reduced per the report {sorted(applied)}, expected {sorted(expected)}"
        assert rewritten_sites(runtime) == expected, (
            f"sites rewritten {sorted(rewritten_sites(runtime))}, expected {sorted(expected)}")
        if features is not None:
            assert applied == {index: set(f) for index, f in features.items()}
    return report
