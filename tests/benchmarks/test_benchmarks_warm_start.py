"""Warm starts across processes (benchmarks/warm_start.py, docs/deployment.md).

A second process with the first one's Inductor cache directory compiles nothing: every subgraph of
every variant asymrnr compiles is an FX graph cache hit and an AOTAutograd cache hit, and the
frames are identical. Each process compiles a tiny CogVideoX pipeline (about a minute cold on 2
cores), so this is ``slow``; the table formatting is checked on made-up numbers by default.
"""

from __future__ import annotations

import argparse

import pytest
import torch
from helpers import load_benchmark

_load = load_benchmark


warm_start = _load("warm_start")


def test_table_has_a_row_per_run_with_cache_counters():
    run = {"backend": "asymrnr", "run": "warm (disk)", "first_call_seconds": 8.2, "second_call_seconds": 0.15,
           "process_seconds": 14.0, "fxgraph": {"hit": 5}, "aot_autograd": {"hit": 5}, "max_abs_diff_vs_cold": 0.0,
           "kernel_files": {"before_first_call": 4, "after": 4}}
    text = warm_start.table({"runs": [run, {**run, "run": "cold", "fxgraph": {"miss": 5},
                                            "aot_autograd": {"miss": 5}, "max_abs_diff_vs_cold": 1e-3}]})
    lines = text.splitlines()
    assert len(lines) == 4
    assert "| asymrnr | warm (disk) | 8.2 | 0.15 | 14.0 | 5 / 0 | 5 / 0 / 0 | 4 | identical |" in lines
    assert "max abs diff 1.00e-03" in lines[3]


@pytest.mark.slow
def test_a_second_process_reuses_the_compile_cache(tmp_path):
    pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers])")
    args = argparse.Namespace(family="cogvideox", size=64, frames=9, steps=3)
    cache = str(tmp_path / "cache")
    cold = warm_start.run_child("asymrnr", cache, args, str(tmp_path / "cold.pt"))
    warm = warm_start.run_child("asymrnr", cache, args, str(tmp_path / "warm.pt"))
    assert cold["sites_reduced"] >= 1 and warm["sites_reduced"] == cold["sites_reduced"]
    subgraphs = cold["fxgraph"]["miss"]
    assert subgraphs >= 3 and cold["subgraphs_compiled"] == subgraphs  # shared and attention subgraphs of 2 variants
    assert warm["fxgraph"] == {"hit": subgraphs}, warm["fxgraph"]
    assert warm["aot_autograd"] == {"hit": subgraphs}, warm["aot_autograd"]  # nothing bypassed, nothing traced
    assert warm["first_call_seconds"] < cold["first_call_seconds"]
    torch.testing.assert_close(torch.load(tmp_path / "warm.pt"), torch.load(tmp_path / "cold.pt"), rtol=0, atol=0)
