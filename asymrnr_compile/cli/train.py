"""``asymrnr-compile train``: train (or resume) the synthetic text-to-video model."""

from __future__ import annotations

import argparse
from typing import Any

#: Devices ``--device`` accepts.
DEVICES = ("cpu", "cuda")

DESCRIPTION = """\
Train the small text-to-video DiT of the demo's quality part on the procedural task (a
flat-coloured shape moving on a plain background, 8 frames of 32 x 32, 96 captions), or resume
a run: the same command on the same --out continues from the last checkpoint (written every 100
steps), and a larger --steps trains a finished run on. Writes into --out: checkpoint.pt, the
EMA weights model.safetensors, log.jsonl and loss.png. The shipped model is
`train --out runs/synthetic` followed by the same with --steps 6000 (~1.1 s/step on 2 CPU cores).
Progress (step k/n, elapsed seconds) goes to stderr."""


def add_train_command(commands: Any) -> None:
    """Register ``train`` on the CLI's subparsers."""
    from asymrnr_compile.cli import add_command
    from asymrnr_compile.synthetic.model import SYNTHETIC_PRESET, SYNTHETIC_PRESETS
    from asymrnr_compile.synthetic.train import TrainConfig

    defaults = TrainConfig()
    train = add_command(commands, "train", "train (or resume) the synthetic text-to-video model of the quality demo",
                        DESCRIPTION)
    train.add_argument("--out", required=True, help="run directory (checkpoint, log, loss.png, model.safetensors)")
    train.add_argument("--steps", type=int, default=defaults.steps,
                       help="total optimiser steps (raise it on a finished run to train on)")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size, help="videos per step")
    train.add_argument("--seed", type=int, default=defaults.seed, help="weights and data seed")
    train.add_argument("--device", choices=DEVICES, default="cpu", help="where to train")
    train.add_argument("--bf16", action="store_true", help="bf16 autocast (use on GPUs; slow on AVX2-only CPUs)")
    train.add_argument("--preset", choices=SYNTHETIC_PRESETS, default=SYNTHETIC_PRESET,
                       help="transformer size: synthetic (256 video tokens) or synthetic-fine (1024; train it on "
                            "a GPU)")
    train.add_argument("--eval-every", type=int, default=defaults.eval_every,
                       help="steps between adherence evaluations (0: never)")
    train.add_argument("--max-steps-this-run", type=int, help="stop after this many steps (resume later)")
    train.set_defaults(run=train_command)


def train_command(args: argparse.Namespace) -> int:
    from asymrnr_compile.cli.progress import Progress
    from asymrnr_compile.synthetic.train import TrainConfig, train

    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, bf16=args.bf16,
                         eval_every=args.eval_every, preset=args.preset)
    bar = Progress("training", config.steps)
    try:
        path = train(args.out, config, device=args.device, log=lambda line: print(line, flush=True),
                     max_steps_this_run=args.max_steps_this_run, on_step=lambda step, steps: bar.update(step))
    finally:
        bar.close()
    print(f"EMA weights: {path} (copy it to asymrnr_compile/assets/synthetic_dit.safetensors to ship it)")
    return 0
