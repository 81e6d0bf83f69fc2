"""The ops trace with ``torch.compile(fullgraph=True)`` and match eager (docs/architecture.md).

A handful of representative pipelines (split -> match -> indices -> reduce -> restore, and the
mask), each compiled once with Inductor (~1-2 s per compile on a 2-core CPU).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.fx.experimental.proxy_tensor import make_fx

from asymrnr_compile.ops import (
    TokenSplit,
    match_tokens,
    num_kept_tokens,
    reduce_mask,
    reduce_tokens,
    reduction_indices,
    restore_tokens,
    split_tokens,
)

BATCH, HEADS, CHANNELS, QUERIES = 2, 3, 8, 4
# (name, grid, use_grid, stride, text_before, text_after, dtype, similarity, mode, ratio,
#  chunk_bytes)
CASES = [
    # CogVideoX-like: text first, default stride, three match chunks.
    ("text_first", (3, 4, 6), True, (2, 2, 2), 5, 0, torch.float32, "euclidean", "replace",
     0.6, BATCH * HEADS * 6 * 4 * 22),
    # HunyuanVideo/Mochi-like: text last, non-divisible grid, half precision, mean mode.
    ("text_last", (3, 5, 5), True, (2, 2, 2), 0, 4, torch.bfloat16, "cosine", "mean", 0.4,
     64 * 2**20),
    # 1-D fallback, dot similarity, no text, three match chunks.
    ("one_d", (1, 1, 30), False, (1, 2, 2), 0, 0, torch.float32, "dot", "replace", 0.5,
     BATCH * HEADS * 7 * 4 * 8),
    # Stride larger than the grid: no dst tokens, nothing is reduced.
    ("no_dst", (1, 3, 4), True, (2, 2, 2), 2, 2, torch.float32, "euclidean", "replace", 0.0,
     64 * 2**20),
]
OUTPUT_TOL = {torch.float32: (1e-6, 1e-6), torch.bfloat16: (1.6e-2, 1e-2)}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_compiled_equals_eager(case):
    (_, grid, use_grid, stride, before, after, dtype, similarity, mode, ratio, chunk_bytes) = case
    n = math.prod(grid)
    length = before + n + after
    num_keep = num_kept_tokens(n, math.prod(g // s for g, s in zip(grid, stride)) if use_grid
                               else n // math.prod(stride), ratio)

    def pipeline(x, mask):
        split = split_tokens(n, grid if use_grid else None, stride, seed=7)
        matching = match_tokens(x, split, similarity, start=before, chunk_bytes=chunk_bytes)
        indices = reduction_indices(split, matching, num_keep)
        reduced = reduce_tokens(x, indices, mode, start=before)
        restored = restore_tokens(reduced * 2, indices, start=before)
        return matching, indices, reduced, restored, reduce_mask(mask, indices, start=before)

    generator = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, HEADS, length, CHANNELS, generator=generator).to(dtype)
    mask = torch.rand(BATCH, 1, QUERIES, length, generator=generator) > 0.3
    if dtype == torch.float32:
        x.requires_grad_()  # as the features of a model called without no_grad

    eager = pipeline(x, mask)
    torch._dynamo.reset()
    compiled = torch.compile(pipeline, backend="inductor", fullgraph=True)(x, mask)

    (m_e, i_e, red_e, res_e, mask_e), (m_c, i_c, red_c, res_c, mask_c) = eager, compiled
    assert red_c.requires_grad == x.requires_grad
    red_e, res_e, red_c, res_c = (t.detach() for t in (red_e, res_e, red_c, res_c))
    assert torch.equal(m_c.src_order, m_e.src_order)
    assert torch.equal(m_c.nearest, m_e.nearest)
    # The matcher is one custom op, run by the same code in both: bit-identical.
    assert torch.equal(m_c.distance, m_e.distance)
    assert torch.equal(i_c.keep, i_e.keep) and torch.equal(i_c.restore, i_e.restore)
    rtol, atol = OUTPUT_TOL[dtype]
    torch.testing.assert_close(red_c, red_e, rtol=rtol, atol=atol)
    torch.testing.assert_close(res_c, res_e, rtol=rtol, atol=atol)
    assert torch.equal(mask_c, mask_e)
    assert red_c.shape == (BATCH, HEADS, length - n + num_keep, CHANNELS)


def _small_pipeline(n, grid, num_keep, before):
    def pipeline(x, mask, dst, src):
        split = TokenSplit(dst, src)
        matching = match_tokens(x, split, start=before)
        indices = reduction_indices(split, matching, num_keep)
        reduced = reduce_tokens(x, indices, "mean", start=before)
        return restore_tokens(reduced, indices, start=before), reduce_mask(
            mask, indices, start=before)
    return pipeline


def test_ops_trace_with_make_fx_symbolic():
    """A graph rewrite inserts the ops into an FX graph that AOTAutograd traces on fake tensors
    (symbolic shapes); the split comes in as tensors computed eagerly."""
    n, grid, before = 60, (3, 4, 5), 3
    split = split_tokens(n, grid, seed=7)
    pipeline = _small_pipeline(n, grid, num_kept_tokens(n, len(split.dst), 0.5), before)
    x = torch.randn(BATCH, HEADS, before + n + 2, CHANNELS)
    mask = torch.rand(BATCH, 1, QUERIES, before + n + 2) > 0.5
    traced = make_fx(pipeline, tracing_mode="symbolic")(x, mask, *split)
    for got, want in zip(traced(x, mask, *split), pipeline(x, mask, *split)):
        assert torch.equal(got, want)


def test_traced_with_dynamic_shapes():
    """Dynamo with dynamic shapes and AOTAutograd's symbolic tracing (``aot_eager``: Inductor's
    dynamic-shape codegen of this pipeline alone takes ~20 s on a 2-core CPU)."""
    n, grid, before = 60, (3, 4, 5), 3

    def pipeline(x, mask):
        split = split_tokens(n, grid, seed=7)
        num_keep = num_kept_tokens(n, len(split.dst), 0.5)
        return _small_pipeline(n, grid, num_keep, before)(x, mask, *split)

    torch._dynamo.reset()
    compiled = torch.compile(pipeline, backend="aot_eager", fullgraph=True, dynamic=True)
    for batch in (2, 3):
        x = torch.randn(batch, HEADS, before + n + 2, CHANNELS)
        mask = torch.rand(batch, 1, QUERIES, before + n + 2) > 0.5
        (res_c, mask_c), (res_e, mask_e) = compiled(x, mask), pipeline(x, mask)
        assert torch.equal(res_c, res_e)
        assert torch.equal(mask_c, mask_e)
