"""Properties of the dst/src split (docs/method.md, step 1)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from ops_strategies import MAX_SEED, strides, triples

from asymrnr_compile.ops import (
    DEFAULT_DST_STRIDE,
    count_dst_tokens,
    max_reduction_ratio,
    num_kept_tokens,
    split_tokens,
)


def _chunk_of(tokens: torch.Tensor, grid, stride) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunk id (row-major over full chunks) and whether the token lies in a full chunk."""
    _, height, width = grid
    f = tokens // (height * width)
    h = (tokens // width) % height
    w = tokens % width
    chunks = [size // step for size, step in zip(grid, stride)]
    cf, ch, cw = f // stride[0], h // stride[1], w // stride[2]
    in_full = (cf < chunks[0]) & (ch < chunks[1]) & (cw < chunks[2])
    return (cf * chunks[1] + ch) * chunks[2] + cw, in_full


@given(grid=triples, stride=strides, use_grid=st.booleans(), seed=st.integers(0, MAX_SEED))
def test_split_is_partition_with_one_dst_per_full_chunk(grid, stride, use_grid, seed):
    num_tokens = math.prod(grid)
    split = split_tokens(num_tokens, grid if use_grid else None, stride, seed=seed)
    dst, src = split
    assert dst.dtype == src.dtype == torch.long
    assert dst.dim() == src.dim() == 1
    # Ascending, disjoint, union == arange(N).
    assert torch.all(dst[1:] > dst[:-1]) and torch.all(src[1:] > src[:-1])
    assert torch.equal(torch.sort(torch.cat([dst, src])).values, torch.arange(num_tokens))

    grid3 = grid if use_grid else (1, 1, num_tokens)
    stride3 = stride if use_grid else (1, 1, math.prod(stride))
    expected = math.prod(size // step for size, step in zip(grid3, stride3))
    assert len(dst) == expected == count_dst_tokens(num_tokens, grid if use_grid else None, stride)
    chunk, in_full = _chunk_of(dst, grid3, stride3)
    assert bool(in_full.all()), "a dst token lies in a remainder slice"
    assert torch.equal(torch.sort(chunk).values, torch.arange(expected)), "not one dst per chunk"


@given(grid=triples, stride=strides, seed=st.integers(0, MAX_SEED))
def test_same_seed_same_split(grid, stride, seed):
    num_tokens = math.prod(grid)
    a = split_tokens(num_tokens, grid, stride, seed=seed)
    b = split_tokens(num_tokens, grid, stride, seed=seed)
    assert torch.equal(a.dst, b.dst) and torch.equal(a.src, b.src)


@given(seed=st.integers(0, MAX_SEED), other=st.integers(0, MAX_SEED))
def test_different_seeds_differ(seed, other):
    # 13x30x45 at stride 2: 1980 chunks of 8 tokens, so two seeds agree with probability 8**-1980.
    if seed == other:
        other = seed + 1
    grid = (13, 30, 45)
    a = split_tokens(math.prod(grid), grid, seed=seed)
    b = split_tokens(math.prod(grid), grid, seed=other)
    assert not torch.equal(a.dst, b.dst)


def test_split_uses_no_global_rng():
    state = torch.random.get_rng_state()
    split_tokens(60, (3, 4, 5), seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    torch.manual_seed(123)
    a = split_tokens(60, (3, 4, 5), seed=3)
    torch.manual_seed(456)
    b = split_tokens(60, (3, 4, 5), seed=3)
    assert torch.equal(a.dst, b.dst)


def test_cogvideox_scale():
    grid = (13, 30, 45)
    n = math.prod(grid)
    split = split_tokens(n, grid, DEFAULT_DST_STRIDE)
    assert len(split.dst) == 6 * 15 * 22 == count_dst_tokens(n, grid)
    assert max_reduction_ratio(n, grid) == pytest.approx(1 - 1980 / 17550)


def test_stride_larger_than_grid_gives_no_dst():
    split = split_tokens(12, (1, 3, 4), (2, 2, 2))
    assert split.dst.shape == (0,)
    assert torch.equal(split.src, torch.arange(12))
    assert max_reduction_ratio(12, (1, 3, 4)) == 0.0
    assert num_kept_tokens(12, 0, 0.5) == 12


def test_one_dimensional_split():
    split = split_tokens(20, None, (2, 2, 2), seed=1)
    assert len(split.dst) == 2  # 20 // 8 full chunks of 8 tokens; the last 4 tokens are src.
    assert torch.equal(split.dst // 8, torch.arange(2))


def test_device_argument():
    split = split_tokens(8, (2, 2, 2), device="cpu")
    assert split.dst.device.type == "cpu"


@given(
    num_tokens=st.integers(1, 10_000),
    dst_fraction=st.floats(0.0, 1.0),
    ratio=st.floats(0.0, 1.0, exclude_max=True),
)
def test_num_kept_tokens_formula(num_tokens, dst_fraction, ratio):
    num_dst = int(num_tokens * dst_fraction)
    kept = num_kept_tokens(num_tokens, num_dst, ratio)
    if num_dst == 0:
        assert kept == num_tokens
    else:
        assert kept == num_dst + max(0, int(num_tokens * (1 - ratio)) - num_dst)
    assert num_dst <= kept <= num_tokens
    assert num_kept_tokens(num_tokens, num_dst, 0.0) == num_tokens
