"""benchmarks/speed_quality_table.py: which rows apply to which model, the speedup statistic, and
the RESULTS.md section."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers]); CI installs it")

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import speed_quality_table  # noqa: E402

from asymrnr_compile.config import AsymRnRConfig  # noqa: E402
from asymrnr_lab.synthetic import SyntheticTaskConfig, accelerators  # noqa: E402
from asymrnr_lab.synthetic.accelerators import CacheDiT, DiffusersCache  # noqa: E402
from asymrnr_lab.synthetic.cogvideox import CogVideoXTaskConfig, build_cogvideox_model  # noqa: E402
from asymrnr_lab.synthetic.model import build_text_to_video_model  # noqa: E402

TINY = CogVideoXTaskConfig(patch_size=8, num_heads=2, head_dim=16, num_blocks=2, time_embed_dim=32, text_dim=16)
#: asymrnr rows: defaults, published at two split seeds, quality options x 2, token dropping.
ASYMRNR_ROWS = 6
#: diffusers hook rows: four hooks at two settings each, plus asymrnr stacked with the first-block
#: cache and with TaylorSeer at both intervals.
HOOK_ROWS = 4 * 2 + 1 + 2
#: cache-dit rows: DBCache and DBCache + TaylorSeer at three thresholds each, on either model.
CACHE_DIT_ROWS = 2 * 3
#: asymrnr's defaults stacked with cache-dit's DBCache and with its TaylorSeer, its quality options
#: (cache 1) stacked with DBCache, the defaults on DBCache's second and third thresholds, the
#: defaults at stronger ratios on the third, and the defaults on DBCache with the probe block
#: reduced too, on either model.
CACHE_DIT_STACK_ROWS = 2 + 5
EXTRA_STACK_ROWS = (speed_quality_table.QUALITY_CACHE_DIT_STACK_ROW, speed_quality_table.SECOND_THRESHOLD_STACK_ROW,
                    speed_quality_table.REDUCED_PROBE_STACK_ROW, speed_quality_table.THIRD_THRESHOLD_STACK_ROW,
                    speed_quality_table.STRONGER_STACK_ROW)
HAS_CACHE_DIT = importlib.util.find_spec("cache_dit") is not None


def test_every_row_runs_on_a_diffusers_model():
    rows = speed_quality_table.rows(build_cogvideox_model(0, preset=TINY), 0.5, 0.3)
    assert len(rows) == ASYMRNR_ROWS + HOOK_ROWS + CACHE_DIT_ROWS + CACHE_DIT_STACK_ROWS
    cache_dit_rows = [row for row in rows if row.name.startswith("cache-dit")]
    assert len(cache_dit_rows) == CACHE_DIT_ROWS
    if HAS_CACHE_DIT:
        assert all(row.accelerator is not None and not row.reason for row in rows)
        assert all(isinstance(row.accelerator, CacheDiT) for row in cache_dit_rows)
    assert sum(isinstance(row.accelerator, AsymRnRConfig) for row in rows) == ASYMRNR_ROWS
    stack = next(row for row in rows if row.name == speed_quality_table.STACK_ROW)
    assert isinstance(stack.accelerator, DiffusersCache) and stack.accelerator.asymrnr is not None
    assert stack.stacked_hook is not None and stack.stacked_hook.asymrnr is None
    taylorseer_stacks = [next(row for row in rows if row.name == name)
                         for name in speed_quality_table.TAYLORSEER_STACK_ROWS.values()]
    for row, alone in zip(taylorseer_stacks, ("TaylorSeer (interval 2)", "TaylorSeer (interval 4)"), strict=True):
        assert isinstance(row.accelerator, DiffusersCache) and row.accelerator.asymrnr == AsymRnRConfig()
        # the stack's cache is the very hook of the row alone, so its FLOP ideal starts from that row's cache
        hook_alone = next(r for r in rows if r.name == alone).accelerator
        assert row.stacked_hook.asymrnr is None
        assert (row.stacked_hook.make_config(lambda: 0.0).cache_interval
                == hook_alone.make_config(lambda: 0.0).cache_interval)
    assert next(row for row in rows if row.name == "asymrnr, defaults").accelerator == AsymRnRConfig()
    if HAS_CACHE_DIT:
        _assert_cache_dit_stacks(rows)


def _assert_cache_dit_stacks(rows) -> None:
    """The stacked cache-dit rows: asymrnr's defaults on the cache alone (the row's stacked_hook)."""
    stacks = [row for row in rows if row.name in speed_quality_table.CACHE_DIT_STACK_ROWS.values()]
    quality, second, reduced_probe, third, stronger = (next(row for row in rows if row.name == name)
                                                       for name in EXTRA_STACK_ROWS)
    assert len(stacks) + len(EXTRA_STACK_ROWS) == CACHE_DIT_STACK_ROWS
    assert quality.accelerator.asymrnr.cache_steps == 1 and quality.accelerator.asymrnr.match_on == "hidden_states"
    assert quality.stacked_hook == replace(quality.accelerator, asymrnr=None) == stacks[0].stacked_hook
    for row in [*stacks, second, third]:
        assert isinstance(row.accelerator, CacheDiT) and row.accelerator.asymrnr == AsymRnRConfig()
        assert isinstance(row.stacked_hook, CacheDiT) and row.stacked_hook.asymrnr is None
        assert row.stacked_hook == replace(row.accelerator, asymrnr=None)
        assert row.accelerator.exact_probe_blocks
    assert {row.accelerator.taylorseer_order for row in stacks} == {None, 1}
    assert second.accelerator.threshold == speed_quality_table.CACHE_DIT_THRESHOLDS[1]
    assert third.accelerator.threshold == stronger.accelerator.threshold == speed_quality_table.CACHE_DIT_THRESHOLDS[2]
    assert stronger.accelerator.asymrnr == AsymRnRConfig(q_ratio=0.6, kv_ratio=0.4)
    assert stronger.stacked_hook == third.stacked_hook and stronger.accelerator.exact_probe_blocks
    assert not reduced_probe.accelerator.exact_probe_blocks and reduced_probe.stacked_hook == stacks[0].stacked_hook


def test_hook_rows_are_not_applicable_to_the_reference_model_and_say_why():
    rows = speed_quality_table.rows(build_text_to_video_model(0), 0.5, 0.3)
    assert len(rows) == ASYMRNR_ROWS + HOOK_ROWS + CACHE_DIT_ROWS + CACHE_DIT_STACK_ROWS
    skipped = [row for row in rows if row.accelerator is None and "cache-dit" not in row.name]
    assert len(skipped) == HOOK_ROWS
    assert all("diffusers model class" in row.reason and "ReferenceDiT" in row.reason for row in skipped)


@pytest.mark.skipif(not HAS_CACHE_DIT, reason="cache-dit is not installed (pip install -e './lab[cachedit]')")
def test_cache_dit_rows_apply_to_the_reference_model_too():
    rows = speed_quality_table.rows(build_text_to_video_model(0), 0.5, 0.3)
    cache_dit_rows = [row for row in rows if row.name.startswith("cache-dit")]
    assert len(cache_dit_rows) == CACHE_DIT_ROWS
    assert all(isinstance(row.accelerator, CacheDiT) and not row.reason for row in cache_dit_rows)
    _assert_cache_dit_stacks(rows)


def test_cache_dit_rows_without_cache_dit_are_not_applicable_and_say_why(monkeypatch):
    def missing():
        raise ImportError("the cache-dit rows need cache-dit: pip install -e './lab[cachedit]'")

    monkeypatch.setattr(accelerators, "_import_cache_dit", missing)
    rows = speed_quality_table.rows(build_text_to_video_model(0), 0.5, 0.3)
    cache_dit_rows = [row for row in rows if row.name.startswith("cache-dit")]
    assert len(cache_dit_rows) == CACHE_DIT_ROWS
    assert all(row.accelerator is None and "lab[cachedit]" in row.reason for row in cache_dit_rows)
    stack_names = {*speed_quality_table.CACHE_DIT_STACK_ROWS.values(), *EXTRA_STACK_ROWS}
    stacks = [row for row in rows if row.name in stack_names]
    assert len(stacks) == CACHE_DIT_STACK_ROWS
    assert all(row.accelerator is None and "lab[cachedit]" in row.reason for row in stacks)


def _row(name, all_correct, change, **extra):
    return {"row": name, "all_correct": all_correct, "change": change, "valid": 100.0, "psnr": None,
            "ssim": None, **extra}


def test_section_has_every_row_its_ideal_speedup_and_the_not_applicable_reason():
    result = {
        "checkpoint": "cogvideox/model", "checkpoint_step": 4000, "preset": "cogvideox", "video_tokens": 256,
        "samples": 96, "captions_per_seed": 96, "seeds": [0], "timing_captions": 4, "rounds": 3,
        "q_ratio": 0.5, "kv_ratio": 0.3, "machine": "cpu", "command": "python benchmarks/speed_quality_table.py",
        "date": "2026-12-03", "seconds": 100.0, "load_average": {"before": [1.0, 1, 1], "after": [2.0, 2, 2]},
        "rows": [
            _row("unaccelerated", 95.0, 0.0, flop_ideal=1.0, loop_speedup=1.0, loop_seconds=2.0, graphs=1),
            _row("first-block cache (threshold 0.1)", 90.0, -5.0, psnr=30.0, ssim=0.95, flop_ideal=1.8,
                 loop_speedup=1.5, loop_seconds=1.33, graphs=7),
            _row("stack", 89.0, -6.0, psnr=29.0, ssim=0.9, flop_ideal=2.5, flop_ideal_estimated=True,
                 loop_speedup=1.9, loop_seconds=1.05, graphs=3, skipped_steps=[13, 12, 13], loop_steps=20),
            {"row": "TaylorSeer (interval 2)", "applicable": False, "reason": "not a diffusers class"},
        ],
    }
    text = speed_quality_table.render_section(result)
    assert "(diffusers CogVideoX, 256 video tokens)" in text
    assert "| unaccelerated | 95.0% | +0.0 | 100.0% |  |  | 1.00x | 1.00x | 2.00 |  | 1 |" in text
    assert ("| first-block cache (threshold 0.1) | 90.0% | -5.0 | 100.0% | 30.00 | 0.950 | 1.80x | 1.50x | 1.33 "
            "|  | 7 |") in text
    assert "| stack | 89.0% | -6.0 | 100.0% | 29.00 | 0.900 | ~2.50x | 1.90x | 1.05 | 13/20 | 3 |" in text
    assert "| TaylorSeer (interval 2) | | | | | | | | | | not applicable: not a diffusers class |" in text
    assert "96 videos (96 captions x 1 noise seed)" in text and "3 rounds" in text


def test_a_run_at_another_step_count_says_so_and_gets_a_section_and_plot_of_its_own():
    result = {
        "checkpoint": "synthetic_dit_fine.safetensors", "checkpoint_step": 6400, "preset": "synthetic-fine",
        "video_tokens": 1024, "samples": 96, "captions_per_seed": 96, "seeds": [0], "timing_captions": 16,
        "rounds": 3, "q_ratio": 0.5, "kv_ratio": 0.3, "machine": "cpu", "date": "2026-12-08", "seconds": 1.0,
        "command": "python benchmarks/speed_quality_table.py --steps 50",
        "load_average": {"before": [1.0, 1, 1], "after": [2.0, 2, 2]},
        "rows": [_row("unaccelerated", 95.0, 0.0, flop_ideal=1.0, loop_speedup=1.0, loop_seconds=2.0, graphs=1)],
    }
    default = speed_quality_table.render_section(result)
    assert "20 Euler steps" in default and "whole 20-step sampling loop" in default
    assert "sampling steps)" not in default.splitlines()[0]
    assert speed_quality_table.default_plot_path(result).name == "speed_quality_reference_1024.png"
    result["sampling_steps"] = 50
    text = speed_quality_table.render_section(result)
    assert text.splitlines()[0].endswith("(1024 video tokens) (50 sampling steps)")
    assert "50 Euler steps" in text and "whole 50-step sampling loop" in text and "20 Euler" not in text
    assert speed_quality_table.default_plot_path(result).name == "speed_quality_reference_1024_steps50.png"


def test_time_loops_runs_the_sampler_it_is_given():
    """Every loop of a 3-step sampler calls the transformer 3 times (batched CFG: one call a step)."""
    model = build_text_to_video_model(0)
    calls = {"count": 0}

    def counted(**inputs):
        calls["count"] += 1
        return model.transformer(**inputs)

    class Counting:
        def build(self, _model):
            return accelerators.AcceleratedTransformer(counted, lambda: None)

    task = SyntheticTaskConfig()
    captions, seeds = speed_quality_table.caption_grid(task, [0])
    sampler = replace(speed_quality_table.EVAL_SAMPLER, steps=3)
    timing = speed_quality_table.time_loops(model, {"counting": Counting()}, captions[:1], seeds[:1], task, rounds=1,
                                            log=lambda line: None, sampler=sampler)
    assert len(timing["counting"]["seconds"]) == 1
    assert calls["count"] == 3 * 3  # warm-up, untimed round, one timed round


def test_the_stacked_flop_ideal_takes_what_the_reduced_block_calls_saved_from_the_cache_alone():
    """The cache alone runs 100 / 2 = 50 FLOPs a loop; over 2 loops the block graph ran 10 calls,
    4 of them unreduced (the probe block), each reduced call saving 2 - 1.5 = 0.5 FLOPs: 1.5 a loop."""
    graphs = [
        {"calls": 10, "unreduced_calls": {"block 'blocks.0' is in skip_blocks": 4},
         "cost_per_call": {"full_gflops": 2e-9, "reduced_gflops": 1.5e-9}},
        {"calls": 3, "unreduced_calls": {}},  # a graph compiled unchanged: no cost, nothing saved
    ]
    assert speed_quality_table.stacked_flop_ideal(100.0, 2.0, graphs, loops=2) == pytest.approx(100 / (50 - 1.5))
    assert speed_quality_table.stacked_flop_ideal(100.0, 2.0, [], loops=2) == pytest.approx(2.0)


def test_the_stacked_flop_ideal_counts_every_matching_computed_not_the_configured_amortisation():
    """6 reduced calls of a graph whose matching (0.2 FLOPs) is configured every 2 calls: a reused
    call costs 1.5 - 0.2 / 2 = 1.4, so each saves 0.6; 5 of the 6 computed a matching (a step
    cache left few calls per window): 6 x 0.6 - 5 x 0.2 = 2.6 saved over 2 loops, 1.3 a loop."""
    graphs = [{"calls": 6, "unreduced_calls": {}, "matching_calls": 5,
               "cost_per_call": {"full_gflops": 2e-9, "reduced_gflops": 1.5e-9, "matching_gflops": 0.2e-9,
                                 "matching_window": 2}}]
    assert speed_quality_table.stacked_flop_ideal(100.0, 2.0, graphs, loops=2) == pytest.approx(100 / (50 - 1.3))


def test_time_loops_records_the_steps_a_cache_skipped_in_each_timed_loop():
    """A stub cache whose own count says it skipped one more step per loop: the timed loops'
    counts are kept (not the warm-up's), and an accelerator without a count gets none."""
    model = build_text_to_video_model(0)
    loops = {"count": 0}

    def stats():
        return {"steps": 20, "cached_steps": list(range(loops["count"]))}

    def counted(**inputs):
        return model.transformer(**inputs)

    class CountingCache:
        def build(self, _model):
            def reset():
                loops["count"] += 1
            return accelerators.AcceleratedTransformer(counted, reset, stats=stats)

    task = SyntheticTaskConfig()
    captions, seeds = speed_quality_table.caption_grid(task, [0])
    timing = speed_quality_table.time_loops(model, {"plain": accelerators.Eager(), "cache": CountingCache()},
                                            captions[:1], seeds[:1], task, rounds=2, log=lambda line: None)
    # loops: warm-up (1), untimed round (2), timed rounds (3, 4)
    assert timing["cache"]["skipped_steps"] == [3, 4] and timing["cache"]["loop_steps"] == 20
    assert "skipped_steps" not in timing["plain"]


@pytest.mark.parametrize("flag", ["--threads", "--rounds", "--seeds"])
def test_counts_below_one_are_rejected_before_anything_loads(flag, capsys):
    with pytest.raises(SystemExit):
        speed_quality_table.main(["--checkpoint", "no/such/model", flag, "0"])
    assert f"{flag} must be >= 1, got 0" in capsys.readouterr().err


def test_a_loop_of_fewer_than_two_steps_is_rejected_before_anything_loads(capsys):
    with pytest.raises(SystemExit):
        speed_quality_table.main(["--checkpoint", "no/such/model", "--steps", "1"])
    assert "--steps must be >= 2, got 1" in capsys.readouterr().err
