"""Redundancy statistics of one feature: how close source tokens lie to their destinations.

AsymRnR reduces where tokens are redundant (paper Sec. 3.4: the redundancy schedule is measured
as the distance of source tokens to their nearest destination tokens). These functions turn the
``distance`` of a :class:`~asymrnr_compile.ops.Matching` into a fixed-length vector of
statistics, so that a profiling graph can return them as one extra output per (site, feature).

Normalisation (so that sites, features and models are comparable):

- ``"euclidean"``: the squared distance is divided by ``2 * sum_c var_c``, the expected squared
  distance between two tokens drawn at random from the same video span (per leading index,
  e.g. batch element and head). 0 = duplicates, about 1 = no more alike than random tokens.
- ``"cosine"``: ``1 - cos`` is already scale-free (0 .. 2).
- ``"dot"``: ``-d.s`` is divided by the mean squared norm of the tokens.

Statistics (:func:`stat_names` gives the layout): the mean, the ``quantiles`` (linear
interpolation, as ``torch.quantile``) of the normalised distances pooled over all leading
indices and source tokens, and for every ``ratio``: ``drop_mean@r``, the mean normalised distance
of the source tokens that ratio would drop (the most similar ones, paper Sec. 3.3), and
``drop_share@r``, their share of the total distance. Sizes are Python ints: nothing
data-dependent. Inside a compiled graph the statistics run as one custom op,
``torch.ops.asymrnr.redundancy_stats`` (registered on import, with a fake implementation for
tracing), so the sorts they need cost Inductor no code generation and the compiled statistics
equal the eager ones exactly.

Optionally (``error_ratios``), :func:`reduction_errors` measures the damage itself instead of a
proxy for it: the mean relative L2 error of the video rows of the attention output when the
queries (restored by copying, paper Sec. 3.2) or the keys/values are reduced at each ratio with
the same matching. Distances can mislead: a block whose queries encode mostly position has
small nearest-destination distances and still restores the wrong content. Each ratio costs one
more attention call, so these are recorded only on request (named ``error@r``).
"""

from __future__ import annotations

import math

import torch

from asymrnr_compile._validate import (
    check_choice,
    check_ratio,
    check_span,
    check_tensor,
)

from .match import SIMILARITIES, Matching
from .reduce import reduce_mask, reduce_tokens, reduction_indices, restore_tokens
from .split import TokenSplit, check_split, num_kept_tokens

DEFAULT_QUANTILES: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9)
"""Quantiles of the normalised nearest-destination distance recorded by default."""

DEFAULT_PROFILE_RATIOS: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)
"""Ratios whose dropped-token statistics are recorded by default (also calibrate's ladder)."""

_EPS = 1e-12

STATS_OP_NAME = "asymrnr::redundancy_stats"
"""The custom op (``torch.ops.asymrnr.redundancy_stats``) that computes the statistics."""


ERROR_FEATURES: tuple[str, ...] = ("q", "kv")
"""Reductions whose output error :func:`reduction_errors` can measure."""


def stat_names(quantiles: tuple[float, ...] = DEFAULT_QUANTILES,
               ratios: tuple[float, ...] = DEFAULT_PROFILE_RATIOS,
               error_ratios: tuple[float, ...] = ()) -> tuple[str, ...]:
    """Names of the entries of :func:`redundancy_stats`' output, in order:
    ``mean``, ``p10``..., ``drop_mean@0.3``..., ``drop_share@0.3``..., then ``error@r`` for every
    ``error_ratios`` entry (:func:`reduction_errors`, appended by the profiling pass)."""
    return ("mean", *(f"p{round(100 * q):02d}" for q in quantiles),
            *(ratio_stat_name("drop_mean", r) for r in ratios), *(ratio_stat_name("drop_share", r) for r in ratios),
            *(ratio_stat_name("error", r) for r in error_ratios))


def ratio_stat_name(stat: str, ratio: float) -> str:
    """The name of a per-ratio statistic in :func:`stat_names`, e.g. ``drop_mean@0.3``."""
    return f"{stat}@{ratio:g}"


def reduction_errors(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attention: torch.Tensor,
                     split: TokenSplit, matching: Matching, feature: str, ratios: tuple[float, ...], *,
                     start: int = 0, attn_mask: torch.Tensor | None = None,
                     scale: float | None = None) -> torch.Tensor:
    """Relative error of the attention output under one reduction, at each ratio: float32 ``(R,)``.

    Args:
        query, key, value: the SDPA inputs ``(B, H, L, d)`` (keys on the same token axis layout:
            video tokens at ``[start, start + N)``).
        attention: the exact SDPA output ``(B, H, L, d)``.
        split, matching: the split of the ``N`` video tokens and the matching of ``feature``'s
            matched tensor (q for ``"q"``, V for ``"kv"``, as the rewrite matches).
        feature: ``"q"`` (queries reduced, output restored by copying) or ``"kv"`` (keys and
            values reduced with the same indices), one of :data:`ERROR_FEATURES`.
        ratios: the reduction ratios, each in [0, 1).
        start: first video token on the token axis; default 0.
        attn_mask, scale: as given to the SDPA call (the mask is reduced along with the tokens).

    Returns:
        Per ratio, the mean over batch, heads and video tokens of
        ``|approx - exact| / |exact|`` (L2 over channels); 0 where the ratio drops nothing.
    """
    check_choice("feature", feature, ERROR_FEATURES)
    for r in ratios:
        check_ratio("ratios", r)
    dst, src = check_split(split)
    num_dst, num_tokens = dst.shape[0], dst.shape[0] + src.shape[0]
    start = check_span("start", start, num_tokens, attention.shape[-2], what="video tokens")
    sdpa = torch.nn.functional.scaled_dot_product_attention
    exact = attention[..., start:start + num_tokens, :].float()
    norms = exact.norm(dim=-1).clamp_min(_EPS)
    errors = []
    for ratio in ratios:
        num_keep = num_kept_tokens(num_tokens, num_dst, ratio)
        if num_keep == num_tokens:
            errors.append(norms.new_zeros(()))
            continue
        indices = reduction_indices(split, matching, num_keep)
        if feature == "q":
            mask = None if attn_mask is None else reduce_mask(attn_mask, indices, start=start, dim=-2)
            reduced = sdpa(reduce_tokens(query, indices, start=start), key, value, attn_mask=mask, scale=scale)
            approx = restore_tokens(reduced, indices, start=start)
        else:
            mask = None if attn_mask is None else reduce_mask(attn_mask, indices, start=start)
            approx = sdpa(query, reduce_tokens(key, indices, start=start), reduce_tokens(value, indices, start=start),
                          attn_mask=mask, scale=scale)
        difference = approx[..., start:start + num_tokens, :].float() - exact
        errors.append((difference.norm(dim=-1) / norms).mean())
    return torch.stack(errors)


def normalised_distance(x: torch.Tensor, distance: torch.Tensor, num_tokens: int,
                        similarity: str = "euclidean", *, start: int = 0) -> torch.Tensor:
    """Scale-free nearest-destination distances (see the module docstring).

    Args:
        x: the matched features ``(*, L, c)``; the video span is ``x[..., start:start + N, :]``.
        distance: ``Matching.distance`` ``(*, N_src)`` of the same leading shape ``*``.
        num_tokens: ``N``, the video tokens of the span.
        similarity: the similarity the matching used, one of ``SIMILARITIES``; default
            ``"euclidean"``.
        start: index of the first video token on the token axis (-2); default 0.

    Returns:
        float32 ``(*, N_src)``.
    """
    x = check_tensor("x", x, min_dim=2)
    check_choice("similarity", similarity, SIMILARITIES)
    start = check_span("start", start, num_tokens, x.shape[-2], what="video tokens")
    if similarity == "cosine":
        return distance.float()
    video = x[..., start:start + num_tokens, :].detach().float()
    if similarity == "euclidean":
        scale = 2.0 * video.var(dim=-2, unbiased=False).sum(-1)
    else:
        scale = video.square().sum(-1).mean(-1)
    return distance.float() / scale.clamp_min(_EPS).unsqueeze(-1)


def _quantile_sorted(values: torch.Tensor, q: float) -> torch.Tensor:
    """``torch.quantile(values, q)`` (linear) of an ascending 1-D tensor, with static indices."""
    count = values.shape[0]
    position = q * (count - 1)
    low = math.floor(position)
    high = min(low + 1, count - 1)
    frac = position - low
    return values[low] + (values[high] - values[low]) * frac


def redundancy_stats(normalised: torch.Tensor, num_tokens: int, num_dst: int,
                     quantiles: tuple[float, ...] = DEFAULT_QUANTILES,
                     ratios: tuple[float, ...] = DEFAULT_PROFILE_RATIOS) -> torch.Tensor:
    """Statistics of normalised distances ``(*, N_src)`` of a span of ``num_tokens`` video tokens
    of which ``num_dst`` are destinations: float32 ``(len(stat_names(quantiles, ratios)),)``.

    A ratio ``r`` drops ``N - num_kept_tokens(N, N_dst, r)`` source tokens per leading index,
    the ones with the smallest distance (paper Sec. 3.3); ``drop_mean@r`` is 0 when it drops none.
    """
    for q in quantiles:
        if not 0.0 <= float(q) <= 1.0:
            raise ValueError(f"quantiles must be in [0, 1], got {q}")
    for r in ratios:
        check_ratio("ratios", r)
    if normalised.shape[-1] == 0:
        raise ValueError("redundancy_stats needs at least one source token (N_src = 0)")
    return _stats_op(normalised, num_tokens, num_dst, [float(q) for q in quantiles], [float(r) for r in ratios])


@torch.library.custom_op(STATS_OP_NAME, mutates_args=())
def _stats_op(normalised: torch.Tensor, num_tokens: int, num_dst: int, quantiles: list[float],
              ratios: list[float]) -> torch.Tensor:
    """The statistics (see :func:`redundancy_stats`); an opaque op under ``torch.compile``."""
    num_src = normalised.shape[-1]
    rows = normalised.reshape(-1, num_src).float()
    pooled = rows.reshape(-1).sort().values
    by_row = rows.sort(dim=-1).values
    total = rows.sum()
    stats = [rows.mean(), *(_quantile_sorted(pooled, q) for q in quantiles)]
    drop_mean, drop_share = [], []
    for r in ratios:
        dropped = min(num_src, num_tokens - num_kept_tokens(num_tokens, num_dst, r))
        if dropped <= 0:
            drop_mean.append(rows.new_zeros(()))
            drop_share.append(rows.new_zeros(()))
            continue
        part = by_row[:, :dropped]
        drop_mean.append(part.mean())
        drop_share.append(part.sum() / total.clamp_min(_EPS))
    return torch.stack([*stats, *drop_mean, *drop_share])


@_stats_op.register_fake
def _stats_op_fake(normalised: torch.Tensor, num_tokens: int, num_dst: int, quantiles: list[float],
                   ratios: list[float]) -> torch.Tensor:
    return normalised.new_empty((1 + len(quantiles) + 2 * len(ratios),), dtype=torch.float32)
