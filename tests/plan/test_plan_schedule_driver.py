"""ScheduleDriver (plan/schedule_driver.py): a Schedule -> kept tokens per site, step and feature.

Sites come from the analysis of real Dynamo graphs: the tiny reference DiT (2 blocks, one joint
site each, 32 video tokens on a 2x4x4 grid: 4 destination tokens; q and kv reducible) and the toy
DiT of tests/toy_dit.py (2 blocks, 128 video tokens on 2x8x8: 16 destination tokens; q, kv and h
reducible).
"""

from __future__ import annotations

import dataclasses
import types

import pytest
import torch
from helpers import capture_graph
from toy_dit import ToyDiT, toy_inputs

from asymrnr_compile import AsymRnRConfig, ops
from asymrnr_compile.analysis import find_attention_sites
from asymrnr_compile.plan.schedule import Schedule
from asymrnr_compile.plan.schedule_driver import ScheduleDriver, ScheduleMismatchError
from asymrnr_compile.plan.select_sites import SiteReduction, plan_site_reduction
from asymrnr_lab.models import build_reference_model, reference_inputs

N, N_DST = 32, 4  # reference "tiny"
TOY_N, TOY_DST = 128, 16  # toy DiT

Q = [[0.0, 0.5, 0.9, 0.25], [0.5, 0.0, 0.75, 0.1]]  # 0.9: above 1 - 4/32, capped at the dst tokens
KV = [[0.3, 0.0, 0.0, 0.3], [0.0, 0.0, 0.6, 0.3]]


@pytest.fixture(scope="module")
def sites():
    gm, _ = capture_graph(build_reference_model("tiny", seed=0), reference_inputs("tiny"))
    found = find_attention_sites(gm)
    assert [(s.index, s.block, s.reducible, s.video_tokens, s.features) for s in found] == [
        (0, "blocks.0", True, N, ("q", "kv")), (1, "blocks.1", True, N, ("q", "kv"))]
    return found


@pytest.fixture(scope="module")
def toy_sites():
    gm, _ = capture_graph(ToyDiT(), toy_inputs())
    found = find_attention_sites(gm)
    assert [(s.index, s.video_tokens, s.features) for s in found] == [
        (0, TOY_N, ("q", "kv", "h")), (1, TOY_N, ("q", "kv", "h"))]
    return found


def _schedule(q=Q, kv=KV, **more) -> Schedule:
    return Schedule({"q": torch.tensor(q), "kv": torch.tensor(kv),
                     **{f: torch.tensor(v) for f, v in more.items()}})


def _reductions(sites, driver: ScheduleDriver, schedule: Schedule, **options) -> list[SiteReduction]:
    config = AsymRnRConfig(schedule=schedule, min_video_tokens=16, **options)
    planned = [plan_site_reduction(site, config, driver) for site in sites]
    assert all(isinstance(p, SiteReduction) for p in planned), planned
    return planned


def _keep(ratio: float, n: int = N, dst: int = N_DST) -> int:
    return ops.num_kept_tokens(n, dst, ratio)


# ---------------------------------------------------------------------- rows and fit


def test_one_row_per_block_holding_a_reducible_site(sites):
    driver = ScheduleDriver(_schedule(), sites)
    assert driver.rows == {0: 0, 1: 1}
    assert driver.num_rows == 2
    assert driver.schedule is driver.source  # no num_steps: not resampled


def test_sites_of_one_block_share_a_row_and_unreducible_sites_get_none(sites):
    s0, s1 = sites
    more = [s0, dataclasses.replace(s0, index=1, name="blocks.0.attn#1"),  # a second call of block 0
            dataclasses.replace(s1, index=2, reducible=False, reason="test"),
            dataclasses.replace(s1, index=3)]
    driver = ScheduleDriver(_schedule(), more)
    assert driver.rows == {0: 0, 1: 0, 3: 1}
    assert driver.ratio(1, "q", 1) == driver.ratio(0, "q", 1) == 0.5
    assert driver.ratio(3, "q", 1) == 0.0 and driver.ratio(3, "q", 0) == 0.5
    assert driver.ratio(2, "q", 0) == 0.0  # no row: never reduced
    assert driver.max_ratio(2, "q") == 0.0


def test_a_schedule_with_another_row_count_raises_naming_both_shapes(sites):
    with pytest.raises(ScheduleMismatchError, match=r"schedule has 3 blocks x 4 steps, model has 2 blocks x "
                       r"an unknown number of steps"):
        ScheduleDriver(Schedule.constant(3, 4, q=0.5), sites)
    with pytest.raises(ScheduleMismatchError, match=r"schedule has 1 blocks x 4 steps, model has 2 blocks x 6 steps"):
        ScheduleDriver(Schedule.constant(1, 4, q=0.5), sites, num_steps=6)
    assert issubclass(ScheduleMismatchError, ValueError)


def test_a_graph_without_reducible_sites_fits_no_schedule(sites):
    none = [dataclasses.replace(s, reducible=False) for s in sites]
    with pytest.raises(ScheduleMismatchError, match=r"schedule has 2 blocks x 4 steps, model has 0 blocks"):
        ScheduleDriver(_schedule(), none)


# ---------------------------------------------------------------------- kept tokens


def test_keeps_follow_the_scheduled_ratio_of_each_row_step_and_feature(sites):
    schedule = _schedule()
    driver = ScheduleDriver(schedule, sites)
    reductions = _reductions(sites, driver, schedule)
    for reduction in reductions:
        assert reduction.num_dst == {"q": N_DST, "kv": N_DST}
    for step in range(4):
        for row, reduction in enumerate(reductions):
            expected = {}
            for feature in ("q", "kv"):
                ratio = schedule.ratio(block=row, step=step, feature=feature)
                if ratio > 0:
                    expected[feature] = ops.num_kept_tokens(N, N_DST, ratio)
            assert driver.keeps(reduction, step) == expected, (row, step)
    # the same, as numbers
    assert driver.keeps(reductions[0], 0) == {"kv": 22}  # int(32 * 0.7)
    assert driver.keeps(reductions[0], 1) == {"q": 16}
    assert driver.keeps(reductions[0], 2) == {"q": N_DST}  # 0.9 capped: the dst tokens only
    assert driver.keeps(reductions[1], 1) == {}  # nothing on in block 1 at step 1
    assert driver.keeps(reductions[1], 2) == {"q": 8, "kv": 12}
    assert driver.keeps(reductions[1], 3) == {"q": 28, "kv": 22}


def test_features_the_reduction_does_not_list_are_left_whole(sites):
    schedule = _schedule()
    driver = ScheduleDriver(schedule, sites)
    reduction = _reductions(sites, driver, schedule)[1]
    only_q = dataclasses.replace(reduction, num_dst={"q": N_DST})
    assert driver.keeps(only_q, 2) == {"q": 8}


def test_h_at_a_step_switches_q_and_kv_off(toy_sites):
    # block 0: h at steps 0 and 2, q/kv at step 1; block 1: q/kv only
    schedule = _schedule(q=[[0.0, 0.5, 0.0], [0.5, 0.5, 0.0]], kv=[[0.0, 0.25, 0.0], [0.25, 0.0, 0.0]],
                         h=[[0.3, 0.0, 0.5], [0.0, 0.0, 0.0]])
    driver = ScheduleDriver(schedule, toy_sites)
    first, second = _reductions(toy_sites, driver, schedule)
    assert first.num_dst == {"h": TOY_DST, "q": TOY_DST, "kv": TOY_DST}
    assert second.num_dst == {"q": TOY_DST, "kv": TOY_DST}
    assert driver.keeps(first, 0) == {"h": _keep(0.3, TOY_N, TOY_DST)} == {"h": 89}
    assert driver.keeps(first, 1) == {"q": 64, "kv": 96}
    assert driver.keeps(first, 2) == {"h": 64}
    assert driver.keeps(second, 0) == {"q": 64, "kv": 96}


def test_the_conflict_rule_is_the_drivers_own(toy_sites):
    """A schedule whose ratios break the rule (Schedule's constructor refuses those, so the ratios are
    swapped in behind it): the driver still applies h alone where h > 0."""
    schedule = _schedule(q=[[0.0, 0.5], [0.0, 0.0]], kv=[[0.0, 0.25], [0.0, 0.0]], h=[[0.3, 0.0], [0.0, 0.0]])
    driver = ScheduleDriver(schedule, toy_sites)
    reduction = _reductions(toy_sites[:1], driver, schedule)[0]
    assert set(reduction.num_dst) == {"h", "q", "kv"}
    broken = {"q": ((0.5, 0.5), (0.0, 0.0)), "kv": ((0.25, 0.25), (0.0, 0.0)), "h": ((0.3, 0.0), (0.0, 0.0))}
    object.__setattr__(schedule, "_lists", types.MappingProxyType(broken))
    assert schedule.ratio(block=0, step=0, feature="q") == 0.5  # the rule is broken at (0, 0)
    assert driver.keeps(reduction, 0) == {"h": 89}
    assert driver.applied[0][0] == {"h": round(1 - 89 / TOY_N, 6)}
    assert driver.keeps(reduction, 1) == {"q": 64, "kv": 96}


# ---------------------------------------------------------------------- steps past the end, resampling


def test_a_step_past_the_schedule_raises_without_num_steps(sites):
    schedule = _schedule()
    driver = ScheduleDriver(schedule, sites)
    reduction = _reductions(sites, driver, schedule)[0]
    assert driver.keeps(reduction, 3) == {"q": 24, "kv": 22}
    with pytest.raises(ScheduleMismatchError, match=r"schedule has 2 blocks x 4 steps, model has 2 blocks and "
                       r"reached step 5; set num_steps"):
        driver.keeps(reduction, 4)
    with pytest.raises(ScheduleMismatchError):
        driver.ratio(0, "kv", 10)


def test_num_steps_resamples_the_schedule_by_progress(sites):
    q = torch.tensor([[0.1 * s for s in range(8)], [0.05 * s for s in range(8)]])
    schedule = Schedule({"q": q})
    driver = ScheduleDriver(schedule, sites, num_steps=4)
    assert schedule.source_steps(4) == (0, 2, 5, 7)
    assert driver.source is schedule and driver.schedule.num_steps == 4
    for step, column in enumerate((0, 2, 5, 7)):
        for row in range(2):
            assert driver.ratio(row, "q", step) == schedule.ratio(block=row, step=column, feature="q")
    assert driver.ratio(0, "q", 1) == pytest.approx(0.2) and driver.ratio(1, "q", 3) == pytest.approx(0.35)
    reductions = _reductions(sites, driver, schedule)
    assert driver.keeps(reductions[0], 2) == {"q": _keep(0.1 * 5)} == {"q": 16}
    assert driver.keeps(reductions[0], 0) == {}  # step 0 reads column 0: ratio 0
    with pytest.raises(ScheduleMismatchError, match=r"reached step 5"):
        driver.keeps(reductions[0], 4)  # past the run's 4 steps


def test_num_steps_longer_than_the_schedule_repeats_columns(sites):
    schedule = _schedule(q=[[0.25, 0.5, 0.75], [0.0, 0.0, 0.0]], kv=[[0.0] * 3] * 2)
    driver = ScheduleDriver(schedule, sites, num_steps=5)
    assert schedule.source_steps(5) == (0, 1, 1, 2, 2)
    assert [driver.ratio(0, "q", step) for step in range(5)] == [0.25, 0.5, 0.5, 0.75, 0.75]
    reduction = _reductions(sites[:1], driver, schedule)[0]  # block 1 reduces nothing
    assert [driver.keeps(reduction, step) for step in range(5)] == [
        {"q": 24}, {"q": 16}, {"q": 16}, {"q": 8}, {"q": 8}]


def test_num_steps_equal_to_the_schedule_keeps_it(sites):
    schedule = _schedule()
    driver = ScheduleDriver(schedule, sites, num_steps=4)
    assert driver.schedule is schedule


# ---------------------------------------------------------------------- records and summaries


def test_applied_ratios_are_recorded_per_step_only_when_asked(sites):
    schedule = _schedule()
    driver = ScheduleDriver(schedule, sites)
    first, second = _reductions(sites, driver, schedule)
    assert driver.applied == {}
    driver.keeps(first, 0)
    driver.keeps(second, 0)
    driver.keeps(first, 1, record=False)
    driver.keeps(second, 2)
    assert driver.applied == {
        0: {0: {"kv": round(1 - 22 / N, 6)}, 1: {"q": 0.5}},
        2: {1: {"q": 0.75, "kv": 0.625}},
    }
    driver.keeps(second, 1)  # nothing on: recorded as such
    assert driver.applied[1] == {1: {}}
    summary = driver.to_dict()
    assert summary["rows"] == {"0": 0, "1": 1} and summary["run_steps"] == 4
    assert summary["applied_per_step"]["2"] == {"1": {"q": 0.75, "kv": 0.625}}
    assert list(summary["applied_per_step"]) == ["0", "1", "2"]


def test_max_ratio_is_the_largest_over_the_steps_of_the_row(sites):
    driver = ScheduleDriver(_schedule(), sites)
    assert driver.max_ratio(0, "q") == pytest.approx(0.9)
    assert driver.max_ratio(1, "q") == pytest.approx(0.75)
    assert driver.max_ratio(0, "kv") == pytest.approx(0.3)
    assert driver.max_ratio(1, "kv") == pytest.approx(0.6)
    assert driver.max_ratio(0, "h") == 0.0
    assert driver.max_ratio(99, "q") == 0.0  # no such site


def test_max_ratio_reads_the_resampled_schedule(sites):
    # column 1 holds the largest q of row 0; a 2-step run reads columns 0 and 2 only
    schedule = _schedule(q=[[0.1, 0.8, 0.2], [0.0, 0.0, 0.0]], kv=[[0.0] * 3] * 2)
    assert ScheduleDriver(schedule, sites).max_ratio(0, "q") == pytest.approx(0.8)
    assert ScheduleDriver(schedule, sites, num_steps=2).max_ratio(0, "q") == pytest.approx(0.2)


def test_kept_per_step_matches_keeps_at_every_step(sites):
    schedule = _schedule()
    driver = ScheduleDriver(schedule, sites)
    reductions = _reductions(sites, driver, schedule)
    per_step = driver.kept_per_step(reductions)
    assert driver.applied == {}  # not recorded
    assert len(per_step) == 4
    for step, kept in enumerate(per_step):
        assert kept == {r.site.index: {f: (r.num_dst[f], k) for f, k in driver.keeps(r, step, record=False).items()}
                        for r in reductions}
    assert per_step[2] == {0: {"q": (N_DST, N_DST)}, 1: {"q": (N_DST, 8), "kv": (N_DST, 12)}}
    assert per_step[1][1] == {}
    # with num_steps, one entry per step of the run
    resampled = ScheduleDriver(schedule, sites, num_steps=7)
    assert len(resampled.kept_per_step(reductions)) == 7
