"""Layouts of sequence-parallel shards and of the Ulysses all-to-all (analysis/sequence_shards.py)."""

from __future__ import annotations

import torch
from analysis_helpers import capture

from asymrnr_compile.analysis import find_attention_sites
from asymrnr_compile.analysis.classify_site import read_grid
from asymrnr_compile.analysis.sequence_shards import all_to_all_layout, slab_dim
from asymrnr_compile.analysis.token_layout import Factor, opaque_dim, reshape_layout

F4, H8, W8 = Factor(4, "f", 0), Factor(8, "h", 0), Factor(8, "w", 0)
TOKENS = ((F4, H8, W8),)  # a (4, 8, 8) grid, 256 tokens


def test_a_frame_slab_keeps_the_grid_axes():
    assert slab_dim(TOKENS, 128, 256) == ((Factor(2, "f", 0), H8, W8),)
    assert slab_dim(TOKENS, 0, 64) == ((Factor(1, "f", 0), H8, W8),)


def test_a_cut_inside_a_frame_or_several_segments_is_not_a_slab():
    assert slab_dim(TOKENS, 0, 32) is None  # half a frame
    assert slab_dim(TOKENS + ((Factor(8),),), 0, 64) is None  # text after the video
    assert slab_dim(opaque_dim(256), 0, 128) is None  # nothing known


def _ulysses_exchange(shard: tuple, parts: int) -> tuple:
    """diffusers' Ulysses exchange of a (1, S/P, H, d) query, on layouts."""
    heads, head_dim = 2, 4
    layout = (opaque_dim(1), shard, opaque_dim(heads), opaque_dim(head_dim))
    local = 128
    grouped = reshape_layout(layout, (1, local, parts, heads // parts, head_dim))
    grouped = tuple(grouped[d] for d in (2, 1, 0, 3, 4))
    flat = reshape_layout(grouped, (parts * local * heads // parts * head_dim,))
    splits = [local * heads // parts * head_dim] * parts
    exchanged = all_to_all_layout(flat, splits, splits)
    assert exchanged == flat
    back = reshape_layout(exchanged, (parts, local, 1, heads // parts, head_dim))
    return reshape_layout(back, (parts * local, 1, heads // parts, head_dim))


def test_the_ulysses_all_to_all_recombines_the_shards_into_the_grid():
    shard = slab_dim(TOKENS, 128, 256)
    token_axis = _ulysses_exchange(shard, 2)[0]
    grid, temporal = read_grid(token_axis[0])
    assert (grid, temporal) == ((4, 8, 8), False)


def test_an_all_to_all_that_does_not_scatter_a_leading_group_factor_is_opaque():
    flat = (((F4, H8, W8),),)
    assert all_to_all_layout(flat, [128, 128], [128, 128]) is None  # the grid would be scrambled
    grouped = (((Factor(2), F4, H8, W8),),)
    assert all_to_all_layout(grouped, [256, 256], [256, 256]) == grouped
    assert all_to_all_layout(grouped, [128, 384], [128, 384]) is None  # unequal splits
    assert all_to_all_layout(grouped, None, None) is None  # split sizes not in the graph


def test_a_chunked_video_axis_is_a_slab_in_a_captured_graph():
    class Chunked(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Conv3d(4, 8, kernel_size=(1, 2, 2), stride=(1, 2, 2))

        def forward(self, x):
            tokens = self.embed(x).flatten(2).transpose(1, 2)  # (1, 4*8*8, 8)
            shard = tokens.chunk(2, dim=1)[1]  # frames 2 and 3
            q = shard.unflatten(2, (2, 4)).transpose(1, 2)
            return torch.nn.functional.scaled_dot_product_attention(q, q, q)

    (site,) = find_attention_sites(capture(Chunked(), torch.randn(1, 4, 4, 16, 16)))
    assert (site.kind, site.video_tokens, site.grid) == ("self", 128, (2, 8, 8))
