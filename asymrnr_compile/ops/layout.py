"""Memory layout of a restored tensor: the order its dims are laid out in memory.

Models merge the heads right after attention: ``out.transpose(1, 2).reshape(B, L, H * d)``.
:func:`~asymrnr_compile.ops.restore_tokens` builds ``out`` by a gather and a concatenation, which a
compiler lays out row-major ``(B, H, L, d)``; the transpose then makes the reshape a strided copy
of the whole attention output. :func:`with_dim_order` lays the restored tensor out in the order
its reader's transpose reads contiguously (``(0, 2, 1, 3)``), so the gather writes it so in one
fused kernel and the reshape is a view. :func:`dim_order` reads a tensor's layout back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["dim_order", "with_dim_order"]


def dim_order(x: torch.Tensor) -> tuple[int, ...]:
    """The dims of ``x`` from outermost to innermost in memory: sorted by stride, largest first;
    size-1 dims (whose stride is arbitrary) and ties keep their logical order.

    A contiguous tensor gives ``(0, 1, ..., n - 1)``; ``torch.empty(B, L, H, d).transpose(1, 2)``
    gives ``(0, 2, 1, 3)``.
    """
    sized = [dim for dim in range(x.dim()) if x.shape[dim] != 1]
    by_stride = sorted(sized, key=lambda dim: -x.stride(dim))  # stable: ties keep logical order
    order, placed = [], iter(by_stride)
    for dim in range(x.dim()):
        order.append(dim if x.shape[dim] == 1 else next(placed))
    return tuple(order)


def with_dim_order(x: torch.Tensor, order: Sequence[int]) -> torch.Tensor:
    """``x`` (same shape and values) laid out with dims ``order`` outermost first.

    Args:
        x: any tensor.
        order: a permutation of ``range(x.dim())``, e.g. from :func:`dim_order` of the tensor
            whose layout to copy.

    Returns:
        ``x`` itself when it already has that layout (a contiguous ``x`` and the identity order),
        else a copy: ``x.permute(order).contiguous().permute(inverse)``.

    Raises:
        ValueError: ``order`` is not a permutation of ``x``'s dims.
    """
    order = tuple(int(dim) for dim in order)
    if sorted(order) != list(range(x.dim())):
        raise ValueError(f"order must be a permutation of range({x.dim()}) (x has {x.dim()} dims), got {order}")
    if order == tuple(range(x.dim())) and x.is_contiguous():
        return x
    inverse = [order.index(dim) for dim in range(x.dim())]
    return x.permute(order).contiguous().permute(inverse)
