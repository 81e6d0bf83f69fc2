"""Step 1 of AsymRnR: split the video tokens into destination (dst) and source (src) tokens.

docs/method.md, step 1 (and AsymRnR, arXiv 2412.11706, section 3): the video grid
``(F, H, W)`` (tokens in row-major ``(f, h, w)`` order) is tiled with chunks of size
``dst_stride``; one token of every *full* chunk, drawn uniformly at random, becomes a dst token;
every other token, including all tokens of the remainder slices when the grid is not divisible
by the stride, is a src token. Hence ``N_dst = prod(grid // dst_stride)`` and the largest usable
reduction ratio is ``1 - N_dst / N``.

The draw uses its own ``torch.Generator`` seeded with ``seed`` (never the global RNG), always on
the CPU, so a split is a pure function of ``(num_tokens, grid, dst_stride, seed)`` and is the same
on every device. The draw is a custom op, ``torch.ops.asymrnr.split_tokens`` (registered on
import), so that the generator never has to be traced by ``torch.compile``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from asymrnr_compile._validate import check_index, check_int, check_ratio, check_triple

__all__ = [
    "DEFAULT_DST_STRIDE",
    "TokenSplit",
    "count_dst_tokens",
    "max_reduction_ratio",
    "num_kept_tokens",
    "split_tokens",
]

DEFAULT_DST_STRIDE: tuple[int, int, int] = (2, 2, 2)
"""Chunk size ``(frames, height, width)`` holding one dst token (the published default)."""

MAX_SEED = 2**63 - 1
"""Largest seed: custom-op int arguments are int64."""

SPLIT_OP_NAME = "asymrnr::split_tokens"
"""The custom op (``torch.ops.asymrnr.split_tokens``) that draws the split."""


class TokenSplit(NamedTuple):
    """A partition of the ``N`` video tokens into dst and src tokens.

    Attributes:
        dst: ``LongTensor (N_dst,)``, ascending token indices of the dst tokens.
        src: ``LongTensor (N_src,)``, ascending token indices of the src tokens.

    ``dst`` and ``src`` are disjoint and their union is ``arange(N)``.
    """

    dst: torch.Tensor
    src: torch.Tensor


def check_split(split: object) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a :class:`TokenSplit` argument; returns its ``(dst, src)`` 1-D index tensors.

    Raises:
        TypeError: ``split`` is not a (dst, src) pair.
        ValueError: an index tensor is not an integer tensor or not 1-D.
    """
    if not isinstance(split, tuple) or len(split) != len(TokenSplit._fields):
        raise TypeError(f"split must be a TokenSplit (dst, src), got {type(split).__name__}")
    dst = check_index("split.dst", split.dst)
    src = check_index("split.src", split.src)
    if dst.dim() != 1 or src.dim() != 1:
        raise ValueError(
            f"split.dst and split.src must be 1-D, got shapes {tuple(dst.shape)} and "
            f"{tuple(src.shape)}"
        )
    return dst, src


def _resolve_grid(
    num_tokens: int, grid: object, dst_stride: object
) -> tuple[int, tuple[int, int, int], tuple[int, int, int]]:
    """Validate the arguments; map the 1-D case (``grid=None``) onto a ``(1, 1, N)`` grid."""
    num_tokens = check_int("num_tokens", num_tokens, minimum=1)
    stride = check_triple("dst_stride", dst_stride, minimum=1)
    if grid is None:
        return num_tokens, (1, 1, num_tokens), (1, 1, math.prod(stride))
    grid3 = check_triple("grid", grid, minimum=1)
    if math.prod(grid3) != num_tokens:
        raise ValueError(
            f"grid {grid3} holds {math.prod(grid3)} tokens but num_tokens is {num_tokens}; "
            f"grid must satisfy frames * height * width == num_tokens"
        )
    return num_tokens, grid3, stride


def _chunks_per_axis(grid: tuple[int, int, int], stride: tuple[int, int, int]) -> tuple[int, ...]:
    return tuple(size // step for size, step in zip(grid, stride))


def count_dst_tokens(
    num_tokens: int,
    grid: tuple[int, int, int] | None = None,
    dst_stride: tuple[int, int, int] = DEFAULT_DST_STRIDE,
) -> int:
    """Number of dst tokens ``N_dst = prod(grid // dst_stride)`` (docs/method.md, step 1).

    Args:
        num_tokens: number of video tokens ``N`` (``>= 1``).
        grid: video grid ``(F, H, W)`` with ``F * H * W == num_tokens``; ``None`` treats the
            tokens as a 1-D sequence with stride ``prod(dst_stride)``.
        dst_stride: chunk size ``(f, h, w)``, every entry ``>= 1``; default ``(2, 2, 2)``.

    Returns:
        ``N_dst``; 0 when the stride is larger than the grid along some axis.
    """
    _, grid3, stride = _resolve_grid(num_tokens, grid, dst_stride)
    return math.prod(_chunks_per_axis(grid3, stride))


def max_reduction_ratio(
    num_tokens: int,
    grid: tuple[int, int, int] | None = None,
    dst_stride: tuple[int, int, int] = DEFAULT_DST_STRIDE,
) -> float:
    """Largest usable reduction ratio ``1 - N_dst / N`` (docs/method.md, step 1).

    Arguments as :func:`count_dst_tokens`. A ratio above this keeps the dst tokens only, i.e.
    reduces no further. When ``N_dst == 0`` nothing can be reduced (there is no dst token to
    stand for a dropped one), so the result is ``0.0``.
    """
    num_dst = count_dst_tokens(num_tokens, grid, dst_stride)
    if num_dst == 0:
        return 0.0
    return 1.0 - num_dst / num_tokens


def num_kept_tokens(num_tokens: int, num_dst: int, ratio: float) -> int:
    """Length ``K`` of the reduced video span (docs/method.md, step 3).

    ``K = num_dst + max(0, int(num_tokens * (1 - ratio)) - num_dst)``: all dst tokens are kept,
    plus as many src tokens as the ratio allows. Ratios above :func:`max_reduction_ratio` give
    ``K = num_dst``.

    Args:
        num_tokens: ``N >= 1``.
        num_dst: ``N_dst`` in ``[0, N]``.
        ratio: fraction of tokens to drop, in ``[0, 1)``.

    Returns:
        ``K`` in ``[num_dst, num_tokens]``. When ``num_dst == 0`` the result is ``num_tokens``
        (no token can be dropped without a dst token to stand for it on restore).
    """
    num_tokens = check_int("num_tokens", num_tokens, minimum=1)
    num_dst = check_int("num_dst", num_dst, minimum=0)
    if num_dst > num_tokens:
        raise ValueError(f"num_dst must be in [0, num_tokens={num_tokens}], got {num_dst}")
    ratio = check_ratio("ratio", ratio)
    if num_dst == 0:
        return num_tokens
    return num_dst + max(0, int(num_tokens * (1.0 - ratio)) - num_dst)


@torch.library.custom_op(SPLIT_OP_NAME, mutates_args=())
def _split_op(
    num_tokens: int, grid: list[int], stride: list[int], seed: int, device: torch.device | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The split as ``(dst, src)`` tensors, for a validated ``(1, 1, N)``-style 3-D grid.

    A custom op (no tensor inputs), so that its private ``torch.Generator`` never has to be
    traced: Dynamo (static or dynamic shapes) and ``make_fx`` see one node whose output sizes
    come from the fake implementation below.
    """
    chunks_f, chunks_h, chunks_w = _chunks_per_axis(tuple(grid), tuple(stride))
    num_src = num_tokens - chunks_f * chunks_h * chunks_w
    _, height, width = grid
    stride_f, stride_h, stride_w = stride

    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    # One uniformly drawn position inside every full chunk, as a flat offset in the chunk.
    offset = torch.randint(math.prod(stride), (chunks_f, chunks_h, chunks_w), generator=generator)
    offset_f = offset // (stride_h * stride_w)
    offset_h = (offset // stride_w) % stride_h
    offset_w = offset % stride_w
    frame = torch.arange(chunks_f).view(-1, 1, 1) * stride_f + offset_f
    row = torch.arange(chunks_h).view(1, -1, 1) * stride_h + offset_h
    col = torch.arange(chunks_w).view(1, 1, -1) * stride_w + offset_w
    dst_flat = ((frame * height + row) * width + col).reshape(-1)

    is_dst = torch.zeros(num_tokens, dtype=torch.long)
    is_dst[dst_flat] = 1
    # Position of every token in [src tokens ascending, dst tokens ascending], from running
    # counts (no sort, no data-dependent ``nonzero``); ``order`` inverts that permutation.
    src_rank = torch.cumsum(1 - is_dst, 0) - 1
    dst_rank = torch.cumsum(is_dst, 0) - 1 + num_src
    position = torch.where(is_dst.bool(), dst_rank, src_rank)
    order = torch.empty_like(position).scatter_(0, position, torch.arange(num_tokens))
    # Copies: custom-op outputs may not alias each other. To a CUDA device from pinned memory
    # without blocking: a copy from pageable memory waits for all work queued on the stream
    # (a host sync in the middle of a step when the split is redrawn per matching window).
    non_blocking = device is not None and device.type == "cuda"
    if non_blocking:
        order = order.pin_memory()
    return (order[num_src:].to(device, copy=True, non_blocking=non_blocking),
            order[:num_src].to(device, copy=True, non_blocking=non_blocking))


@_split_op.register_fake
def _split_op_fake(
    num_tokens: int, grid: list[int], stride: list[int], seed: int, device: torch.device | None
) -> tuple[torch.Tensor, torch.Tensor]:
    num_dst = math.prod(_chunks_per_axis(tuple(grid), tuple(stride)))
    return (
        torch.empty(num_dst, dtype=torch.long, device=device),
        torch.empty(num_tokens - num_dst, dtype=torch.long, device=device),
    )


def split_tokens(
    num_tokens: int,
    grid: tuple[int, int, int] | None = None,
    dst_stride: tuple[int, int, int] = DEFAULT_DST_STRIDE,
    *,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> TokenSplit:
    """Split ``num_tokens`` video tokens into dst and src tokens (docs/method.md, step 1).

    Args:
        num_tokens: number of video tokens ``N`` (``>= 1``), in row-major ``(f, h, w)`` order.
        grid: video grid ``(F, H, W)``, ``F * H * W == num_tokens``. ``None``: treat the tokens
            as a 1-D sequence tiled with chunks of ``prod(dst_stride)`` tokens.
        dst_stride: chunk size ``(f, h, w)``, every entry ``>= 1``; default ``(2, 2, 2)``. A
            stride larger than the grid along an axis leaves no full chunk (``N_dst = 0``:
            every token is src).
        seed: seed of the private ``torch.Generator`` that picks the dst token of each chunk
            (an int in ``[0, 2**63 - 1]``); default 0.
        device: device of the returned index tensors (the draw itself is on the CPU, so the
            split is the same on every device); default CPU.

    Returns:
        :class:`TokenSplit` with ``N_dst = prod(grid // dst_stride)`` dst tokens, one per full
        chunk, and ``N_src = N - N_dst`` src tokens.

    The draw runs in a custom op (``torch.ops.asymrnr.split_tokens``), so the function also
    traces under ``torch.compile`` (static or dynamic shapes) and ``make_fx``; a traced graph
    recomputes the split when it runs (well under a millisecond at CogVideoX-2B scale). A graph
    rewrite that reuses a split across calls can compute it once, eagerly, and pass it in.
    """
    num_tokens, grid3, stride = _resolve_grid(num_tokens, grid, dst_stride)
    seed = check_int("seed", seed, minimum=0)
    if seed > MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}], got {seed}")
    device = None if device is None else torch.device(device)
    dst, src = _split_op(num_tokens, list(grid3), list(stride), seed, device)
    return TokenSplit(dst=dst, src=src)
