"""Model coverage: every diffusers 0.42.1 video transformer class, compiled whole with asymrnr.

One test per configuration of :mod:`asymrnr_lab.models.diffusers_zoo` (the tiny config of
diffusers' own test for the class, a 2 x 8 x 8 token grid), measured by
``benchmarks/coverage.py`` as a user compiles the model (``torch.compile(model, backend=...,
dynamic=False)``, no ``fullgraph``), three calls at falling timesteps:

- the backend gets as many graphs as plain compilation does (it never adds a graph break);
- with every ratio 0 it equals plain compilation (<= 1e-5, max relative difference);
- every attention site left alone, and every attention that is not SDPA, has a reason;
- the video self-attention is reduced (a compiled variant rewrote it and computed matchings),
  with an output error against eager that stays small at q 0.5 / kv 0.3, except for the classes
  the method or the graph does not allow, whose reason is pinned here.

In the default run the backend's graphs run eagerly (the same analysis, plans and rewrites,
seconds per class); ``-m slow`` runs them through Inductor, as ``python benchmarks/coverage.py``
does.
"""

from __future__ import annotations

import pytest
from helpers import load_benchmark

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers]); CI installs it")

from asymrnr_lab.models.diffusers_zoo import ZOO  # noqa: E402

coverage = load_benchmark("coverage")

#: Classes whose video self-attention stays unreduced, and a phrase of the reason they get.
NOT_REDUCED = {
    # the self-attention is flex_attention with a frame-causal block mask
    "anyflow_far": "flex_attention over the video tokens",
    # linear attention (ReLU kernel): no softmax to reduce and restore around
    "sana_video": "linear attention",
    # text, audio and video rows are scattered into one sequence by index tensors given as inputs
    "minimax_h3": "assembled with index tensors",
}
#: Classes Dynamo cuts so that no graph holds the video attention, reduced when compiled with
#: fullgraph=True (one graph: data-dependent sizes traced), and a phrase of their reason without it.
#: Mochi: Dynamo runs its attention processor eagerly (``nonzero`` on the text mask inside a loop).
NEEDS_FULLGRAPH = {"mochi": "no video grid in this graph"}
#: Largest output error (relative L2, against eager) at q 0.5 / kv 0.3 on these random-weight models.
MAX_ERROR = 0.2
#: Ratio 0 against plain compilation.
IDENTITY_TOLERANCE = 1e-5


def _check(row) -> None:
    assert row.error is None, row.error
    assert row.asymrnr_graphs == row.graphs, f"asymrnr got {row.asymrnr_graphs} graphs, plain {row.graphs}"
    assert not row.unexplained_sites, f"sites left alone without a reason: {row.unexplained_sites}"
    assert row.ratio0_vs_inductor is not None and row.ratio0_vs_inductor <= IDENTITY_TOLERANCE
    unreduced = {**NOT_REDUCED, **NEEDS_FULLGRAPH}
    if row.name in unreduced and not row.fullgraph:
        assert not row.video_self_reduced
        reasons = [site.reason or "" for site in row.sites if not site.reduced]
        assert any(unreduced[row.name] in reason for reason in reasons), reasons
    else:
        assert row.video_self_reduced, f"video self-attention not reduced: {coverage.markdown_table([row])}"
        assert 0.0 < row.error_vs_eager < MAX_ERROR, row.error_vs_eager
    if row.name in NEEDS_FULLGRAPH and not row.fullgraph:
        assert row.with_fullgraph is not None and row.with_fullgraph.graphs == 1
        _check(row.with_fullgraph)


def _measure(name: str, compiler: str):
    # the fullgraph=True second measurement only where a class needs it (it costs a third compile)
    if name in NEEDS_FULLGRAPH:
        return coverage.measure_with_fallback(name, compiler)
    return coverage.measure(name, compiler)


@pytest.mark.parametrize("name", list(ZOO))
def test_every_class_is_reduced_or_says_why(name):
    _check(_measure(name, "eager"))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ZOO))
def test_every_class_is_reduced_or_says_why_with_inductor(name):
    _check(_measure(name, "inductor"))


def test_the_zoo_is_every_video_transformer_class_and_the_exceptions_are_few():
    """26 configurations (CogVideoX twice: 1.0 and 1.5); the tests above prove every class not
    listed reduced, so at most 3 stay unreduced whichever way they are compiled."""
    assert len(ZOO) == 26
    assert len(NOT_REDUCED) <= 3
