"""The backend driven by a Schedule (``schedule=``): per-step ratios, rows, resampling, fit checks.

Every reducing test asserts that the rewrite fired (``assert_reduced``) and, from the report, the
ratios it applied at each step.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from reduction_checks import assert_reduced
from torch._dynamo.utils import counters

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig, ops
from asymrnr_compile.plan.schedule import Schedule, site_rows
from asymrnr_lab.sampling import SamplerConfig, sample

PRESET = "tiny"  # 2 blocks, one joint site each, 32 video tokens on a 2x4x4 grid: 4 destination tokens
N, N_DST = 32, 4
TINY = {"min_video_tokens": 16, "cache_steps": 2}


def _run(model, inputs, backend, steps: int) -> torch.Tensor:
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    with torch.no_grad():
        return sample(compiled, inputs["hidden_states"][:1], inputs["encoder_hidden_states"][:1],
                      inputs["encoder_hidden_states"][1:], SamplerConfig(steps=steps))


def _applied(ratio: float) -> float:
    """The ratio a site of N tokens really applies (kept tokens are whole, dst tokens always kept)."""
    return round(1 - ops.num_kept_tokens(N, N_DST, ratio) / N, 6)


def _expected(schedule: Schedule, columns) -> dict[str, dict[str, dict[str, float]]]:
    out = {}
    for step, column in enumerate(columns):
        out[str(step)] = {}
        for row in range(schedule.num_blocks):
            ratios = {f: schedule.ratio(block=row, step=column, feature=f) for f in ("q", "kv")}
            out[str(step)][str(row)] = {f: _applied(r) for f, r in ratios.items() if r > 0}
    return out


def test_per_step_ratios_are_applied_without_recompiles(model, inputs):
    schedule = Schedule({
        "q": torch.tensor([[0.0, 0.5, 0.0, 0.25], [0.5, 0.0, 0.75, 0.25]]),
        "kv": torch.tensor([[0.3, 0.0, 0.0, 0.3], [0.0, 0.0, 0.0, 0.3]]),
    })
    backend = AsymRnRBackend(AsymRnRConfig(schedule=schedule, **TINY))
    counters.clear()
    latent = _run(model, inputs, backend, steps=4)
    assert torch.isfinite(latent).all()
    graph = assert_reduced(backend, sites={0, 1})["graphs"][0]
    # site i is block i is row i: the applied ratios are the schedule's, step by step
    assert graph["schedule"]["rows"] == {"0": 0, "1": 1}
    assert graph["schedule"]["applied_per_step"] == _expected(schedule, range(4))
    assert counters["stats"]["unique_graphs"] == 1  # one Dynamo graph: steps never recompile
    # 4 distinct plans (one per step here); the step with nothing on in block 1 still reduces block 0
    assert len(graph["variants"]) == 4
    assert graph["cost"]["ideal_speedup"] > 1.0


def test_a_constant_schedule_equals_the_fixed_ratios(model, inputs):
    fixed = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, **TINY))
    expected = _run(model, inputs, fixed, steps=3)
    torch._dynamo.reset()
    scheduled = AsymRnRBackend(AsymRnRConfig(schedule=Schedule.constant(2, 3, q=0.5, kv=0.3), **TINY))
    got = _run(model, inputs, scheduled, steps=3)
    assert_reduced(fixed, sites={0, 1})
    assert_reduced(scheduled, sites={0, 1})
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    applied = scheduled.report().to_dict()["graphs"][0]["schedule"]["applied_per_step"]
    assert applied["2"]["1"] == {"q": 0.5, "kv": _applied(0.3)}
    assert scheduled.report().to_dict()["cache_misses"] == fixed.report().to_dict()["cache_misses"] == 8


def test_another_step_count_reads_the_schedule_by_progress(model, inputs, tmp_path):
    q = torch.tensor([[0.1 * s for s in range(8)], [0.05 * s for s in range(8)]])
    schedule = Schedule({"q": q})
    path = tmp_path / "schedule.safetensors"
    schedule.save(path)
    backend = AsymRnRBackend(AsymRnRConfig(schedule=str(path), num_steps=4, **TINY))  # a path works too
    _run(model, inputs, backend, steps=4)
    applied = assert_reduced(backend, sites={0, 1})["graphs"][0]["schedule"]["applied_per_step"]
    assert schedule.source_steps(4) == (0, 2, 5, 7)
    assert applied == _expected(schedule, schedule.source_steps(4))


def test_a_schedule_that_does_not_fit_raises_naming_both_shapes(model, inputs):
    backend = AsymRnRBackend(AsymRnRConfig(schedule=Schedule.constant(3, 10, q=0.5), **TINY))
    with pytest.raises(Exception, match=r"schedule has 3 blocks x 10 steps, model has 2 blocks"):
        _run(model, inputs, backend, steps=2)
    torch._dynamo.reset()
    backend = AsymRnRBackend(AsymRnRConfig(schedule=Schedule.constant(2, 2, q=0.5), **TINY))
    with pytest.raises(ValueError, match=r"schedule has 2 blocks x 2 steps, model has 2 blocks and reached step 3"):
        _run(model, inputs, backend, steps=3)


def test_schedule_option_is_validated():
    with pytest.raises(TypeError, match="schedule must be an asymrnr_compile.Schedule"):
        AsymRnRConfig(schedule={"q": 0.5})
    with pytest.raises(ValueError, match="num_steps must be"):
        AsymRnRConfig(num_steps=0)
    with pytest.raises(ValueError, match="schedule: cannot load .*no such file"):
        AsymRnRConfig(schedule="/nonexistent/schedule.safetensors")


def test_rows_are_blocks_with_reducible_sites_in_order():
    class Site:
        def __init__(self, index, block, reducible=True):
            self.index, self.block, self.reducible = index, block, reducible

    sites = [Site(0, "refiner.0", reducible=False), Site(1, "blocks.0"), Site(2, "blocks.0"),
             Site(3, "blocks.1"), Site(4, None)]
    assert site_rows(sites) == {1: 0, 2: 0, 3: 1, 4: 2}
