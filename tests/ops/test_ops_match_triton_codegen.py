"""The fused matching kernel compiled for a Hopper GPU (H100/H200, sm_90) on a machine without one.

Triton compiles offline (to PTX, then to a cubin with the ptxas its wheel bundles), so the kernel
the GPU would run is checked here: every constexpr combination :func:`nearest_dst` launches
compiles, half-precision features are multiplied on the tensor cores (``wgmma`` with float32
accumulation), and float32 features on the float32 units (IEEE, no ``mma``). The compile runs in
a child process without ``TRITON_INTERPRET`` (tests/conftest.py sets it for this process, and
``triton.jit`` reads it when the kernel is built).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("triton")

HOPPER = 90  # compute capability of the H100/H200 the GPU benchmarks ran on
COMPILE_TIMEOUT_SECONDS = 600

_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from asymrnr_compile.ops import match_triton

    arch = int(sys.argv[1])
    _, kernel = match_triton._kernel(False)
    pointer = {"feat_ptr": None, "src_ptr": "*i64", "dst_ptr": "*i64", "distance_ptr": "*fp32", "index_ptr": "*i64"}
    scalar = {"num_src": "i32", "num_dst": "i32", "channels": "i32",
              "stride_fp": "i64", "stride_fn": "i64", "stride_fc": "i64", "stride_op": "i64"}
    dtypes = {torch.bfloat16: "*bf16", torch.float16: "*fp16", torch.float32: "*fp32"}
    results = {}
    for dtype, pointer_type in dtypes.items():
        for euclidean, src_in_registers in ((True, True), (True, False), (False, True)):
            signature, constexprs = {}, {
                "EUCLIDEAN": euclidean, "DISTANCE_OFFSET": 0.0, "SRC_IN_REGISTERS": src_in_registers,
                "HALF_DOT": match_triton.multiplies_unwidened(dtype), "BLOCK_S": match_triton.BLOCK_SRC,
                "BLOCK_D": match_triton.BLOCK_DST, "BLOCK_C": match_triton.BLOCK_CHANNELS}
            for name in kernel.arg_names:
                if name in constexprs:
                    signature[name] = "constexpr"
                elif name in pointer:
                    signature[name] = pointer[name] or pointer_type
                else:
                    signature[name] = scalar[name]  # a new kernel argument must be added here
            compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                                      target=GPUTarget("cuda", arch, 32),
                                      options={"num_warps": match_triton.NUM_WARPS})
            mma = sorted({line.split()[0] for line in compiled.asm["ptx"].splitlines() if "mma" in line})
            key = f"{str(dtype).removeprefix('torch.')} euclidean={euclidean} src_in_registers={src_in_registers}"
            results[key] = {"half_dot": constexprs["HALF_DOT"], "mma": mma, "cubin_bytes": len(compiled.asm["cubin"])}
    print(json.dumps(results))
""")


@pytest.fixture(scope="module")
def compiled_for_hopper() -> dict[str, dict]:
    env = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    done = subprocess.run([sys.executable, "-c", _SCRIPT, str(HOPPER)], env=env, capture_output=True, text=True,
                          timeout=COMPILE_TIMEOUT_SECONDS)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_every_launched_variant_compiles_for_hopper(compiled_for_hopper):
    assert len(compiled_for_hopper) == 9
    assert all(case["cubin_bytes"] > 0 for case in compiled_for_hopper.values())


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_features_use_the_tensor_cores(compiled_for_hopper, dtype):
    for key, case in compiled_for_hopper.items():
        if key.startswith(dtype):
            assert case["half_dot"], key
            assert f"wgmma.mma_async.sync.aligned.m64n64k16.f32.{'bf16' if dtype == 'bfloat16' else 'f16'}" \
                   f".{'bf16' if dtype == 'bfloat16' else 'f16'}" in case["mma"], (key, case["mma"])


def test_float32_features_are_multiplied_in_ieee_float32(compiled_for_hopper):
    for key, case in compiled_for_hopper.items():
        if key.startswith("float32"):
            assert not case["half_dot"] and case["mma"] == [], (key, case["mma"])  # no TF32 tensor-core math
