"""FLOP formulas of the matrix products AsymRnR counts: the one home of each (docs/measuring.md).

Pure arithmetic on sizes, at :data:`FLOPS_PER_MAC` FLOPs per multiply-add (the convention of
``torch.utils.flop_counter``). Each function takes Python ints and returns the exact count; it
takes sympy expressions as well and returns the symbolic count, which is how the symbolic cost
models (:mod:`asymrnr_compile.analysis.cost`, :mod:`asymrnr_compile.analysis.parallel_cost`)
are built: from these functions, not from formulas typed again. Only ``+``, ``-`` and ``*``
are used, so no division, rounding or ``max`` stands between the two. The products are written
left to right from :data:`FLOPS_PER_MAC` on purpose: sympy then builds the same expressions the
cost model always had (``2 (N - N_dst)`` is distributed, for one), and so does the lambdified
arithmetic of :class:`~asymrnr_compile.analysis.cost.SiteCostModel`, to the last float bit.

The matcher (:func:`~asymrnr_compile.ops.match.match_tokens`) asks
:func:`projection_saves_flops` whether a random projection pays; the cost model counts the
matching it then runs with the same functions.
"""

from __future__ import annotations

from typing import TypeVar

Size = TypeVar("Size")
"""An int, or a sympy expression for the symbolic cost models."""

FLOPS_PER_MAC = 2
"""FLOPs per multiply-add: one multiplication and one addition."""

__all__ = [
    "FLOPS_PER_MAC",
    "attention_flops",
    "linear_flops",
    "matching_flops",
    "matmul_flops",
    "projected_matching_flops",
    "projection_saves_flops",
]


def matmul_flops(outputs: Size, inner: Size) -> Size:
    """FLOPs of a matrix product with ``outputs`` output entries, each a dot product of length
    ``inner``: ``2 outputs inner`` (a matmul ``(*, M, K) @ (*, K, N)`` has ``outputs = * M N``
    and ``inner = K``; a convolution has one output per output element and ``inner`` its input
    channels times its kernel volume)."""
    return FLOPS_PER_MAC * outputs * inner


def linear_flops(rows: Size, in_features: Size, out_features: Size) -> Size:
    """FLOPs of ``x @ W`` for ``x (rows, in_features)`` and ``W (in_features, out_features)``:
    ``2 rows c_in c_out`` (a linear layer or a projection; the bias is not counted)."""
    return matmul_flops(rows * out_features, in_features)


def attention_flops(leading: Size, q_tokens: Size, kv_tokens: Size, head_dim: Size,
                    value_dim: Size | None = None) -> Size:
    """FLOPs of ``softmax(Q K^T) V`` over ``leading`` (batch x heads) independent problems:
    ``2 P L_q L_k (d + d_v)``.

    Shapes: ``Q (P, L_q, d)``, ``K (P, L_k, d)``, ``V (P, L_k, d_v)``; ``Q K^T`` costs
    ``P L_q L_k d`` multiply-adds and ``softmax(.) V`` ``P L_q L_k d_v`` (paper Sec. 3.2: q
    reduction shortens ``L_q``, kv reduction ``L_k``, h reduction both). ``value_dim`` defaults
    to ``head_dim``. The softmax itself is element-wise and not counted.
    """
    value_dim = head_dim if value_dim is None else value_dim
    return FLOPS_PER_MAC * leading * q_tokens * kv_tokens * (head_dim + value_dim)


def matching_flops(leading: Size, num_src: Size, num_dst: Size, channels: Size) -> Size:
    """FLOPs of one exact matching: the ``(P, N_src, N_dst)`` source-to-destination similarity
    matmul of ``src (P, N_src, c)`` against ``dst (P, N_dst, c)``, ``2 P N_src N_dst c``
    (paper Sec. 3.3; ``N_src = N - N_dst``)."""
    return FLOPS_PER_MAC * leading * num_src * num_dst * channels


def projected_matching_flops(leading: Size, num_tokens: Size, num_dst: Size, channels: Size,
                             dims: Size) -> Size:
    """FLOPs of one matching on a ``dims``-dim random projection: the projection of the ``N``
    video tokens ``(P, N, c) @ (c, k)``, ``2 P N c k``, plus the score matmul on the projected
    features, :func:`matching_flops` with ``c = k``: ``2 P (N - N_dst) N_dst k``."""
    return (linear_flops(leading * num_tokens, channels, dims)
            + matching_flops(leading, num_tokens - num_dst, num_dst, dims))


def projection_saves_flops(num_tokens: int, num_dst: int, channels: int, dims: int) -> bool:
    """Whether matching on a ``dims``-dim projection takes fewer FLOPs than the exact matching,
    per leading index: :func:`projected_matching_flops` ``<`` :func:`matching_flops`, i.e.
    ``N c k + N_src N_dst k < N_src N_dst c`` (the projection of the ``N`` video tokens plus the
    smaller score matmul, against the full one). False for ``k >= c``, and for few dst tokens
    (``N_dst`` below about ``k``), where the projection alone costs more than it saves."""
    per_leading = 1
    return (projected_matching_flops(per_leading, num_tokens, num_dst, channels, dims)
            < matching_flops(per_leading, num_tokens - num_dst, num_dst, channels))
