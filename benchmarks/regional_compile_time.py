"""Cold compile cost of regional against whole-model compilation, plain Inductor and asymrnr.

Four ways to compile one diffusers family at its benchmark shape (``benchmarks/e2e.py``'s
workload: the pipeline's call pattern, 2,304 video tokens), with ``--blocks`` transformer blocks:

- ``inductor_whole``: ``torch.compile(model, backend="inductor")``;
- ``inductor_regional``: ``model.compile_repeated_blocks(backend="inductor")`` (diffusers; for a
  model without ``_repeated_blocks``, each block class of the registry compiled the same way);
- ``asymrnr_whole``: ``torch.compile(model, backend="asymrnr", options=...)``;
- ``asymrnr_regional``: ``asymrnr_compile.compile_repeated_blocks(model, options=...)``.

Each runs in its own child process with its own empty Inductor cache directory (a user's first
run). A child samples one loop (``--steps`` steps, cache window 2: the computing and the reusing
variants both compile in it) and then the same loop again, timing both, and the first call alone:
the time to the first output, the headline. The second loop is a poor speed measure here (one
loop, right after Inductor's compile workers started; it varied 3-28 s between runs), so the
difference of the two loops (``compile_seconds`` in the JSON) is only a rough compile time;
asymrnr's own count of its Inductor seconds is exact. Use ``--speed`` for speed.

    python benchmarks/regional_compile_time.py --model wan --blocks 8 --json out/regional.json
    # ~10 minutes on 2 cores

``--speed`` instead compiles the four in one process, warms each up with one loop, and then times
one loop of each interleaved step by step (``sample_lockstep``: the same machine load for all),
to see whether compiling regionally costs speed once compiled.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

KINDS = ("inductor_whole", "inductor_regional", "asymrnr_whole", "asymrnr_regional")
OPTIONS = {"preset": "published", "q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2}


def _workload(model_name: str, blocks: int, steps: int):
    """The family's benchmark workload with ``blocks`` blocks (seeded weights, eager)."""
    import torch
    from e2e import build_workload

    workload = build_workload(model_name, steps=steps)
    torch.manual_seed(0)
    model = type(workload.model).from_config(workload.model.config, num_layers=blocks).eval()
    return dataclasses.replace(workload, model=model)


def _compiled(kind: str, model, options: dict):
    """``(callable, asymrnr backend or None)``: ``model`` compiled the ``kind`` way (in place for
    the regional ways)."""
    import torch

    import asymrnr_compile
    from asymrnr_compile.regional import repeated_block_classes

    if kind == "inductor_whole":
        return torch.compile(model, backend="inductor", dynamic=False), None
    if kind == "inductor_regional":
        classes = repeated_block_classes(model)
        for module in model.modules():
            if type(module).__name__ in classes:
                module.compile(backend="inductor", dynamic=False)
        return model, None
    backend = asymrnr_compile.AsymRnRBackend(asymrnr_compile.AsymRnRConfig(**options))
    if kind == "asymrnr_whole":
        return torch.compile(model, backend=backend, dynamic=False), backend
    return asymrnr_compile.compile_repeated_blocks(model, backend=backend), backend


def _speed(model_name: str, blocks: int, steps: int, threads: int) -> dict:
    import torch

    from asymrnr_lab.sampling import sample, sample_lockstep

    torch.set_num_threads(threads)
    fns = {}
    for kind in KINDS:
        workload = _workload(model_name, blocks, steps)
        compiled, _ = _compiled(kind, workload.model, {**OPTIONS, "min_video_tokens": workload.min_video_tokens})
        fn = workload.call(compiled)
        print(f"{kind}: warm-up loop (compiling)...", flush=True)
        with torch.no_grad():
            sample(fn, workload.noise, workload.text, workload.null_text, workload.sampler)
        fns[kind] = fn
    with torch.no_grad():
        latents, seconds = sample_lockstep(fns, workload.noise, workload.text, workload.null_text, workload.sampler)
    return {kind: {"loop_seconds": sum(seconds[kind]), "step_seconds": seconds[kind]} for kind in KINDS}


def _child(kind: str, model_name: str, blocks: int, steps: int, threads: int) -> dict:
    import torch
    from torch._dynamo.utils import counters

    from asymrnr_lab.sampling import sample

    torch.set_num_threads(threads)
    workload = _workload(model_name, blocks, steps)
    compiled, backend = _compiled(kind, workload.model, {**OPTIONS, "min_video_tokens": workload.min_video_tokens})
    calls: list[float] = []

    def first_call_timed(**kwargs):
        start = time.perf_counter()
        out = compiled(**kwargs)
        if not calls:
            calls.append(time.perf_counter() - start)
        return out

    fn = workload.call(first_call_timed)
    with torch.no_grad():
        start = time.perf_counter()
        sample(fn, workload.noise, workload.text, workload.null_text, workload.sampler)
        first_loop = time.perf_counter() - start
        start = time.perf_counter()
        sample(fn, workload.noise, workload.text, workload.null_text, workload.sampler)
        steady_loop = time.perf_counter() - start
    result = {"first_call_seconds": calls[0], "first_loop_seconds": first_loop, "steady_loop_seconds": steady_loop,
              "compile_seconds": first_loop - steady_loop, "dynamo_graphs": counters["stats"]["unique_graphs"]}
    if backend is not None:
        report = backend.report()
        data = report.to_dict()
        result.update(summary=report.summary().splitlines()[0], variants=data["num_variants"],
                      inductor_seconds=data["compile_seconds"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="wan", help="a diffusers family of benchmarks/e2e.py (default wan)")
    parser.add_argument("--blocks", type=int, default=8, help="transformer blocks (default 8)")
    parser.add_argument("--steps", type=int, default=3, help="steps per loop (default 3)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated subset of " + ",".join(KINDS))
    parser.add_argument("--speed", action="store_true",
                        help="time the compiled loops side by side in one process instead (no cold compile)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.blocks < 1 or args.steps < 1 or args.threads < 1:
        parser.error("--blocks, --steps and --threads must be positive")
    kinds = args.kinds.split(",")
    if any(kind not in KINDS for kind in kinds):
        parser.error(f"--kinds must be a subset of {','.join(KINDS)}")
    if args.child:
        print(json.dumps(_child(args.child, args.model, args.blocks, args.steps, args.threads)))
        return 0
    if args.speed:
        load_before = os.getloadavg()
        speed = _speed(args.model, args.blocks, args.steps, args.threads)
        result = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
                  "load_before": load_before, "load_after": os.getloadavg(), "loops": speed}
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2))
        base = speed["inductor_whole"]["loop_seconds"]
        for kind, row in speed.items():
            print(f"{kind:<20}{row['loop_seconds']:>8.2f} s  ({base / row['loop_seconds']:.2f}x inductor_whole)")
        return 0
    results = {"command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
               "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "load_before": os.getloadavg(), "model": args.model, "blocks": args.blocks, "steps": args.steps,
               "threads": args.threads, "kinds": {}}
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix=f"inductor-cache-{kind}-") as cache:
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "OMP_NUM_THREADS": str(args.threads)}
            print(f"{kind}: {args.model}, {args.blocks} blocks, fresh Inductor cache...", flush=True)
            out = subprocess.run([sys.executable, __file__, "--child", kind, "--model", args.model,
                                  "--blocks", str(args.blocks), "--steps", str(args.steps),
                                  "--threads", str(args.threads)],
                                 env=env, capture_output=True, text=True, check=True)
            results["kinds"][kind] = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"  {json.dumps(results['kinds'][kind])}", flush=True)
    results["load_after"] = os.getloadavg()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    print(f"{'kind':<20}{'first call s':>14}{'first loop s':>14}{'second loop s':>15}")
    for kind, row in results["kinds"].items():
        print(f"{kind:<20}{row['first_call_seconds']:>14.1f}{row['first_loop_seconds']:>14.1f}"
              f"{row['steady_loop_seconds']:>15.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
