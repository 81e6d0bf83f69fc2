"""Step 2 of AsymRnR: match every src token to its most similar dst token.

AsymRnR (arXiv 2412.11706, section 3), step 2: per leading index (batch element, head), every
src token is matched to the dst token at the smallest distance, and the src tokens are sorted by
that distance, least similar (largest distance) first.

Two kernels compute the nearest dst token (``kernel=``, :data:`MATCH_KERNELS`):

- ``"triton"`` (the default on CUDA devices when Triton is installed): one fused kernel
  (:mod:`asymrnr_compile.ops.match_triton`) reads the src and dst rows in place, computes score
  tiles in registers and keeps a running maximum: the ``(P, N_src, N_dst)`` score matrix is never
  written, and a matching is **2 operators** for euclidean and dot (the kernel and the sort) and
  3 for cosine (the normalisation), whatever the token count.
- ``"aten"`` (the default elsewhere), per leading index ``p`` (``P`` of them):

  - the src and dst features are gathered once; every similarity becomes "maximise a score
    ``s'.d'``" (euclidean appends one channel to each operand, cosine normalises, dot is as is);
  - one batched matmul gives a ``(P, N_dst, rows)`` score block, and the maximum over dst with
    its first index is taken by one channels-last max pooling (vectorised over the contiguous
    src axis; ``max(dim)`` is a scalar loop per row on CPUs);
  - the ``(P, N_src, N_dst)`` matrix is never materialised when it exceeds ``chunk_bytes`` (7.4
    GB in float32 for CogVideoX-2B under CFG): the src axis is then cut into chunks, two ops each
    (a matmul into one reused buffer and the pooling), the chunks' results concatenated once;
  - the distance is finished on the ``(P, N_src)`` row maxima, and one stable argsort orders it.

  This is a fixed number of operators plus two per chunk: 11 for euclidean, 9 for cosine, 6 for
  dot (7 when the video span is a strided view) when the block fits in ``chunk_bytes``
  (benchmarks/ops.py counts them). On a CPU it is faster than a hand-written fused loop: the
  matmul is the vendor BLAS's.

With ``project_dims=k`` the features are first multiplied by a fixed random Gaussian matrix
``(c, k)`` (seeded by ``projection_seed``, the same on every device): a Johnson-Lindenstrauss
projection that keeps distances and dot products in expectation, so the nearest dst is found
among ``k`` instead of ``c`` channels. The score matmul then costs ``k / c`` of the full one,
plus ``N c k`` per leading index for the projection (for CogVideoX-2B's hidden states, ``c``
1920 and ``N_dst`` 1,980: ~14x fewer multiply-adds at ``k`` 64, ~29x at 32). Where the
projection would cost more than it saves (few dst tokens,
:func:`~asymrnr_compile.ops.flops.projection_saves_flops`) the exact matching is run instead.
The nearest dst may then differ from the exact one where two dst tokens are almost equally
near: it is not the exact matching. The backend's default (``AsymRnRConfig.match_dims``, 32)
was chosen by the quality benchmark; the published preset matches exactly.

Both run inside a custom op, ``torch.ops.asymrnr.match_tokens`` (registered on import, for every
device), with a fake implementation for tracing: under ``torch.compile(fullgraph=True)`` the whole
matcher is one opaque node whose output shapes come from input shapes, so compile time does not
grow with the number of chunks, and the compiled matching is bit-identical to the eager one.
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from asymrnr_compile._validate import (
    check_choice,
    check_int,
    check_span,
    check_tensor,
)

from . import match_triton
from .flops import projection_saves_flops
from .split import TokenSplit, check_split

__all__ = [
    "DEFAULT_MATCH_CHUNK_BYTES",
    "MATCH_KERNELS",
    "SIMILARITIES",
    "Matching",
    "match_chunk_size",
    "match_tokens",
    "random_projection",
]

SIMILARITIES: tuple[str, ...] = ("euclidean", "cosine", "dot")
"""Supported similarities; every one is turned into a distance where lower = more similar."""

MATCH_KERNELS: tuple[str, ...] = ("auto", "aten", "triton")
"""How the nearest dst token is computed: ``"triton"`` (one fused kernel, no score matrix; needs
Triton and a CUDA device, or Triton's CPU interpreter), ``"aten"`` (chunked matmul and max
pooling, any device) or ``"auto"`` (``"triton"`` on CUDA devices when Triton is installed,
``"aten"`` otherwise)."""

DEFAULT_MATCH_CHUNK_BYTES = 64 * 2**20
"""Budget (bytes) for one ``(*, chunk, N_dst)`` block of the distance matrix."""

EUCLIDEAN_CROSS_WEIGHT = -2.0
"""|d - s|^2 = |d|^2 + |s|^2 - 2 d.s: weight of the cross term."""

EUCLIDEAN_SRC_WEIGHT = 1.0 / EUCLIDEAN_CROSS_WEIGHT
"""The matcher maximises s.d - |d|^2 / 2, i.e. minimises (|d|^2 - 2 s.d) / 2: the extra src
channel, multiplied by the dst's squared norm."""

EUCLIDEAN_EXTRA_CHANNELS = 1
"""Channels appended to the matmul operands for the euclidean norm term."""

COSINE_EPS = 1e-12
"""Norm floor when normalising vectors for the cosine similarity (as ``F.normalize``)."""

PROJECTION_DTYPE = torch.float32
"""dtype of the random projection matrix and of the projected features."""

MATCH_OP_NAME = "asymrnr::match_tokens"
"""The custom op (``torch.ops.asymrnr.match_tokens``) that runs the chunked matcher."""

_HALF_DTYPES = (torch.float16, torch.bfloat16)


class Matching(NamedTuple):
    """The result of :func:`match_tokens`; leading dims ``*`` as those of ``x``.

    Attributes:
        src_order: ``LongTensor (*, N_src)``, positions into ``split.src`` (values
            ``0..N_src-1``), least similar first (largest distance first; stable, so ties keep
            the order of ``split.src``).
        nearest: ``LongTensor (*, N_src)``; entry ``j`` is the index into ``split.dst``
            (``0..N_dst-1``) of the dst token most similar to src token ``split.src[j]``.
            All zeros when ``N_dst == 0``.
        distance: ``float32 (*, N_src)``; entry ``j`` is the distance of src token
            ``split.src[j]`` to its nearest dst token, lower = more similar: squared
            euclidean ``max(0, |d|^2 + |s|^2 - 2 d.s)``, cosine ``1 - cos(d, s)``, dot
            ``-d.s``. ``+inf`` when ``N_dst == 0``.
    """

    src_order: torch.Tensor
    nearest: torch.Tensor
    distance: torch.Tensor


def match_chunk_size(
    leading: int, num_src: int, num_dst: int, itemsize: int, chunk_bytes: int
) -> int:
    """Number of src tokens per chunk so that a ``(leading, chunk, num_dst)`` block of
    ``itemsize``-byte elements fits in ``chunk_bytes`` (at least 1, at most ``num_src``)."""
    row_bytes = max(1, leading * num_dst * itemsize)
    return max(1, min(num_src, chunk_bytes // row_bytes))


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    if dtype in _HALF_DTYPES:
        return torch.float32
    if not dtype.is_floating_point:
        raise TypeError(f"x must be a floating-point tensor, got dtype {dtype}")
    return dtype


def match_tokens(
    x: torch.Tensor,
    split: TokenSplit,
    similarity: str = "euclidean",
    *,
    start: int = 0,
    chunk_bytes: int = DEFAULT_MATCH_CHUNK_BYTES,
    kernel: str = "auto",
    project_dims: int | None = None,
    projection_seed: int = 0,
) -> Matching:
    """Match every src token to its nearest dst token (AsymRnR step 2).

    Args:
        x: features ``(*, L, c)``; the video tokens are ``x[..., start:start + N, :]`` with
            ``N = len(split.dst) + len(split.src)``; other tokens (text) are ignored. Every
            leading index (e.g. ``(B, H)``) is matched independently. float16/bfloat16 inputs
            are matched in float32.
        split: the dst/src partition of the ``N`` video tokens (:func:`split_tokens`).
        similarity: one of :data:`SIMILARITIES`; default ``"euclidean"`` (squared distance, the
            published default).
        start: index of the first video token on the token axis (``-2``); default 0.
        chunk_bytes: memory budget of one distance block, bytes (``>= 1``), of the ``"aten"``
            kernel; default :data:`DEFAULT_MATCH_CHUNK_BYTES` (64 MiB).
        kernel: one of :data:`MATCH_KERNELS`; default ``"auto"``.
        project_dims: match on a random projection of the features onto this many dimensions
            (module docstring; int >= 1) where that takes fewer FLOPs than the exact matching
            (:func:`projection_saves_flops`); None (default): on the features as they are.
        projection_seed: seed of the projection matrix (int >= 0); default 0.

    Returns:
        :class:`Matching` with ``src_order``, ``nearest`` and ``distance`` of shape
        ``(*, N_src)``. No gradient flows through the matching (it selects indices).

    Raises:
        ValueError: ``kernel="triton"`` where Triton cannot run on ``x``'s device.

    The work is done by the custom op ``torch.ops.asymrnr.match_tokens``: one node under
    ``torch.compile``, bit-identical to eager.
    """
    x = check_tensor("x", x, min_dim=2)
    similarity = check_choice("similarity", similarity, SIMILARITIES)
    chunk_bytes = check_int("chunk_bytes", chunk_bytes, minimum=1)
    kernel = resolve_match_kernel(kernel, x.device)
    dst, src = check_split(split)
    _compute_dtype(x.dtype)  # validates the dtype
    num_dst, num_src = dst.shape[0], src.shape[0]
    num_tokens = num_dst + num_src
    start = check_span("start", start, num_tokens, x.shape[-2], what="video tokens")
    if project_dims is not None:
        project_dims = check_int("project_dims", project_dims, minimum=1)
        if not projection_saves_flops(num_tokens, num_dst, x.shape[-1], project_dims):
            project_dims = None  # the exact matching is no dearer: match on the features themselves
    projection_seed = check_int("projection_seed", projection_seed, minimum=0)

    # The matching selects indices: no gradient flows through it.
    video = x[..., start : start + num_tokens, :].detach()
    src_order, nearest, distance = _match_op(
        video, dst.to(x.device), src.to(x.device), similarity, chunk_bytes, kernel, project_dims, projection_seed
    )
    return Matching(src_order=src_order, nearest=nearest, distance=distance)


def resolve_match_kernel(kernel: str, device: torch.device) -> str:
    """``"aten"`` or ``"triton"``: the kernel ``kernel`` (one of :data:`MATCH_KERNELS`) names on
    ``device``. ``"auto"`` takes Triton on CUDA devices when it is installed.

    Raises:
        ValueError: ``kernel`` is not in :data:`MATCH_KERNELS`, or is ``"triton"`` where Triton
            cannot run (not installed; a non-CUDA device without ``TRITON_INTERPRET=1``).
    """
    kernel = check_choice("kernel", kernel, MATCH_KERNELS)
    if kernel == "auto":
        use_triton = device.type == "cuda" and match_triton.triton_available()
        return "triton" if use_triton else "aten"
    if kernel == "triton" and not match_triton.triton_runs_on(device):
        reason = ("the triton package is not installed" if not match_triton.triton_available()
                  else f"tensors on {device.type!r} need a CUDA device (or Triton's CPU interpreter, "
                       f"{match_triton.INTERPRET_ENV}=1 set before Triton is imported)")
        raise ValueError(f"match kernel 'triton' cannot run here: {reason}; use kernel 'auto' or 'aten'")
    return kernel


@torch.library.custom_op(MATCH_OP_NAME, mutates_args=())
def _match_op(
    video: torch.Tensor, dst: torch.Tensor, src: torch.Tensor, similarity: str, chunk_bytes: int,
    kernel: str, project_dims: int | None, projection_seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The matcher on the video span ``(*, N, c)``: ``(src_order, nearest, distance)``;
    ``kernel`` is ``"aten"`` or ``"triton"`` (resolved by :func:`resolve_match_kernel`);
    ``project_dims`` (< c) or None: the random projection of the module docstring first.

    An opaque op for ``torch.compile``: traced as one node whatever the number of chunks (an
    unrolled loop of ~100 chunks at CogVideoX-2B scale took over a minute to compile, per
    attention site), and run by the same eager code as outside a compiled graph, so compiled
    and eager matchings are identical.
    """
    num_dst, num_src = dst.shape[0], src.shape[0]
    leading_shape = video.shape[:-2]
    leading = math.prod(leading_shape)
    channels = video.shape[-1]
    device = video.device
    compute_dtype = _compute_dtype(video.dtype)

    if num_src == 0 or num_dst == 0:
        distance = torch.full((*leading_shape, num_src), math.inf, dtype=torch.float32,
                              device=device)
        nearest = torch.zeros((*leading_shape, num_src), dtype=torch.long, device=device)
        src_order = torch.arange(num_src, device=device).expand(*leading_shape, num_src)
        return src_order.contiguous(), nearest, distance

    if project_dims is not None:
        video = torch.matmul(video.to(PROJECTION_DTYPE),
                             random_projection(channels, project_dims, projection_seed, device))
        channels = project_dims
    if kernel == "triton":
        features = video.reshape(leading, num_dst + num_src, channels)
        if similarity == "cosine":
            features = F.normalize(features.to(compute_dtype), dim=-1, eps=COSINE_EPS)
        distance, nearest = match_triton.nearest_dst(features, src, dst, similarity)
    else:
        distance, nearest = _aten_nearest(video, dst, src, similarity, chunk_bytes)
    distance = distance.to(torch.float32).reshape(*leading_shape, num_src)
    nearest = nearest.reshape(*leading_shape, num_src)
    src_order = torch.argsort(distance, dim=-1, descending=True, stable=True)
    return src_order, nearest, distance


def _aten_nearest(
    video: torch.Tensor, dst: torch.Tensor, src: torch.Tensor, similarity: str, chunk_bytes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``"aten"`` kernel: ``video (*, N, c)``, any strides and floating dtype ->
    ``(distance (P, N_src), nearest (P, N_src))`` with ``P = prod(*)``, by chunked batched matmuls
    and channels-last max pooling (module docstring)."""
    num_tokens, channels = video.shape[-2:]
    leading = math.prod(video.shape[:-2])
    num_dst, num_src = dst.shape[0], src.shape[0]
    device = video.device
    compute_dtype = _compute_dtype(video.dtype)
    # The src operand is gathered once (the size of the src features, +1 channel), so the
    # chunks below are strided views of it, not gathers and copies of their own. Gathers read
    # a contiguous tensor (ATen's fast path copies whole rows; on a strided view such as the
    # video span of a sequence with text tokens it goes element by element, ~5x slower).
    if similarity == "euclidean":
        # Maximise s'.d' = s.d - |d|^2 / 2 with d' = [d, |d|^2], s' = [s, -1/2]: the norm term
        # is part of the one matmul, no bias is added to the score block.
        padded = _with_constant_channel(video, compute_dtype, EUCLIDEAN_SRC_WEIGHT)
        padded = padded.view(leading, num_tokens, channels + EUCLIDEAN_EXTRA_CHANNELS)
        src_operand = padded.index_select(1, src)  # (P, N_src, c + 1)
        src_feat = src_operand[..., :channels]
        dst_feat = padded.index_select(1, dst)[..., :channels]  # (P, N_dst, c)
        dst_sq = torch.linalg.vecdot(dst_feat, dst_feat)
        dst_operand = torch.cat([dst_feat, dst_sq.unsqueeze(-1)], dim=-1)
        del padded, dst_feat  # the video-sized copy is not needed any more
    else:
        features = video.reshape(leading, num_tokens, channels).to(compute_dtype)
        if similarity == "cosine":
            # Every video token is a dst or a src token: normalising the span once is no extra
            # work.
            features = F.normalize(features, dim=-1, eps=COSINE_EPS)
        features = features.contiguous()
        dst_operand = features.index_select(1, dst)  # (P, N_dst, c)
        src_operand = features.index_select(1, src)  # (P, N_src, c)
    # Scores are computed as (P, N_dst, rows) blocks: dst on the pooled axis, src contiguous.
    src_operand_t = src_operand.transpose(1, 2)  # (P, c', N_src), a view

    chunk = match_chunk_size(leading, num_src, num_dst, compute_dtype.itemsize, chunk_bytes)
    if chunk >= num_src:
        score, nearest = _max_over_dst(torch.bmm(dst_operand, src_operand_t))
    else:
        # One block buffer reused by every chunk: a fresh multi-MB allocation per chunk is
        # returned to the OS and page-faulted in again each time (~2x slower on CPU).
        block_buffer = torch.empty(leading * num_dst * chunk, dtype=compute_dtype, device=device)
        scores, indices = [], []
        for lo in range(0, num_src, chunk):
            rows = min(num_src, lo + chunk) - lo
            block = block_buffer[: leading * num_dst * rows].view(leading, num_dst, rows)
            torch.bmm(dst_operand, src_operand_t[..., lo : lo + rows], out=block)
            chunk_score, chunk_index = _max_over_dst(block)
            scores.append(chunk_score)
            indices.append(chunk_index)
        del block_buffer, block
        score, nearest = torch.cat(scores, dim=-1), torch.cat(indices, dim=-1)

    if similarity == "euclidean":
        src_sq = torch.linalg.vecdot(src_feat, src_feat)  # (P, N_src)
        distance = torch.add(src_sq, score, alpha=EUCLIDEAN_CROSS_WEIGHT).clamp_min_(0.0)
    elif similarity == "cosine":
        distance = torch.rsub(score, 1.0)
    else:
        distance = score.neg()
    return distance, nearest


@functools.lru_cache(maxsize=16)
def random_projection(channels: int, dims: int, seed: int, device: torch.device) -> torch.Tensor:
    """The ``(channels, dims)`` float32 projection of :func:`match_tokens`: i.i.d. normal entries
    of variance ``1 / dims`` (so squared norms and dot products are kept in expectation), drawn
    on the CPU from a private generator seeded ``seed``, the same on every device. Cached: one
    matrix per (channels, dims, seed, device) for the process."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    matrix = torch.randn(channels, dims, generator=generator, dtype=PROJECTION_DTYPE) / math.sqrt(dims)
    return matrix.to(device)


def _with_constant_channel(video: torch.Tensor, dtype: torch.dtype, value: float) -> torch.Tensor:
    """``video (*, N, c)`` as a contiguous ``(*, N, c + 1)`` tensor of ``dtype`` whose last channel
    is ``value``: ``F.pad(video.to(dtype), (0, 1), value=value)`` in one strided copy (``pad``
    fills the whole result first, and a strided or half-precision ``video`` needs a copy of its
    own before it: up to three passes over the video span instead of one)."""
    channels = video.shape[-1]
    padded = torch.empty((*video.shape[:-1], channels + 1), dtype=dtype, device=video.device)
    padded[..., :channels].copy_(video)
    padded[..., channels].fill_(value)
    return padded


def _max_over_dst(block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Row maximum and its first index over the dst axis of a score block.

    ``block (P, N_dst, R)``, contiguous -> ``(score (P, R), index (P, R))``; the index is the
    first dst at the maximum, as ``block.max(dim=1)`` returns it. Seen as a channels-last image
    (``R`` channels, ``N_dst x 1`` pixels), the block is reduced by one max-pooling window:
    ATen's channels-last max pooling is vectorised over the contiguous channels (``R`` src
    tokens at once), ``max(dim)`` is a scalar loop per row (about 7x slower on a CPU, and most
    of the matcher's time besides the matmul).
    """
    leading, num_dst, rows = block.shape
    image = block.view(leading, num_dst, 1, rows).permute(0, 3, 1, 2)  # (P, R, N_dst, 1)
    score, index = F.max_pool2d(image, (num_dst, 1), return_indices=True)
    return score.reshape(leading, rows), index.reshape(leading, rows)


@_match_op.register_fake
def _match_op_fake(
    video: torch.Tensor, dst: torch.Tensor, src: torch.Tensor, similarity: str, chunk_bytes: int,
    kernel: str, project_dims: int | None, projection_seed: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shape = (*video.shape[:-2], src.shape[0])
    return (
        video.new_empty(shape, dtype=torch.long),
        video.new_empty(shape, dtype=torch.long),
        video.new_empty(shape, dtype=torch.float32),
    )
