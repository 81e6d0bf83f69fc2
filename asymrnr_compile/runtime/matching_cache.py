"""The matching cache: matchings computed on the first step of a window, reused for the rest.

Paper Sec. 3.4: the split and the matching (which tokens, not their values) are computed once per
window of ``cache_steps`` denoising steps; the gathers always use the current step's features.
Entries are keyed by (call in step, site, feature), so pipelines that run cond and uncond as two
calls per step keep a matching per call.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from asymrnr_compile import ops
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.plan.reduction_plan import INDEX_FIELDS, MATCHING_FIELDS
from asymrnr_compile.vocabulary import Feature

CacheKey = tuple[int, int, Feature]
"""(call in step, site index, feature)."""


@dataclass(frozen=True)
class MatchingRecord:
    """One matching computed during a call, as handed to a backend's ``on_matching`` observer.

    Attributes:
        step: denoising step of the call (0-based, from the timestep input).
        call_index: which call within the step (0 = first; 1 = e.g. the unconditional call of a
            split CFG pipeline).
        site: the attention site (``site.block_index``, ``site.grid``, ``site.name``...).
        feature: ``"q"``, ``"kv"`` or ``"h"``.
        split: the dst/src partition of the site's ``N`` video tokens.
        indices: ``keep (*, K)`` and ``restore (*, N)`` (leading dims: the batch, and heads when
            matched per head); video token ``i`` is computed by token ``keep[..., restore[..., i]]``,
            itself when kept. On the model's device.
    """

    step: int
    call_index: int
    site: AttentionSite
    feature: Feature
    split: ops.TokenSplit
    indices: ops.ReductionIndices


@dataclass
class _CachedMatching:
    window: int
    matching: dict[str, torch.Tensor] = field(default_factory=dict)
    indices: dict[int, ops.ReductionIndices] = field(default_factory=dict)


class MatchingCache:
    """Matchings per (call in step, site, feature), valid for one cache window.

    Each entry keeps the reduction indices (``keep``, ``restore``) per kept-token count, and, when
    asked (schedules keep different counts at different steps of one window), the matching
    (``src_order``, ``nearest``, ``distance``) to derive other counts from. An entry is replaced
    when its key's next window computes a new matching, so the cache holds at most one entry per
    (call in step, site, feature).
    """

    def __init__(self) -> None:
        self.entries: dict[CacheKey, _CachedMatching] = {}

    def reset(self) -> None:
        """Forget every matching (a new video)."""
        self.entries.clear()

    def has(self, key: CacheKey, window: int) -> bool:
        """Whether ``key`` holds a matching of window ``window``."""
        entry = self.entries.get(key)
        return entry is not None and entry.window == window

    def store(self, key: CacheKey, window: int, num_keep: int, fields: dict[str, torch.Tensor], *,
              keep_matching: bool = True) -> None:
        """Store what a computing variant returned for one (call, site, feature); the matching
        itself only with ``keep_matching`` (needed to derive indices for other kept counts)."""
        entry = self.entries[key] = _CachedMatching(window)
        if keep_matching:
            entry.matching = {name: fields[name] for name in MATCHING_FIELDS}
        entry.indices[num_keep] = ops.ReductionIndices(*(fields[name] for name in INDEX_FIELDS))

    def indices(self, key: CacheKey, num_keep: int, split: ops.TokenSplit) -> ops.ReductionIndices:
        """The cached reduction indices for ``num_keep`` tokens (derived once if new)."""
        entry = self.entries[key]
        if num_keep not in entry.indices:
            if not entry.matching:
                raise KeyError(f"{key}: indices for {num_keep} kept tokens were not stored and the matching was "
                               "not kept to derive them (store(..., keep_matching=True))")
            matching = ops.Matching(*(entry.matching[name] for name in MATCHING_FIELDS))
            indices = ops.reduction_indices(split, matching, num_keep)
            stored = next(iter(entry.indices.values()))
            if stored.keep.dim() > matching.src_order.dim():  # matched on hidden states: no head axis
                indices = ops.indices_over_heads(indices)
            entry.indices[num_keep] = indices
        return entry.indices[num_keep]
