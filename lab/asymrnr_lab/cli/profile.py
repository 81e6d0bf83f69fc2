"""``asymrnr-compile profile``: profile redundancy, write the report, heatmaps and a schedule.

``asymrnr-compile profile --model reference --steps 10 --out DIR`` (also ``python -m
asymrnr_compile profile ...``) runs the bundled reference DiT (random seeded weights, preset
``--preset``, default ``attention``) through a flow-matching Euler CFG sampling loop under
:func:`asymrnr_compile.profile`, then writes into DIR: ``report.json``, ``report.md``,
``heatmap_<h|q|k|v>.png`` and ``schedule.safetensors`` (:func:`asymrnr_compile.calibrate` for
``--target-speedup``, default 1.5; the best reachable one, with a note, when the target is out of
reach). ``--model synthetic`` profiles the shipped *trained* text-to-video model
(:mod:`asymrnr_lab.synthetic`) sampling ``--prompts`` captions of its task with guidance: the
one model here whose redundancy is learned, not an accident of random weights.
``--model cogvideox|hunyuan|mochi|wan|ltx`` profiles the small *random-weight* diffusers configs
instead (needs diffusers; their redundancy says nothing about the trained models).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import torch

from asymrnr_lab.cli.progress import Progress

REFERENCE = "reference"
SYNTHETIC = "synthetic"
DIFFUSERS_FAMILIES = ("cogvideox", "hunyuan", "mochi", "wan", "ltx")
MODELS = (REFERENCE, SYNTHETIC, *DIFFUSERS_FAMILIES)
#: Captions ``--model synthetic`` samples by default (spread over the task's caption list).
DEFAULT_SYNTHETIC_PROMPTS = 4
# The small diffusers configs have one or two latent frames: split 1 x 2 x 2 so that every
# site has destination tokens.
DIFFUSERS_DST_STRIDE = (1, 2, 2)


DESCRIPTION = """\
Profile the token redundancy of a model over a sampling loop: for every reducible attention site,
step and feature (h, q, k, v), how close each source token is to its nearest destination token
(normalised: 0 = duplicates, ~1 = unrelated). The model runs compiled and its outputs are
unchanged. Then calibrate a per-block, per-step schedule for --target-speedup and write into
--out: report.json, report.md, heatmap_<h|q|k|v>.png (needs matplotlib) and
schedule.safetensors (load it with AsymRnRConfig(schedule=...)).

Models: reference (the bundled reference DiT, random seeded weights), synthetic (the shipped
TRAINED text-to-video model, sampling --prompts captions with guidance: learned redundancy), or
a small random-weight diffusers config (cogvideox, hunyuan, mochi, wan, ltx; needs diffusers).
Progress (step k/n, elapsed seconds) goes to stderr."""


def add_profile_command(commands: Any) -> None:
    """Register ``profile`` on the CLI's subparsers."""
    from asymrnr_compile.ops import SIMILARITIES
    from asymrnr_compile.profiling.calibrate import DAMAGES
    from asymrnr_lab.cli import add_command
    from asymrnr_lab.models.config import PRESETS

    parser = add_command(commands, "profile", "profile redundancy per site, step and feature; write a report, "
                                              "heatmaps and a calibrated schedule", DESCRIPTION)
    parser.add_argument("--model", default=REFERENCE, choices=MODELS,
                        help="the bundled reference DiT (random weights), the shipped trained synthetic "
                             "text-to-video model, or a small random-weight diffusers config")
    parser.add_argument("--preset", default="attention", choices=list(PRESETS),
                        help="--model reference: the reference DiT's size")
    parser.add_argument("--steps", type=int, default=10, help="sampling steps")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--target-speedup", type=float, default=1.5,
                        help="calibrate schedule.safetensors for this predicted speedup")
    parser.add_argument("--cache-steps", type=int, default=5, help="matching cache window (cost model)")
    parser.add_argument("--similarity", default="euclidean", choices=SIMILARITIES,
                        help="token similarity of the matching")
    parser.add_argument("--damage", default="distance", choices=DAMAGES,
                        help="what calibrate ranks moves by: the dropped tokens' distance (the paper's proxy) "
                             "or the measured attention-output error (one extra attention per ladder ratio)")
    parser.add_argument("--seed", type=int, default=0, help="seed of weights, inputs and the split")
    parser.add_argument("--prompts", type=int, default=DEFAULT_SYNTHETIC_PROMPTS,
                        help="--model synthetic: captions sampled (one video each)")
    parser.set_defaults(run=run_profile_command)


def _progress(steps: int) -> tuple[Callable[[int], None], Progress]:
    """``on_call(step)`` for :func:`asymrnr_compile.profile`, drawing a :class:`Progress`."""
    bar = Progress("profiling (the first step compiles)", steps)
    return (lambda step: bar.update(step + 1)), bar


def _reference_run(preset: str, steps: int, seed: int) -> tuple[torch.nn.Module, Callable[[Any], Any], list[str]]:
    from asymrnr_lab.cli.demo import demo_inputs
    from asymrnr_lab.models import build_reference_model
    from asymrnr_lab.models.config import resolve_config
    from asymrnr_lab.sampling import SamplerConfig, sample

    config = resolve_config(preset)
    model = build_reference_model(preset, seed=seed)
    inputs = demo_inputs(preset, seed)

    def run(compiled: Any) -> None:
        sample(compiled, inputs.noise, inputs.text, inputs.null_text, SamplerConfig(steps=steps))

    notes = [(f"model: bundled reference DiT, preset `{preset}` ({config.video_tokens} video + "
              f"{config.text_tokens} text tokens, {config.num_blocks} blocks), random seeded weights (seed {seed}); "
              f"{steps} flow-matching Euler steps, CFG batch 2")]
    return model, run, notes


def _synthetic_run(steps: int, seed: int, prompts: int) -> tuple[torch.nn.Module, Callable[[Any], Any], list[str]]:
    from dataclasses import replace

    from asymrnr_lab.synthetic.config import all_captions
    from asymrnr_lab.synthetic.generate import EVAL_SAMPLER, generate_videos
    from asymrnr_lab.synthetic.model import CHECKPOINT_PATH, load_trained_model, read_checkpoint_metadata

    if prompts < 1:
        raise ValueError(f"--prompts must be an int >= 1, got {prompts}")
    model, task = load_trained_model()
    captions_all = all_captions(task)
    stride = max(1, len(captions_all) // prompts)
    captions = [captions_all[(i * stride) % len(captions_all)] for i in range(prompts)]
    sampler = replace(EVAL_SAMPLER, steps=steps)

    def run(compiled: Any) -> None:
        generate_videos(model, captions, [seed] * len(captions), task, sampler, transformer=compiled,
                        batch_size=len(captions))

    step = read_checkpoint_metadata(CHECKPOINT_PATH).get("step")
    notes = [(f"model: the shipped TRAINED synthetic text-to-video model ({CHECKPOINT_PATH.name}, training step "
              f"{step}), {model.config.video_tokens} video + {model.config.text_tokens} text tokens"),
             (f"{steps} flow-matching Euler steps, guidance {sampler.guidance_scale} (CFG batch {2 * len(captions)}), "
              f"{len(captions)} captions, noise seed {seed}: " + "; ".join(c.text for c in captions))]
    return model.transformer, run, notes


def _diffusers_run(name: str, steps: int, seed: int) -> tuple[torch.nn.Module, Callable[[Any], Any], list[str]]:
    try:
        import diffusers  # noqa: F401

        from asymrnr_lab.models.diffusers_models import build
    except ImportError as error:
        raise ValueError(f"--model {name} needs diffusers (pip install -e '.[diffusers]'): {error}") from None
    model, inputs = build(name, seed=seed)
    timestep = inputs["timestep"]

    def run(compiled: Any) -> None:
        x = inputs["hidden_states"]
        for step in range(steps):
            sigma, sigma_next = 1 - step / steps, 1 - (step + 1) / steps
            t = torch.full_like(timestep, sigma * 1000) if timestep.is_floating_point() else \
                torch.full_like(timestep, round(sigma * 999))
            out = compiled(**{**inputs, "hidden_states": x, "timestep": t}, return_dict=False)[0]
            if out.shape == x.shape:  # an Euler step on the predicted velocity (same strides: no recompile)
                x = (x + (sigma_next - sigma) * out).contiguous()

    notes = [(f"model: diffusers {type(model).__name__}, a SMALL RANDOM-WEIGHT test config (seed {seed}): "
              "its redundancy says nothing about the trained model"),
             f"{steps} Euler steps with the output as velocity, timestep from 1000 down"]
    return model, run, notes


def run_profile_command(args: argparse.Namespace, log: Callable[[str], None] = print) -> int:
    """Profile, calibrate and write the report (see the module docstring)."""
    import asymrnr_compile
    from asymrnr_compile.config import AsymRnRConfig
    from asymrnr_compile.profiling.calibrate import calibrate, ladder_ratios, predicted_speedup
    from asymrnr_compile.profiling.report import write_report

    if args.steps < 1:
        raise ValueError(f"--steps must be an int >= 1, got {args.steps}")
    if args.model in (REFERENCE, SYNTHETIC):
        model, run, notes = (_reference_run(args.preset, args.steps, args.seed) if args.model == REFERENCE
                             else _synthetic_run(args.steps, args.seed, args.prompts))
        config = AsymRnRConfig(similarity=args.similarity, cache_steps=args.cache_steps, seed=args.seed)
    else:
        model, run, notes = _diffusers_run(args.model, args.steps, args.seed)
        config = AsymRnRConfig(similarity=args.similarity, cache_steps=args.cache_steps, seed=args.seed,
                               dst_stride=DIFFUSERS_DST_STRIDE)
    start = time.perf_counter()
    log(f"profiling {args.model} for {args.steps} steps (the first step compiles)")
    torch._dynamo.reset()
    error_ratios = ladder_ratios() if args.damage == "error" else ()
    on_call, bar = _progress(args.steps)
    try:
        prof = asymrnr_compile.profile(model, run, config=config, min_video_tokens=1,
                                       on_call=on_call, error_ratios=error_ratios)
    finally:
        bar.close()
    if not prof.sites:
        raise ValueError(f"no attention site of {args.model} could be profiled: {prof.skipped}")
    log(f"profiled {len(prof.sites)} sites in {time.perf_counter() - start:.1f} s; calibrating")
    schedule = calibrate(prof, target_speedup=args.target_speedup, model=args.model, best_effort=True,
                         damage=args.damage)
    predicted = predicted_speedup(prof, schedule)
    if predicted < args.target_speedup:
        notes.append(f"calibrate: target {args.target_speedup}x is out of reach; schedule.safetensors holds the "
                     f"best reachable schedule ({predicted:.3f}x)")
    written = write_report(prof, args.out, title=f"Redundancy profile: {args.model}", schedule=schedule,
                           predicted_speedup=predicted, notes=notes,
                           extra={"model": args.model, "random_weights": args.model != SYNTHETIC,
                                  "steps": args.steps,
                                  "target_speedup": args.target_speedup,
                                  "seconds": round(time.perf_counter() - start, 1)})
    for what, path in written.items():
        shown = ", ".join(str(p) for p in path) if isinstance(path, list) else str(path)
        log(f"wrote {what}: {shown}")
    log(f"schedule: predicted speedup {predicted:.2f}x (cost model); total {time.perf_counter() - start:.1f} s")
    return 0
