"""Per-call planning: the :class:`~asymrnr_compile.plan.reduction_plan.ReductionPlan` of one
call of a captured graph, from its step event and the caller's matching cache.

Per reduced site and feature: the kept token count (fixed by the config, or read from the
schedule at the step) and whether the matching is computed now (first call of a ``cache_steps``
window) or reused from the cache. Plans are values (hashable): equal plans are one compiled
variant (:mod:`~asymrnr_compile.runtime.variants`), built once.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.plan.reduction_plan import FeaturePlan, ReductionPlan, SitePlan
from asymrnr_compile.plan.select_sites import SiteReduction
from asymrnr_compile.runtime.matching_cache import MatchingCache
from asymrnr_compile.runtime.steps import StepEvent

if TYPE_CHECKING:
    from asymrnr_compile.plan.schedule_driver import ScheduleDriver


def matching_window(config: AsymRnRConfig, step: int) -> int:
    """Index of the matching window holding denoising step ``step`` (after warm-up)."""
    return (step - config.warmup_steps) // config.cache_steps


def plan_call(config: AsymRnRConfig, reductions: list[SiteReduction], event: StepEvent, cache: MatchingCache,
              schedule: ScheduleDriver | None) -> ReductionPlan:
    """The reduction plan of one call (empty during warm-up): per reduction and feature the kept
    tokens (``schedule``'s at the step, else the reduction's) and whether the call computes the
    matching (none in ``cache`` for this call index, site, feature and window)."""
    site_plans: list[SitePlan] = []
    if event.step >= config.warmup_steps:
        window = matching_window(config, event.step)
        for reduction in reductions:
            features: dict[str, FeaturePlan] = {}
            keeps = reduction.num_keep if schedule is None else \
                schedule.keeps(reduction, event.step, record=event.call_index == 0)
            for feature, keep in keeps.items():
                key = (event.call_index, reduction.site.index, feature)
                features[feature] = FeaturePlan(
                    num_tokens=reduction.site.video_tokens,  # type: ignore[arg-type]
                    num_keep=keep,
                    compute_matching=not cache.has(key, window),
                )
            if features:
                site_plans.append(SitePlan(reduction.site.index, **features))
    return ReductionPlan.for_config(config, tuple(site_plans))


class ScheduleDrivers:
    """The schedule driver of a graph for a video of a given step count: ``default`` (made for
    ``config.num_steps``) or, for a video scope declaring another count, one made on first use.

    Args:
        config: the backend configuration (its ``schedule`` and ``num_steps``).
        sites: the graph's attention sites.
        default: the driver for ``config.num_steps``; None: no schedule (fixed ratios).
    """

    def __init__(self, config: AsymRnRConfig, sites: list[AttentionSite], default: ScheduleDriver | None) -> None:
        self.config = config
        self.sites = sites
        self.default = default
        self._by_steps: dict[int, ScheduleDriver] = {}
        self._lock = threading.Lock()

    def for_steps(self, num_steps: int | None) -> ScheduleDriver | None:
        """The driver for a video of ``num_steps`` steps (None: the config's)."""
        if self.default is None or num_steps is None or num_steps == self.config.num_steps:
            return self.default
        with self._lock:
            driver = self._by_steps.get(num_steps)
            if driver is None:
                from asymrnr_compile.plan.schedule_driver import ScheduleDriver

                driver = self._by_steps[num_steps] = ScheduleDriver(self.config.schedule, self.sites, num_steps)
            return driver
