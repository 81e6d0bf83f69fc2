"""calibrate() on hand-made profiles: controlled redundancy data, real cost models.

The profile is built by hand (``RedundancyProfile`` with a chosen ``data`` tensor of sites x
steps x features x stats, NaN where not measured) over the cost model of a captured tiny
reference-DiT graph, as the profiler builds it. Both sites of that graph cost the same, so every
(row, step) cell saves the same FLOPs for a given move, and the cells calibrate must reduce for a
target are known: the k least damaging ones, for a target between the predicted speedups of k - 1
and k moves. The calibrate tests on a really profiled model are in ``test_profiler.py``.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
from helpers import capture_graph

from asymrnr_compile.analysis import find_attention_sites
from asymrnr_compile.analysis.cost import GraphCostModel
from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.ops import redundancy
from asymrnr_compile.plan.schedule import Schedule
from asymrnr_compile.profiling.calibrate import (
    DAMAGES,
    DEFAULT_LADDER,
    MEASURED_ON,
    calibrate,
    ladder_ratios,
    predicted_speedup,
)
from asymrnr_compile.profiling.profiler import PROFILE_FEATURES, ProfiledSite, RedundancyProfile
from asymrnr_compile.vocabulary import FEATURES
from asymrnr_lab.models import build_reference_model, reference_inputs

ROWS, STEPS = 2, 2
CELLS = [(row, step) for row in range(ROWS) for step in range(STEPS)]
QUANTILES = (0.5,)
RATIOS = redundancy.DEFAULT_PROFILE_RATIOS  # 0.2 .. 0.8: covers the default ladder
ERROR_RATIOS = ladder_ratios()  # 0.2, 0.3, 0.4, 0.5, 0.7
NAMES = redundancy.stat_names(QUANTILES, RATIOS, ERROR_RATIOS)
CONFIG = AsymRnRConfig()


@pytest.fixture(scope="module")
def cost_model():
    gm, _ = capture_graph(build_reference_model("tiny"), reference_inputs("tiny"))
    sites = find_attention_sites(gm)
    assert [(s.index, s.video_tokens) for s in sites] == [(0, 32), (1, 32)]
    model = GraphCostModel(gm, sites)
    assert sorted(model.sites) == [0, 1]
    return model


def _sites(graphs: int = 1) -> list[ProfiledSite]:
    """One site per row (blocks.0.attn, blocks.1.attn), as the profiler records the tiny DiT.
    With ``graphs=2`` each block is in its own graph (a graph break between the blocks)."""
    return [ProfiledSite(f"blocks.{row}.attn", row if graphs == 1 else 0, row if graphs == 2 else 0, row,
                         f"blocks.{row}", "joint", 32, 8, (2, 4, 4), 4, PROFILE_FEATURES)
            for row in range(ROWS)]


def _profile(cost_model, data: torch.Tensor | None = None, *, sites=None, graphs: int = 1,
             steps: int = STEPS) -> RedundancyProfile:
    sites = _sites(graphs) if sites is None else sites
    if data is None:
        data = _data(steps=steps, sites=len(sites))
    num_dst = {s.index: s.num_dst for s in sites}
    return RedundancyProfile(sites, data, NAMES, QUANTILES, RATIOS, CONFIG,
                             [(cost_model, num_dst)] * graphs, [], ROWS, error_ratios=ERROR_RATIOS)


def _data(steps: int = STEPS, sites: int = ROWS) -> torch.Tensor:
    """Every statistic measured, damage rising with the ratio (0.5 + r), the same in every cell;
    ``error@r`` is NaN for h and k (no reduction of their own), as the profiler records it."""
    data = torch.full((sites, steps, len(PROFILE_FEATURES), len(NAMES)), math.nan, dtype=torch.float64)
    for s_index, name in enumerate(NAMES):
        if "@" in name:
            ratio = float(name.split("@")[1])
            value = 0.5 + ratio if name.startswith(("drop_mean", "error")) else ratio
            data[..., s_index] = value
        else:
            data[..., s_index] = 0.6
    for feature in ("h", "k"):
        for ratio in ERROR_RATIOS:
            data[:, :, PROFILE_FEATURES.index(feature), NAMES.index(f"error@{ratio:g}")] = math.nan
    return data


def _set(data: torch.Tensor, stat: str, feature: str, table) -> None:
    """``data[row, step, feature, stat] = table[row][step]`` (one site per row)."""
    data[:, :, PROFILE_FEATURES.index(feature), NAMES.index(stat)] = torch.tensor(table, dtype=torch.float64)


def _schedule(cells, feature: str = "q", ratio: float = 0.5, steps: int = STEPS) -> Schedule:
    table = torch.zeros(ROWS, steps, dtype=torch.float64)
    for row, step in cells:
        table[row, step] = ratio
    return Schedule({feature: table})


def _reduced(schedule: Schedule, feature: str) -> list[tuple[int, int]]:
    return sorted((int(r), int(s)) for r, s in (schedule.ratios(feature) > 0).nonzero().tolist())


def _between(profile, cells_before, cells_after, **kw) -> float:
    """A target between the predicted speedups of two schedules (k - 1 and k moves)."""
    low = predicted_speedup(profile, _schedule(cells_before, **kw)) if cells_before else 1.0
    high = predicted_speedup(profile, _schedule(cells_after, **kw))
    assert high > low
    return (low + high) / 2


# Two rankings of the four (row, step) cells of the q@0.5 move that disagree everywhere.
DISTANCE_TABLE = [[0.1, 0.4], [0.3, 0.2]]  # order (0,0), (1,1), (1,0), (0,1)
ERROR_TABLE = [[0.9, 0.05], [0.5, 0.7]]  # order (0,1), (1,0), (1,1), (0,0)
ORDER = {"distance": [(0, 0), (1, 1), (1, 0), (0, 1)], "error": [(0, 1), (1, 0), (1, 1), (0, 0)]}


def test_constants():
    assert DAMAGES == ("distance", "error")
    assert dict(DEFAULT_LADDER) == {"q": (0.3, 0.5, 0.7), "kv": (0.2, 0.3, 0.4, 0.5)}
    assert MEASURED_ON == {"q": "q", "kv": "v", "h": "h"}


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("moves", [1, 2, 3])
def test_the_least_damaging_cells_are_reduced_first(cost_model, damage, moves):
    data = _data()
    _set(data, "drop_mean@0.5", "q", DISTANCE_TABLE)
    _set(data, "error@0.5", "q", ERROR_TABLE)
    profile = _profile(cost_model, data)
    order = ORDER[damage]
    target = _between(profile, order[:moves - 1], order[:moves])
    schedule = calibrate(profile, target, ladder={"q": (0.5,)}, damage=damage)
    assert _reduced(schedule, "q") == sorted(order[:moves])
    assert set(schedule.ratios("q").unique().tolist()) == {0.0, 0.5}
    assert _reduced(schedule, "kv") == [] and _reduced(schedule, "h") == []
    assert (schedule.num_blocks, schedule.num_steps) == (ROWS, STEPS)
    assert schedule.grid == (2, 4, 4)
    assert f"damage={damage!r}" in schedule.source and f"target_speedup={target}" in schedule.source
    # It reaches the target, and no move fewer would have.
    assert predicted_speedup(profile, schedule) >= target
    assert predicted_speedup(profile, _schedule(order[:moves - 1])) < target


@pytest.mark.parametrize("feature", ["q", "kv", "h"])
def test_each_feature_is_ranked_by_the_feature_it_is_measured_on(cost_model, feature):
    """kv moves read v (not k), q moves read q, h moves read h; the other features rank the
    cells the opposite way and must be ignored."""
    data = _data()
    measured = MEASURED_ON[feature]
    for profiled in PROFILE_FEATURES:
        _set(data, "drop_mean@0.5", profiled, DISTANCE_TABLE if profiled == measured else ERROR_TABLE)
    profile = _profile(cost_model, data)
    order = ORDER["distance"]
    target = _between(profile, order[:1], order[:2], feature=feature)
    schedule = calibrate(profile, target, ladder={feature: (0.5,)})
    assert _reduced(schedule, feature) == sorted(order[:2])
    assert all(_reduced(schedule, other) == [] for other in FEATURES if other != feature)
    assert predicted_speedup(profile, schedule) >= target


def test_a_cell_is_raised_rung_by_rung(cost_model):
    """Cell (0, 0) is the most redundant at both rungs: it takes 0.3, then 0.5, before any other
    cell takes its first rung."""
    data = _data()
    _set(data, "drop_mean@0.3", "q", [[0.01, 0.5], [0.5, 0.5]])
    _set(data, "drop_mean@0.5", "q", [[0.02, 0.9], [0.9, 0.9]])
    profile = _profile(cost_model, data)
    one_at_03 = predicted_speedup(profile, _schedule([(0, 0)], ratio=0.3))
    one_at_05 = predicted_speedup(profile, _schedule([(0, 0)], ratio=0.5))
    assert 1.0 < one_at_03 < one_at_05
    ladder = {"q": (0.3, 0.5)}
    first = calibrate(profile, (1.0 + one_at_03) / 2, ladder=ladder)
    assert first.ratios("q").tolist() == [[0.3, 0.0], [0.0, 0.0]]
    second = calibrate(profile, (one_at_03 + one_at_05) / 2, ladder=ladder)
    assert second.ratios("q").tolist() == [[0.5, 0.0], [0.0, 0.0]]


def test_a_ratio_is_only_ever_raised(cost_model):
    """With every move taken (best effort), a cell whose 0.5 move ranks before its 0.3 move keeps
    0.5: the later, smaller rung does not lower it."""
    data = _data()
    _set(data, "drop_mean@0.3", "q", [[0.3, 0.1], [0.1, 0.1]])
    _set(data, "drop_mean@0.5", "q", [[0.01, 0.2], [0.2, 0.2]])
    profile = _profile(cost_model, data)
    schedule = calibrate(profile, 100.0, ladder={"q": (0.3, 0.5)}, best_effort=True)
    assert schedule.ratios("q").tolist() == [[0.5, 0.5], [0.5, 0.5]]


def test_unmeasured_cells_and_sites_without_a_cost_model_are_left_alone(cost_model):
    data = _data()
    data[1, 1, PROFILE_FEATURES.index("q")] = math.nan  # q not measured at row 1, step 1
    profile = _profile(cost_model, data)
    schedule = calibrate(profile, 100.0, ladder={"q": (0.5,)}, best_effort=True)
    assert schedule.ratios("q").tolist() == [[0.5, 0.5], [0.5, 0.0]]
    # Row 1's site is not in the cost model (say, data-dependent lengths): no gain, no move.
    sites = _sites()
    sites[1].index = 7
    profile = _profile(cost_model, _data(), sites=sites)
    schedule = calibrate(profile, 100.0, ladder={"q": (0.5,)}, best_effort=True)
    assert schedule.ratios("q").tolist() == [[0.5, 0.5], [0.0, 0.0]]


def test_h_and_q_never_share_a_cell(cost_model):
    """The conflict rule: in each cell the less damaging of h and q is taken, the other is not."""
    data = _data()
    _set(data, "drop_mean@0.5", "h", [[0.1, 0.6], [0.6, 0.1]])
    _set(data, "drop_mean@0.5", "q", [[0.5, 0.2], [0.2, 0.5]])
    profile = _profile(cost_model, data)
    schedule = calibrate(profile, 100.0, ladder={"h": (0.5,), "q": (0.5,)}, best_effort=True)
    assert _reduced(schedule, "h") == [(0, 0), (1, 1)]
    assert _reduced(schedule, "q") == [(0, 1), (1, 0)]
    assert _reduced(schedule, "kv") == []


@pytest.mark.parametrize(("graphs", "cache_steps"), [(1, None), (1, 1), (2, None)])
def test_the_target_is_reached_and_predicted_speedup_agrees(cost_model, graphs, cache_steps):
    """What calibrate counts while it takes moves is what predicted_speedup computes: the schedule
    reaches the target with one move fewer falling short, and the largest speedup it reports for
    an unreachable target is that of its best-effort schedule."""
    data = _data()
    _set(data, "drop_mean@0.5", "q", DISTANCE_TABLE)
    _set(data, "drop_mean@0.5", "v", [[0.35, 0.15], [0.25, 0.45]])
    profile = _profile(cost_model, data, graphs=graphs)
    ladder = {"q": (0.5,), "kv": (0.5,)}
    # Damage order: q(0,0) 0.1, v(0,1) 0.15, q(1,1) 0.2, v(1,0) 0.25, q(1,0) 0.3, ...
    taken = [("q", (0, 0)), ("kv", (0, 1)), ("q", (1, 1)), ("kv", (1, 0))]

    def speedup(moves):
        tables = {f: torch.zeros(ROWS, STEPS, dtype=torch.float64) for f in ("q", "kv")}
        for feature, cell in moves:
            tables[feature][cell] = 0.5
        return predicted_speedup(profile, Schedule(tables), cache_steps)

    for k in range(1, len(taken) + 1):
        target = (speedup(taken[:k - 1]) + speedup(taken[:k])) / 2
        schedule = calibrate(profile, target, ladder=ladder, cache_steps=cache_steps)
        assert sorted(("q", c) for c in _reduced(schedule, "q")) + \
            sorted(("kv", c) for c in _reduced(schedule, "kv")) == \
            sorted(m for m in taken[:k] if m[0] == "q") + sorted(m for m in taken[:k] if m[0] == "kv")
        assert predicted_speedup(profile, schedule, cache_steps) >= target > speedup(taken[:k - 1])
        assert f"cache_steps={cache_steps if cache_steps is not None else CONFIG.cache_steps}" in schedule.source

    best = calibrate(profile, 50.0, ladder=ladder, cache_steps=cache_steps, best_effort=True)
    assert best.ratios("q").tolist() == best.ratios("kv").tolist() == [[0.5, 0.5], [0.5, 0.5]]
    largest = predicted_speedup(profile, best, cache_steps)
    assert 1.0 < largest < 50.0
    with pytest.raises(ValueError, match="target_speedup 50.0 is not reachable") as info:
        calibrate(profile, 50.0, ladder=ladder, cache_steps=cache_steps)
    reported = float(re.search(r"predicts at most ([0-9.]+)x", str(info.value)).group(1))
    assert reported == pytest.approx(largest, abs=5e-4)


def test_the_matching_cost_is_counted_over_cache_steps(cost_model):
    """A shorter cache window pays the matching more often: the same schedule predicts less."""
    profile = _profile(cost_model)
    schedule = _schedule(CELLS)
    every_step = predicted_speedup(profile, schedule, cache_steps=1)
    default = predicted_speedup(profile, schedule)
    assert CONFIG.cache_steps > 1 and 1.0 < every_step < default
    assert default == predicted_speedup(profile, schedule, cache_steps=CONFIG.cache_steps)
    no_matching = predicted_speedup(profile, schedule, cache_steps=math.inf)
    assert no_matching > default
    assert predicted_speedup(profile, _schedule([])) == 1.0


def test_an_unreachable_target_raises_naming_it_unless_best_effort(cost_model):
    profile = _profile(cost_model)
    with pytest.raises(ValueError, match=r"target_speedup 3\.5 is not reachable: with the ladder "
                                         r"\{'q': \(0\.3, 0\.5, 0\.7\), 'kv': \(0\.2, 0\.3, 0\.4, 0\.5\)\}"):
        calibrate(profile, 3.5)
    schedule = calibrate(profile, 3.5, best_effort=True)
    # Every move taken: each cell at the top rung of both default ladders.
    assert schedule.ratios("q").tolist() == [[0.7, 0.7], [0.7, 0.7]]
    assert schedule.ratios("kv").tolist() == [[0.5, 0.5], [0.5, 0.5]]
    assert 1.0 < predicted_speedup(profile, schedule) < 3.5


def test_a_target_of_one_needs_no_move(cost_model):
    schedule = calibrate(_profile(cost_model), 1)
    assert all(float(schedule.ratios(f).abs().sum()) == 0.0 for f in FEATURES)
    assert predicted_speedup(_profile(cost_model), schedule) == 1.0


def test_ladder_ratios():
    assert ladder_ratios() == (0.2, 0.3, 0.4, 0.5, 0.7)
    assert ladder_ratios({"q": [0.5, 0.3], "kv": (0.3,), "h": (1 / 4,)}) == (0.25, 0.3, 0.5)
    assert all(type(r) is float for r in ladder_ratios({"q": (0,)}))
    assert ladder_ratios({}) == ()


@pytest.mark.parametrize("target", [0.999, 0.0, -2.0, math.nan, math.inf, True, "2", None])
def test_a_target_below_one_or_not_a_number_raises(cost_model, target):
    with pytest.raises(ValueError, match=re.escape(f"target_speedup must be a float >= 1, got {target!r}")):
        calibrate(_profile(cost_model), target)


def test_bad_arguments_raise(cost_model):
    profile = _profile(cost_model)
    with pytest.raises(ValueError, match=re.escape("damage must be one of ('distance', 'error'), got 'bogus'")):
        calibrate(profile, 1.01, damage="bogus")
    with pytest.raises(ValueError, match="ladder feature must be one of"):
        calibrate(profile, 1.01, ladder={"v": (0.5,)})
    with pytest.raises(ValueError, match=re.escape("ladder['q'] ratio 0.45 was not recorded by the profile "
                                                   "(profile.ratios = (0.2,")):
        calibrate(profile, 1.01, ladder={"q": (0.45,)})
    with pytest.raises(ValueError, match=re.escape("ladder['kv'] ratio 0.6 was not recorded by the profile "
                                                   "(profile.error_ratios = (0.2, 0.3, 0.4, 0.5, 0.7))")):
        calibrate(profile, 1.01, ladder={"kv": (0.6,)}, damage="error")
    with pytest.raises(TypeError, match="profile must be a RedundancyProfile"):
        calibrate(profile.to_dict(), 1.01)
    with pytest.raises(ValueError, match="no profiled site or no step: nothing to calibrate"):
        calibrate(_profile(cost_model, steps=0), 1.01)
    with pytest.raises(ValueError, match="schedule has 3 blocks x 2 steps, profile has 2 blocks x 2 steps"):
        predicted_speedup(profile, Schedule({"q": torch.zeros(3, STEPS)}))


def test_a_ratio_with_more_than_six_digits_can_be_calibrated(cost_model):
    third = 1 / 3
    names = redundancy.stat_names(QUANTILES, (third,))
    assert names[-1] == "drop_share@0.333333"
    data = torch.full((ROWS, STEPS, len(PROFILE_FEATURES), len(names)), 0.5, dtype=torch.float64)
    data[0, 0, PROFILE_FEATURES.index("q"), names.index("drop_mean@0.333333")] = 0.1
    profile = RedundancyProfile(_sites(), data, names, QUANTILES, (third,), CONFIG, [(cost_model, {0: 4, 1: 4})],
                                [], ROWS)
    target = (1.0 + predicted_speedup(profile, _schedule([(0, 0)], ratio=third))) / 2
    schedule = calibrate(profile, target, ladder={"q": (third,)})
    assert _reduced(schedule, "q") == [(0, 0)]
