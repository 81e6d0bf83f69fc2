"""benchmarks/quality_synthetic.py's RESULTS.md section and the shared section writer."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import quality_synthetic  # noqa: E402
from results_md import replace_section  # noqa: E402


def _variant(name, all_correct, psnr):
    return {"variant": name, "all_correct": all_correct, "valid": 100.0, "psnr": psnr,
            "ssim": None if psnr is None else 0.9,
            "attribute_accuracy": {"colour": 100.0, "shape": all_correct}}


def test_section_lists_every_variant_and_the_training_curve():
    result = {"checkpoint": "m.safetensors", "checkpoint_step": 1200, "samples": 8, "seeds": [0, 1],
              "sampler": {"steps": 20, "guidance_scale": 4.0}, "q_ratio": 0.5, "kv_ratio": 0.3,
              "variants": [_variant("unaccelerated", 75.0, None), _variant("asymrnr (cache 5)", 62.5, 31.25)],
              "machine": "cpu", "command": "python benchmarks/quality_synthetic.py", "date": "2026-11-26",
              "seconds": 12.0}
    text = quality_synthetic.render_section(result, [(1000, 40.0), (1200, 75.0)])
    assert "| unaccelerated | 75.0% | 100.0% | 100.0% | 75.0% |  |  |" in text
    assert "| asymrnr (cache 5) | 62.5% | 100.0% | 100.0% | 62.5% | 31.25 | 0.900 |" in text
    assert "step 1000: 40.0%, step 1200: 75.0%" in text
    assert "4 captions x 2 noise seeds = 8 videos" in text


def test_a_model_trained_on_from_another_counts_both_runs_steps():
    """``train --init-from`` records the earlier model's step and runs: the section says the
    step of the last run and the total (here 1000 + 3000 + 4000)."""
    first = {"from_step": 0, "steps": 1000}
    second = {"from_step": 0, "steps": 3000, "init_step": 1000, "init_runs": [first]}
    metadata = {"step": 4000, "runs": [{"from_step": 0, "steps": 4000, "init_step": 3000,
                                        "init_runs": [second]}]}
    assert quality_synthetic.training_steps(metadata) == 8000
    assert quality_synthetic.training_steps({"step": 600, "runs": [first]}) == 600
    assert quality_synthetic.training_steps({}) is None
    label = quality_synthetic.steps_label({"checkpoint_step": 4000, "training_steps": 8000})
    assert label == "training step 4000 of a run started from a trained model: 8000 steps in all"
    assert quality_synthetic.steps_label({"checkpoint_step": 600, "training_steps": 600}) == "training step 600"


def test_replace_section_keeps_other_sections(tmp_path):
    path = tmp_path / "RESULTS.md"
    path.write_text("# Results\n\nhand-written\n")
    replace_section("demo", "first", path)
    replace_section("other", "kept", path)
    replace_section("demo", "second", path)
    text = path.read_text()
    assert "hand-written" in text and "kept" in text and "second" in text and "first" not in text
    assert text.count("<!-- demo:begin -->") == 1


def test_variants_pair_matched_reduction_with_dropping_at_the_same_ratios():
    configs = quality_synthetic.variants(0.5, 0.3)
    projected = [f"asymrnr, hidden-state matching, {dims}-dim projection (cache 2)"
                 for dims in quality_synthetic.PROJECTION_DIMS]
    assert list(configs) == ["asymrnr (cache 5)", "token dropping", "asymrnr (cache 1)",
                             "asymrnr, hidden-state matching (cache 1)", "asymrnr, hidden-state matching (cache 2)",
                             *projected]
    assert {(c.q_ratio, c.kv_ratio) for c in configs.values()} == {(0.5, 0.3)}
    assert [c.token_selection for c in configs.values()] == ["matched", "random", "matched", "matched", "matched",
                                                             "matched", "matched"]
    assert [c.cache_steps for c in configs.values()] == [5, 5, 1, 1, 2, 2, 2]
    assert [c.match_on for c in configs.values()] == ["features"] * 3 + ["hidden_states"] * 4
    assert [c.redraw_split and c.proportional_attention for c in configs.values()] == [False] * 3 + [True] * 4
    assert [c.match_dims for c in configs.values()] == [None] * 5 + list(quality_synthetic.PROJECTION_DIMS)


def test_sweep_varies_one_thing_at_a_time_and_covers_every_block():
    configs = quality_synthetic.sweep_variants(0.5, 0.3, num_blocks=3)
    assert configs["q 0.5 / kv 0.3"] == quality_synthetic.AsymRnRConfig(preset="published", q_ratio=0.5,
                                                                    kv_ratio=0.3, cache_steps=5)
    assert configs["q 0.5 / kv 0.3, warmup 10"].warmup_steps == 10
    for block in range(3):
        q_only = configs[f"q 0.5, block {block} only"]
        kv_only = configs[f"kv 0.3, block {block} only"]
        assert (q_only.q_ratio, q_only.kv_ratio) == (0.5, 0.0) and (kv_only.q_ratio, kv_only.kv_ratio) == (0.0, 0.3)
        assert set(q_only.skip_blocks) == set(kv_only.skip_blocks) == {0, 1, 2} - {block}
    assert configs["q 0 / kv 0.3, proportional attention"].proportional_attention
    assert sum(c.proportional_attention for c in configs.values()) == 1
    assert all(c.token_selection == "matched" for c in configs.values())
    with pytest.raises(ValueError, match="num_blocks must be an int >= 1"):
        quality_synthetic.sweep_variants(0.5, 0.3, num_blocks=0)


def test_sweep_section_shows_the_change_against_unaccelerated_and_the_ideal_speedup():
    result = {"checkpoint": "m.safetensors", "checkpoint_step": 6000, "samples": 96, "seeds": [0],
              "sampler": {"steps": 20, "guidance_scale": 2.0},
              "variants": [_variant("unaccelerated", 78.1, None),
                           {**_variant("q 0.5, block 1 only", 4.2, 21.76), "ideal_speedup": 1.0305}],
              "machine": "cpu", "command": "python benchmarks/quality_synthetic.py --sweep", "date": "2026-11-26",
              "seconds": 800.0}
    text = quality_synthetic.render_sweep_section(result)
    assert "| unaccelerated |  | 78.1% |  | 100.0% |  |  |" in text
    assert "| q 0.5, block 1 only | 1.03x | 4.2% | -73.9 | 100.0% | 21.76 | 0.900 |" in text
    assert "96 videos per variant (96 captions x 1 noise seed)" in text


def test_sweep_and_calibrated_modes_exclude_each_other(capsys):
    with pytest.raises(SystemExit) as exit_info:
        quality_synthetic.main(["--sweep", "--calibrated"])
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_calibrated_section_names_its_command():
    result = {"checkpoint": "m.safetensors", "checkpoint_step": 6000, "samples": 96, "seeds": [0],
              "sampler": {"steps": 20, "guidance_scale": 2.0},
              "variants": [_variant("unaccelerated", 78.1, None),
                           {**_variant("error-ranked, 1.06x", 77.1, 39.56), "ideal_speedup": 1.061}],
              "machine": "cpu", "command": "python benchmarks/quality_synthetic.py --calibrated",
              "date": "2026-11-26", "seconds": 300.0}
    text = quality_synthetic.render_sweep_section(result, "Schedules calibrated by distance and by measured error",
                                                  "--calibrated")
    assert text.startswith("## Schedules calibrated by distance and by measured error: the trained")
    assert "`benchmarks/quality_synthetic.py --calibrated --results`" in text
    assert "| error-ranked, 1.06x | 1.06x | 77.1% | -1.0 | 100.0% | 39.56 | 0.900 |" in text


@pytest.mark.slow  # profiles and compiles the trained model: about a minute on 2 cores
def test_calibrated_variants_rank_by_distance_and_by_error():
    from asymrnr_lab.synthetic.model import load_trained_model

    model, task = load_trained_model()
    configs = quality_synthetic.calibrated_variants(model, task, targets=(1.06,), log=lambda _: None)
    assert list(configs) == ["distance-ranked, 1.06x", "error-ranked, 1.06x"]
    sources = [c.schedule.source for c in configs.values()]
    assert "damage='distance'" in sources[0] and "damage='error'" in sources[1]
    q = [c.schedule.ratios("q") for c in configs.values()]
    assert not torch.equal(q[0], q[1])  # the two rankings choose differently on this model


def test_sections_of_the_fine_model_are_its_own():
    from asymrnr_lab.models.config import PRESETS

    assert quality_synthetic.preset_of(PRESETS["synthetic"]) == "synthetic"
    assert quality_synthetic.preset_of(PRESETS["synthetic-fine"]) == "synthetic-fine"
    assert quality_synthetic.preset_of(PRESETS["tiny"]) is None
    assert quality_synthetic.section_name(quality_synthetic.SWEEP_SECTION, "synthetic") == "quality-synthetic-sweep"
    assert quality_synthetic.section_name(quality_synthetic.SECTION, "synthetic-fine") == "quality-synthetic-fine"
    with pytest.raises(ValueError, match="presets"):
        quality_synthetic.section_name(quality_synthetic.SECTION, None)
    result = {"checkpoint": "m.safetensors", "checkpoint_step": 6400, "samples": 96, "seeds": [0],
              "sampler": {"steps": 20, "guidance_scale": 2.0}, "preset": "synthetic-fine",
              "variants": [_variant("unaccelerated", 100.0, None)], "machine": "gpu", "command": "c",
              "date": "2026-11-26", "seconds": 1.0}
    assert quality_synthetic.render_sweep_section(result).startswith(
        "## Quality sensitivity sweep: the trained text-to-video model (1024 video tokens)")


@pytest.mark.parametrize(("argv", "message"), [
    (["--sweep", "--only", "no such variant"], "matches none of"),
    (["--sweep", "--only", "("], "not a regular expression"),
    (["--device", "cuda"], "cuda"),
    (["--calibrated", "--targets", "1.2,fast"], "comma-separated numbers"),
    (["--calibrated", "--targets", "0.9"], "speedups > 1"),
])
def test_bad_filters_and_devices_are_rejected_before_sampling(argv, message, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit):
        quality_synthetic.main(argv)
    assert message in capsys.readouterr().err


def test_schedule_summary_lists_the_reduced_features_per_block():
    from asymrnr_compile.plan.schedule import Schedule

    assert quality_synthetic.schedule_summary(Schedule.constant(2, 3, q=0.5)) == "q per block 0.50 0.50"
    assert quality_synthetic.schedule_summary(Schedule.constant(2, 3)) == "nothing reduced"
    both = quality_synthetic.schedule_summary(Schedule.constant(1, 2, q=0.25, kv=0.3))
    assert both == "q per block 0.25; kv per block 0.30"


def test_capped_ladder_drops_the_rungs_above_the_cap():
    assert quality_synthetic.capped_ladder(0.3) == {"q": (0.3,), "kv": (0.2, 0.3)}
    assert quality_synthetic.capped_ladder(0.2) == {"kv": (0.2,)}
    assert quality_synthetic.capped_ladder(None)["q"] == (0.3, 0.5, 0.7)
    with pytest.raises(ValueError, match="below every rung"):
        quality_synthetic.capped_ladder(0.1)


def test_max_ratio_below_the_ladder_is_rejected_before_sampling(capsys):
    with pytest.raises(SystemExit):
        quality_synthetic.main(["--calibrated", "--max-ratio", "0.1"])
    assert "--max-ratio" in capsys.readouterr().err


def test_cogvideox_models_get_sections_of_their_own():
    from asymrnr_lab.models.config import PRESETS
    from asymrnr_lab.synthetic.cogvideox import COGVIDEOX_PRESETS, CogVideoXTaskConfig

    assert quality_synthetic.preset_of(COGVIDEOX_PRESETS["cogvideox"]) == "cogvideox"
    assert quality_synthetic.preset_of(COGVIDEOX_PRESETS["cogvideox-fine"]) == "cogvideox-fine"
    assert quality_synthetic.preset_of(CogVideoXTaskConfig(num_blocks=1)) is None
    assert quality_synthetic.preset_of(PRESETS["synthetic"]) == "synthetic"
    assert quality_synthetic.section_name(quality_synthetic.SECTION, "cogvideox-fine") == (
        "quality-synthetic-cogvideox-fine")


def test_reports_name_an_exported_folder_by_its_run(tmp_path):
    (tmp_path / "runs" / "cogvideox" / "model").mkdir(parents=True)
    assert quality_synthetic.checkpoint_label(tmp_path / "runs" / "cogvideox" / "model") == "cogvideox/model"
    assert quality_synthetic.checkpoint_label(tmp_path / "m.safetensors") == "m.safetensors"
