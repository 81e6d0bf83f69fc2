"""Command line: ``asymrnr-compile demo | train`` (also ``python -m asymrnr_compile ...``)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from asymrnr_compile.config import MATCH_SOURCES, AsymRnRConfig


def _add_reduction_options(parser: argparse.ArgumentParser) -> None:
    defaults = AsymRnRConfig()
    parser.add_argument("--q-ratio", type=float, default=defaults.q_ratio, help="query reduction ratio [0, 1)")
    parser.add_argument("--kv-ratio", type=float, default=defaults.kv_ratio, help="key/value reduction ratio [0, 1)")
    parser.add_argument("--cache-steps", type=int, default=defaults.cache_steps, help="matching cache window")
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps,
                        help="steps without reduction at the start")
    parser.add_argument("--match-on", choices=MATCH_SOURCES, default=defaults.match_on,
                        help="what q/kv are matched on (default: the features, as published)")
    parser.add_argument("--redraw-split", action="store_true", help="a new dst split per matching window")
    parser.add_argument("--proportional-attention", action="store_true",
                        help="weigh each kept key by the keys it stands for")


def _demo(args: argparse.Namespace) -> int:
    from asymrnr_compile.demo import run_demo
    from asymrnr_compile.sampling import SamplerConfig

    config = AsymRnRConfig(q_ratio=args.q_ratio, kv_ratio=args.kv_ratio, cache_steps=args.cache_steps,
                           warmup_steps=args.warmup_steps, match_on=args.match_on,
                           redraw_split=args.redraw_split, proportional_attention=args.proportional_attention)
    result = run_demo(args.preset, config, SamplerConfig(steps=args.steps), rounds=args.rounds,
                      log=lambda line: print(line, flush=True))
    print()
    print(result.table())
    report = result.report
    print(f"\nasymrnr: {report['num_variants']} compiled variants in {report['compile_seconds']:.1f} s, "
          f"{report['calls']} calls, matching cache {report['cache_hits']} hits / {report['cache_misses']} misses")
    print("speedup = median step time of plain Inductor over the variant's, in this process; loop = the same "
          "for the whole loop (with the steps that compute matchings); ideal = FLOP ratio full / reduced "
          "(cost model); errors are of the final latent against the plain Inductor result")
    summary = {"speed": result.to_dict()}
    if args.quality_prompts > 0:
        summary["quality"] = _quality_demo(args, config)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.json}")
    return 0


def _quality_demo(args: argparse.Namespace, config: AsymRnRConfig) -> dict | None:
    from asymrnr_compile.demo import run_quality_demo
    from asymrnr_compile.synthetic.model import SHIPPED_CHECKPOINTS

    checkpoint = SHIPPED_CHECKPOINTS[args.quality_model]
    print(f"\nquality: the trained text-to-video model ({args.quality_model}, shipped checkpoint), "
          "unaccelerated vs asymrnr")
    if not checkpoint.is_file():
        print(f"skipped: no checkpoint at {checkpoint} (train one with `asymrnr-compile train`)")
        return None
    try:
        import PIL  # noqa: F401  (pictures need Pillow, part of the `report` extra)
    except ImportError:
        print("skipped: the pictures need Pillow: pip install 'asymrnr_compile[report]'")
        return None
    quality = run_quality_demo(config, args.out, args.quality_prompts, model_preset=args.quality_model,
                               log=lambda line: print(line, flush=True))
    print()
    print(quality.comparison.table())
    print("all right = valid video with every caption attribute detected from the pixels; PSNR/SSIM of the "
          "asymrnr videos against the unaccelerated ones from the same noise (speed: see the table above)")
    print("pictures (left: unaccelerated, right: asymrnr):")
    for path in quality.pictures:
        print(f"  {path}")
    return quality.to_dict()


def _train(args: argparse.Namespace) -> int:
    from asymrnr_compile.synthetic.train import TrainConfig, train

    defaults = TrainConfig()
    config = TrainConfig(steps=args.steps if args.steps is not None else defaults.steps,
                         batch_size=args.batch_size, seed=args.seed, bf16=args.bf16,
                         eval_every=args.eval_every, preset=args.preset)
    path = train(args.out, config, device=args.device, log=lambda line: print(line, flush=True),
                 max_steps_this_run=args.max_steps_this_run)
    print(f"EMA weights: {path} (copy it to asymrnr_compile/assets/synthetic_dit.safetensors to ship it)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from asymrnr_compile.demo import QUALITY_DEMO_PRESET
    from asymrnr_compile.synthetic.model import SYNTHETIC_PRESETS

    parser = argparse.ArgumentParser(prog="asymrnr-compile", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the backend does")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="eager vs Inductor vs asymrnr on the reference DiT")
    demo.add_argument("--preset", default="attention", help="reference DiT preset (tiny, small, attention)")
    demo.add_argument("--steps", type=int, default=10, help="sampling steps")
    demo.add_argument("--rounds", type=int, default=1, help="timed loops per variant")
    demo.add_argument("--json", help="also write the numbers to this JSON file")
    demo.add_argument("--out", default="out/demo", help="folder for the side-by-side GIF/PNG pictures")
    demo.add_argument("--quality-prompts", type=int, default=4,
                      help="prompts sampled with the trained model for the quality part (0: skip it)")
    demo.add_argument("--quality-model", choices=SYNTHETIC_PRESETS, default=QUALITY_DEMO_PRESET,
                      help=f"trained model of the quality part (default {QUALITY_DEMO_PRESET}: 1024 video tokens; "
                           f"synthetic: the 256-token one, 5x faster on a CPU)")
    _add_reduction_options(demo)
    demo.set_defaults(run=_demo)

    from asymrnr_compile.profile_cli import add_profile_command

    add_profile_command(commands)
    train = commands.add_parser("train", help="train (or resume) the synthetic text-to-video model")
    train.add_argument("--out", required=True, help="run directory (checkpoint, log, loss.png, model.safetensors)")
    train.add_argument("--steps", type=int, help="total optimiser steps (default 4000; may be raised to resume longer)")
    train.add_argument("--batch-size", type=int, default=32, help="videos per step")
    train.add_argument("--seed", type=int, default=0, help="weights and data seed")
    train.add_argument("--device", default="cpu", help="cpu or cuda")
    train.add_argument("--bf16", action="store_true", help="bf16 autocast (use on GPUs; slow on AVX2-only CPUs)")
    train.add_argument("--preset", default="synthetic",
                       help="transformer size: synthetic (256 video tokens, default) or synthetic-fine (1024; GPU)")
    train.add_argument("--eval-every", type=int, default=1000, help="steps between adherence evaluations (0: never)")
    train.add_argument("--max-steps-this-run", type=int, help="stop after this many steps (resume later)")
    train.set_defaults(run=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    try:
        return args.run(args)
    except (ValueError, TypeError) as error:
        print(f"asymrnr-compile: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
