"""A variant is built (rewritten and split) once per distinct plan, however many calls run it:
the per-call ReductionPlan is only the key that finds it."""

from __future__ import annotations

import torch
import torch._dynamo
from helpers import eager_compiler

import asymrnr_compile.runtime.runtime as runtime_module
from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_compile.runtime import AsymRnRRuntime
from asymrnr_lab.models import build_reference_model, reference_inputs

STEPS = 6


def test_each_variant_is_built_once_per_distinct_plan(monkeypatch):
    monkeypatch.setattr("asymrnr_compile.backend.inductor_compiler", eager_compiler)
    built = []
    compile_variant = runtime_module.compile_variant

    def counting(gm, sites, plan, subgraphs):
        built.append(plan)
        return compile_variant(gm, sites, plan, subgraphs)

    monkeypatch.setattr(runtime_module, "compile_variant", counting)
    torch._dynamo.reset()
    model, inputs = build_reference_model("tiny"), reference_inputs("tiny")
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, min_video_tokens=16, cache_steps=2))
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    with torch.no_grad():
        for step in range(STEPS):
            compiled(**{**inputs, "timestep": torch.full((2,), 900.0 - 100 * step)})
    torch._dynamo.reset()
    (runtime,) = backend.graphs
    assert isinstance(runtime, AsymRnRRuntime) and runtime.calls == STEPS
    assert len(built) == len(set(built)) == len(runtime.variants) >= 2  # compute and reuse, each built once
