"""No host synchronisation inside a step: the only scalar the backend reads from a tensor is the
call's timestep, once per call (it decides whether this call computes or reuses the matching).

On a GPU every such read (``.item()``, ``float(t)``, ``.tolist()``, data-dependent shapes such as
``nonzero``) stalls the host until the device has finished all queued work. Those ops are the
same on a CPU, so a CPU profile of the calls shows them: the profiler records every ATen op a
call dispatches (eager ops, the compiled graph's extern kernels and the custom matching ops),
and the ops that would synchronise a GPU are counted here for calls that compute a matching and
calls that reuse one, under the published settings and the defaults. On a GPU,
``tests/gpu/test_cuda.py`` checks the same with ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch
import torch._dynamo
from torch.profiler import ProfilerActivity, profile

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig, compile_repeated_blocks
from asymrnr_compile.ops.match import MATCH_OP_NAME
from asymrnr_compile.regional import input_layout_of, repeated_block_classes
from asymrnr_compile.runtime import runtime as runtime_module
from asymrnr_lab.models import build_reference_model, reference_inputs

#: The "small" preset: 576 video tokens per site, so the defaults' projection is used.
PRESET = "small"
#: ATen ops that make a CUDA host wait for the device: a scalar read (``item``, ``float()``,
#: ``tolist``, ``bool()``) or an output whose size depends on tensor values.
HOST_SYNC_OPS = frozenset({
    "aten::_local_scalar_dense", "aten::nonzero", "aten::masked_select", "aten::unique", "aten::_unique2",
    "aten::unique_consecutive", "aten::unique_dim", "aten::repeat_interleave", "aten::equal", "aten::is_nonzero",
    "aten::allclose",
})
WARMUP_CALLS = 3
PROFILED_CALLS = 4  # with cache_steps 2: two calls compute a matching, two reuse it
DIFFUSERS_FAMILY = "cogvideox"  # batched CFG, text first; the cheapest family to compile
SETTINGS = {
    "published": {"preset": "published", "q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2, "min_video_tokens": 16},
    "defaults": {"min_video_tokens": 16},
}


def _ops_per_call(compiled, inputs, timesteps) -> list[Counter]:
    """Every ATen op (and custom op) each call dispatches, by name, for the calls after the first
    ``WARMUP_CALLS`` (which compile): ``compiled(**inputs)`` with the timestep set to each of
    ``timesteps`` in turn."""
    per_call = []
    with torch.no_grad():
        for index, timestep in enumerate(timesteps):
            step_inputs = {**inputs, "timestep": torch.full_like(inputs["timestep"], timestep)}
            if index < WARMUP_CALLS:
                compiled(**step_inputs)
                continue
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                compiled(**step_inputs)
            per_call.append(Counter(event.name for event in prof.events()))
    return per_call


def _host_syncs(ops: Counter) -> Counter:
    return Counter({name: count for name, count in ops.items() if name in HOST_SYNC_OPS})


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_the_timestep_read_is_the_only_host_sync_of_a_call(setting, monkeypatch):
    timestep_reads = []

    def counting_read_timestep(value):
        timestep_reads.append(value)
        return read_timestep(value)

    read_timestep = runtime_module.read_timestep
    monkeypatch.setattr(runtime_module, "read_timestep", counting_read_timestep)
    model = build_reference_model(PRESET, seed=0).eval()
    inputs = reference_inputs(PRESET, seed=0, batch_size=2)
    backend = AsymRnRBackend(AsymRnRConfig.from_options(SETTINGS[setting]))
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    timesteps = [1000.0 - 50.0 * step for step in range(WARMUP_CALLS + PROFILED_CALLS)]
    per_call = _ops_per_call(compiled, inputs, timesteps)
    del timestep_reads[:WARMUP_CALLS]
    torch._dynamo.reset()

    sites = backend.report().to_dict()["graphs"][0]["sites"]
    assert sites and all(site.get("applied") for site in sites)  # every site is reduced
    # calls that compute matchings (one per site and feature) and calls that reuse them
    assert sorted({ops[MATCH_OP_NAME] for ops in per_call}) == [0, 2 * len(sites)]
    assert len(timestep_reads) == PROFILED_CALLS
    assert [_host_syncs(ops) for ops in per_call] == [Counter({"aten::_local_scalar_dense": 1})] * PROFILED_CALLS


@pytest.mark.parametrize("regional", [False, True], ids=["whole-model", "regional"])
def test_a_diffusers_transformer_gets_one_host_sync_per_call_more_than_plain_inductor(regional):
    """A diffusers transformer (CogVideoX, tiny, seeded) compiled whole or by its repeated blocks:
    asymrnr's calls wait for the device once more than plain Inductor's (the timestep read), and
    nowhere else, in calls that compute a matching and calls that reuse one. Regionally, the
    model's own code between the blocks runs eagerly and may read tensors of its own: those are
    in both counts."""
    pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers])")
    from test_backend_diffusers import client_model

    timesteps = [999.0 - 50.0 * call for call in range(WARMUP_CALLS + PROFILED_CALLS)]
    counts = {}
    for name in ("inductor", "asymrnr"):
        torch._dynamo.reset()
        model, inputs, _ = client_model(DIFFUSERS_FAMILY)
        if name == "asymrnr":
            backend = AsymRnRBackend(AsymRnRConfig.from_options(
                {"q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2, "min_video_tokens": 16}))
            compiled = (compile_repeated_blocks(model, backend=backend, fullgraph=True) if regional
                        else torch.compile(model, backend=backend, fullgraph=True, dynamic=False))
        else:
            if regional:  # the blocks asymrnr's regional compilation compiles, with plain Inductor
                classes = repeated_block_classes(model, input_layout_of(model))
                for block in [module for module in model.modules() if type(module).__name__ in classes]:
                    block.compile(backend="inductor", fullgraph=True, dynamic=False)
                compiled = model
            else:
                compiled = torch.compile(model, backend="inductor", fullgraph=True, dynamic=False)
        counts[name] = [_host_syncs(ops) for ops in _ops_per_call(compiled, inputs, timesteps)]
    torch._dynamo.reset()

    report = backend.report().to_dict()
    assert report["cache_misses"] > 0 and report["cache_hits"] > 0  # matched and reused
    one_read = Counter({"aten::_local_scalar_dense": 1})
    assert counts["asymrnr"] == [plain + one_read for plain in counts["inductor"]]
