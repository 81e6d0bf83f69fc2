"""benchmarks/regional_compile_time.py: its arguments are checked before any child process runs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import regional_compile_time  # noqa: E402


@pytest.mark.parametrize("argv", [["--blocks", "0"], ["--steps", "0"], ["--threads", "0"],
                                  ["--kinds", "inductor_whole,eager"]])
def test_bad_arguments_stop_before_compiling(argv, capsys):
    with pytest.raises(SystemExit):
        regional_compile_time.main(argv)
    assert "must be" in capsys.readouterr().err


def test_the_four_ways_are_the_ones_the_results_table_compares():
    assert regional_compile_time.KINDS == ("inductor_whole", "inductor_regional", "asymrnr_whole", "asymrnr_regional")
