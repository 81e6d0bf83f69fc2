"""The Triton path: the ops and the backend on a CUDA device match the CPU path and Inductor.

Skipped where ``torch.cuda.is_available()`` is False (CI has no GPU); run on a GPU machine with
``pytest tests/gpu`` (``benchmarks/gpu_checks.sh`` does, first). The CPU tests establish that
the rewrite is right; these establish that Inductor's CUDA code generation (Triton kernels,
cuBLAS / flash attention for the matmuls) computes the same thing:

- the op pipeline (split -> match -> indices -> reduce -> restore) compiled on CUDA selects the
  same tokens as eager CPU and gives the same values (float32), or close ones (bfloat16);
- the backend with all ratios 0 on CUDA is plain Inductor on CUDA;
- a reducing backend over a sampling loop with the matching cache on CUDA gives the CPU result
  (float32, TF32 off) and stays close in bfloat16; every case asserts from the report that the
  rewrite fired.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch._dynamo
from helpers import max_relative_error

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_compile.ops import (
    match_tokens,
    num_kept_tokens,
    reduce_tokens,
    reduction_indices,
    restore_tokens,
    split_tokens,
)
from asymrnr_lab.models import build_reference_model, reference_inputs
from asymrnr_lab.sampling import SamplerConfig, sample

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = "cuda"
#: The "small" preset: 576 video tokens per site, two blocks (reduction really happens).
PRESET = "small"
#: Largest |difference| / largest |value| allowed between CUDA and CPU in float32 with TF32 off (reduction order of
#: the matmuls and of attention differs between the devices; nothing else may).
FLOAT32_DEVICE_TOLERANCE = 1e-4
#: Relative L2 error allowed between a reduced bfloat16 CUDA run and the float32 one. Measured on
#: the CPU (4 steps, q 0.5 / kv 0.3): 0.014 unreduced, 0.034 reduced (bf16 distances flip some
#: matches, so a few restored rows copy another neighbour; the largest single difference is
#: 0.23 of the largest value, which is why this is an L2 and not a max bound).
BFLOAT16_TOLERANCE = 0.1
SAMPLING_STEPS = 4
CACHE_STEPS = 2


@pytest.fixture(autouse=True)
def _exact_float32():
    """TF32 would make CUDA float32 matmuls and convolutions ~1e-3 off the CPU."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _pipeline(n: int, grid: tuple[int, int, int], before: int, ratio: float):
    def pipeline(x):
        split = split_tokens(n, grid, seed=7)
        matching = match_tokens(x, split, start=before)
        indices = reduction_indices(split, matching, num_kept_tokens(n, len(split.dst), ratio))
        reduced = reduce_tokens(x, indices, start=before)
        return matching.nearest, indices.keep, reduced, restore_tokens(reduced * 2, indices, start=before)

    return pipeline


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
def test_compiled_op_pipeline_on_cuda_matches_eager_cpu(dtype):
    grid, before, after = (4, 6, 8), 7, 3
    n = math.prod(grid)
    pipeline = _pipeline(n, grid, before, ratio=0.5)
    x = torch.randn(2, 3, before + n + after, 16, generator=torch.Generator().manual_seed(0)).to(dtype)
    nearest_cpu, keep_cpu, reduced_cpu, restored_cpu = pipeline(x)
    compiled = torch.compile(pipeline, backend="inductor", fullgraph=True)
    nearest, keep, reduced, restored = (t.cpu() for t in compiled(x.to(CUDA)))
    assert reduced.shape[2] < x.shape[2]  # tokens were dropped
    if dtype == torch.float32:
        # Distances of random features are far apart: the same nearest neighbours and kept tokens.
        assert torch.equal(nearest, nearest_cpu) and torch.equal(keep, keep_cpu)
        torch.testing.assert_close(reduced, reduced_cpu, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(restored, restored_cpu, rtol=1e-6, atol=1e-6)
    else:
        # bf16 distances can tie differently on the two devices; the selection must still agree
        # on nearly every token.
        agreement = (nearest == nearest_cpu).float().mean().item()
        assert agreement >= 0.95, f"only {agreement:.1%} of nearest neighbours agree"
        assert torch.isfinite(restored.float()).all()


def _backend_output(config: AsymRnRConfig, device: str, dtype: torch.dtype = torch.float32):
    model = build_reference_model(PRESET, seed=0).to(device=device, dtype=dtype).eval()
    inputs = reference_inputs(PRESET, seed=0, device=device, dtype=dtype)
    backend = AsymRnRBackend(config)
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    text, null_text = inputs["encoder_hidden_states"][:1], inputs["encoder_hidden_states"][1:]
    with torch.no_grad():
        latent = sample(compiled, inputs["hidden_states"][:1], text, null_text,
                        SamplerConfig(steps=SAMPLING_STEPS))
    torch._dynamo.reset()
    return latent.float().cpu(), backend.report().to_dict()


def test_ratio_zero_on_cuda_is_plain_inductor():
    model = build_reference_model(PRESET, seed=0).to(CUDA).eval()
    inputs = reference_inputs(PRESET, seed=0, device=CUDA)
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.0, kv_ratio=0.0))
    with torch.no_grad():
        out = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)(**inputs)
        torch._dynamo.reset()
        plain = torch.compile(model, backend="inductor", fullgraph=True, dynamic=False)(**inputs)
    assert max_relative_error(out, plain) <= 1e-5
    assert backend.report().to_dict()["graphs"][0]["fallback_reason"].startswith("no attention site")


def test_reduced_sampling_loop_on_cuda_matches_cpu():
    config = AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=CACHE_STEPS)
    on_cuda, report = _backend_output(config, CUDA)
    on_cpu, _ = _backend_output(config, "cpu")
    assert report["cache_misses"] > 0 and report["cache_hits"] > 0  # matched, then reused
    applied = report["graphs"][0]["sites"][0]["applied"]
    assert applied["q"]["kept_tokens"] < 576 and applied["kv"]["kept_tokens"] < 576
    error = max_relative_error(on_cuda, on_cpu)
    assert error <= FLOAT32_DEVICE_TOLERANCE, f"CUDA vs CPU relative error {error:.2e}"


def test_reduced_sampling_loop_in_bfloat16_on_cuda_stays_close_to_float32():
    config = AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=CACHE_STEPS)
    full, _ = _backend_output(config, CUDA)
    half, report = _backend_output(config, CUDA, torch.bfloat16)
    assert report["cache_misses"] > 0
    assert torch.isfinite(half).all()
    error = float((half - full).norm() / full.norm())
    assert error <= BFLOAT16_TOLERANCE, f"bfloat16 vs float32 relative L2 error {error:.2e}"


#: Settings whose calls must not synchronise the host with the GPU: the published ones (one split
#: for the run) and the defaults (a new split per matching window, the projection, hidden states).
HOST_SYNC_SETTINGS = {
    "published": {"preset": "published", "q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": CACHE_STEPS},
    "defaults": {"min_video_tokens": 256, "cache_steps": CACHE_STEPS},
}


@pytest.mark.parametrize("setting", sorted(HOST_SYNC_SETTINGS))
def test_no_host_sync_inside_a_step_on_cuda(setting, monkeypatch):
    """Every call after warm-up, matching calls (a new split each window with the defaults) and
    reusing calls alike, runs under ``torch.cuda.set_sync_debug_mode("error")``: any ``.item()``,
    data-dependent shape or blocking copy raises. The one allowed read is the call's timestep (the
    runtime's step signal), let through by switching the mode off around it. The CPU twin of this
    test (``tests/backend/test_backend_host_syncs.py``) counts the same ops with the profiler."""
    from asymrnr_compile.runtime import runtime as runtime_module

    read_timestep = runtime_module.read_timestep

    def read_timestep_allowed(value):
        mode = torch.cuda.get_sync_debug_mode()
        torch.cuda.set_sync_debug_mode(0)
        try:
            return read_timestep(value)
        finally:
            torch.cuda.set_sync_debug_mode(mode)

    monkeypatch.setattr(runtime_module, "read_timestep", read_timestep_allowed)
    model = build_reference_model(PRESET, seed=0).to(CUDA, dtype=torch.bfloat16).eval()
    inputs = reference_inputs(PRESET, seed=0, batch_size=2, device=CUDA, dtype=torch.bfloat16)
    backend = AsymRnRBackend(AsymRnRConfig.from_options(HOST_SYNC_SETTINGS[setting]))
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    timesteps = [torch.full_like(inputs["timestep"], 1000.0 - 50.0 * step) for step in range(8)]
    with torch.no_grad():
        for timestep in timesteps[:3]:  # compiles every variant
            compiled(**{**inputs, "timestep": timestep})
        torch.cuda.synchronize()
        misses, hits = backend.report().to_dict()["cache_misses"], backend.report().to_dict()["cache_hits"]
        torch.cuda.set_sync_debug_mode("error")
        try:
            for timestep in timesteps[3:]:
                compiled(**{**inputs, "timestep": timestep})
        finally:
            torch.cuda.set_sync_debug_mode(0)
        torch.cuda.synchronize()
    report = backend.report().to_dict()
    assert report["cache_misses"] > misses and report["cache_hits"] > hits  # matched and reused under the check
