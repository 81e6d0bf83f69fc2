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
Progress (step k/n, elapsed seconds) goes to stderr.

--arch cogvideox trains the same task in a small diffusers CogVideoXTransformer3DModel (width
128, 4 blocks; --preset cogvideox: 256 video tokens, cogvideox-fine: 1024) and exports --out/model/,
a folder in diffusers' format (transformer/ by save_pretrained, plus text_to_video.safetensors:
token table and metadata) that load_trained_model and benchmarks/quality_synthetic.py
--checkpoint read. Measured at batch 32, 2 CPU threads (float32, idle machine): cogvideox 0.66
s/step (6000 steps ~1.1 h), cogvideox-fine 4.8 s/step (~8 h: use a GPU). See docs/trained_models.md.
  CPU: asymrnr-compile train --arch cogvideox --out runs/cogvideox --steps 6000
  GPU: asymrnr-compile train --arch cogvideox --preset cogvideox-fine --out runs/cogvideox-fine \\
         --steps 6000 --device cuda --bf16"""


def add_train_command(commands: Any) -> None:
    """Register ``train`` on the CLI's subparsers."""
    from asymrnr_lab.cli import add_command
    from asymrnr_lab.synthetic.model import ARCH_PRESETS, ARCHS, REFERENCE_ARCH, TEXT_TO_VIDEO_PRESETS
    from asymrnr_lab.synthetic.train import TrainConfig

    defaults = TrainConfig()
    train = add_command(commands, "train", "train (or resume) the synthetic text-to-video model of the quality demo",
                        DESCRIPTION)
    train.add_argument("--out", required=True,
                       help="run directory (checkpoint, log, loss.png, model.safetensors or, with --arch cogvideox, "
                            "the folder model/)")
    train.add_argument("--steps", type=int, default=defaults.steps,
                       help="total optimiser steps (raise it on a finished run to train on)")
    train.add_argument("--batch-size", type=int, default=defaults.batch_size, help="videos per step")
    train.add_argument("--seed", type=int, default=defaults.seed, help="weights and data seed")
    train.add_argument("--device", choices=DEVICES, default="cpu", help="where to train")
    train.add_argument("--bf16", action="store_true", help="bf16 autocast (use on GPUs; slow on AVX2-only CPUs)")
    train.add_argument("--arch", choices=ARCHS, default=REFERENCE_ARCH,
                       help="transformer class: reference (the bundled ReferenceDiT) or cogvideox (a diffusers "
                            "CogVideoXTransformer3DModel, exported in diffusers' format)")
    defaults_text = ", ".join(f"{presets[0]} with --arch {arch}" for arch, presets in ARCH_PRESETS.items())
    train.add_argument("--preset", choices=TEXT_TO_VIDEO_PRESETS, default=None,
                       help="transformer size, one of the --arch's presets: synthetic / cogvideox (256 video tokens) "
                            f"or synthetic-fine / cogvideox-fine (1024; train them on a GPU). Default: {defaults_text}")
    train.add_argument("--eval-every", type=int, default=defaults.eval_every,
                       help="steps between adherence evaluations (0: never)")
    train.add_argument("--max-steps-this-run", type=int, help="stop after this many steps (resume later)")
    train.add_argument("--init-from", metavar="MODEL",
                       help="start a new run from this trained model's weights (e.g. "
                            "lab/asymrnr_lab/assets/synthetic_cogvideox) with a fresh optimiser and schedule, "
                            "instead of the seeded init; same --arch and --preset")
    train.set_defaults(run=train_command)


def train_command(args: argparse.Namespace) -> int:
    from asymrnr_lab.cli.progress import Progress
    from asymrnr_lab.synthetic.model import ARCH_PRESETS, REFERENCE_ARCH
    from asymrnr_lab.synthetic.train import TrainConfig, train

    if args.preset is not None and args.preset not in ARCH_PRESETS[args.arch]:
        raise ValueError(f"--preset {args.preset} is not a preset of --arch {args.arch} "
                         f"(its presets: {', '.join(ARCH_PRESETS[args.arch])})")
    preset = args.preset if args.preset is not None else ARCH_PRESETS[args.arch][0]
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, seed=args.seed, bf16=args.bf16,
                         eval_every=args.eval_every, preset=preset, arch=args.arch)
    bar = Progress("training", config.steps)
    try:
        path = train(args.out, config, device=args.device, log=lambda line: print(line, flush=True),
                     max_steps_this_run=args.max_steps_this_run, on_step=lambda step, steps: bar.update(step),
                     init_from=args.init_from)
    finally:
        bar.close()
    if config.arch == REFERENCE_ARCH:
        print(f"EMA weights: {path} (copy it to lab/asymrnr_lab/assets/synthetic_dit.safetensors to ship it)")
    else:
        print(f"EMA weights: {path} (diffusers format; score it with "
              f"python benchmarks/quality_synthetic.py --checkpoint {path})")
    return 0
