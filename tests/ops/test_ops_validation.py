"""Bad arguments raise ValueError / TypeError naming the argument (docs/architecture.md)."""

from __future__ import annotations

import pytest
import torch

from asymrnr_compile.ops import (
    Matching,
    ReductionIndices,
    count_dst_tokens,
    gather_tokens,
    match_tokens,
    max_reduction_ratio,
    num_kept_tokens,
    reduce_mask,
    reduce_tokens,
    reduction_indices,
    restore_tokens,
    split_tokens,
)

N, GRID = 24, (2, 3, 4)


@pytest.fixture()
def site():
    split = split_tokens(N, GRID)
    x = torch.randn(2, 3, N + 2, 4)
    matching = match_tokens(x, split, start=1)
    indices = reduction_indices(split, matching, num_kept_tokens(N, len(split.dst), 0.5))
    return split, x, matching, indices


@pytest.mark.parametrize("ratio", [-0.1, 1.0, 1.5, float("nan")])
def test_ratio_outside_unit_interval(ratio):
    with pytest.raises(ValueError, match="ratio"):
        num_kept_tokens(N, 6, ratio)


def test_ratio_wrong_type():
    with pytest.raises(TypeError, match="ratio"):
        num_kept_tokens(N, 6, "0.5")


@pytest.mark.parametrize("stride", [(0, 2, 2), (2, -1, 2), (2, 2)])
@pytest.mark.parametrize("fn", [split_tokens, count_dst_tokens, max_reduction_ratio])
def test_bad_stride(fn, stride):
    with pytest.raises(ValueError, match="dst_stride"):
        fn(N, GRID, stride)


@pytest.mark.parametrize("grid", [(2, 3, 5), (2, 3), (0, 3, 8)])
def test_grid_not_matching_num_tokens(grid):
    with pytest.raises(ValueError, match="grid"):
        split_tokens(N, grid)


def test_bad_num_tokens_and_seed():
    with pytest.raises(ValueError, match="num_tokens"):
        split_tokens(0)
    with pytest.raises(TypeError, match="num_tokens"):
        split_tokens(2.5)
    with pytest.raises(ValueError, match="seed"):
        split_tokens(N, GRID, seed=-1)
    with pytest.raises(ValueError, match="seed"):
        split_tokens(N, GRID, seed=2**63)
    assert len(split_tokens(N, GRID, seed=2**63 - 1).dst) == count_dst_tokens(N, GRID)
    with pytest.raises(ValueError, match="num_dst"):
        num_kept_tokens(N, N + 1, 0.5)


def test_unknown_similarity(site):
    split, x, _, _ = site
    with pytest.raises(ValueError, match="similarity.*euclidean"):
        match_tokens(x, split, "manhattan")


def test_match_bad_arguments(site):
    split, x, _, _ = site
    with pytest.raises(ValueError, match="start"):
        match_tokens(x, split, start=3)
    with pytest.raises(ValueError, match="chunk_bytes"):
        match_tokens(x, split, chunk_bytes=0)
    with pytest.raises(TypeError, match="x"):
        match_tokens(x.long(), split)
    with pytest.raises(ValueError, match="x"):
        match_tokens(torch.randn(5), split)
    with pytest.raises(TypeError, match="split"):
        match_tokens(x, split.dst)


def test_unknown_mode(site):
    _, x, _, indices = site
    with pytest.raises(ValueError, match="mode.*replace"):
        reduce_tokens(x, indices, "max", start=1)


def test_num_keep_out_of_range(site):
    split, _, matching, _ = site
    with pytest.raises(ValueError, match="num_keep"):
        reduction_indices(split, matching, len(split.dst) - 1)
    with pytest.raises(ValueError, match="num_keep"):
        reduction_indices(split, matching, N + 1)


def test_mismatched_shapes(site):
    split, x, matching, indices = site
    short = Matching(matching.src_order[..., 1:], matching.nearest[..., 1:], matching.distance)
    with pytest.raises(ValueError, match="matching"):
        reduction_indices(split, short, N)
    with pytest.raises(ValueError, match="start"):
        reduce_tokens(x, indices, start=3)
    with pytest.raises(ValueError, match="start"):
        restore_tokens(x[..., :5, :], indices)
    with pytest.raises(ValueError, match="leading dimensions"):
        reduce_tokens(torch.randn(4, 3, N, 4), indices)
    with pytest.raises(ValueError, match="leading dimensions"):
        gather_tokens(torch.randn(5, N, 4), indices.keep)
    with pytest.raises(ValueError, match="indices"):
        reduce_tokens(x, ReductionIndices(indices.keep[:1], indices.restore), start=1)
    with pytest.raises(TypeError, match="index"):
        gather_tokens(x, indices.keep.int())
    with pytest.raises(TypeError, match="indices"):
        reduce_tokens(x, indices.keep)


def test_reduce_mask_bad_arguments(site):
    _, _, _, indices = site
    with pytest.raises(ValueError, match="dim"):
        reduce_mask(torch.zeros(5, N), indices, dim=0)
    with pytest.raises(ValueError, match="start"):
        reduce_mask(torch.zeros(5, N), indices, start=1)
    with pytest.raises(ValueError, match="leading dimensions"):
        reduce_mask(torch.zeros(4, 1, 5, N), indices)
