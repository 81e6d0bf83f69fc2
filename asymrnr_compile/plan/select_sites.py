"""Which attention sites the configuration reduces, which features, and how many tokens each keeps.

One function answers "is this site reduced, and if not why" (:func:`site_skip_reason`) for
everything that must agree on it: the backend (which sites it rewrites) and the profiler (which
sites it measures), so that a profile never describes a site the backend would leave alone.
:func:`split_grid` gives the grid a site's destination split is drawn on (the config's ``grid``
override where it fits). :func:`plan_site_reduction` turns a selected site into a
:class:`SiteReduction`: per feature the ratio asked, the tokens kept and whether the ratio was
capped at the site's largest usable ratio (paper Sec. 3.3).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from asymrnr_compile import ops
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.reasons import Reason, ReasonKind
from asymrnr_compile.vocabulary import PLANNING_ORDER, Feature, conflicts

if TYPE_CHECKING:
    from asymrnr_compile.plan.schedule_driver import ScheduleDriver

logger = logging.getLogger("asymrnr_compile")

Grid = tuple[int, int, int]


@dataclass
class SiteReduction:
    """What the runtime applies at one site: per feature the ratio asked and the tokens kept.

    Attributes:
        site: the analysis record of the site.
        grid: the ``(F, H, W)`` grid the destination split is drawn on (:func:`split_grid`), or
            None for a 1-D split.
        dst_stride: the chunk size of that split (:func:`site_dst_stride`).
        num_dst: per reduced feature, the destination tokens of the split.
        requested_ratio: per reduced feature, the ratio the config or schedule asked for.
        num_keep: per reduced feature, the video tokens kept (with a schedule: at the largest
            scheduled ratio; the runtime asks the driver for each step's).
        capped: per reduced feature, whether the ratio was above the site's largest usable ratio.
    """

    site: AttentionSite
    grid: Grid | None
    dst_stride: tuple[int, int, int] = ops.DEFAULT_DST_STRIDE
    num_dst: dict[Feature, int] = field(default_factory=dict)
    requested_ratio: dict[Feature, float] = field(default_factory=dict)
    num_keep: dict[Feature, int] = field(default_factory=dict)
    capped: dict[Feature, bool] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        num_tokens = self.site.video_tokens or 0
        return {
            **self.site.to_dict(),
            "split_grid": list(self.grid) if self.grid else None,
            "dst_stride": list(self.dst_stride),
            "applied": {
                feature: {
                    "requested_ratio": self.requested_ratio[feature],
                    "applied_ratio": round(1 - keep / num_tokens, 6),
                    "kept_tokens": keep,
                    "video_tokens": num_tokens,
                    "capped": self.capped[feature],
                }
                for feature, keep in self.num_keep.items()
            },
        }


#: A site whose features all have ratio 0 (or keep every token): the user's choice.
NO_FEATURE_AT_THESE_RATIOS = Reason("no feature to reduce at these ratios", ReasonKind.CHOSEN)


def site_skip_reason(site: AttentionSite, config: AsymRnRConfig) -> str | None:
    """Why ``config`` leaves ``site`` alone, or None when the site is reduced (or profiled).

    A site is left alone when the analysis found it not reducible, its video token count is
    unknown or below ``config.min_video_tokens``, its block is in ``config.skip_blocks`` (by index
    or module path), or its split would have no destination token or no source token.
    """
    if not site.reducible:
        return site.reason or "not reducible"
    if site.video_tokens is None:
        return Reason("unknown number of video tokens")
    if site.video_tokens < config.min_video_tokens:
        return Reason(f"{site.video_tokens} video tokens < min_video_tokens={config.min_video_tokens}",
                      ReasonKind.TOO_SMALL, fix="lower min_video_tokens if these sites are video attention")
    for block in config.skip_blocks:
        if (isinstance(block, int) and site.block_index == block) or (isinstance(block, str) and site.block == block):
            return Reason(f"block {block!r} is in skip_blocks", ReasonKind.CHOSEN,
                          fix="remove the blocks from skip_blocks")
    grid = split_grid(site, config)
    stride = site_dst_stride(grid, config.dst_stride)
    num_dst = ops.count_dst_tokens(site.video_tokens, grid, stride)
    if num_dst == 0:
        return Reason(f"grid {grid} is smaller than dst_stride {stride} along some axis: no destination "
                      f"token to merge into (lower dst_stride, e.g. (1, 2, 2))", fix="lower dst_stride, e.g. (1, 2, 2)")
    if num_dst == site.video_tokens:
        return Reason(f"grid {grid} and dst_stride {stride} make every token a destination: nothing to drop")
    return None


def site_dst_stride(grid: Grid | None, dst_stride: tuple[int, int, int]) -> tuple[int, int, int]:
    """The destination stride used on ``grid``: ``dst_stride``, with 1 along every axis of size 1.

    One frame on the token axis (per-frame spatial attention with the frames in the batch, as in
    Latte; a one-frame video or an image) can only be split within the frame: a frame stride of 2
    would leave no full chunk and so no destination token. Axes longer than 1 keep the configured
    stride (a stride larger than such an axis stays the user's setting, and is reported)."""
    if grid is None:
        return dst_stride
    return (1 if grid[0] == 1 else dst_stride[0], 1 if grid[1] == 1 else dst_stride[1],
            1 if grid[2] == 1 else dst_stride[2])


def unreduced_site_dict(site: AttentionSite, config: AsymRnRConfig, graph_reason: str | None = None) -> dict[str, Any]:
    """The report entry of a site left alone: :meth:`AttentionSite.to_dict` with ``reason`` always
    set, to why ``config`` skips it (:func:`site_skip_reason`), else ``graph_reason`` (why its whole
    graph runs unreduced), else "no feature to reduce at these ratios"."""
    reason = site_skip_reason(site, config) or graph_reason or NO_FEATURE_AT_THESE_RATIOS
    return {**site.to_dict(), "reason": str(reason)}  # plain data: reports are JSON and cross processes


def split_grid(site: AttentionSite, config: AsymRnRConfig) -> Grid | None:
    """The grid the site's split is drawn on: ``config.grid`` where it has the site's token count,
    else the grid the analysis recovered (None: a 1-D split)."""
    if config.grid is not None and site.video_tokens is not None:
        if math.prod(config.grid) == site.video_tokens:
            return config.grid
        logger.info("asymrnr: grid override %s does not fit site %s (%d video tokens); using %s",
                    config.grid, site.name, site.video_tokens, site.grid)
    return site.grid


def plan_site_reduction(site: AttentionSite, config: AsymRnRConfig,
                        driver: ScheduleDriver | None = None) -> SiteReduction | str:
    """Per feature, the tokens kept at ``site`` under ``config``; or the reason it is skipped.

    A ratio above the site's largest usable ratio (``1 - N_dst / N``, paper Sec. 3.3) is capped
    and flagged. When ``h`` is reduced at a site, ``q`` and ``kv`` are not. With a schedule
    (``driver``), the features are those the schedule reduces at some step and the kept tokens
    recorded here are those of the largest scheduled ratio; the runtime asks the driver for each
    step's.
    """
    reason = site_skip_reason(site, config)
    if reason is not None:
        return reason
    num_tokens = site.video_tokens
    assert num_tokens is not None  # site_skip_reason gives a reason when it is unknown
    grid = split_grid(site, config)
    reduction = SiteReduction(site=site, grid=grid, dst_stride=site_dst_stride(grid, config.dst_stride))

    def ratio_of(feature: Feature) -> float:
        return config.ratio(feature) if driver is None else driver.max_ratio(site.index, feature)

    wanted = [f for f in PLANNING_ORDER if ratio_of(f) > 0 and f in site.features]
    if "h" in wanted and site.attn_mask is not None:
        logger.info("asymrnr: site %s has an attention mask; h reduction is not supported there", site.name)
        wanted.remove("h")
    if driver is None:  # one setting for every step: the conflict rule keeps the first chosen
        wanted = [f for i, f in enumerate(wanted) if not conflicts(f, wanted[:i])]
    num_dst = ops.count_dst_tokens(num_tokens, grid, reduction.dst_stride)
    for feature in wanted:
        ratio = ratio_of(feature)
        keep = ops.num_kept_tokens(num_tokens, num_dst, ratio)
        if keep >= num_tokens:
            continue
        reduction.num_dst[feature] = num_dst
        reduction.requested_ratio[feature] = ratio
        reduction.num_keep[feature] = keep
        reduction.capped[feature] = ratio > ops.max_reduction_ratio(num_tokens, grid, reduction.dst_stride)
        if reduction.capped[feature]:
            logger.info("asymrnr: %s ratio %.3f capped at site %s to %.3f (%d destination tokens of %d)",
                        feature, ratio, site.name, 1 - keep / num_tokens, num_dst, num_tokens)
    if not reduction.num_keep:
        return NO_FEATURE_AT_THESE_RATIOS
    if config.match_on == "hidden_states" and {"q", "kv"} & set(reduction.num_keep):
        problem = site.hidden_matching_problem()
        if problem is not None:
            logger.info("asymrnr: site %s matches q/kv on the features, not the hidden states: %s",
                        site.name, problem)
    return reduction
