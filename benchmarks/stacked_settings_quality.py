"""Quality of stacked settings the speed/quality table has no row for, on the 1024-token model.

Each named setting (asymrnr's defaults, at other ratios or matching windows, on cache-dit's DBCache
or its TaylorSeer calibrator at thresholds outside the table's, the cache's probe block exact)
samples the 96 captions x ``--seeds`` noise seeds with the benchmark sampler (20 Euler steps, or
``--steps``; guidance 2, batched CFG; the blocks compiled as the table compiles them; 1 thread) and
prints one JSON line: "all right" and the steps the cache skipped in each batch of 32 videos. No
timing: a quick screen of settings before the table runs the ones worth timing. "DBCache 0 (nothing
skipped)" runs every step through the cache's block loop: the unaccelerated videos at a step count
the quality benchmark has no figure for.

    python benchmarks/stacked_settings_quality.py 'defaults + DBCache 0.4' 'defaults + DBCache 0.5'
    python benchmarks/stacked_settings_quality.py --steps 50 'DBCache 0 (nothing skipped)' 'DBCache 0.3'
    python benchmarks/stacked_settings_quality.py --list
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace

import torch
import torch._dynamo
from quality_synthetic import load_trained_model

from asymrnr_compile.config import AsymRnRConfig
from asymrnr_lab.synthetic.accelerators import CacheDiT, cache_dit_taylorseer, dbcache
from asymrnr_lab.synthetic.generate import EVAL_SAMPLER, caption_grid, generate_videos
from asymrnr_lab.synthetic.quality import score_samples

CHECKPOINT = "lab/asymrnr_lab/assets/synthetic_dit_fine.safetensors"
#: Videos per sampling batch (the cache's skipped steps are read per batch).
BATCH = 32
#: Dynamo's per-function recompile limit inside this script (torch's default is 8).
RECOMPILE_LIMIT = 64
DEFAULTS = AsymRnRConfig()


def settings() -> dict[str, CacheDiT]:
    """The named settings, by name."""
    return {
        "DBCache 0 (nothing skipped)": dbcache(0.0),
        "DBCache 0.3": dbcache(0.3),
        "DBCache 0.4": dbcache(0.4),
        "defaults + DBCache 0.25": dbcache(0.25, asymrnr=DEFAULTS),
        "defaults + DBCache 0.3": dbcache(0.3, asymrnr=DEFAULTS),
        "defaults + DBCache 0.3, warm-up 3": dbcache(0.3, warmup_steps=3, asymrnr=DEFAULTS),
        "defaults + DBCache 0.4": dbcache(0.4, asymrnr=DEFAULTS),
        "defaults + DBCache 0.5": dbcache(0.5, asymrnr=DEFAULTS),
        "defaults + DBCache 0.4, at most 2 in a row": dbcache(0.4, max_continuous_cached_steps=2, asymrnr=DEFAULTS),
        "q 0.6 / kv 0.4 + DBCache 0.2": dbcache(0.2, asymrnr=replace(DEFAULTS, q_ratio=0.6, kv_ratio=0.4)),
        "q 0.6 / kv 0.4 + DBCache 0.3": dbcache(0.3, asymrnr=replace(DEFAULTS, q_ratio=0.6, kv_ratio=0.4)),
        "q 0.7 / kv 0.5 + DBCache 0.3": dbcache(0.3, asymrnr=replace(DEFAULTS, q_ratio=0.7, kv_ratio=0.5)),
        "defaults + TaylorSeer 0.2": cache_dit_taylorseer(1, 0.2, asymrnr=DEFAULTS),
        "defaults + TaylorSeer 0.3": cache_dit_taylorseer(1, 0.3, asymrnr=DEFAULTS),
        "defaults, one matching per video + TaylorSeer 0.3":
            cache_dit_taylorseer(1, 0.3, asymrnr=replace(DEFAULTS, cache_steps=20)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="settings to sample (see --list)")
    parser.add_argument("--list", action="store_true", help="print the settings' names and exit")
    parser.add_argument("--seeds", type=int, default=1, help="noise seeds per caption (default 1: 96 videos)")
    parser.add_argument("--steps", type=int, default=EVAL_SAMPLER.steps,
                        help=f"Euler steps per video (default {EVAL_SAMPLER.steps}, the quality benchmark's)")
    parser.add_argument("--checkpoint", default=CHECKPOINT, help=f"the reference checkpoint (default {CHECKPOINT})")
    args = parser.parse_args(argv)
    known = settings()
    if args.list:
        print("\n".join(known))
        return 0
    unknown = [name for name in args.names if name not in known]
    if unknown or not args.names:
        parser.error(f"name one or more settings of --list; unknown: {unknown}" if unknown else
                     "name one or more settings (--list prints them)")
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.steps < 2:
        parser.error(f"--steps must be >= 2, got {args.steps}")
    sampler = replace(EVAL_SAMPLER, steps=args.steps)
    torch.set_num_threads(1)
    model, task = load_trained_model(args.checkpoint)
    captions, seeds = caption_grid(task, range(args.seeds))
    with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
        for name in args.names:
            start = time.time()
            torch._dynamo.reset()
            transformer = known[name].build(model)
            transformer.reset()
            skipped: list[int] = []

            def batch_done(_done: int, _total: int, transformer=transformer, skipped=skipped) -> None:
                skipped.append(len(transformer.stats()["cached_steps"]))
                transformer.reset()

            videos = generate_videos(model, captions, seeds, task, sampler, transformer=transformer,
                                     batch_size=BATCH, on_batch=batch_done)
            report = score_samples(videos, captions, task)
            print(json.dumps({"setting": name, "steps": args.steps, "videos": len(captions),
                              "all_correct": report.all_correct, "skipped_per_batch": skipped,
                              "seconds": round(time.time() - start)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
