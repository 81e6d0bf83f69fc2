"""Compile cost: all asymrnr variants a sampling loop needs vs one plain Inductor compile.

Each side runs in its own child process with its own, empty Inductor cache directory, so that
neither benefits from kernels the other compiled (cold start, as a user's first run).

- inductor: seconds spent in ``compile_fx`` for the model's one Dynamo graph;
- asymrnr: seconds spent compiling every subgraph of every variant the loop needed (from the
  backend's report), plus the Dynamo capture and analysis are not counted on either side.

    python benchmarks/compile_time.py --json out/compile.json     # ~3-4 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _child(kind: str, preset: str, steps: int) -> dict:
    import torch
    from torch._inductor.compile_fx import compile_fx

    from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
    from asymrnr_lab.cli.demo import demo_inputs, timed_sample
    from asymrnr_lab.models import build_reference_model
    from asymrnr_lab.sampling import SamplerConfig

    model = build_reference_model(preset)
    inputs = demo_inputs(preset)
    sampler = SamplerConfig(steps=steps)
    seconds: list[float] = []
    if kind == "inductor":
        def backend(gm, example_inputs):
            start = time.perf_counter()
            compiled = compile_fx(gm, example_inputs)
            seconds.append(time.perf_counter() - start)
            return compiled
    else:
        backend = AsymRnRBackend(AsymRnRConfig(preset="published", q_ratio=0.5, kv_ratio=0.3, cache_steps=5))
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    start = time.perf_counter()
    timed_sample(compiled, inputs, sampler)
    first_loop = time.perf_counter() - start
    _, step_seconds = timed_sample(compiled, inputs, sampler)
    result = {"first_loop_seconds": first_loop, "steady_loop_seconds": sum(step_seconds)}
    if kind == "inductor":
        result.update(compile_seconds=sum(seconds), graphs=len(seconds))
    else:
        report = backend.report().to_dict()
        graph = report["graphs"][0]
        result.update(compile_seconds=report["compile_seconds"], graphs=len(report["graphs"]),
                      variants=report["num_variants"], subgraphs_compiled=graph.get("subgraphs_compiled"),
                      subgraphs_reused=graph.get("subgraphs_reused"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="attention")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--json")
    parser.add_argument("--child", choices=["inductor", "asymrnr"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.preset, args.steps)))
        return 0
    results = {}
    for kind in ("inductor", "asymrnr"):
        with tempfile.TemporaryDirectory(prefix=f"inductor-cache-{kind}-") as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache}
            print(f"{kind}: compiling in a fresh cache ({args.preset}, {args.steps}-step loop)...", flush=True)
            out = subprocess.run([sys.executable, __file__, "--child", kind, "--preset", args.preset,
                                  "--steps", str(args.steps)], env=env, capture_output=True, text=True, check=True)
            results[kind] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {results[kind]}", flush=True)
    ratio = results["asymrnr"]["compile_seconds"] / results["inductor"]["compile_seconds"]
    print(f"\nasymrnr compile (all variants) / plain inductor compile = {ratio:.2f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"preset": args.preset, "steps": args.steps,
                                               "compile_ratio": ratio, **results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
