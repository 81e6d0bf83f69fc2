"""A block graph's video layout declared from outside: which inputs are seeded, and what the
analysis then finds (a transformer block compiled alone has no patch embedding)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import capture_graph
from torch import nn

from asymrnr_compile.analysis import find_attention_sites
from asymrnr_compile.analysis.declared_layout import (
    DECLARED_SOURCE,
    DeclaredLayout,
    declared_layout_seeds,
    video_layout,
)

GRID = (2, 4, 4)
VIDEO, TEXT, DIM, HEADS = 32, 8, 16, 2


class JointBlock(nn.Module):
    """A CogVideoX-like block: text first, joint attention, a rotary table and a learned (N, C)
    positional parameter (lifted by Dynamo as an input: never taken for video tokens)."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.out = nn.Linear(DIM, DIM)
        self.pos = nn.Parameter(torch.zeros(VIDEO, DIM))

    def forward(self, hidden_states, encoder_hidden_states, rope):
        tokens = torch.cat([encoder_hidden_states, hidden_states + self.pos], dim=1)
        batch, length, _ = tokens.shape
        q, k, v = self.qkv(tokens).view(batch, length, 3, HEADS, DIM // HEADS).permute(2, 0, 3, 1, 4)
        video_q = q[:, :, TEXT:] * rope
        q = torch.cat([q[:, :, :TEXT], video_q], dim=2)
        attn = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, length, DIM)
        return self.out(attn)[:, TEXT:]


@pytest.fixture(scope="module")
def block_graph():
    torch.manual_seed(0)
    inputs = {"hidden_states": torch.randn(2, VIDEO, DIM), "encoder_hidden_states": torch.randn(2, TEXT, DIM),
              "rope": torch.randn(VIDEO, DIM // HEADS)}
    gm, _ = capture_graph(JointBlock(), inputs)
    return gm


def _placeholder(gm, name: str):
    return next(node for node in gm.graph.nodes if node.op == "placeholder" and name in str(node.target).lower())


def test_without_a_declared_layout_the_block_has_no_video(block_graph):
    (site,) = find_attention_sites(block_graph)
    assert site.video_tokens is None and not site.reducible and site.reason.startswith("text-only attention")


def test_the_declared_grid_seeds_the_video_inputs_and_the_analysis_finds_the_joint_site(block_graph):
    seeded = declared_layout_seeds(block_graph, DeclaredLayout(GRID, TEXT))
    assert seeded.reason is None
    names = {str(node.target).lower() for node in seeded.seeds}
    assert names == {"l_hidden_states_", "l_rope_"}  # not the text, not the lifted (N, C) parameter
    rope = seeded.seeds[_placeholder(block_graph, "rope")]
    assert rope[0] == video_layout((VIDEO, DIM // HEADS), 0, GRID)[0]
    assert all(f.source == DECLARED_SOURCE for f in rope[0][0])

    (site,) = find_attention_sites(block_graph, seeds=seeded.seeds)
    assert (site.kind, site.text_position, site.text_tokens) == ("joint", "first", TEXT)
    assert (site.video_tokens, site.grid, site.video_start) == (VIDEO, GRID, TEXT)
    assert site.reducible and {"q", "kv"} <= set(site.features)


def test_ambiguous_or_absent_lengths_seed_nothing_with_a_reason(block_graph):
    same_length = declared_layout_seeds(block_graph, DeclaredLayout((1, 2, 4), text_tokens=8))
    assert not same_length.seeds and "as many tokens as the video" in same_length.reason
    other_grid = declared_layout_seeds(block_graph, DeclaredLayout((2, 8, 8), TEXT))
    assert not other_grid.seeds and "no input of the graph has the 128 video tokens" in other_grid.reason


@pytest.mark.parametrize("grid, text", [((2, 4), None), ((2, 0, 4), None), ((2, 4, 4.0), None), ((2, 4, 4), -1),
                                        ([2, 4, 4], None), ((2, 4, 4), True)])
def test_a_bad_declared_layout_raises_naming_the_field(grid, text):
    with pytest.raises(ValueError, match="grid|text_tokens"):
        DeclaredLayout(grid, text)
