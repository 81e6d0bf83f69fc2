"""``asymrnr-compile train`` on a tiny run: progress on stderr, the weights written, resumable."""

from __future__ import annotations

import re

import pytest

from asymrnr_lab.cli import main


# ~22 s (it trains and exports a model); training and resuming are covered by
# tests/synthetic/test_train.py and the progress display by tests/cli/test_progress.py.
@pytest.mark.slow
def test_train_command_shows_progress_and_writes_the_weights(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--out", str(out), "--steps", "2", "--batch-size", "2", "--eval-every", "0"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert re.search(r"^training: steps 2/2, \d+\.\d s$", captured.err, flags=re.M), captured.err
    assert "EMA weights:" in captured.out and (out / "model.safetensors").is_file()
    # raising --steps resumes from step 2: the progress counts the resumed steps too
    assert main([*argv[:4], "3", *argv[5:]]) == 0
    captured = capsys.readouterr()
    assert "resuming" in captured.out and re.search(r"^training: steps 3/3, ", captured.err, flags=re.M)


def test_a_preset_of_another_arch_is_refused(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "run"), "--arch", "cogvideox", "--preset", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert "--preset synthetic is not a preset of --arch cogvideox" in err and "cogvideox-fine" in err
    assert not (tmp_path / "run").exists()
