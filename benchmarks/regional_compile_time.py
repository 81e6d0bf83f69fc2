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
variants both compile in it) and then the same loop again, timing both; compiling is the first
loop minus the second (Dynamo capture, analysis and Inductor), and the first call alone is the
time to the first output.

    python benchmarks/regional_compile_time.py --model wan --blocks 8 --json out/regional.json
    # ~10 minutes on 2 cores
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
OPTIONS = {"q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2}


def _child(kind: str, model_name: str, blocks: int, steps: int, threads: int) -> dict:
    import torch
    import torch._dynamo
    from e2e import build_workload
    from torch._dynamo.utils import counters

    import asymrnr_compile
    from asymrnr_compile.regional import repeated_block_classes
    from asymrnr_compile.sampling import sample

    torch.set_num_threads(threads)
    workload = build_workload(model_name, steps=steps)
    torch.manual_seed(0)
    model = type(workload.model).from_config(workload.model.config, num_layers=blocks).eval()
    workload = dataclasses.replace(workload, model=model)
    options = {**OPTIONS, "min_video_tokens": workload.min_video_tokens}
    if kind == "inductor_whole":
        compiled = torch.compile(model, backend="inductor", dynamic=False)
    elif kind == "inductor_regional":
        classes = repeated_block_classes(model)
        for module in model.modules():
            if type(module).__name__ in classes:
                module.compile(backend="inductor", dynamic=False)
        compiled = model
    elif kind == "asymrnr_whole":
        compiled = torch.compile(model, backend="asymrnr", dynamic=False, options=options)
    else:
        compiled = asymrnr_compile.compile_repeated_blocks(model, options=options)
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
    if kind.startswith("asymrnr"):
        report = asymrnr_compile.last_backend().report()
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
    print(f"{'kind':<20}{'first call s':>14}{'compile s':>12}{'steady loop s':>15}")
    for kind, row in results["kinds"].items():
        print(f"{kind:<20}{row['first_call_seconds']:>14.1f}{row['compile_seconds']:>12.1f}"
              f"{row['steady_loop_seconds']:>15.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
