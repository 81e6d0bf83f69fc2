"""The dst/src token splits of one caller, and the extra inputs a rewritten graph takes.

A rewritten variant takes, per reduced site and feature, either the split (``dst``/``src``, to
compute a matching) or the cached indices (``keep``/``restore``, to reuse one) as extra inputs
(:class:`~asymrnr_compile.plan.reduction_plan.CacheSlot`). Splits are drawn eagerly with the seed
of :func:`~asymrnr_compile.plan.seeds.site_seed` (the block instance's global site index) and kept
in the caller's :class:`~asymrnr_compile.runtime.video_state.VideoState`.
"""

from __future__ import annotations

import torch

from asymrnr_compile import ops
from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.plan.reduction_plan import SPLIT_FIELDS, CacheSlot, ReductionPlan
from asymrnr_compile.plan.seeds import site_seed
from asymrnr_compile.plan.select_sites import SiteReduction
from asymrnr_compile.runtime.plan_call import matching_window
from asymrnr_compile.runtime.steps import StepEvent
from asymrnr_compile.runtime.video_state import VideoState
from asymrnr_compile.vocabulary import Feature


def draw_split(state: VideoState, config: AsymRnRConfig, reduction: SiteReduction, feature: Feature,
               device: torch.device, step: int) -> ops.TokenSplit:
    """The dst/src split of one (site, feature) at denoising step ``step``: one for the whole
    run, or with ``config.redraw_split`` one per matching window (only the current window's is
    kept in ``state.splits``)."""
    window = matching_window(config, step) if config.redraw_split else 0
    site = reduction.site
    key = (site.index, feature)
    held = state.splits.get(key)
    if held is None or held[0] != window:
        seed = site_seed(config.seed, state.site_offset + site.index, feature, window)
        held = state.splits[key] = (window, ops.split_tokens(site.video_tokens, reduction.grid, reduction.dst_stride,
                                                             seed=seed, device=device))
    return held[1]


def slot_input(slot: CacheSlot, reduction: SiteReduction, plan: ReductionPlan, event: StepEvent, state: VideoState,
               config: AsymRnRConfig, device: torch.device) -> torch.Tensor:
    """The tensor a variant takes for ``slot``: a field of the split, or of the indices cached
    for this call index, site and feature (derived for the plan's kept count)."""
    split = draw_split(state, config, reduction, slot.feature, device, event.step)
    if slot.field in SPLIT_FIELDS:  # else one of INDEX_FIELDS
        return getattr(split, slot.field)
    num_keep = plan.feature_plan(slot.site_index, slot.feature).num_keep
    indices = state.cache.indices((event.call_index, slot.site_index, slot.feature), num_keep, split)
    return getattr(indices, slot.field)
