"""``asymrnr-compile profile``: report.json, report.md, heatmaps and a schedule that fits."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch._dynamo

from asymrnr_compile.plan.schedule import Schedule
from asymrnr_lab.cli import main


def test_profile_command_writes_report_heatmaps_and_schedule(tmp_path, capsys):
    out = tmp_path / "prof"
    code = main(["profile", "--model", "reference", "--preset", "tiny", "--steps", "3", "--out", str(out),
                 "--target-speedup", "1.02"])
    assert code == 0
    assert "profiling (the first step compiles): steps 3/3, " in capsys.readouterr().err  # progress
    report = json.loads((out / "report.json").read_text())
    assert report["steps"] == 3 and report["random_weights"] is True
    assert [site["name"] for site in report["sites"]] == ["blocks.0.attn", "blocks.1.attn"]
    for site in report["sites"]:
        assert set(site["redundancy"]) == {"h", "q", "k", "v"}
        assert len(site["redundancy"]["q"]["p50"]) == 3
    markdown = (out / "report.md").read_text()
    assert "| blocks.1.attn | 1 | joint | 32 |" in markdown and "Most redundant" in markdown
    for feature in ("h", "q", "k", "v"):
        assert (out / f"heatmap_{feature}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    schedule = Schedule.load(out / "schedule.safetensors")
    assert (schedule.num_blocks, schedule.num_steps) == (2, 3)
    assert report["schedule"]["predicted_speedup"] >= 1.02


@pytest.mark.slow  # about 30 s on 2 cores; the API under it is tested in test_profiling.py
def test_profile_command_calibrates_by_measured_error(tmp_path, capsys):
    torch._dynamo.reset()
    out = tmp_path / "prof"
    assert main(["profile", "--model", "reference", "--preset", "tiny", "--steps", "2", "--out", str(out),
                 "--target-speedup", "1.02", "--damage", "error"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["error_ratios"] == [0.2, 0.3, 0.4, 0.5, 0.7]  # the calibrate ladder's ratios
    q_errors = report["sites"][0]["redundancy"]["q"]["error@0.5"]
    assert len(q_errors) == 2 and all(0 < e < 10 for e in q_errors)
    assert "error@0.5" not in report["sites"][0]["redundancy"]["h"] or \
        all(e is None for e in report["sites"][0]["redundancy"]["h"]["error@0.5"])
    assert "damage='error'" in Schedule.load(out / "schedule.safetensors").source
    markdown = (out / "report.md").read_text()
    assert "## Output error (measured)" in markdown and "| blocks.0.attn | " in markdown.split("Output error")[1]


def test_python_dash_m_lists_the_profile_command():
    result = subprocess.run([sys.executable, "-m", "asymrnr_lab", "profile", "--help"],
                            capture_output=True, text=True, check=True)
    assert "--model" in result.stdout and "cogvideox" in result.stdout


def test_profile_command_rejects_bad_steps(tmp_path, capsys):
    assert main(["profile", "--steps", "0", "--out", str(tmp_path)]) == 2
    assert "--steps must be" in capsys.readouterr().err


@pytest.mark.slow  # about 50 s on 2 cores (compiles a diffusers model)
def test_profile_command_on_a_random_weight_diffusers_model(tmp_path, capsys):
    pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers])")
    torch._dynamo.reset()
    out = tmp_path / "wan"
    assert main(["profile", "--model", "wan", "--steps", "2", "--out", str(out), "--target-speedup", "1.01"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert "RANDOM-WEIGHT" in report["notes"][0]
    kinds = {site["kind"] for site in report["sites"]}
    assert "self" in kinds  # Wan's self-attention sites; its cross-attention ones profile q only
    for site in report["sites"]:
        expected = {"q"} if site["kind"] == "cross" else {"q", "k", "v"}
        assert expected <= set(site["redundancy"])
    assert "RANDOM-WEIGHT" in (out / "report.md").read_text()


@pytest.mark.slow  # about 30 s on 2 cores (compiles the trained model's transformer)
def test_profile_command_on_the_trained_synthetic_model(tmp_path, capsys):
    torch._dynamo.reset()
    out = tmp_path / "synthetic"
    assert main(["profile", "--model", "synthetic", "--steps", "2", "--prompts", "2", "--out", str(out),
                 "--target-speedup", "1.01"]) == 0
    assert "profiling (the first step compiles): steps 2/2, " in capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert report["random_weights"] is False and "TRAINED" in report["notes"][0]
    assert [site["name"] for site in report["sites"]] == [f"blocks.{i}.attn" for i in range(4)]
    for site in report["sites"]:
        means = site["redundancy"]["k"]["mean"]
        assert len(means) == 2 and all(0.0 <= m < 2.0 for m in means)
    assert Schedule.load(out / "schedule.safetensors").num_steps == 2


def test_profile_command_rejects_bad_prompts(tmp_path, capsys):
    assert main(["profile", "--model", "synthetic", "--prompts", "0", "--out", str(tmp_path)]) == 2
    assert "--prompts must be" in capsys.readouterr().err
