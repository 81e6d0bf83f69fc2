"""The model call's context its regionally compiled blocks read: offsets, block names, nesting, threads."""

from __future__ import annotations

import threading

import pytest

from asymrnr_compile.analysis.declared_layout import DeclaredLayout
from asymrnr_compile.runtime.forward_context import (
    BlockCall,
    ClaimSites,
    EnterBlock,
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


@pytest.mark.parametrize(("path", "block", "index"), [
    ("blocks.3", "blocks.3", 3),
    ("transformer_blocks.12.attn1", "transformer_blocks.12", 12),
    ("single_transformer_blocks.0", "single_transformer_blocks.0", 0),
    ("final_layer", "final_layer", None),
])
def test_a_block_is_named_by_its_path_up_to_its_first_integer_as_the_analysis_names_it(path, block, index):
    call = BlockCall.from_path(path)
    assert (call.path, call.index) == (block, index)


def test_skip_blocks_entries_name_a_block_by_index_or_path():
    call = BlockCall("transformer_blocks.3", 3)
    assert call.is_in((3,)) and call.is_in(("transformer_blocks.3",)) and call.is_in((0, 3))
    assert not call.is_in(()) and not call.is_in((2, "transformer_blocks.30", "blocks.3"))
    assert not BlockCall("final_layer", None).is_in((0,))
    assert not BlockCall("blocks.1", 1).is_in((True,))  # a bool is not the index 1


def test_a_named_block_call_sets_the_context_block_for_its_duration_only():
    seen = []
    inner = EnterBlock(lambda: seen.append(current_forward().block), BlockCall("blocks.1", 1))
    outer = EnterBlock(lambda: (seen.append(current_forward().block), inner(), seen.append(current_forward().block)),
                       BlockCall("blocks.0", 0))
    context = ForwardContext(LAYOUT, 999.0)
    with forward_scope(context):
        outer()
        assert context.block is None

        def boom():
            raise RuntimeError("block failed")

        with pytest.raises(RuntimeError, match="block failed"):
            EnterBlock(boom, BlockCall("blocks.2", 2))()
        assert context.block is None
    assert [call.index for call in seen] == [0, 1, 0]
    assert EnterBlock(lambda x: x + 1, BlockCall("blocks.0", 0))(1) == 2  # outside a model call: just the call
    with pytest.raises(TypeError, match="block must be a BlockCall"):
        EnterBlock(lambda: None, "blocks.0")


def test_a_named_block_keeps_its_site_offset_when_the_blocks_before_it_are_skipped():
    """Three blocks of two attention calls each; the second model call skips the middle one (a
    step cache's F1B1): the last block still claims 4, the place it had in the full call, and a
    block run twice in one call continues the count instead of reusing its place."""
    offsets = {}
    claimed = []
    blocks = [EnterBlock(lambda: claimed.append(current_forward().claim_sites(2)), BlockCall(f"blocks.{i}", i))
              for i in range(3)]

    def model_call(indices):
        claimed.clear()
        with forward_scope(ForwardContext(LAYOUT, 999.0, block_offsets=offsets)):
            for index in indices:
                blocks[index]()
        return list(claimed)

    assert model_call([0, 1, 2]) == [0, 2, 4]
    assert offsets == {"blocks.0": 0, "blocks.1": 2, "blocks.2": 4}
    assert model_call([0, 2]) == [0, 4]
    assert model_call([0, 2, 2]) == [0, 4, 6]
    assert model_call([0, 1, 2]) == [0, 2, 4]
    unshared = ForwardContext(LAYOUT, 999.0)  # without the hook's dict: counted in call order as before
    with forward_scope(unshared):
        claimed.clear()
        blocks[2]()
    assert claimed == [0]
