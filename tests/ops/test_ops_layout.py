"""ops.layout: a tensor laid out in a given dim order keeps its values; dim_order reads it back."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from asymrnr_compile.ops import dim_order, with_dim_order

DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.int64)


@st.composite
def laid_out_tensors(draw):
    """A tensor of 1-5 dims (sizes 1-4) stored in a random dim order, and a random target order."""
    ndim = draw(st.integers(1, 5))
    shape = draw(st.lists(st.integers(1, 4), min_size=ndim, max_size=ndim))
    storage_order = draw(st.permutations(range(ndim)))
    target = tuple(draw(st.permutations(range(ndim))))
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    generator = torch.Generator().manual_seed(seed)
    stored = torch.randn([shape[d] for d in storage_order], generator=generator).to(dtype)
    inverse = [storage_order.index(d) for d in range(ndim)]
    return stored.permute(inverse), target


@given(laid_out_tensors())
def test_with_dim_order_keeps_values_and_lays_out_dims_in_order(case):
    x, order = case
    y = with_dim_order(x, order)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.equal(y, x)
    assert y.permute(order).is_contiguous()
    sized = [d for d in order if x.shape[d] != 1]
    assert [d for d in dim_order(y) if x.shape[d] != 1] == sized


@given(laid_out_tensors())
def test_dim_order_of_a_permuted_contiguous_tensor_is_that_permutation(case):
    x, order = case
    stored = torch.empty([x.shape[d] for d in order])
    inverse = [order.index(d) for d in range(x.dim())]
    view = stored.permute(inverse)
    read = dim_order(view)
    assert sorted(read) == list(range(x.dim()))
    assert [d for d in read if x.shape[d] != 1] == [d for d in order if x.shape[d] != 1]
    assert view.permute(read).is_contiguous()


def test_attention_output_layout():
    x = torch.empty(2, 7, 3, 4).transpose(1, 2)  # (B, H, L, d) stored as (B, L, H, d)
    assert dim_order(x) == (0, 2, 1, 3)
    assert dim_order(torch.empty(2, 3, 7, 4)) == (0, 1, 2, 3)
    y = torch.randn(2, 3, 7, 4)
    assert with_dim_order(y, (0, 1, 2, 3)) is y  # already laid out so: no copy
    z = with_dim_order(y, (0, 2, 1, 3))
    assert z.transpose(1, 2).is_contiguous() and torch.equal(z, y)


@pytest.mark.parametrize("order", [(0, 1), (0, 1, 1, 2), (0, 1, 2, 4), (3, 2, 1)])
def test_with_dim_order_refuses_what_is_not_a_permutation_of_the_dims(order):
    with pytest.raises(ValueError, match="order must be a permutation of range"):
        with_dim_order(torch.zeros(2, 3, 4, 5), order)
