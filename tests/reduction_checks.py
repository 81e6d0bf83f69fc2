"""Proof that a backend test really reduced: no fallback, matchings computed, the expected sites
rewritten.

A rewrite or variant that fails falls back to plain Inductor and the model still runs, so a
test that only compares outputs, checks the plan or the report's ``applied`` entries, or looks
for the absence of a log line passes just as well when nothing was reduced.
:func:`assert_reduced` closes that gap; every reducing backend test calls it.

:func:`force_fallback` makes every rewrite fail (``pytest --asymrnr-force-fallback``, see
``tests/conftest.py``): a reducing test that still passes then does not check its reduction.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from asymrnr_compile import AsymRnRBackend
from asymrnr_compile.runtime import AsymRnRRuntime

#: Set (to "1") by ``--asymrnr-force-fallback`` for the processes a test spawns (cp_harness ranks).
FORCE_FALLBACK_ENV = "ASYMRNR_FORCE_FALLBACK"
FORCED_FALLBACK_MESSAGE = "forced fallback (--asymrnr-force-fallback)"


def force_fallback(setattr_: Callable[[Any, str, Any], None] = setattr) -> None:
    """Make every rewrite raise ``RuntimeError(FORCED_FALLBACK_MESSAGE)``: each
    ``AsymRnRRuntime`` then falls back to the unchanged graph (plain Inductor), silently.
    ``setattr_``: ``monkeypatch.setattr`` in a test (undone after it); plain ``setattr`` in a
    spawned process."""
    import asymrnr_compile.runtime.variants

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(FORCED_FALLBACK_MESSAGE)

    setattr_(asymrnr_compile.runtime.variants, "reduce_attention_tokens", fail)


def rewritten_sites(runtime: AsymRnRRuntime) -> set[int]:
    """Indices of the sites that some compiled variant of ``runtime`` rewrote."""
    return runtime.rewritten_sites


def reduction_evidence(backend: AsymRnRBackend) -> dict[str, Any]:
    """What :func:`assert_reduced` checks, as plain data (picklable: a spawned rank sends it
    back): the report's dict and, per entry of ``backend.graphs``, whether it is a runtime, its
    ``fallback_reason`` and the sites its compiled variants rewrote."""
    return {
        "report": backend.report().to_dict(),
        "graphs": [{"runtime": isinstance(runtime, AsymRnRRuntime),
                    "fallback_reason": getattr(runtime, "fallback_reason", None),
                    "rewritten_sites": sorted(rewritten_sites(runtime)) if isinstance(runtime, AsymRnRRuntime) else []}
                   for runtime in backend.graphs],
    }


def assert_reduced(backend: AsymRnRBackend, *, sites: Collection[int] | None = None,
                   features: Mapping[int, Collection[str]] | None = None) -> dict[str, Any]:
    """Assert that every graph ``backend`` compiled ran reduced; return the report's dict.

    For every entry of ``backend.graphs``: it is a runtime (not a graph compiled unchanged), its
    ``fallback_reason`` is None, it computed matchings (its report counts cache misses, which an
    unreduced variant never does), and the sites its variants rewrote are the sites the report
    says it reduces (those with ``applied``) or, when given, exactly ``sites``. ``features``
    (site index -> features) also pins the features applied at each reduced site.
    """
    return assert_evidence_reduced(reduction_evidence(backend), sites=sites, features=features)


def assert_evidence_reduced(evidence: Mapping[str, Any], *, sites: Collection[int] | None = None,
                            features: Mapping[int, Collection[str]] | None = None,
                            where: str = "") -> dict[str, Any]:
    """:func:`assert_reduced` on :func:`reduction_evidence` (from this process or another);
    ``where`` prefixes the messages (``"rank 1: "``)."""
    report = evidence["report"]
    assert evidence["graphs"], f"{where}the backend compiled no graph"
    assert len(evidence["graphs"]) == len(report["graphs"])
    for runtime, graph in zip(evidence["graphs"], report["graphs"]):
        assert runtime["runtime"], f"{where}graph compiled unchanged: {graph['fallback_reason']}"
        assert runtime["fallback_reason"] is None, f"{where}the rewrite fell back: {runtime['fallback_reason']}"
        assert graph["fallback_reason"] is None
        assert graph["cache_misses"] > 0, f"{where}no matching was computed"
        applied = {site["index"]: set(site["applied"]) for site in graph["sites"] if site.get("applied")}
        expected = set(applied) if sites is None else set(sites)
        assert expected, f"{where}no site is reduced"
        assert set(applied) == expected, (
            f"{where}sites reduced per the report {sorted(applied)}, expected {sorted(expected)}")
        assert set(runtime["rewritten_sites"]) == expected, (
            f"{where}sites rewritten {runtime['rewritten_sites']}, expected {sorted(expected)}")
        if features is not None:
            assert applied == {index: set(f) for index, f in features.items()}
    return report
