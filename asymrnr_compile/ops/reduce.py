"""Steps 3 and 4 of AsymRnR: reduce the video tokens, restore full-length outputs.

DESIGN.md section 2, steps 3-4 (AsymRnR, arXiv 2412.11706, section 3). From a split and a
matching, :func:`reduction_indices` computes once (tomesd style) two index tensors shared by every
reduce and restore of a site:

- ``keep (*, K)``: which of the ``N`` video tokens stay: all dst tokens, then the
  ``K - N_dst`` least similar src tokens;
- ``restore (*, N)``: for every original video token, the row of the reduced sequence that
  holds it (a kept token) or stands for it (a dropped src token -> its matched dst token).

Then :func:`reduce_tokens` gathers (``"replace"``, the published default) or averages
(``"mean"``) the video span of a ``(*, L, c)`` sequence, :func:`restore_tokens` scatters a
reduced sequence back to full length, and :func:`reduce_mask` gathers an attention mask along
the reduced axis. Tokens outside the video span (text) always pass through unchanged. All sizes
come from index *shapes* (Python ints under ``torch.compile``), never from their values.

:func:`proportional_attention_mask` is an optional correction for kv reduction that the
published method does not have: proportional attention (Bolya et al., "Token Merging: Your ViT
but Faster", ICLR 2023, Sec. 3): each kept key's logit gets ``log(number of video tokens it
stands for)``, so a key whose matched near-duplicates were dropped keeps their share of the
softmax instead of handing it to the tokens that were kept.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch.fx.experimental.symbolic_shapes import guard_or_false, guard_or_true

from asymrnr_compile._validate import (
    broadcast_leading,
    check_choice,
    check_index,
    check_int,
    check_span,
    check_tensor,
)

from .match import Matching
from .split import TokenSplit, check_split

__all__ = [
    "MASK_DIMS",
    "REDUCE_MODES",
    "ReductionIndices",
    "gather_tokens",
    "key_multiplicity",
    "proportional_attention_mask",
    "reduce_mask",
    "reduce_tokens",
    "reduction_indices",
    "restore_tokens",
]

REDUCE_MODES: tuple[str, ...] = ("replace", "mean")
"""``"replace"``: dropped tokens are discarded; ``"mean"``: they are averaged into their dst."""

TOKEN_DIM = -2
"""Token axis of every ``(*, L, c)`` feature tensor."""

MASK_DIMS: tuple[int, ...] = (-1, -2)
"""Axes of a ``(..., Lq, Lk)`` attention mask that :func:`reduce_mask` can reduce: keys, queries."""

_HALF_DTYPES = (torch.float16, torch.bfloat16)


class ReductionIndices(NamedTuple):
    """Indices shared by :func:`reduce_tokens`, :func:`restore_tokens` and :func:`reduce_mask`.

    Attributes:
        keep: ``LongTensor (*, K)``, indices into the ``N`` video tokens of the kept tokens:
            the dst tokens first (in ``split.dst`` order), then the ``K - N_dst`` least similar
            src tokens in ``matching.src_order`` order.
        restore: ``LongTensor (*, N)``; entry ``i`` is the row (``0..K-1``) of the reduced
            sequence that holds video token ``i`` (kept) or stands for it (dropped src token:
            the row of its matched dst token).
    """

    keep: torch.Tensor
    restore: torch.Tensor


def _check_indices(indices: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(indices, tuple) or len(indices) != len(ReductionIndices._fields):
        raise TypeError(
            f"indices must be a ReductionIndices (keep, restore), got {type(indices).__name__}"
        )
    keep = check_index("indices.keep", indices[0])
    restore = check_index("indices.restore", indices[1])
    if keep.shape[:-1] != restore.shape[:-1]:
        raise ValueError(
            f"indices.keep {tuple(keep.shape)} and indices.restore {tuple(restore.shape)} must "
            f"have the same leading dimensions"
        )
    if keep.shape[-1] > restore.shape[-1]:
        raise ValueError(
            f"indices.keep keeps {keep.shape[-1]} tokens, more than the {restore.shape[-1]} "
            f"video tokens of indices.restore"
        )
    return keep, restore


def reduction_indices(split: TokenSplit, matching: Matching, num_keep: int) -> ReductionIndices:
    """Compute the keep/restore indices of one reduction (AsymRnR steps 3-4).

    Args:
        split: the dst/src partition of the ``N`` video tokens (:func:`split_tokens`).
        matching: the matching of the src tokens (:func:`match_tokens`), leading dims ``*``.
        num_keep: ``K``, the number of kept tokens (:func:`num_kept_tokens`), in
            ``[N_dst, N]``; when ``N_dst == 0`` only ``K == N`` is possible (no dst token could
            stand for a dropped one).

    Returns:
        :class:`ReductionIndices` with ``keep (*, K)`` and ``restore (*, N)``.
    """
    dst, src = check_split(split)
    if not isinstance(matching, tuple) or len(matching) != len(Matching._fields):
        raise TypeError(
            f"matching must be a Matching (src_order, nearest, distance), "
            f"got {type(matching).__name__}"
        )
    src_order = check_index("matching.src_order", matching.src_order)
    nearest = check_index("matching.nearest", matching.nearest)
    num_dst, num_src = dst.shape[0], src.shape[0]
    num_tokens = num_dst + num_src
    if src_order.shape != nearest.shape or src_order.shape[-1] != num_src:
        raise ValueError(
            f"matching.src_order {tuple(src_order.shape)} and matching.nearest "
            f"{tuple(nearest.shape)} must both be (*, N_src) with N_src = {num_src} from split"
        )
    num_keep = check_int("num_keep", num_keep, minimum=0)
    if not num_dst <= num_keep <= num_tokens:
        raise ValueError(
            f"num_keep must be in [N_dst={num_dst}, N={num_tokens}], got {num_keep}"
        )
    if num_dst == 0 and num_keep != num_tokens:
        raise ValueError(
            f"num_keep must be N={num_tokens} when the split has no dst tokens, got {num_keep}"
        )

    device = src_order.device
    dst = dst.to(device)
    src = src.to(device)
    leading = src_order.shape[:-1]
    num_keep_src = num_keep - num_dst

    kept_src = src[src_order[..., :num_keep_src]]
    keep = torch.cat([dst.expand(*leading, num_dst), kept_src], dim=-1)

    # Every src token first points at the row of its matched dst token; then every kept token
    # (dst and kept src, all distinct) is pointed at its own row, its position in ``keep``.
    restore = nearest.new_empty((*leading, num_tokens)).index_copy_(-1, src, nearest)
    rows = torch.arange(num_keep, device=device).expand(*leading, num_keep)
    restore.scatter_(-1, keep, rows)
    return ReductionIndices(keep=keep, restore=restore)


def indices_over_heads(indices: ReductionIndices) -> ReductionIndices:
    """Indices of one matching per batch element, made to apply to every attention head.

    ``keep (B, K)``, ``restore (B, N)`` (e.g. matched on hidden states ``(B, L, C)``) ->
    ``keep (B, 1, K)``, ``restore (B, 1, N)``, which broadcast against ``(B, H, L, d)``
    attention inputs in :func:`reduce_tokens`, :func:`restore_tokens` and the mask ops.
    """
    keep, restore = _check_indices(indices)
    return ReductionIndices(keep=keep.unsqueeze(-2), restore=restore.unsqueeze(-2))


def gather_tokens(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather rows of the token axis: ``out[..., k, :] = x[..., index[..., k], :]``.

    Args:
        x: ``(*, N, c)``.
        index: ``LongTensor (*, K)`` with values in ``[0, N)``; its leading dims broadcast
            against those of ``x`` with the usual (right-aligned) rules, e.g. index
            ``(B, H, K)`` or ``(B, 1, K)`` with x ``(B, H, N, c)``, index ``(B, K)`` with x
            ``(B, N, c)``.

    Returns:
        ``(broadcast(*x, *index), K, c)``, dtype of ``x``.
    """
    x = check_tensor("x", x, min_dim=2)
    index = check_index("index", index)
    leading = broadcast_leading("x", x.shape[:-2], "index", index.shape[:-1])
    num_rows, channels = x.shape[-2], x.shape[-1]
    expanded_index = index.unsqueeze(-1).expand(*leading, index.shape[-1], channels)
    return torch.gather(x.expand(*leading, num_rows, channels), TOKEN_DIM, expanded_index)


def _splice(x: torch.Tensor, start: int, length: int, middle: torch.Tensor) -> torch.Tensor:
    """Replace ``x[..., start:start + length, :]`` by ``middle`` (leading dims broadcast)."""
    total = x.shape[TOKEN_DIM]
    # ``total`` may be data-dependent (Mochi's text length): undecidable tests take the branch
    # that is right either way (a zero-length tail is harmless in the cat).
    if start == 0 and guard_or_false(start + length == total):
        return middle
    leading = middle.shape[:-2]
    channels = x.shape[-1]
    parts = []
    if start > 0:
        parts.append(x[..., :start, :].expand(*leading, start, channels))
    parts.append(middle)
    if guard_or_true(start + length < total):
        tail = total - start - length
        parts.append(x[..., start + length :, :].expand(*leading, tail, channels))
    return torch.cat(parts, dim=TOKEN_DIM)


def reduce_tokens(
    x: torch.Tensor,
    indices: ReductionIndices,
    mode: str = "replace",
    *,
    start: int = 0,
) -> torch.Tensor:
    """Reduce the video span of a token sequence (DESIGN.md section 2, step 3).

    Args:
        x: ``(*, L, c)``; the video tokens are ``x[..., start:start + N, :]``.
        indices: from :func:`reduction_indices`, ``keep (*i, K)``, ``restore (*i, N)``; ``*i``
            broadcasts against ``*`` (e.g. ``(B, H)`` indices with ``(B, H)`` or ``(B, 1)``
            features).
        mode: one of :data:`REDUCE_MODES`; default ``"replace"``: the reduced rows are the kept
            rows (exact). ``"mean"``: every reduced row is the mean of all original video rows
            whose ``restore`` entry points to it (a dst row averages with its dropped src rows;
            computed in float32 for float16/bfloat16 inputs).
        start: index of the first video token on the token axis; default 0.

    Returns:
        ``(broadcast(*, *i), L - N + K, c)``: the tokens before and after the span unchanged,
        the span replaced by ``K`` rows.
    """
    x = check_tensor("x", x, min_dim=2)
    keep, restore = _check_indices(indices)
    mode = check_choice("mode", mode, REDUCE_MODES)
    num_tokens = restore.shape[-1]
    start = check_span("start", start, num_tokens, x.shape[TOKEN_DIM], what="video tokens")
    video = x[..., start : start + num_tokens, :]

    if mode == "replace":
        reduced = gather_tokens(video, keep)
    else:
        leading = broadcast_leading("x", x.shape[:-2], "indices", keep.shape[:-1])
        channels = x.shape[-1]
        num_keep = keep.shape[-1]
        acc_dtype = torch.float32 if x.dtype in _HALF_DTYPES else x.dtype
        rows = video.expand(*leading, num_tokens, channels).to(acc_dtype)
        target = restore.unsqueeze(-1).expand(*leading, num_tokens, channels)
        sums = torch.zeros(
            (*leading, num_keep, channels), dtype=acc_dtype, device=x.device
        ).scatter_add_(TOKEN_DIM, target, rows)
        counts = key_multiplicity(indices).to(acc_dtype)
        reduced = (sums / counts.unsqueeze(-1)).to(x.dtype)
    return _splice(x, start, num_tokens, reduced)


def restore_tokens(y: torch.Tensor, indices: ReductionIndices, *, start: int = 0) -> torch.Tensor:
    """Restore a reduced token sequence to full length (DESIGN.md section 2, step 4).

    Args:
        y: ``(*, L', c)``; the reduced video rows are ``y[..., start:start + K, :]``.
        indices: from :func:`reduction_indices`, ``keep (*i, K)``, ``restore (*i, N)``.
        start: index of the first reduced video row on the token axis; default 0.

    Returns:
        ``(broadcast(*, *i), L' - K + N, c)``: kept tokens back at their positions, every
        dropped token a copy of its matched dst row; rows outside the span unchanged.
    """
    y = check_tensor("y", y, min_dim=2)
    keep, restore = _check_indices(indices)
    num_keep = keep.shape[-1]
    start = check_span("start", start, num_keep, y.shape[TOKEN_DIM], what="reduced rows")
    restored = gather_tokens(y[..., start : start + num_keep, :], restore)
    return _splice(y, start, num_keep, restored)


def reduce_mask(
    mask: torch.Tensor,
    indices: ReductionIndices,
    *,
    start: int = 0,
    dim: int = -1,
) -> torch.Tensor:
    """Reduce an attention mask along with the keys (or queries) it belongs to.

    Uses ``keep`` as :func:`reduce_tokens` in ``"replace"`` mode does, so a mask reduced with
    the same indices as the keys stays aligned with them (also in ``"mean"`` mode, where a
    reduced key row stands at its dst token's position).

    Args:
        mask: attention mask ``(..., Lq, Lk)``, bool or float. The video span is
            ``[start, start + N)`` of axis ``dim``. A size-1 axis ``dim`` (broadcast over all
            tokens) is returned unchanged.
        indices: from :func:`reduction_indices`, ``keep (*i, K)``; ``*i`` broadcasts against
            the leading dims ``...`` of the mask, e.g. mask ``(B, 1, Lq, Lk)`` with indices
            ``(B, H, K)`` gives ``(B, H, Lq, Lk - N + K)``; a 2-D mask ``(Lq, Lk)`` with
            indices ``(B, H, K)`` gives ``(B, H, Lq, Lk - N + K)``.
        start: index of the first video token on axis ``dim``; default 0.
        dim: ``-1`` (keys, default) or ``-2`` (queries, for query reduction with a mask); one
            of :data:`MASK_DIMS`.

    Returns:
        The mask with axis ``dim`` reduced from ``Lk`` (or ``Lq``) to ``Lk - N + K``, leading
        dims broadcast with ``*i``.
    """
    mask = check_tensor("mask", mask, min_dim=2)
    keep, restore = _check_indices(indices)
    if dim not in MASK_DIMS:
        raise ValueError(f"dim must be one of {MASK_DIMS} (keys, queries), got {dim!r}")
    num_tokens = restore.shape[-1]
    if mask.shape[dim] == 1 and start + num_tokens > 1:
        return mask
    if dim == TOKEN_DIM:
        # Queries: the same gather on the transposed mask.
        return reduce_mask(mask.transpose(-1, -2), indices, start=start).transpose(-1, -2)
    start = check_span("start", start, num_tokens, mask.shape[-1], what="video tokens")
    leading = broadcast_leading("mask", mask.shape[:-2], "indices", keep.shape[:-1])
    num_queries = mask.shape[-2]
    span = mask[..., start : start + num_tokens].expand(*leading, num_queries, num_tokens)
    index = keep.unsqueeze(-2).expand(*leading, num_queries, keep.shape[-1])
    reduced = torch.gather(span, -1, index)
    if start == 0 and guard_or_false(num_tokens == mask.shape[-1]):
        return reduced
    parts = []
    if start > 0:
        parts.append(mask[..., :start].expand(*leading, num_queries, start))
    parts.append(reduced)
    tail = mask.shape[-1] - start - num_tokens
    if guard_or_true(tail > 0):
        parts.append(mask[..., start + num_tokens :].expand(*leading, num_queries, tail))
    return torch.cat(parts, dim=-1)


def key_multiplicity(indices: ReductionIndices) -> torch.Tensor:
    """How many of the ``N`` video tokens each reduced row stands for: ``(*i, K)`` int64.

    A kept src token counts 1; a dst token counts 1 plus the dropped src tokens matched to it.
    The counts of a row sum to ``N``.
    """
    keep, restore = _check_indices(indices)
    counts = torch.zeros((*restore.shape[:-1], keep.shape[-1]), dtype=torch.int64, device=restore.device)
    return counts.scatter_add_(-1, restore, torch.ones_like(restore))


def proportional_attention_mask(
    mask: torch.Tensor | None,
    key: torch.Tensor,
    indices: ReductionIndices,
    *,
    start: int = 0,
) -> torch.Tensor:
    """The attention mask of a kv-reduced SDPA call with proportional attention added.

    Adds ``log(key_multiplicity(indices))`` to the logits of the reduced video keys (ToMe's
    proportional attention, Bolya et al. 2023, Sec. 3): ``softmax(q k^T / sqrt(d) + log m)``
    weighs a kept key as if its ``m - 1`` dropped duplicates were still there, which is exact
    when they were identical to it. Keys outside the video span get 0.

    Args:
        mask: the (already kv-reduced) attention mask ``(..., Lq, L')`` or ``(..., 1, L')``,
            bool (True = attend) or float (added to the logits), or None.
        key: the reduced keys ``(*, L', d)``; gives ``L'``, dtype and device.
        indices: the kv reduction's indices, ``keep (*i, K)``, ``restore (*i, N)``.
        start: index of the first video key on the key axis; default 0.

    Returns:
        A float mask in ``key.dtype``, ``(broadcast(..., *i), Lq or 1, L')``: ``mask`` (bool
        masks become 0 / -inf) plus the bias, which broadcasts over the query axis.
    """
    key = check_tensor("key", key, min_dim=2)
    keep, _ = _check_indices(indices)
    num_keep = keep.shape[-1]
    start = check_span("start", start, num_keep, key.shape[TOKEN_DIM], what="reduced video keys")
    log_counts = key_multiplicity(indices).to(key.dtype).log()  # (*i, K), all counts >= 1
    tail = key.shape[TOKEN_DIM] - start - num_keep
    bias = torch.nn.functional.pad(log_counts, (start, tail)).unsqueeze(-2)  # (*i, 1, L')
    if mask is None:
        return bias
    mask = check_tensor("mask", mask, min_dim=2)
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=key.dtype, device=key.device).masked_fill_(~mask, float("-inf"))
    return mask.to(key.dtype) + bias
