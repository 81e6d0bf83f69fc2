"""``asymrnr-compile train``: train (or resume) the synthetic text-to-video model."""

from __future__ import annotations

import argparse
from typing import Any


def add_train_command(commands: Any) -> None:
    """Register ``train`` on the CLI's subparsers."""
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
    train.set_defaults(run=train_command)


def train_command(args: argparse.Namespace) -> int:
    from asymrnr_compile.synthetic.train import TrainConfig, train

    defaults = TrainConfig()
    config = TrainConfig(steps=args.steps if args.steps is not None else defaults.steps,
                         batch_size=args.batch_size, seed=args.seed, bf16=args.bf16,
                         eval_every=args.eval_every, preset=args.preset)
    path = train(args.out, config, device=args.device, log=lambda line: print(line, flush=True),
                 max_steps_this_run=args.max_steps_this_run)
    print(f"EMA weights: {path} (copy it to asymrnr_compile/assets/synthetic_dit.safetensors to ship it)")
    return 0
