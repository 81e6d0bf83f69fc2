"""Per-step kept token counts from a :class:`~asymrnr_compile.plan.schedule.Schedule` (paper Sec. 3.4).

The runtime of a graph compiled with ``schedule=`` asks :class:`ScheduleDriver` for the kept
video tokens of every (site, feature) at each step. The driver

- maps sites to schedule rows with :func:`~asymrnr_compile.plan.schedule.site_rows` (rows = blocks
  holding reducible sites, in execution order; several sites of one block share a row),
- checks that the schedule fits: the row count must equal the model's (ValueError naming both
  shapes); a different step count is fine when ``config.num_steps`` says how many steps the run
  has (the schedule is resampled by normalised progress, :meth:`Schedule.resample`), and is an
  error at the first step past the schedule's end otherwise,
- turns a ratio into kept tokens as fixed ratios do (``ops.num_kept_tokens``, capped at the
  site's largest usable ratio), honouring the conflict rule (``h > 0`` at a site and step
  switches ``q`` and ``kv`` off there),
- records, per step, the ratios actually applied (for the report and tests).

Plans differ between steps, so a scheduled run compiles one variant per distinct plan; the
subgraphs between attention calls, shared by variants, compile once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from asymrnr_compile import ops
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.plan.schedule import Schedule, site_rows
from asymrnr_compile.vocabulary import PLANNING_ORDER, Feature, conflicts

if TYPE_CHECKING:
    from asymrnr_compile.plan.select_sites import SiteReduction


class ScheduleMismatchError(ValueError):
    """The schedule's shape (rows x steps) does not fit the compiled model."""


class ScheduleDriver:
    """Kept tokens per (site, step, feature) from a schedule.

    Args:
        schedule: the schedule (rows x steps x features).
        sites: all attention sites of the graph (the analysis' records).
        num_steps: steps of the run when they differ from the schedule's (``config.num_steps``),
            or None.

    Raises:
        ValueError: the schedule's row count differs from the graph's (message names both
            shapes, e.g. ``"schedule has 30 blocks x 50 steps, model has 4 blocks x 10 steps"``).
    """

    def __init__(self, schedule: Schedule, sites: Sequence[AttentionSite], num_steps: int | None = None) -> None:
        self.rows = site_rows(sites)
        num_rows = len(set(self.rows.values()))
        if num_rows == 0:
            raise ScheduleMismatchError(f"schedule has {schedule.num_blocks} blocks x {schedule.num_steps} steps, "
                             "model has 0 blocks with a reducible attention site")
        try:
            schedule.check_fits(num_rows, num_steps, resample=num_steps is not None)
        except ValueError as error:
            raise ScheduleMismatchError(str(error)) from None
        self.source = schedule
        self.schedule = schedule.resample(num_steps) if num_steps is not None else schedule
        self.num_rows = num_rows
        # step -> site index -> feature -> applied ratio (first call of each step)
        self.applied: dict[int, dict[int, dict[str, float]]] = {}

    def max_ratio(self, site_index: int, feature: str) -> float:
        """The largest ratio the schedule gives ``feature`` at this site over all steps."""
        row = self.rows.get(site_index)
        return 0.0 if row is None else float(self.schedule.ratios(feature)[row].max())

    def ratio(self, site_index: int, feature: str, step: int) -> float:
        """The scheduled ratio of one (site, feature) at ``step``."""
        if step >= self.schedule.num_steps:
            raise ScheduleMismatchError(
                f"schedule has {self.schedule.num_blocks} blocks x {self.schedule.num_steps} steps, "
                f"model has {self.num_rows} blocks and reached step {step + 1}; set num_steps to the run's "
                "step count (the schedule is then addressed by normalised progress)")
        row = self.rows.get(site_index)
        if row is None:
            return 0.0
        return self.schedule.ratio(block=row, step=step, feature=feature)

    def keeps(self, reduction: SiteReduction, step: int, *, record: bool = True) -> dict[Feature, int]:
        """Kept video tokens per feature reduced at ``step`` (features kept whole are left out).

        ``reduction`` is the planner's :class:`~asymrnr_compile.plan.select_sites.SiteReduction`: its
        ``num_dst`` lists the features the site can reduce under this schedule.
        """
        site = reduction.site
        num_tokens = site.video_tokens
        out: dict[Feature, int] = {}
        applied: dict[str, float] = {}
        for feature in PLANNING_ORDER:
            if feature not in reduction.num_dst:
                continue
            if conflicts(feature, out):  # the conflict rule (vocabulary.py)
                continue
            ratio = self.ratio(site.index, feature, step)
            if ratio <= 0:
                continue
            keep = ops.num_kept_tokens(num_tokens, reduction.num_dst[feature], ratio)
            if keep < num_tokens:
                out[feature] = keep
                applied[feature] = round(1 - keep / num_tokens, 6)
        if record:
            self.applied.setdefault(step, {})[site.index] = applied
        return out

    def kept_per_step(self, reductions: Sequence[SiteReduction]) -> list[dict[int, dict[str, tuple[int, int]]]]:
        """For every step of the run, ``{site index: {feature: (num_dst, num_keep)}}`` (cost model input)."""
        return [{r.site.index: {f: (r.num_dst[f], k) for f, k in self.keeps(r, step, record=False).items()}
                 for r in reductions} for step in range(self.schedule.num_steps)]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.source.to_dict(),
            "rows": {str(k): v for k, v in self.rows.items()},
            "run_steps": self.schedule.num_steps,
            "applied_per_step": {str(step): {str(site): ratios for site, ratios in sites.items()}
                                 for step, sites in sorted(self.applied.items())},
        }
