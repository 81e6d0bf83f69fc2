"""Properties of the random token-dropping baseline (``ops.random_matching``)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from ops_strategies import cases

from asymrnr_compile.ops import (
    TokenSplit,
    match_tokens,
    num_kept_tokens,
    random_matching,
    reduce_tokens,
    reduction_indices,
    restore_tokens,
    split_tokens,
)


def _setup(case):
    split = split_tokens(case.num_tokens, case.grid_arg, case.stride, seed=case.seed)
    x = case.features()
    matching = random_matching(x, split, start=case.text_before, seed=case.data_seed)
    return split, x, matching


@given(case=cases())
def test_random_matching_is_a_valid_matching_of_the_split(case):
    split, _, matching = _setup(case)
    num_dst, num_src = len(split.dst), len(split.src)
    leading = (case.batch, case.heads)
    assert matching.src_order.shape == matching.nearest.shape == matching.distance.shape == (*leading, num_src)
    assert matching.src_order.dtype == matching.nearest.dtype == torch.long
    # src_order is a permutation of 0..N_src-1 in every row
    expected = torch.arange(num_src).expand(*leading, num_src)
    assert torch.equal(matching.src_order.sort(dim=-1).values, expected)
    if num_dst:
        assert bool(((matching.nearest >= 0) & (matching.nearest < num_dst)).all())
    else:
        assert not matching.nearest.any()
    assert bool(torch.isnan(matching.distance).all())


@given(case=cases())
def test_random_selection_keeps_the_matched_counts_and_restore_structure(case):
    split, x, matching = _setup(case)
    num_keep = num_kept_tokens(case.num_tokens, len(split.dst), case.ratio)
    indices = reduction_indices(split, matching, num_keep)
    matched = reduction_indices(split, match_tokens(x, split, start=case.text_before), num_keep)
    assert indices.keep.shape == matched.keep.shape and indices.restore.shape == matched.restore.shape
    # every dst token is kept, kept tokens are distinct
    keep = indices.keep
    assert torch.equal(keep[..., : len(split.dst)], split.dst.expand(*keep.shape[:-1], len(split.dst)))
    assert bool((keep.sort(dim=-1).values.diff(dim=-1) > 0).all())
    # replace mode: kept rows come back exactly; dropped rows copy a dst row
    reduced = reduce_tokens(x, indices, "replace", start=case.text_before)
    restored = restore_tokens(reduced, indices, start=case.text_before)
    video = x[..., case.text_before : case.text_before + case.num_tokens, :]
    back = restored[..., case.text_before : case.text_before + case.num_tokens, :]
    kept_rows = torch.gather(back, -2, keep.unsqueeze(-1).expand(*keep.shape, x.shape[-1]))
    assert torch.equal(kept_rows, torch.gather(video, -2, keep.unsqueeze(-1).expand(*keep.shape, x.shape[-1])))
    dst_rows = indices.restore.lt(len(split.dst))  # rows that point at a dst token's row
    is_kept = torch.zeros(indices.restore.shape, dtype=torch.bool).scatter_(-1, keep, True)
    assert bool((dst_rows | is_kept).all())  # a dropped token always copies a dst token


@given(case=cases(need_dst=True))
def test_random_matching_is_seeded_and_ignores_the_values(case):
    split, x, matching = _setup(case)
    again = random_matching(torch.randn_like(x.float()).to(x.dtype), split, start=case.text_before,
                            seed=case.data_seed)
    for a, b in zip(matching[:2], again[:2]):
        assert torch.equal(a, b)


def test_random_matching_differs_across_seeds_and_heads():
    split = split_tokens(4 * 8 * 8, (4, 8, 8))
    x = torch.zeros(2, 4, 256, 16)
    a = random_matching(x, split, seed=0)
    b = random_matching(x, split, seed=1)
    assert not torch.equal(a.src_order, b.src_order)
    assert not torch.equal(a.nearest, b.nearest)
    assert not torch.equal(a.src_order[0, 0], a.src_order[0, 1])  # independent per head


def test_random_matching_compiles_to_the_eager_result():
    split = split_tokens(4 * 8 * 8, (4, 8, 8))
    x = torch.randn(2, 4, 260, 16)

    def indices(x, dst, src):
        split = TokenSplit(dst, src)
        return reduction_indices(split, random_matching(x, split, start=4, seed=3), 128)

    eager = indices(x, split.dst, split.src)
    compiled = torch.compile(indices, fullgraph=True, backend="aot_eager")(x, split.dst, split.src)
    assert torch.equal(eager.keep, compiled.keep) and torch.equal(eager.restore, compiled.restore)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"seed": -1}, ValueError, "seed"),
    ({"seed": 2**63}, ValueError, "seed"),
    ({"start": 10}, ValueError, "start"),
    ({"seed": 1.5}, TypeError, "seed"),
])
def test_random_matching_rejects_bad_arguments(kwargs, error, match):
    split = split_tokens(64, (4, 4, 4))
    with pytest.raises(error, match=match):
        random_matching(torch.zeros(1, 2, 70, 4), split, **kwargs)


def test_random_matching_rejects_a_bad_split():
    with pytest.raises(TypeError, match="split"):
        random_matching(torch.zeros(1, 64, 4), (torch.arange(8),))
