"""Properties of the chunked matcher (docs/method.md, step 2)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from ops_strategies import cases, reference_distances

from asymrnr_compile.ops import (
    DEFAULT_MATCH_CHUNK_BYTES,
    SIMILARITIES,
    Matching,
    match_chunk_size,
    match_tokens,
    split_tokens,
)

# Tie-freedom margin, relative to the largest squared norm of the features: ~100x the float32
# rounding error of the distance formulas for c <= 8, so no rounding can flip an ordering.
TIE_MARGIN = 1e-5
TIE_FREE_TRIES = 10
MIN_TIE_FREE_CHANNELS = 4


def _split(case):
    return split_tokens(case.num_tokens, case.grid_arg, case.stride, seed=case.seed)


def _video(x, case):
    return x[..., case.text_before : case.text_before + case.num_tokens, :]


def _is_tie_free(dist: torch.Tensor, margin: float) -> bool:
    """No two candidates closer than ``margin`` for the argmin, nor two minima for the sort."""
    if dist.shape[-1] >= 2:
        two = dist.topk(2, dim=-1, largest=False).values
        if bool(((two[..., 1] - two[..., 0]) <= margin).any()):
            return False
    best = dist.min(dim=-1).values.sort(dim=-1).values
    return not bool(((best[..., 1:] - best[..., :-1]) <= margin).any())


@given(
    case=cases(min_channels=MIN_TIE_FREE_CHANNELS, need_dst=True),
    chunk_bytes=st.one_of(st.integers(1, 4096), st.just(DEFAULT_MATCH_CHUNK_BYTES)),
)
def test_chunked_matcher_equals_full_matrix_reference(case, chunk_bytes):
    split = _split(case)
    for attempt in range(TIE_FREE_TRIES):
        case = dataclasses.replace(case, data_seed=case.data_seed + attempt)
        x = case.features()
        video = _video(x, case)
        reference = reference_distances(video[..., split.dst, :], video[..., split.src, :],
                                        case.similarity)
        scale = 1.0 + float(video.double().square().sum(-1).max())
        if _is_tie_free(reference, TIE_MARGIN * scale):
            break
    else:
        assume(False)

    got = match_tokens(x, split, case.similarity, start=case.text_before, chunk_bytes=chunk_bytes)
    best, nearest = reference.min(dim=-1)
    order = torch.sort(best, dim=-1, descending=True, stable=True).indices
    shape = (case.batch, case.heads, len(split.src))
    assert isinstance(got, Matching)
    assert got.src_order.shape == got.nearest.shape == got.distance.shape == shape
    assert got.distance.dtype == torch.float32
    assert got.src_order.dtype == got.nearest.dtype == torch.long
    assert torch.equal(got.nearest, nearest)
    assert torch.equal(got.src_order, order)
    torch.testing.assert_close(got.distance.double(), best, rtol=0, atol=TIE_MARGIN * scale)


# Integer features in this range make the euclidean and dot distances exact in float32 (every
# product and partial sum is a small integer), so results cannot depend on the GEMM path.
EXACT_FEATURE_RANGE = 8
COSINE_ATOL = 1e-6


def _integer_features(case) -> torch.Tensor:
    generator = torch.Generator().manual_seed(case.data_seed)
    shape = (case.batch, case.heads, case.length, case.channels)
    values = torch.randint(-EXACT_FEATURE_RANGE, EXACT_FEATURE_RANGE + 1, shape,
                           generator=generator)
    return values.to(case.dtype)


@given(case=cases())
def test_leading_dims_are_matched_independently(case):
    """Matching one (batch, head) slice alone gives that slice of the batched result."""
    split = _split(case)
    x = _integer_features(case)
    batched = match_tokens(x, split, case.similarity, start=case.text_before)
    b, h = case.batch - 1, case.heads // 2
    alone = match_tokens(x[b, h], split, case.similarity, start=case.text_before)
    for got, _want in zip(alone, batched):
        assert got.shape == (len(split.src),)
    if case.similarity != "cosine":
        for got, want in zip(alone, batched):
            assert torch.equal(got, want[b, h])
        return
    # Cosine distances are rounded; a different GEMM path may round differently.
    torch.testing.assert_close(alone.distance, batched.distance[b, h], rtol=0, atol=COSINE_ATOL)
    if len(split.dst):
        video = _video(x[b, h], case)
        reference = reference_distances(video[split.dst], video[split.src], "cosine")
        chosen = reference.gather(-1, alone.nearest.unsqueeze(-1)).squeeze(-1)
        assert bool((chosen <= reference.min(-1).values + COSINE_ATOL).all())


@given(case=cases())
def test_other_slices_do_not_change_a_slice(case):
    """Changing every other (batch, head) slice leaves one slice's matching bit-identical."""
    split = _split(case)
    x = case.features()
    b, h = case.batch - 1, case.heads // 2
    before = match_tokens(x, split, case.similarity, start=case.text_before)
    other = torch.randn(x.shape, generator=torch.Generator().manual_seed(case.seed)).to(x.dtype)
    other[b, h] = x[b, h]
    after = match_tokens(other, split, case.similarity, start=case.text_before)
    for got, want in zip(after, before):
        assert torch.equal(got[b, h], want[b, h])


@given(case=cases())
def test_tokens_outside_the_span_are_ignored(case):
    split = _split(case)
    x = case.features()
    video_only = match_tokens(_video(x, case), split, case.similarity)
    noisy = x.clone()
    noisy[..., : case.text_before, :] = 7.0
    noisy[..., case.text_before + case.num_tokens :, :] = -7.0
    with_text = match_tokens(noisy, split, case.similarity, start=case.text_before)
    for got, want in zip(with_text, video_only):
        assert torch.equal(got, want)


@given(case=cases())
def test_matching_invariants(case):
    split = _split(case)
    x = case.features()
    got = match_tokens(x, split, case.similarity, start=case.text_before)
    num_src, num_dst = len(split.src), len(split.dst)
    # src_order is a permutation sorted by decreasing distance.
    assert torch.equal(got.src_order.sort(-1).values,
                       torch.arange(num_src).expand_as(got.src_order))
    sorted_distance = got.distance.gather(-1, got.src_order)
    assert bool((sorted_distance[..., 1:] <= sorted_distance[..., :-1]).all())
    if num_dst == 0:
        assert bool((got.nearest == 0).all()) and bool(torch.isinf(got.distance).all())
    else:
        assert bool(((got.nearest >= 0) & (got.nearest < num_dst)).all())
        if case.similarity == "euclidean":
            assert bool((got.distance >= 0).all())


@pytest.mark.parametrize("similarity", SIMILARITIES)
def test_no_dst_or_no_src(similarity):
    x = torch.randn(2, 3, 12, 4)
    no_dst = split_tokens(12, (1, 3, 4), (2, 2, 2))
    got = match_tokens(x, no_dst, similarity)
    assert got.src_order.shape == got.nearest.shape == got.distance.shape == (2, 3, 12)
    assert torch.equal(got.src_order[0, 0], torch.arange(12))
    no_src = split_tokens(12, (1, 3, 4), (1, 1, 1))
    got = match_tokens(x, no_src, similarity)
    assert got.src_order.shape == got.nearest.shape == got.distance.shape == (2, 3, 0)


def test_half_inputs_match_in_float32():
    x = torch.randn(2, 64, 8).to(torch.bfloat16)
    split = split_tokens(64, (4, 4, 4))
    got = match_tokens(x, split)
    want = match_tokens(x.float(), split)
    assert got.distance.dtype == torch.float32
    for a, b in zip(got, want):
        assert torch.equal(a, b)


def test_chunk_size_respects_budget():
    leading, num_src, num_dst, itemsize = 60, 15_570, 1_980, 4
    chunk = match_chunk_size(leading, num_src, num_dst, itemsize, DEFAULT_MATCH_CHUNK_BYTES)
    assert chunk * leading * num_dst * itemsize <= DEFAULT_MATCH_CHUNK_BYTES
    assert (chunk + 1) * leading * num_dst * itemsize > DEFAULT_MATCH_CHUNK_BYTES
    assert match_chunk_size(leading, num_src, num_dst, itemsize, 1) == 1
    assert match_chunk_size(1, 10, 1, 4, 2**30) == 10


def test_inputs_requiring_grad_are_matched_without_graph():
    x = torch.randn(2, 64, 8, requires_grad=True)
    split = split_tokens(64, (4, 4, 4))
    got = match_tokens(x, split, chunk_bytes=2 * len(split.dst) * 4 * 5)
    want = match_tokens(x.detach(), split)
    assert not got.distance.requires_grad
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@given(
    case=cases(need_dst=True, dtypes=(torch.float32, torch.float64, torch.bfloat16)),
    chunk_bytes=st.one_of(st.integers(1, 4096), st.just(DEFAULT_MATCH_CHUNK_BYTES)),
)
def test_exact_ties_pick_the_first_dst_and_keep_split_order(case, chunk_bytes):
    """With small integer features every euclidean and dot distance is exact, so ties are real:
    the nearest dst is the first one at the minimum distance, equal distances keep the order of
    ``split.src``, and the chunk size changes nothing."""
    assume(case.similarity != "cosine")
    split = _split(case)
    x = _integer_features(case)
    video = _video(x, case)
    reference = reference_distances(video[..., split.dst, :], video[..., split.src, :],
                                    case.similarity)
    best = reference.min(dim=-1).values
    first = (reference == best.unsqueeze(-1)).to(torch.uint8).argmax(dim=-1)
    order = torch.sort(best, dim=-1, descending=True, stable=True).indices
    got = match_tokens(x, split, case.similarity, start=case.text_before, chunk_bytes=chunk_bytes)
    assert torch.equal(got.nearest, first)
    assert torch.equal(got.src_order, order)
    assert torch.equal(got.distance.double(), best)
    whole = match_tokens(x, split, case.similarity, start=case.text_before)
    for a, b in zip(got, whole):
        assert torch.equal(a, b)
