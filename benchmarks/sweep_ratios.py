"""Speed against quality over (q_ratio, kv_ratio) settings on the reference DiT.

This is the measurement behind the backend's default ratios. Each setting runs the same
flow-matching CFG sampling loop as the demo, timed step by step interleaved with plain
Inductor (same inputs, same machine load); the headline is the whole loop's speedup, matching
steps included (the median step is a second column), and its final latent is compared
with Inductor's (relative L2, PSNR). The model has random seeded weights: the errors measure
numerical closeness to the unreduced model, not visual quality.

    python benchmarks/sweep_ratios.py --json out/sweep.json            # about 4 minutes on 2 cores
    python benchmarks/sweep_ratios.py --preset small --steps 4 --quick  # a smoke run
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import torch

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_lab.cli.demo import demo_inputs, timed_sample
from asymrnr_lab.metrics import loop_speedup, psnr_db, relative_l2
from asymrnr_lab.models import build_reference_model
from asymrnr_lab.sampling import SamplerConfig, sample_lockstep

SETTINGS = [(0.0, 0.0), (0.3, 0.0), (0.0, 0.3), (0.3, 0.2), (0.5, 0.3), (0.6, 0.4), (0.7, 0.5)]
QUICK_SETTINGS = [(0.5, 0.3)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="attention")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cache-steps", type=int, default=5)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="only q 0.5 / kv 0.3")
    args = parser.parse_args(argv)

    sampler = SamplerConfig(steps=args.steps)
    model = build_reference_model(args.preset)
    inputs = demo_inputs(args.preset)
    inductor = torch.compile(model, backend="inductor", fullgraph=True, dynamic=False)
    print(f"warm-up inductor ({args.preset}, {args.steps} steps)...", flush=True)
    start = time.perf_counter()
    timed_sample(inductor, inputs, sampler)
    inductor_warmup = time.perf_counter() - start
    rows = []
    for q_ratio, kv_ratio in QUICK_SETTINGS if args.quick else SETTINGS:
        config = AsymRnRConfig(preset="published", q_ratio=q_ratio, kv_ratio=kv_ratio, cache_steps=args.cache_steps)
        backend = AsymRnRBackend(config)
        compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
        print(f"q {q_ratio} / kv {kv_ratio}: warm-up...", flush=True)
        start = time.perf_counter()
        timed_sample(compiled, inputs, sampler)
        warmup = time.perf_counter() - start
        backend.reset()
        with torch.no_grad():
            latents, step_seconds = sample_lockstep({"inductor": inductor, "asymrnr": compiled}, inputs.noise,
                                                    inputs.text, inputs.null_text, sampler)
        reference, inductor_seconds = latents["inductor"], step_seconds["inductor"]
        latent, seconds = latents["asymrnr"], step_seconds["asymrnr"]
        report = backend.report()
        matching_steps = sorted({step for graph in backend.graphs for step in getattr(graph, "matching_steps", [])})
        speed = loop_speedup(inductor_seconds, seconds, args.steps, matching_steps)
        row = {
            "q_ratio": q_ratio, "kv_ratio": kv_ratio,
            "loop_seconds": sum(seconds),
            "inductor_loop_seconds": sum(inductor_seconds),
            "loop_speedup_vs_inductor": speed.loop,
            "loop_efficiency": speed.loop / report.ideal_speedup,
            "median_step_speedup_vs_inductor": speed.median_step,
            "matching_step_cost": speed.matching_step_cost,
            "ideal_speedup": report.ideal_speedup,
            "rel_l2": relative_l2(latent, reference),
            "psnr_db": psnr_db(latent, reference),
            "warmup_seconds": warmup,
            "compile_seconds": report.to_dict()["compile_seconds"],
        }
        rows.append(row)
        print(f"  loop {row['loop_speedup_vs_inductor']:.2f}x (ideal {row['ideal_speedup']:.2f}x; median step "
              f"{row['median_step_speedup_vs_inductor']:.2f}x), "
              f"rel L2 {row['rel_l2']:.3e}, PSNR {row['psnr_db']:.1f} dB", flush=True)
        torch._dynamo.reset()

    print(f"\n{'q':>5}{'kv':>6}{'loop':>8}{'ideal':>8}{'loop eff':>9}{'median step':>12}{'rel L2':>10}{'PSNR':>7}")
    for row in rows:
        print(f"{row['q_ratio']:>5}{row['kv_ratio']:>6}{row['loop_speedup_vs_inductor']:>7.2f}x"
              f"{row['ideal_speedup']:>7.2f}x{row['loop_efficiency']:>9.2f}{row['median_step_speedup_vs_inductor']:>11.2f}x"
              f"{row['rel_l2']:>10.2e}{row['psnr_db']:>7.1f}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "preset": args.preset, "steps": args.steps, "cache_steps": args.cache_steps,
            "inductor_warmup_seconds": inductor_warmup, "results": rows,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        }, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
