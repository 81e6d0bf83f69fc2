"""asymrnr stacked with what diffusers users already run, on a tiny real pipeline (benchmarks/compositions.py).

Default run: the benchmark's stacks cover every composition the project supports and its table names why a
stack cannot run (no compiling). Slow: each stack that works with asymrnr (torchao int8
weight-only, the first-block cache under regional compilation) on the tiny
CogVideoX pipeline: all ratios 0 equals the same stack under plain Inductor, and at q 0.5 / kv 0.3
every video site is reduced and the video stays close to that stack's (random weights: a loose
bound). Each compiles three pipelines (a minute or more each on 2 cores).
"""

from __future__ import annotations

import argparse

import pytest
import torch
import torch._dynamo
from helpers import load_benchmark

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers])")
pytest.importorskip("transformers", reason="the diffusers pipelines import transformers (pip install -e .[diffusers])")

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig  # noqa: E402
from asymrnr_lab.metrics import psnr_db  # noqa: E402
from asymrnr_lab.models.diffusers_pipelines import SMALL_GRID  # noqa: E402

_load = load_benchmark


compositions = _load("compositions")

ARGS = argparse.Namespace(size=64, frames=9, steps=4, layers=2)  # 3 x 4 x 4 video tokens, 2 blocks
PSNR_FLOOR_DB = 20.0  # the tiny pipeline without a stack measured 28.6 dB at q 0.5 / kv 0.3 (4 steps)


def _stack(name: str):
    return next(stack for stack in compositions.stacks(gpu=False) if stack.name == name)


def test_the_benchmark_covers_every_composition():
    names = [stack.name for stack in compositions.stacks(gpu=False)]
    for key in ("first-block cache", "pyramid attention broadcast", "FasterCache", "TaylorSeer", "torchao int8",
                "enable_model_cpu_offload", "max-autotune-no-cudagraphs", "reduce-overhead"):
        assert any(key in name for name in names), key
    gpu = [stack for stack in compositions.stacks(gpu=False) if "on a GPU" in stack.name]
    assert gpu and all(stack.not_tried == "needs a CUDA GPU (CUDA graphs); not run on a CPU" for stack in gpu)


def test_table_names_why_a_stack_cannot_run():
    rows = [{"stack": "offload", "works": False, "reason": "RuntimeError: needs an accelerator"},
            {"stack": "hook", "works": True, "speedup": 1.1, "inductor_seconds": 0.3, "asymrnr_seconds": 0.27,
             "psnr_db": 30.0, "relative_l2": 0.02, "stack_effect_psnr_db": 25.0, "sites_reduced": 3,
             "video_sites": 3, "asymrnr_graphs": 1, "recompiles": 0, "fallback_reasons": []}]
    lines = compositions.table(rows).splitlines()
    assert len(lines) == 4 and all(line.count("|") == lines[0].count("|") for line in lines)
    assert "RuntimeError: needs an accelerator" in lines[2]
    assert "| hook | yes | 1.10x | 0.30 / 0.27 | 30.0 / 0.0200 | 25.0 | 3 of 3 | 1, 0 |" in lines[3]


def _video(stack, backend) -> torch.Tensor:
    torch._dynamo.reset()
    tiny = compositions._build(stack, ARGS, backend)
    return tiny(seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["torchao int8 weight-only",
                                  "first-block cache (threshold 0.2), regional compilation"])
def test_a_composition_that_works_reduces_and_stays_close(name):
    stack = _stack(name)
    if stack.not_tried:
        pytest.skip(stack.not_tried)
    if "torchao" in name:
        pytest.importorskip("torchao", reason="torchao is not installed (pip install -e .[quant])")
    try:
        reference = _video(stack, "inductor")
        unreduced = _video(stack, AsymRnRBackend(AsymRnRConfig(q_ratio=0.0, kv_ratio=0.0, **SMALL_GRID)))
        torch.testing.assert_close(unreduced, reference, atol=1e-5, rtol=0)
        backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, **SMALL_GRID))
        video = _video(stack, backend)
    finally:
        torch._dynamo.reset()
    report = backend.report().to_dict()
    sites = [site for graph in report["graphs"] for site in graph["sites"] if site.get("video_tokens")]
    assert sites and all(site.get("applied") for site in sites), backend.report().summary()
    assert report["cache_misses"] > 0
    assert torch.isfinite(video).all() and psnr_db(video, reference) >= PSNR_FLOOR_DB
