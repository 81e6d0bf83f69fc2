"""The model call's context its regionally compiled blocks read: offsets, nesting, threads."""

from __future__ import annotations

import threading

import pytest

from asymrnr_compile.analysis.declared_layout import DeclaredLayout
from asymrnr_compile.runtime.forward_context import (
    ClaimSites,
    ForwardContext,
    close_forward,
    current_forward,
    forward_scope,
    open_forward,
)

LAYOUT = DeclaredLayout((2, 4, 4), 8)


def test_claimed_sites_give_each_graph_call_its_global_offset():
    context = ForwardContext(LAYOUT, 999.0)
    assert [context.claim_sites(n) for n in (1, 2, 0, 1)] == [0, 1, 3, 3]
    assert context.sites_seen == 4
    with pytest.raises(ValueError, match="count must be a non-negative int"):
        context.claim_sites(-1)


def test_contexts_nest_and_a_context_left_open_is_closed_with_its_outer_one():
    outer, inner = ForwardContext(LAYOUT), ForwardContext(LAYOUT)
    assert current_forward() is None
    with forward_scope(outer):
        open_forward(inner)  # an inner model call that raised before closing
        assert current_forward() is inner
        close_forward(ForwardContext(LAYOUT))  # not open: ignored
        assert current_forward() is inner
    assert current_forward() is None
    with pytest.raises(TypeError, match="context must be a ForwardContext"):
        open_forward(LAYOUT)


def test_each_thread_has_its_own_context():
    seen = []
    with forward_scope(ForwardContext(LAYOUT)):
        thread = threading.Thread(target=lambda: seen.append(current_forward()))
        thread.start()
        thread.join()
    assert seen == [None]


def test_a_graph_compiled_unchanged_still_claims_its_attention_calls():
    calls = []
    claim = ClaimSites(lambda *args: calls.append(args) or "out", 2)
    context = ForwardContext(LAYOUT)
    with forward_scope(context):
        assert claim(1, 2) == "out"
    assert claim(3) == "out"  # outside a model call: nothing to claim
    assert calls == [(1, 2), (3,)] and context.sites_seen == 2
    with pytest.raises(TypeError, match="fn must be callable"):
        ClaimSites(None, 1)
