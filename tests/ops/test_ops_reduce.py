"""Properties of reduce / restore / mask gathering (docs/method.md, steps 3-4)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from ops_strategies import cases, random_features

from asymrnr_compile.ops import (
    Matching,
    ReductionIndices,
    gather_tokens,
    indices_over_heads,
    key_multiplicity,
    match_tokens,
    num_kept_tokens,
    proportional_attention_mask,
    reduce_mask,
    reduce_tokens,
    reduction_indices,
    restore_tokens,
    split_tokens,
)

MEAN_TOLERANCE = {  # (rtol, atol) of a mean computed in float32 then rounded to the dtype.
    torch.float32: (1e-5, 1e-6),
    torch.bfloat16: (1e-2, 1e-2),
    torch.float16: (1e-3, 1e-3),
}


def _setup(case, x=None):
    split = split_tokens(case.num_tokens, case.grid_arg, case.stride, seed=case.seed)
    x = case.features() if x is None else x
    matching = match_tokens(x, split, case.similarity, start=case.text_before)
    num_keep = num_kept_tokens(case.num_tokens, len(split.dst), case.ratio)
    return split, x, matching, num_keep, reduction_indices(split, matching, num_keep)


def _video(t, case, length):
    return t[..., case.text_before : case.text_before + length, :]


def _expected_keep(case, num_tokens, num_dst, ratio):
    if num_dst == 0:
        return num_tokens
    return num_dst + max(0, int(num_tokens * (1 - ratio)) - num_dst)


@given(case=cases(ratio_zero=True))
def test_ratio_zero_round_trip_is_exact(case):
    _split, x, _, num_keep, indices = _setup(case)
    assert num_keep == case.num_tokens
    reduced = reduce_tokens(x, indices, case.mode, start=case.text_before)
    assert reduced.shape == x.shape
    restored = restore_tokens(reduced, indices, start=case.text_before)
    assert restored.dtype == x.dtype
    assert torch.equal(restored, x)


@given(case=cases())
def test_replace_keeps_exact_rows_and_copies_matched_dst(case):
    split, x, matching, num_keep, indices = _setup(case)
    n, num_dst = case.num_tokens, len(split.dst)
    lead = (case.batch, case.heads)
    assert num_keep == _expected_keep(case, n, num_dst, case.ratio)

    # Index structure: dst first, then the least similar src tokens in src_order order.
    assert isinstance(indices, ReductionIndices)
    assert indices.keep.shape == (*lead, num_keep) and indices.restore.shape == (*lead, n)
    assert torch.equal(indices.keep[..., :num_dst], split.dst.expand(*lead, num_dst))
    kept_src = split.src[matching.src_order[..., : num_keep - num_dst]]
    assert torch.equal(indices.keep[..., num_dst:], kept_src)
    # restore maps every kept token to its own row.
    rows = torch.arange(num_keep).expand(*lead, num_keep)
    assert torch.equal(indices.restore.gather(-1, indices.keep), rows)

    reduced = reduce_tokens(x, indices, "replace", start=case.text_before)
    assert reduced.shape == (*lead, case.length - n + num_keep, case.channels)
    # Text before and after the span passes through unchanged.
    assert torch.equal(reduced[..., : case.text_before, :], x[..., : case.text_before, :])
    tail = case.text_after
    assert torch.equal(reduced[..., reduced.shape[-2] - tail :, :],
                       x[..., x.shape[-2] - tail :, :])
    video = _video(x, case, n)
    assert torch.equal(_video(reduced, case, num_keep), gather_tokens(video, indices.keep))

    restored = restore_tokens(reduced, indices, start=case.text_before)
    assert restored.shape == x.shape
    video_restored = _video(restored, case, n)
    assert torch.equal(restored[..., : case.text_before, :], x[..., : case.text_before, :])
    assert torch.equal(restored[..., x.shape[-2] - tail :, :], x[..., x.shape[-2] - tail :, :])
    # Kept rows are exact.
    kept_rows = gather_tokens(video_restored, indices.keep)
    assert torch.equal(kept_rows, gather_tokens(video, indices.keep))
    # Every dropped src row equals the row of its matched dst token.
    dropped = matching.src_order[..., num_keep - num_dst :]
    if dropped.shape[-1]:
        token = split.src[dropped]
        matched_dst = split.dst[matching.nearest.gather(-1, dropped)]
        assert torch.equal(gather_tokens(video_restored, token), gather_tokens(video, matched_dst))


@given(case=cases())
def test_mean_mode_averages_each_group(case):
    _split, x, _, num_keep, indices = _setup(case)
    n = case.num_tokens
    reduced = reduce_tokens(x, indices, "mean", start=case.text_before)
    assert reduced.shape == (case.batch, case.heads, case.length - n + num_keep, case.channels)
    assert reduced.dtype == x.dtype
    # Reference: one-hot (row <- token) membership, averaged in float64.
    member = (indices.restore.unsqueeze(-2) == torch.arange(num_keep).unsqueeze(-1)).double()
    want = member @ _video(x, case, n).double() / member.sum(-1, keepdim=True)
    rtol, atol = MEAN_TOLERANCE[case.dtype]
    torch.testing.assert_close(_video(reduced, case, num_keep).double(), want, rtol=rtol, atol=atol)
    assert torch.equal(reduced[..., : case.text_before, :], x[..., : case.text_before, :])
    # Rows whose group has a single member (kept src tokens, lone dst tokens) are exact.
    single = member.sum(-1) == 1
    got = _video(reduced, case, num_keep)
    exact = gather_tokens(_video(x, case, n), indices.keep)
    assert torch.equal(got[single], exact[single])
    # Restoring a mean-reduced sequence gives every token the mean of its group.
    restored = restore_tokens(reduced, indices, start=case.text_before)
    assert torch.equal(_video(restored, case, n), gather_tokens(got, indices.restore))


@given(case=cases(), mask_kind=st.sampled_from(["bool", "float"]))
def test_mask_follows_the_reduced_keys(case, mask_kind):
    _split, _x, _, num_keep, indices = _setup(case)
    n, length, queries = case.num_tokens, case.length, 3
    # Each mask entry encodes its own key position, so a gather is checkable exactly.
    key_id = torch.arange(length, dtype=torch.float32).expand(case.batch, 1, queries, length)
    mask = key_id if mask_kind == "float" else None
    reduced_keys = reduce_tokens(
        key_id[:, :, 0, :].unsqueeze(-1), indices, start=case.text_before
    ).squeeze(-1)  # (B, H, L'), which key sits at each reduced position
    if mask_kind == "float":
        got = reduce_mask(mask, indices, start=case.text_before)
        assert got.shape == (case.batch, case.heads, queries, length - n + num_keep)
        assert torch.equal(got, reduced_keys.unsqueeze(-2).expand_as(got))
    else:
        bool_mask = (key_id % 3) != 0
        got = reduce_mask(bool_mask, indices, start=case.text_before)
        assert got.dtype == torch.bool
        assert torch.equal(got, (reduced_keys % 3 != 0).unsqueeze(-2).expand_as(got))


def _indices(batch=2, heads=3, n=12, grid=(1, 3, 4), ratio=0.5, seed=0):
    split = split_tokens(n, grid, (1, 2, 2), seed=seed)
    x = torch.randn(batch, heads, n, 4, generator=torch.Generator().manual_seed(seed))
    matching = match_tokens(x, split)
    return reduction_indices(split, matching, num_kept_tokens(n, len(split.dst), ratio))


def test_mask_broadcasting_shapes():
    idx = _indices()
    k = idx.keep.shape[-1]
    assert reduce_mask(torch.zeros(2, 1, 5, 12), idx).shape == (2, 3, 5, k)
    assert reduce_mask(torch.zeros(5, 12), idx).shape == (2, 3, 5, k)
    assert reduce_mask(torch.zeros(2, 1, 5, 15), idx, start=2).shape == (2, 3, 5, k + 3)
    # Key axis broadcast (size 1) is left alone.
    assert reduce_mask(torch.zeros(2, 1, 5, 1), idx).shape == (2, 1, 5, 1)
    # Query axis.
    mask = torch.arange(14.0).view(14, 1).expand(14, 6)
    got = reduce_mask(mask, idx, start=1, dim=-2)
    assert got.shape == (2, 3, k + 2, 6)
    assert torch.equal(got[..., 1 : 1 + k, 0], (idx.keep + 1).float())
    assert torch.equal(got[..., 0, 0], torch.zeros(2, 3)) and bool((got[..., -1, 0] == 13).all())


def test_gather_tokens_broadcasting():
    x = torch.randn(2, 3, 10, 4)
    index = torch.tensor([[[1, 5, 7]], [[0, 2, 9]]])  # (2, 1, 3)
    got = gather_tokens(x, index)
    assert got.shape == (2, 3, 3, 4)
    assert torch.equal(got[1, 2], x[1, 2, [0, 2, 9]])
    assert gather_tokens(x[:, 0], index[:, 0]).shape == (2, 3, 4)
    per_head = torch.randint(0, 10, (2, 3, 5))
    assert torch.equal(gather_tokens(x[:, :1], per_head)[0, 1], x[0, 0, per_head[0, 1]])


def test_reduce_tokens_broadcasts_features_against_indices():
    idx = _indices()
    x = torch.randn(2, 1, 14, 4)
    got = reduce_tokens(x, idx, start=1)
    assert got.shape == (2, 3, 14 - 12 + idx.keep.shape[-1], 4)
    assert torch.equal(got[1, 2, 1:-1], x[1, 0, 1 + idx.keep[1, 2]])
    mean = reduce_tokens(x, idx, "mean", start=1)
    assert mean.shape == got.shape
    restored = restore_tokens(got, idx, start=1)
    assert restored.shape == (2, 3, 14, 4)


def test_no_dst_split_keeps_everything():
    split = split_tokens(12, (1, 3, 4), (2, 2, 2))
    x = torch.randn(2, 12, 4)
    matching = match_tokens(x, split)
    idx = reduction_indices(split, matching, num_kept_tokens(12, 0, 0.7))
    assert torch.equal(restore_tokens(reduce_tokens(x, idx), idx), x)
    with pytest.raises(ValueError, match="num_keep"):
        reduction_indices(split, matching, 6)


@given(case=cases())
def test_key_multiplicity_counts_the_tokens_each_row_stands_for(case):
    _, _, _, num_keep, indices = _setup(case)
    counts = key_multiplicity(indices)
    assert counts.shape == (*indices.keep.shape[:-1], num_keep) and counts.dtype == torch.int64
    assert bool((counts >= 1).all()) and bool((counts.sum(-1) == case.num_tokens).all())
    expected = torch.stack([torch.bincount(row, minlength=num_keep)
                            for row in indices.restore.reshape(-1, case.num_tokens)])
    assert torch.equal(counts.reshape(-1, num_keep), expected)


@given(case=cases(dtypes=(torch.float32,), need_dst=True),
       mask_kind=st.sampled_from(["none", "bool", "float"]))
def test_proportional_attention_is_exact_when_dropped_keys_duplicate_their_dst(case, mask_kind):
    """Full attention over keys/values where every dropped token is a copy of the token standing
    for it equals attention over the reduced keys with the log-multiplicity bias."""
    _, x, _, _, indices = _setup(case)
    start = case.text_before
    generator = torch.Generator().manual_seed(case.data_seed + 1)
    queries = torch.randn(case.batch, case.heads, 4, case.channels, generator=generator, dtype=torch.float64)
    # Keys/values of the full sequence: every video token takes the features of its reduced row.
    k_small = reduce_tokens(x.double(), indices, start=start)
    v_small = reduce_tokens(torch.randn(x.shape, generator=generator, dtype=torch.float64), indices, start=start)
    k_full = restore_tokens(k_small, indices, start=start)
    v_full = restore_tokens(v_small, indices, start=start)
    if mask_kind == "none":
        mask = None
    else:  # masks that hide some text keys only (video keys are where the bias goes)
        visible = torch.ones(case.batch, 1, 4, case.length, dtype=torch.bool)
        visible[..., : start // 2] = False
        mask = visible if mask_kind == "bool" else torch.zeros(visible.shape, dtype=torch.float64).masked_fill(
            ~visible, float("-inf"))
    full = torch.nn.functional.scaled_dot_product_attention(queries, k_full, v_full, attn_mask=mask)
    reduced_mask = None if mask is None else reduce_mask(mask, indices, start=start)
    bias = proportional_attention_mask(reduced_mask, k_small, indices, start=start)
    assert bias.dtype == k_small.dtype and bias.shape[-1] == k_small.shape[-2]
    got = torch.nn.functional.scaled_dot_product_attention(queries, k_small, v_small, attn_mask=bias)
    torch.testing.assert_close(got, full, rtol=1e-9, atol=1e-9)
    # the bias is log(count) on the video keys and 0 (or the mask) elsewhere
    video_bias = bias[..., start : start + indices.keep.shape[-1]]
    torch.testing.assert_close(video_bias, key_multiplicity(indices).double().log().unsqueeze(-2).expand_as(video_bias))


def test_proportional_attention_mask_validates_and_broadcasts():
    idx = _indices()  # (2, 3) leading, n = 12, no text
    k = idx.keep.shape[-1]
    key = torch.randn(2, 3, k + 2, 4)
    assert proportional_attention_mask(None, key, idx, start=1).shape == (2, 3, 1, k + 2)
    assert proportional_attention_mask(torch.zeros(2, 1, 5, k + 2), key, idx, start=1).shape == (2, 3, 5, k + 2)
    assert proportional_attention_mask(None, key.bfloat16(), idx, start=1).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="start"):
        proportional_attention_mask(None, key, idx, start=3)
    with pytest.raises(TypeError, match="key"):
        proportional_attention_mask(None, None, idx)


@given(case=cases())
def test_indices_over_heads_apply_one_matching_to_every_head(case):
    """Indices of one matching per batch element (hidden states ``(B, L, c)``), given a size-1
    head axis, reduce / restore / mask every head exactly as the same indices repeated per head."""
    split = split_tokens(case.num_tokens, case.grid_arg, case.stride, seed=case.seed)
    hidden = random_features((case.batch, case.length, case.channels), case)
    matching = match_tokens(hidden, split, case.similarity, start=case.text_before)
    num_keep = num_kept_tokens(case.num_tokens, len(split.dst), case.ratio)
    shared = indices_over_heads(reduction_indices(split, matching, num_keep))
    assert shared.keep.shape == (case.batch, 1, num_keep)
    assert shared.restore.shape == (case.batch, 1, case.num_tokens)
    repeated = ReductionIndices(*(t.expand(case.batch, case.heads, t.shape[-1]) for t in shared))

    x = case.features()  # (B, H, L, c)
    reduced = reduce_tokens(x, shared, case.mode, start=case.text_before)
    assert torch.equal(reduced, reduce_tokens(x, repeated, case.mode, start=case.text_before))
    restored = restore_tokens(reduced, shared, start=case.text_before)
    assert torch.equal(restored, restore_tokens(reduced, repeated, start=case.text_before))
    torch.testing.assert_close(
        proportional_attention_mask(None, reduced, shared, start=case.text_before).expand(
            case.batch, case.heads, 1, reduced.shape[-2]),
        proportional_attention_mask(None, reduced, repeated, start=case.text_before), rtol=0, atol=0)
    # Every head's kept rows are the rows the one matching chose.
    if case.mode == "replace":
        for head in range(case.heads):
            assert torch.equal(_video(reduced, case, num_keep)[:, head],
                               gather_tokens(_video(x, case, case.num_tokens)[:, head], shared.keep[:, 0]))


def test_indices_over_heads_rejects_non_indices():
    with pytest.raises(TypeError):
        indices_over_heads((torch.zeros(2, 3),))


def _reference_indices(split, src_order, nearest, num_keep):
    """keep/restore of one leading row, token by token from their definitions."""
    dst, src = split.dst.tolist(), split.src.tolist()
    keep = dst + [src[j] for j in src_order.tolist()[: num_keep - len(dst)]]
    row_of = {token: row for row, token in enumerate(keep)}
    restore = [0] * (len(dst) + len(src))
    for token in dst:
        restore[token] = row_of[token]
    for j, token in enumerate(src):
        restore[token] = row_of.get(token, nearest[j].item())
    return torch.tensor(keep, dtype=torch.long), torch.tensor(restore, dtype=torch.long)


@given(case=cases(need_dst=True))
def test_reduction_indices_equal_the_definition(case):
    """Any matching (random permutation and nearest dst), any kept count in range."""
    split = split_tokens(case.num_tokens, case.grid_arg, case.stride, seed=case.seed)
    num_src, num_dst = len(split.src), len(split.dst)
    generator = torch.Generator().manual_seed(case.data_seed)
    lead = (case.batch, case.heads)
    src_order = torch.stack([torch.randperm(num_src, generator=generator)
                             for _ in range(case.batch * case.heads)]).reshape(*lead, num_src)
    nearest = torch.randint(0, num_dst, (*lead, num_src), generator=generator)
    matching = Matching(src_order, nearest, torch.zeros(*lead, num_src))
    num_keep = num_kept_tokens(case.num_tokens, num_dst, case.ratio)
    got = reduction_indices(split, matching, num_keep)
    for b in range(case.batch):
        for h in range(case.heads):
            keep, restore = _reference_indices(split, src_order[b, h], nearest[b, h], num_keep)
            assert torch.equal(got.keep[b, h], keep)
            assert torch.equal(got.restore[b, h], restore)
