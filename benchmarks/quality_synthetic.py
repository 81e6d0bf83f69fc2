"""Quality under acceleration on the trained text-to-video model (issue 7's numbers).

Samples every caption of the shipped model's task x ``--seeds`` noise seeds (default 4: 384
videos) with the unaccelerated transformer, then under asymrnr with matched reduction and with
the plain token-dropping baseline (``token_selection="random"``: same kept counts, same attention
FLOPs, no similarity), each with the matching cached for 5 steps and recomputed every step.
Prints and writes (``--json``) adherence ("valid and all attributes right", per attribute) and
PSNR / SSIM against the unaccelerated videos from the same noise.

    python benchmarks/quality_synthetic.py --json out/quality_synthetic.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.synthetic.compare import compare_variants
from asymrnr_compile.synthetic.generate import EVAL_SAMPLER, caption_grid
from asymrnr_compile.synthetic.model import (
    CHECKPOINT_PATH,
    load_trained_model,
    read_checkpoint_metadata,
)


def variants(q_ratio: float, kv_ratio: float) -> dict[str, AsymRnRConfig]:
    out = {}
    for cache_steps in (5, 1):
        for selection in ("matched", "random"):
            name = f"{'asymrnr' if selection == 'matched' else 'token dropping'} (cache {cache_steps})"
            out[name] = AsymRnRConfig(q_ratio=q_ratio, kv_ratio=kv_ratio, cache_steps=cache_steps,
                                      token_selection=selection)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=4, help="noise seeds per caption")
    parser.add_argument("--q-ratio", type=float, default=0.5)
    parser.add_argument("--kv-ratio", type=float, default=0.3)
    parser.add_argument("--checkpoint", default=str(CHECKPOINT_PATH))
    parser.add_argument("--json", help="write the numbers here")
    args = parser.parse_args(argv)

    model, task = load_trained_model(args.checkpoint)
    captions, seeds = caption_grid(task, range(args.seeds))
    start = time.perf_counter()
    comparison = compare_variants(model, task, captions, seeds, variants(args.q_ratio, args.kv_ratio),
                                  EVAL_SAMPLER, log=lambda line: print(line, flush=True))
    print()
    print(comparison.table())
    result = {
        "checkpoint": Path(args.checkpoint).name,
        "checkpoint_step": read_checkpoint_metadata(args.checkpoint).get("step"),
        "q_ratio": args.q_ratio,
        "kv_ratio": args.kv_ratio,
        "sampler": {"steps": EVAL_SAMPLER.steps, "guidance_scale": EVAL_SAMPLER.guidance_scale},
        **comparison.to_dict(),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "command": "python benchmarks/quality_synthetic.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": date.today().isoformat(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
