"""Properties of ``ops.redundancy.reduction_errors`` (the measured damage of a q or kv reduction)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from ops_strategies import cases

from asymrnr_compile.ops import (
    match_tokens,
    reduce_tokens,
    reduction_indices,
    restore_tokens,
    split_tokens,
)
from asymrnr_compile.ops.redundancy import reduction_errors
from asymrnr_compile.ops.split import num_kept_tokens


def _attention_inputs(case):
    split = split_tokens(case.num_tokens, case.grid_arg, case.stride, seed=case.seed)
    generator = torch.Generator().manual_seed(case.data_seed)
    q, k, v = (torch.randn(case.batch, case.heads, case.length, case.channels, generator=generator,
                           dtype=torch.float64) for _ in range(3))
    return split, q, k, v


@given(case=cases(dtypes=(torch.float32,), need_dst=True), reduction=st.sampled_from(["q", "kv"]))
def test_errors_are_zero_where_nothing_is_dropped_and_when_dropped_queries_duplicate_their_stand_in(case, reduction):
    split, q, k, v = _attention_inputs(case)
    start = case.text_before
    matching = match_tokens(q if reduction == "q" else v, split, start=start)
    ratios = (0.0, case.ratio)
    exact = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    errors = reduction_errors(q, k, v, exact, split, matching, reduction, ratios, start=start)
    assert errors.shape == (2,) and errors.dtype == torch.float32
    assert float(errors[0]) == 0.0
    assert bool((errors >= 0).all())
    num_keep = num_kept_tokens(case.num_tokens, len(split.dst), case.ratio)
    if num_keep == case.num_tokens:
        assert float(errors[1]) == 0.0
    if reduction == "q":
        # Queries where every dropped token equals the one standing for it restore exactly.
        indices = reduction_indices(split, matching, num_keep)
        q_dup = restore_tokens(reduce_tokens(q, indices, start=start), indices, start=start)
        exact_dup = torch.nn.functional.scaled_dot_product_attention(q_dup, k, v)
        dup = reduction_errors(q_dup, k, v, exact_dup, split, matching, "q", (case.ratio,), start=start)
        assert float(dup[0]) < 1e-5


def test_reduction_errors_validate_their_arguments():
    split = split_tokens(16, (1, 4, 4), seed=0)
    q = torch.randn(1, 2, 18, 4)
    matching = match_tokens(q, split, start=2)
    with pytest.raises(ValueError, match="feature must be one of"):
        reduction_errors(q, q, q, q, split, matching, "h", (0.5,), start=2)
    with pytest.raises(ValueError, match="ratios must be in"):
        reduction_errors(q, q, q, q, split, matching, "q", (1.0,), start=2)
    with pytest.raises(ValueError, match="start"):
        reduction_errors(q, q, q, q, split, matching, "q", (0.5,), start=5)
