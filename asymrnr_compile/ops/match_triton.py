"""The fused nearest-dst kernel (Triton): AsymRnR step 2 without a score matrix.

For every leading index ``p`` and src token ``j`` this finds ``max_i score(s_j, d_i)`` over the
dst tokens and the first ``i`` at the maximum, where ``score = s.d - |d_i|^2 / 2`` for the
euclidean similarity and ``s.d`` for cosine (features normalised beforehand) and dot, and writes
the distance of that best match (``|s|^2 - 2 score``, ``1 - score``, ``-score``). One program handles
``BLOCK_SRC`` src tokens of one leading index: it walks the dst tokens in ``BLOCK_DST`` tiles,
computes a ``(BLOCK_SRC, BLOCK_DST)`` score tile with ``tl.dot`` (channels in ``BLOCK_C`` slices),
and keeps a running maximum and its index in registers. The ``(P, N_src, N_dst)`` matrix is
never written: one kernel launch per matching whatever the token count, memory ``O(P * N)``.

The features are read in place through index vectors (no gathered copies of the src and dst
features) and in their own dtype. float32 features are multiplied in IEEE float32
(``input_precision="ieee"``, not TF32). float16/bfloat16 features go to ``tl.dot`` as they are,
accumulating in float32 (:data:`HALF_DOT_DTYPES`): the product of two half-precision numbers is
exact in float32 (at most 22 significant bits of 24), so these are the scores of the features
widened to float32, as the ATen path computes them, to float32 rounding (summation order; tensor
cores also truncate where they add, a few ulps), but on the tensor cores instead of the float32
units (an H100/H200's datasheet peaks, dense: ~990 against ~67 TFLOP/s). Squared norms are
summed in float32 on the widened values either way.

This module needs the ``triton`` package; :func:`triton_available` says whether it is there.
On a CPU the kernel runs under Triton's interpreter (``TRITON_INTERPRET=1`` set before Triton is
imported), which is how the tests check it on machines without a GPU.
"""

from __future__ import annotations

import functools
import importlib.util
import os

import torch

__all__ = [
    "BLOCK_CHANNELS",
    "BLOCK_DST",
    "BLOCK_SRC",
    "HALF_DOT_DTYPES",
    "INTERPRETER_WIDENED_DTYPES",
    "KERNEL_RANGE",
    "multiplies_unwidened",
    "nearest_dst",
    "triton_available",
    "triton_runs_on",
]

BLOCK_SRC = 64
"""Src tokens per program (rows of a score tile)."""

BLOCK_DST = 64
"""Dst tokens per score tile (columns); the kernel loops over ``ceil(N_dst / BLOCK_DST)`` tiles."""

BLOCK_CHANNELS = 64
"""Channels per ``tl.dot`` slice: a head dim of 64 takes one slice (the src tile then stays in
registers for the whole dst loop); hidden-state features of C channels take ``ceil(C / 64)``."""

MIN_DOT_SIZE = 16
"""``tl.dot`` needs every tile dimension to be at least 16."""

HALF_DOT_DTYPES = (torch.float16, torch.bfloat16)
"""Feature dtypes whose tiles are multiplied unwidened (exact products, float32 accumulation)."""

INTERPRETER_WIDENED_DTYPES = (torch.bfloat16,)
"""Dtypes widened to float32 before ``tl.dot`` under Triton's interpreter all the same: it
multiplies unwidened bfloat16 tiles as their raw bits (Triton 3.9: errors of ~1e10 on small
integers), float16 correctly. The CPU tests therefore check the unwidened path on float16."""

NUM_WARPS = 4
"""Warps per program (a 64 x 64 float32 tile: 32 accumulator registers per thread)."""

COSINE_OFFSET = 1.0
"""The cosine distance is ``1 - cos(s, d)``."""

KERNEL_RANGE = "asymrnr::nearest_dst_kernel"
"""Name of the profiler range around one launch of the kernel (one GPU kernel; under Triton's
CPU interpreter the range also holds the interpreter's own copies)."""

INTERPRET_ENV = "TRITON_INTERPRET"
"""Environment variable that makes Triton run kernels in its CPU interpreter."""


def triton_available() -> bool:
    """Whether the ``triton`` package can be imported (without importing it)."""
    return importlib.util.find_spec("triton") is not None


def triton_runs_on(device: torch.device) -> bool:
    """Whether :func:`nearest_dst` can run on tensors of ``device``: a CUDA (or ROCm) device with
    Triton installed, or any device under Triton's interpreter."""
    if not triton_available():
        return False
    return _interpreting() or device.type == "cuda"


def multiplies_unwidened(dtype: torch.dtype) -> bool:
    """Whether :func:`nearest_dst` gives features of ``dtype`` to ``tl.dot`` as they are (tensor
    cores, float32 accumulation) rather than widened to float32: float16 and bfloat16
    (:data:`HALF_DOT_DTYPES`), except bfloat16 under the interpreter
    (:data:`INTERPRETER_WIDENED_DTYPES`)."""
    return dtype in HALF_DOT_DTYPES and not (_interpreting() and dtype in INTERPRETER_WIDENED_DTYPES)


def _interpreting() -> bool:
    return os.environ.get(INTERPRET_ENV, "0") == "1"


@functools.cache
def _kernel(interpret: bool):
    """Build (once per mode) the jitted kernel; importing Triton is deferred to the first use.
    ``triton.jit`` decides at decoration whether the kernel is compiled or interpreted, so the
    two modes are two kernels (``interpret`` is the current ``TRITON_INTERPRET``)."""
    import triton
    import triton.language as tl

    @triton.jit
    def nearest_dst_kernel(
        feat_ptr, src_ptr, dst_ptr, distance_ptr, index_ptr,
        num_src, num_dst, channels,
        stride_fp, stride_fn, stride_fc, stride_op,
        EUCLIDEAN: tl.constexpr, DISTANCE_OFFSET: tl.constexpr, SRC_IN_REGISTERS: tl.constexpr,
        HALF_DOT: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_C: tl.constexpr,
    ):
        lead = tl.program_id(1).to(tl.int64)
        rows = tl.program_id(0) * BLOCK_S + tl.arange(0, BLOCK_S)
        row_mask = rows < num_src
        src_tok = tl.load(src_ptr + rows, mask=row_mask, other=0)
        chans = tl.arange(0, BLOCK_C)
        base = feat_ptr + lead * stride_fp
        src_rows = base + src_tok[:, None] * stride_fn
        # |s|^2 of every src row (euclidean only), in float32.
        src_sq = tl.zeros([BLOCK_S], tl.float32)
        if SRC_IN_REGISTERS:
            src_tile = tl.load(src_rows + chans[None, :] * stride_fc,
                               mask=row_mask[:, None] & (chans[None, :] < channels), other=0.0)
            if not HALF_DOT:
                src_tile = src_tile.to(tl.float32)
            if EUCLIDEAN:
                src_wide = src_tile.to(tl.float32)
                src_sq = tl.sum(src_wide * src_wide, axis=1)
        elif EUCLIDEAN:
            for chan_start in range(0, channels, BLOCK_C):
                chan = chan_start + chans
                part = tl.load(src_rows + chan[None, :] * stride_fc,
                               mask=row_mask[:, None] & (chan[None, :] < channels),
                               other=0.0).to(tl.float32)
                src_sq += tl.sum(part * part, axis=1)
        # The best score s.d (euclidean: s.d - |d|^2 / 2) over dst and its first index.
        best = tl.full([BLOCK_S], float("-inf"), tl.float32)
        best_index = tl.zeros([BLOCK_S], tl.int64)
        for tile_start in range(0, num_dst, BLOCK_D):
            cols = tile_start + tl.arange(0, BLOCK_D)
            col_mask = cols < num_dst
            dst_tok = tl.load(dst_ptr + cols, mask=col_mask, other=0)
            dst_cols = base + dst_tok[None, :] * stride_fn
            score = tl.zeros([BLOCK_S, BLOCK_D], tl.float32)
            dst_sq = tl.zeros([BLOCK_D], tl.float32)
            for chan_start in range(0, channels, BLOCK_C):
                chan = chan_start + chans
                if not SRC_IN_REGISTERS:
                    src_tile = tl.load(src_rows + chan[None, :] * stride_fc,
                                       mask=row_mask[:, None] & (chan[None, :] < channels), other=0.0)
                    if not HALF_DOT:
                        src_tile = src_tile.to(tl.float32)
                dst_tile = tl.load(dst_cols + chan[:, None] * stride_fc,
                                   mask=(chan[:, None] < channels) & col_mask[None, :], other=0.0)
                if HALF_DOT:  # exact products, float32 accumulation (tensor cores)
                    score += tl.dot(src_tile, dst_tile, out_dtype=tl.float32)
                else:
                    dst_tile = dst_tile.to(tl.float32)
                    score += tl.dot(src_tile, dst_tile, input_precision="ieee")
                if EUCLIDEAN:
                    dst_wide = dst_tile.to(tl.float32)
                    dst_sq += tl.sum(dst_wide * dst_wide, axis=0)
            if EUCLIDEAN:
                score -= 0.5 * dst_sq[None, :]
            score = tl.where(col_mask[None, :], score, float("-inf"))
            tile_best, tile_index = tl.max(score, axis=1, return_indices=True,
                                           return_indices_tie_break_left=True)
            # Strictly greater: on a tie the earlier tile (the lower dst index) keeps its place,
            # as the first index at the maximum that ``max(dim)`` returns.
            better = tile_best > best
            best_index = tl.where(better, tile_index.to(tl.int64) + tile_start, best_index)
            best = tl.where(better, tile_best, best)
        if EUCLIDEAN:
            # |s - d|^2 = |s|^2 - 2 (s.d - |d|^2 / 2), clamped at 0 against rounding.
            distance = tl.maximum(src_sq - 2.0 * best, 0.0)
        else:
            distance = DISTANCE_OFFSET - best  # cosine: 1 - cos; dot: -s.d
        out = lead * stride_op + rows
        tl.store(distance_ptr + out, distance, mask=row_mask)
        tl.store(index_ptr + out, best_index, mask=row_mask)

    return triton, nearest_dst_kernel


def _block(size: int, limit: int) -> int:
    """The power-of-two tile size for ``size`` elements, between ``MIN_DOT_SIZE`` and ``limit``."""
    block = MIN_DOT_SIZE
    while block < size and block < limit:
        block *= 2
    return block


def nearest_dst(
    features: torch.Tensor,
    src: torch.Tensor,
    dst: torch.Tensor,
    similarity: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For every src token, the distance to its nearest dst token and that token's index.

    Args:
        features: ``(P, N, C)``, any strides, float32/float16/bfloat16: the video tokens
            (normalised beforehand for the cosine similarity).
        src: ``LongTensor (N_src,)``, token positions into ``N`` (on ``features.device``).
        dst: ``LongTensor (N_dst,)``, token positions into ``N``; ``N_dst >= 1``.
        similarity: ``"euclidean"`` (squared distance ``max(0, |s|^2 + |d|^2 - 2 s.d)``),
            ``"cosine"`` (``1 - s.d`` on normalised features) or ``"dot"`` (``-s.d``).

    Returns:
        ``(distance, index)``: ``float32 (P, N_src)``, the smallest distance of
        ``features[p, src[j]]`` to any ``features[p, dst[i]]``, and ``int64 (P, N_src)``, the
        first ``i`` at that minimum (as ``max(dim)`` of the scores returns it).
    """
    triton, kernel = _kernel(_interpreting())
    leading, _, channels = features.shape
    num_src, num_dst = src.shape[0], dst.shape[0]
    distance = torch.empty((leading, num_src), dtype=torch.float32, device=features.device)
    index = torch.empty((leading, num_src), dtype=torch.long, device=features.device)
    if leading == 0 or num_src == 0:
        return distance, index
    block_c = _block(channels, BLOCK_CHANNELS)
    half_dot = multiplies_unwidened(features.dtype)
    grid = (triton.cdiv(num_src, BLOCK_SRC), leading)
    with torch.profiler.record_function(KERNEL_RANGE):
        kernel[grid](
            features, src, dst, distance, index,
            num_src, num_dst, channels,
            features.stride(0), features.stride(1), features.stride(2), distance.stride(0),
            EUCLIDEAN=similarity == "euclidean", DISTANCE_OFFSET=COSINE_OFFSET if similarity == "cosine" else 0.0,
            SRC_IN_REGISTERS=channels <= block_c, HALF_DOT=half_dot,
            BLOCK_S=BLOCK_SRC, BLOCK_D=_block(num_dst, BLOCK_DST), BLOCK_C=block_c,
            num_warps=NUM_WARPS,
        )
    return distance, index
