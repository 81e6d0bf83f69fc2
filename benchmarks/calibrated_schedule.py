"""Predicted against measured speedup of a calibrated schedule on the reference DiT.

1. Profile the redundancy of the reference DiT (random seeded weights, preset ``attention``)
   over a flow-matching Euler CFG loop (:func:`asymrnr_compile.profile`).
2. :func:`asymrnr_compile.calibrate` a schedule for ``--target-speedup`` (cost-model FLOPs).
3. Run the same loop with plain Inductor, the asymrnr backend with that schedule, and (for
   context) asymrnr with the fixed default ratios q 0.5 / kv 0.3. Every model first runs one
   whole loop as warm-up (compiles every variant it needs); then ``--rounds`` timed loops run
   interleaved step by step (``sample_lockstep``), so all see the same machine load. The
   speedup of a round is Inductor's loop time over the other's; the median over rounds is
   reported with the range.

    python benchmarks/calibrated_schedule.py --json out/calibrated.json   # ~6 minutes on 2 busy cores
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

import asymrnr_compile
from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_compile.profiling.calibrate import calibrate, predicted_speedup
from asymrnr_lab.cli.demo import demo_inputs, timed_sample
from asymrnr_lab.metrics import psnr_db, relative_l2
from asymrnr_lab.models import build_reference_model
from asymrnr_lab.sampling import SamplerConfig, sample, sample_lockstep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="attention")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--cache-steps", type=int, default=5)
    parser.add_argument("--target-speedup", type=float, default=1.5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: torch's default). 1 keeps timings meaningful when another "
                             "process holds one of two cores: OpenMP teams then wait on the preempted thread")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    def log(line: str) -> None:
        print(line, flush=True)

    model = build_reference_model(args.preset, seed=0)
    inputs = demo_inputs(args.preset, 0)
    sampler = SamplerConfig(steps=args.steps)

    start = time.perf_counter()
    log(f"profiling {args.preset} over {args.steps} steps")
    torch._dynamo.reset()
    prof = asymrnr_compile.profile(
        model, lambda m: sample(m, inputs.noise, inputs.text, inputs.null_text, sampler),
        config=AsymRnRConfig(preset="published", cache_steps=args.cache_steps))
    profile_seconds = time.perf_counter() - start
    schedule = calibrate(prof, target_speedup=args.target_speedup, model=f"reference/{args.preset}")
    predicted = predicted_speedup(prof, schedule)
    log(f"  {profile_seconds:.1f} s; calibrated schedule: predicted {predicted:.3f}x")

    torch._dynamo.reset()
    scheduled = AsymRnRBackend(AsymRnRConfig(preset="published", schedule=schedule, cache_steps=args.cache_steps))
    fixed = AsymRnRBackend(AsymRnRConfig(preset="published", q_ratio=0.5, kv_ratio=0.3, cache_steps=args.cache_steps))
    models = {
        "inductor": torch.compile(model, backend="inductor", fullgraph=True, dynamic=False),
        "schedule": torch.compile(model, backend=scheduled, fullgraph=True, dynamic=False),
        "fixed_q0.5_kv0.3": torch.compile(model, backend=fixed, fullgraph=True, dynamic=False),
    }
    warmup = {}
    for name, compiled in models.items():
        log(f"warm-up {name} (compiles what the loop needs)")
        t0 = time.perf_counter()
        scheduled.reset()
        fixed.reset()
        timed_sample(compiled, inputs, sampler)
        warmup[name] = time.perf_counter() - t0
        log(f"  {warmup[name]:.1f} s")
    loop_seconds: dict[str, list[float]] = {name: [] for name in models}
    latents = {}
    for round_index in range(args.rounds):
        log(f"timed round {round_index + 1}/{args.rounds} (interleaved step by step)")
        scheduled.reset()
        fixed.reset()
        with torch.no_grad():
            latents, seconds = sample_lockstep(models, inputs.noise, inputs.text, inputs.null_text, sampler)
        for name in models:
            loop_seconds[name].append(sum(seconds[name]))
    rows = {}
    for name in models:
        speedups = [i / s for i, s in zip(loop_seconds["inductor"], loop_seconds[name])]
        rows[name] = {
            "loop_seconds": loop_seconds[name],
            "loop_speedup_vs_inductor": statistics.median(speedups),
            "loop_speedup_range": [min(speedups), max(speedups)],
            "rel_l2_vs_inductor": relative_l2(latents[name], latents["inductor"]),
            "psnr_db_vs_inductor": psnr_db(latents[name], latents["inductor"]),
            "warmup_seconds": warmup[name],
        }
    report = scheduled.report().to_dict()
    graph = report["graphs"][0]
    result = {
        "preset": args.preset, "steps": args.steps, "cache_steps": args.cache_steps, "rounds": args.rounds,
        "target_speedup": args.target_speedup, "predicted_speedup": predicted,
        "fixed_ideal_speedup": fixed.report().ideal_speedup,
        "measured": rows,
        # the whole loop, matching steps included, over the ideal that counts the matching
        "loop_efficiency": rows["schedule"]["loop_speedup_vs_inductor"] / predicted,
        "schedule": schedule.to_dict(),
        "schedule_q": schedule.ratios("q").tolist(), "schedule_kv": schedule.ratios("kv").tolist(),
        "variants": report["num_variants"], "compile_seconds": report["compile_seconds"],
        "applied_per_step": graph["schedule"]["applied_per_step"],
        "profile_seconds": profile_seconds,
        "machine": {"python": sys.version.split()[0], "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "platform": platform.platform()},
    }
    log("")
    log(f"{'model':<18}{'loop speedup (median, range)':>33}{'rel L2':>10}{'PSNR dB':>9}")
    for name, row in rows.items():
        low, high = row["loop_speedup_range"]
        log(f"{name:<18}{row['loop_speedup_vs_inductor']:>19.3f}x ({low:.2f}-{high:.2f})"
            f"{row['rel_l2_vs_inductor']:>10.2e}{row['psnr_db_vs_inductor']:>9.1f}")
    measured = rows["schedule"]["loop_speedup_vs_inductor"]
    log(f"schedule: predicted {predicted:.3f}x, measured loop {measured:.3f}x, loop efficiency "
        f"{result['loop_efficiency']:.2f}; {report['num_variants']} variants compiled in "
        f"{report['compile_seconds']:.1f} s")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=1))
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
