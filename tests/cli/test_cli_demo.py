"""The main job, `asymrnr-compile demo`, end to end on small settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asymrnr_compile.cli import main


def test_demo_speed_part_on_the_tiny_preset(tmp_path, capsys):
    out = tmp_path / "demo.json"
    code = main(["demo", "--preset", "tiny", "--steps", "3", "--cache-steps", "2", "--quality-prompts", "0",
                 "--json", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("variant"))
    assert header.split() == ["variant", "loop", "s", "loop", "ideal", "median", "step", "rel", "err", "PSNR", "dB"]
    speed = json.loads(out.read_text())["speed"]
    assert set(speed["variants"]) == {"eager", "inductor", "asymrnr"}
    report = speed["asymrnr_report"]
    # the tiny preset has 32 video tokens: below min_video_tokens, so asymrnr compiles it unchanged
    # and says why; the numbers must still be there and match Inductor exactly
    assert report["num_variants"] == 0 and report["cache_misses"] == 0
    assert speed["variants"]["asymrnr"]["rel_l2_vs_inductor"] <= 1e-5
    assert speed["variants"]["inductor"]["speedup_vs_inductor"] == 1.0
    assert speed["variants"]["inductor"]["loop_speedup_vs_inductor"] == 1.0


@pytest.mark.slow
def test_demo_reduces_the_small_preset(tmp_path):
    out = tmp_path / "demo.json"
    assert main(["demo", "--preset", "small", "--steps", "3", "--cache-steps", "2", "--quality-prompts", "0",
                 "--json", str(out)]) == 0
    speed = json.loads(out.read_text())["speed"]
    report = speed["asymrnr_report"]
    # two loops (warm-up, timed) x steps 0 and 2 x 2 sites x (q, kv)
    assert report["cache_misses"] == 2 * 2 * 2 * 2
    assert report["ideal_speedup"] > 1.0
    assert 0 < speed["variants"]["asymrnr"]["rel_l2_vs_inductor"] < 0.5


@pytest.mark.slow
def test_demo_quality_part_writes_pictures(tmp_path):
    pytest.importorskip("PIL")
    from asymrnr_compile.cli.demo import run_quality_demo
    from asymrnr_compile.config import AsymRnRConfig

    result = run_quality_demo(AsymRnRConfig(cache_steps=5), tmp_path, num_prompts=2, log=lambda _: None)
    assert len(result.pictures) == 4 and all(Path(p).is_file() for p in result.pictures)
    from asymrnr_compile.synthetic.model import (
        FINE_CHECKPOINT_PATH,
        read_checkpoint_metadata,
    )

    assert result.checkpoint_step == read_checkpoint_metadata(FINE_CHECKPOINT_PATH)["step"]  # the 1024-token model
    asymrnr = result.comparison.variants["asymrnr"]
    assert asymrnr.backend_report["cache_misses"] > 0
    assert asymrnr.report.psnr is not None


def test_demo_passes_the_matching_options_to_the_backend(tmp_path):
    out = tmp_path / "demo.json"
    code = main(["demo", "--preset", "tiny", "--steps", "2", "--quality-prompts", "0", "--match-on", "hidden_states",
                 "--redraw-split", "--proportional-attention", "--json", str(out)])
    assert code == 0
    config = json.loads(out.read_text())["speed"]["asymrnr_report"]["config"]
    chosen = (config["match_on"], config["redraw_split"], config["proportional_attention"])
    assert chosen == ("hidden_states", True, True)
    with pytest.raises(SystemExit):
        main(["demo", "--preset", "tiny", "--match-on", "queries"])


def test_quality_model_choice_is_checked():
    from asymrnr_compile.cli.demo import run_quality_demo
    from asymrnr_compile.config import AsymRnRConfig

    with pytest.raises(ValueError, match="model_preset"):
        run_quality_demo(AsymRnRConfig(), "unused", model_preset="attention")
    with pytest.raises(SystemExit):
        main(["demo", "--quality-model", "attention"])
