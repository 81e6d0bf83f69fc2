"""A schedule for a target speedup: reduce the most redundant (block, step, feature) first.

:func:`calibrate` turns a :class:`~asymrnr_compile.profiling.profiler.RedundancyProfile` into a
:class:`~asymrnr_compile.plan.schedule.Schedule` that the symbolic cost model
(:mod:`asymrnr_compile.analysis.cost`) predicts to run ``target_speedup`` times faster than the
unreduced model (paper Sec. 3.4: reduce where redundancy is high, spare where it is low).

Greedy rule. A *move* sets the ratio of one (row, step, feature) to a rung of the feature's
ladder (``DEFAULT_LADDER``). Its damage is, with ``damage="distance"`` (default, the paper's
proxy), the profile's ``drop_mean@ratio``: the mean normalised distance of the source tokens
that ratio would drop there (averaged over the row's sites; ``q`` is measured on q, ``kv`` on v,
``h`` on the hidden states); with ``damage="error"``, the profile's ``error@ratio``: the measured
relative error of the attention output under that reduction (``profile(...,
error_ratios=...)``; q and kv only). On the trained synthetic model the distance ranks the one
block whose query reduction ruins the videos among the most redundant; the error ranks it last
(``benchmarks/RESULTS.md``). Moves are taken in increasing damage (most redundant first), each
raising a cell's ratio only, until the predicted speedup reaches the target. A move the cost
model sees no gain in is not taken (sites whose attention lengths are data-dependent, like
Mochi's, have no cost model and stay unreduced). The conflict rule holds: a cell with ``h`` on
takes no ``q``/``kv`` move and vice versa.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from asymrnr_compile import ops
from asymrnr_compile._validate import check_choice
from asymrnr_compile.analysis.cost import ideal_speedup
from asymrnr_compile.ops import redundancy
from asymrnr_compile.plan.schedule import Schedule
from asymrnr_compile.profiling.profiler import ProfiledSite, RedundancyProfile
from asymrnr_compile.vocabulary import FEATURES, PLANNING_ORDER, Feature, conflicts

DEFAULT_LADDER: Mapping[str, tuple[float, ...]] = {"q": (0.3, 0.5, 0.7), "kv": (0.2, 0.3, 0.4, 0.5)}
"""Ratios a move may set, per feature (h is off unless asked for: it is the riskiest)."""


def ladder_ratios(ladder: Mapping[str, Sequence[float]] = DEFAULT_LADDER) -> tuple[float, ...]:
    """Every ratio a ladder uses, ascending: what a profile must record for :func:`calibrate`
    (e.g. ``profile(..., error_ratios=ladder_ratios())`` for ``damage="error"``)."""
    return tuple(sorted({float(r) for rungs in ladder.values() for r in rungs}))


MEASURED_ON: dict[Feature, str] = {"q": "q", "kv": "v", "h": "h"}
"""The profiled feature whose redundancy decides each schedule feature (kv matches on V)."""

DAMAGES = ("distance", "error")
"""What ranks calibrate's moves: the dropped tokens' distance, or the measured output error."""

_DAMAGE_STAT = {"distance": "drop_mean", "error": "error"}


def _keeps(profile: RedundancyProfile, ratios: Mapping[str, float],
           site: ProfiledSite) -> dict[str, tuple[int, int]]:
    out: dict[str, tuple[int, int]] = {}
    for feature in PLANNING_ORDER:
        ratio = ratios.get(feature, 0.0)
        if ratio <= 0 or conflicts(feature, out):
            continue
        keep = ops.num_kept_tokens(site.video_tokens, site.num_dst, ratio)
        if keep < site.video_tokens:
            out[feature] = (site.num_dst, keep)
    return out


def _site_saving(profile: RedundancyProfile, site: ProfiledSite, ratios: Mapping[str, float],
                 cache_steps: float) -> float:
    model = profile.cost_models[site.graph][0].sites.get(site.index)
    if model is None:
        return 0.0
    kept = _keeps(profile, ratios, site)
    if not kept:
        return 0.0
    keep = {f: k for f, (_, k) in kept.items()}
    return model.full_flops - model.flops(keep.get("q"), keep.get("kv"), keep.get("h"),
                                          {f: d for f, (d, _) in kept.items()}, cache_steps,
                                          profile.config.match_dims, site.hidden_matched)


def predicted_speedup(profile: RedundancyProfile, schedule: Schedule, cache_steps: float | None = None) -> float:
    """Full over reduced FLOPs of a run of ``schedule.num_steps`` steps under ``schedule``
    (cost model; matching amortised over ``cache_steps``, default the profile config's).

    The matching is counted as a backend with the profile's config runs it: on a
    ``config.match_dims``-dim projection when set, and on the hidden states at the sites where
    ``config.match_on`` asks for it (``ProfiledSite.hidden_matched``); so this is the ideal
    speedup the backend reports for the same schedule and config."""
    cache_steps = profile.config.cache_steps if cache_steps is None else cache_steps
    if schedule.num_blocks != profile.num_rows:
        raise ValueError(f"schedule has {schedule.num_blocks} blocks x {schedule.num_steps} steps, "
                         f"profile has {profile.num_rows} blocks x {profile.num_steps} steps")
    full = reduced = 0.0
    for graph_index, (model, _) in enumerate(profile.cost_models):
        sites = [s for s in profile.sites if s.graph == graph_index]
        steps = []
        for step in range(schedule.num_steps):
            steps.append({s.index: _keeps(profile, {f: schedule.ratio(block=s.row, step=step, feature=f)
                                                    for f in FEATURES}, s) for s in sites})
        hidden_matched = {s.index for s in sites if s.hidden_matched}
        f, r = model.schedule_flops(steps, cache_steps, profile.config.match_dims, hidden_matched)
        full, reduced = full + f, reduced + r
    return ideal_speedup(full, reduced)


def calibrate(profile: RedundancyProfile, target_speedup: float = 1.5, *,
              ladder: Mapping[str, Sequence[float]] | None = None,
              cache_steps: int | None = None, model: str | None = None, best_effort: bool = False,
              damage: str = "distance") -> Schedule:
    """The least damaging schedule the cost model predicts to reach ``target_speedup``.

    Args:
        profile: from :func:`asymrnr_compile.profile` (its steps become the schedule's).
        target_speedup: predicted full / reduced FLOPs to reach, a float >= 1. Default 1.5.
        ladder: ``{"q" | "kv" | "h": ratios}`` a move may set; every ratio must be one the
            profile recorded (``profile.ratios``). Default :data:`DEFAULT_LADDER` (q and kv).
        cache_steps: matching cache window for the cost model; default the profile config's.
        model: label stored in the schedule.
        best_effort: when the target is out of reach, return the schedule with every move taken
            (the largest predicted speedup) instead of raising. Default False.
        damage: ``"distance"`` (default: ``drop_mean@r``, the published redundancy proxy) or
            ``"error"`` (``error@r``, the measured output error; needs a profile recorded with
            ``error_ratios`` covering the ladder, and no ``h`` in the ladder).

    Returns:
        A :class:`Schedule` of ``profile.num_rows`` blocks x ``profile.num_steps`` steps whose
        :func:`predicted_speedup` is at least ``target_speedup``.

    Raises:
        ValueError: a bad argument, or a target the ladder cannot reach (the message gives the
            largest predicted speedup).
    """
    if not isinstance(profile, RedundancyProfile):
        raise TypeError(f"profile must be a RedundancyProfile (from asymrnr_compile.profile), "
                        f"got {type(profile).__name__}")
    if isinstance(target_speedup, bool) or not isinstance(target_speedup, (int, float)) \
            or not math.isfinite(target_speedup) or target_speedup < 1:
        raise ValueError(f"target_speedup must be a float >= 1, got {target_speedup!r}")
    check_choice("damage", damage, DAMAGES)
    ladder = dict(DEFAULT_LADDER if ladder is None else ladder)
    recorded = profile.error_ratios if damage == "error" else profile.ratios
    recorded_name = "profile.error_ratios" if damage == "error" else "profile.ratios"
    for feature, rungs in ladder.items():
        if feature not in FEATURES:
            raise ValueError(f"ladder feature must be one of {FEATURES}, got {feature!r}")
        if damage == "error" and feature == "h":
            raise ValueError("damage='error' measures q and kv reductions only; drop 'h' from the ladder "
                             "or use damage='distance'")
        for ratio in rungs:
            if not any(math.isclose(ratio, r) for r in recorded):
                hint = (" (profile with error_ratios=... to record output errors)" if damage == "error" else "")
                raise ValueError(f"ladder[{feature!r}] ratio {ratio} was not recorded by the profile "
                                 f"({recorded_name} = {recorded}){hint}")
    cache_steps = profile.config.cache_steps if cache_steps is None else cache_steps
    rows, steps = profile.num_rows, profile.num_steps
    if rows == 0 or steps == 0:
        raise ValueError("profile has no profiled site or no step: nothing to calibrate")
    ratios = {f: torch.zeros(rows, steps, dtype=torch.float64) for f in FEATURES}
    row_sites = {row: [s for s in profile.sites if s.row == row] for row in range(rows)}

    moves: list[tuple[float, float, int, int, str]] = []
    for feature, rungs in ladder.items():
        f_index = profile.features.index(MEASURED_ON[feature])
        for ratio in rungs:
            as_recorded = next(r for r in recorded if math.isclose(ratio, r))  # checked above
            name = redundancy.ratio_stat_name(_DAMAGE_STAT[damage], as_recorded)
            move_cost = profile.row_stat(name)[..., f_index]
            for row in range(rows):
                for step in range(steps):
                    value = float(move_cost[row, step])
                    if not math.isnan(value):
                        moves.append((value, ratio, row, step, feature))
    moves.sort()

    full = sum(model.full_flops for model, _ in profile.cost_models) * steps
    saved = 0.0
    cell_saving: dict[tuple[int, int], float] = {}
    for _, ratio, row, step, feature in moves:
        if ideal_speedup(full, full - saved) >= target_speedup:
            break
        cell = {f: float(ratios[f][row, step]) for f in FEATURES}
        if ratio <= cell[feature]:
            continue
        if conflicts(feature, [f for f in FEATURES if cell[f] > 0]):
            continue
        cell[feature] = ratio
        new = sum(_site_saving(profile, site, cell, cache_steps) for site in row_sites[row])
        if new <= cell_saving.get((row, step), 0.0):
            continue  # the cost model sees no gain (e.g. a site with data-dependent lengths): leave it
        ratios[feature][row, step] = ratio
        saved += new - cell_saving.get((row, step), 0.0)
        cell_saving[(row, step)] = new
    best = ideal_speedup(full, full - saved) if full > saved else math.inf
    if best < target_speedup and not best_effort:
        raise ValueError(f"target_speedup {target_speedup} is not reachable: with the ladder {ladder} the cost "
                         f"model predicts at most {best:.3f}x")
    grid = profile.sites[0].grid if profile.sites else None
    return Schedule({f: ratios[f] for f in FEATURES}, grid=grid, model=model,
                    source=f"calibrate(target_speedup={target_speedup}, cache_steps={cache_steps}, damage={damage!r})")
