"""Quality under acceleration on the trained text-to-video model.

Samples every caption of the shipped model's task x ``--seeds`` noise seeds (default 4: 384
videos) with the unaccelerated transformer, then under asymrnr with matched reduction and with
the plain token-dropping baseline (``token_selection="random"``: same kept counts, same attention
FLOPs, no similarity); asymrnr with the matching cached for 5 steps and recomputed every step.
Prints and writes (``--json``) adherence ("valid and all attributes right", per attribute) and
PSNR / SSIM against the unaccelerated videos from the same noise. (Token dropping's seeded random
selection is the same at every step, so its cache window changes nothing: one row.)

``--sweep`` instead runs the sensitivity sweep of :func:`sweep_variants` (ratios, warmup, one
block at a time, proportional attention) to find what breaks the videos, with each variant's
ideal speedup from the cost model, into its own RESULTS.md section (default 1 seed: 96 videos
per variant, about 45 s each on 2 cores).

    python benchmarks/quality_synthetic.py --json out/quality_synthetic.json --results
    python benchmarks/quality_synthetic.py --sweep --seeds 1 --results
    python benchmarks/quality_synthetic.py --calibrated --seeds 1 --results

``--calibrated`` profiles the model on a few captions of noise seed ``PROFILE_SEED`` (outside
the benchmark's seeds 0-3), calibrates schedules for ``CALIBRATION_TARGETS`` ranked by distance
(the paper's proxy) and by measured output error (``calibrate(..., damage="error")``), and
samples the benchmark with each.

``--checkpoint`` takes any model :func:`~asymrnr_lab.synthetic.model.load_trained_model` reads:
a reference checkpoint (safetensors) or a folder exported by ``asymrnr-compile train --arch
cogvideox`` (a diffusers ``CogVideoXTransformer3DModel``), scored the same way (same captions,
seeds, sampler and metrics).

    python benchmarks/quality_synthetic.py --checkpoint runs/cogvideox/model --json out/quality_cogvideox.json

``--unaccelerated-only`` scores the model alone (its own RESULTS.md section is then one row).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
import time
from datetime import date
from pathlib import Path

import torch
from results_md import machine_info, replace_section

from asymrnr_compile.config import AsymRnRConfig
from asymrnr_lab.models.config import PRESETS
from asymrnr_lab.synthetic.cogvideox import COGVIDEOX_PRESETS
from asymrnr_lab.synthetic.compare import compare_variants
from asymrnr_lab.synthetic.generate import EVAL_SAMPLER, caption_grid
from asymrnr_lab.synthetic.model import (
    CHECKPOINT_PATH,
    SYNTHETIC_PRESET,
    SYNTHETIC_PRESETS,
    load_trained_model,
    read_checkpoint_metadata,
)

#: The options that keep q 0.5 / kv 0.3 within the quality bound on the 1024-token model (not in
#: the published method): q and kv matched on the block's input hidden states, a new split per
#: matching window, proportional attention for the reduced keys.
HIDDEN_MATCHING = {"match_on": "hidden_states", "redraw_split": True, "proportional_attention": True}


#: ``match_dims`` of the random-projection rows (the model's hidden size is 128).
PROJECTION_DIMS = (32, 64)


def published_with(**options) -> AsymRnRConfig:
    """The published method with ``options`` on top (its 256-token site minimum included, so the
    256-token model is reduced too; the backend's defaults leave it alone)."""
    return AsymRnRConfig(preset="published", **options)


def variants(q_ratio: float, kv_ratio: float) -> dict[str, AsymRnRConfig]:
    """The published asymrnr with the matching cached for 5 steps and recomputed every step,
    token dropping, and asymrnr with :data:`HIDDEN_MATCHING` with the matching recomputed every 1
    and 2 steps (at q 0.5 / kv 0.3 the latter is the backend's defaults on sites of >= 1024 video
    tokens), and the latter with the matching on a random projection (:data:`PROJECTION_DIMS`).

    Token dropping draws the same seeded random selection at every step, so its output does not
    depend on ``cache_steps``: one row covers both windows.
    """
    ratios = {"q_ratio": q_ratio, "kv_ratio": kv_ratio}
    return {
        "asymrnr (cache 5)": published_with(**ratios, cache_steps=5),
        "token dropping": published_with(**ratios, cache_steps=5, token_selection="random"),
        "asymrnr (cache 1)": published_with(**ratios, cache_steps=1),
        "asymrnr, hidden-state matching (cache 1)": published_with(**ratios, cache_steps=1, **HIDDEN_MATCHING),
        "asymrnr, hidden-state matching (cache 2)": published_with(**ratios, cache_steps=2, **HIDDEN_MATCHING),
        **{f"asymrnr, hidden-state matching, {dims}-dim projection (cache 2)":
           published_with(**ratios, cache_steps=2, match_dims=dims, **HIDDEN_MATCHING) for dims in PROJECTION_DIMS},
    }


def sweep_variants(q_ratio: float, kv_ratio: float, num_blocks: int) -> dict[str, AsymRnRConfig]:
    """The sensitivity sweep around ``q_ratio`` / ``kv_ratio`` (matching cached for 5 steps).

    - ratios: q alone, kv alone, smaller q with the same kv, a larger kv without q, and both;
    - warmup: both ratios with the first 5 and 10 of the sampler's 20 steps unreduced;
    - one block at a time: q alone, then kv alone, on block ``b`` only (``skip_blocks`` = the
      others), for every block;
    - kv alone with proportional attention (``proportional_attention=True``).
    """
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int) or num_blocks < 1:
        raise ValueError(f"num_blocks must be an int >= 1, got {num_blocks!r}")

    def config(q: float, kv: float, **options) -> AsymRnRConfig:
        return published_with(q_ratio=q, kv_ratio=kv, cache_steps=5, **options)

    def others(block: int) -> tuple[int, ...]:
        return tuple(b for b in range(num_blocks) if b != block)

    out: dict[str, AsymRnRConfig] = {}
    for q, kv in ((0.0, kv_ratio), (0.0, 0.5), (0.2, kv_ratio), (0.3, kv_ratio), (q_ratio, 0.0), (q_ratio, kv_ratio)):
        out[f"q {q:g} / kv {kv:g}"] = config(q, kv)
    for warmup in (5, 10):
        out[f"q {q_ratio:g} / kv {kv_ratio:g}, warmup {warmup}"] = config(q_ratio, kv_ratio, warmup_steps=warmup)
    for block in range(num_blocks):
        out[f"q {q_ratio:g}, block {block} only"] = config(q_ratio, 0.0, skip_blocks=others(block))
    for block in range(num_blocks):
        out[f"kv {kv_ratio:g}, block {block} only"] = config(0.0, kv_ratio, skip_blocks=others(block))
    out[f"q 0 / kv {kv_ratio:g}, proportional attention"] = config(0.0, kv_ratio, proportional_attention=True)
    return out


#: Noise seed of the profiling run behind ``--calibrated`` (not one of the benchmark's seeds).
PROFILE_SEED = 5
#: Captions profiled for ``--calibrated``: every (96 / 8)-th caption of the task.
PROFILE_CAPTIONS = 8
#: Predicted speedups (cost model) the ``--calibrated`` schedules are made for.
CALIBRATION_TARGETS = (1.06, 1.10)


def schedule_summary(schedule) -> str:
    """Mean ratio per block of each feature, e.g. ``"q per block 0.50 0.00; kv per block ..."``."""
    from asymrnr_compile.plan.schedule import FEATURES

    return "; ".join(
        f"{feature} per block " + " ".join(f"{r:.2f}" for r in schedule.ratios(feature).mean(dim=1).tolist())
        for feature in FEATURES if schedule.ratios(feature).abs().sum() > 0
    ) or "nothing reduced"


def capped_ladder(max_ratio: float | None) -> dict[str, tuple[float, ...]]:
    """The default calibration ladder without the rungs above ``max_ratio`` (None: all of it)."""
    from asymrnr_compile.profiling.calibrate import DEFAULT_LADDER

    if max_ratio is None:
        return dict(DEFAULT_LADDER)
    ladder = {f: tuple(r for r in rungs if r <= max_ratio) for f, rungs in DEFAULT_LADDER.items()}
    ladder = {f: rungs for f, rungs in ladder.items() if rungs}
    if not ladder:
        raise ValueError(f"max_ratio {max_ratio} is below every rung of {dict(DEFAULT_LADDER)}")
    return ladder


def calibrated_variants(model, task, targets=CALIBRATION_TARGETS, log=print,
                        max_ratio: float | None = None) -> dict[str, AsymRnRConfig]:
    """Schedules calibrated by distance and by measured error, from one profile with errors.

    Profiles ``PROFILE_CAPTIONS`` captions of noise seed ``PROFILE_SEED`` with the benchmark's
    sampler, recording the output error at the calibration ladder's ratios, then
    ``calibrate(profile, target, damage=d, best_effort=True)`` for every target and damage.
    ``max_ratio`` caps the ratio any site may get (:func:`capped_ladder`), which spreads the
    FLOPs over more sites.
    """
    import asymrnr_compile
    from asymrnr_compile.profiling.calibrate import DAMAGES, calibrate, ladder_ratios, predicted_speedup
    from asymrnr_lab.synthetic.config import all_captions
    from asymrnr_lab.synthetic.generate import generate_videos

    captions = all_captions(task)[:: max(1, task.num_captions // PROFILE_CAPTIONS)]

    def run(compiled):
        generate_videos(model, captions, [PROFILE_SEED] * len(captions), task, EVAL_SAMPLER,
                        transformer=compiled, batch_size=len(captions))

    torch._dynamo.reset()
    profile = asymrnr_compile.profile(model.transformer, run, config=published_with(cache_steps=5),
                                      min_video_tokens=1, error_ratios=ladder_ratios())
    ladder = capped_ladder(max_ratio)
    capped = "" if max_ratio is None else f", ratios <= {max_ratio:g}"
    out = {}
    for target in targets:
        for damage in DAMAGES:
            schedule = calibrate(profile, target_speedup=target, damage=damage, best_effort=True, ladder=ladder)
            log(f"{damage}-ranked schedule for {target}x{capped}: predicted "
                f"{predicted_speedup(profile, schedule):.3f}x; " + schedule_summary(schedule))
            out[f"{damage}-ranked, {target:g}x{capped}"] = published_with(schedule=schedule, cache_steps=5)
    return out


SECTION = "quality-synthetic"
SWEEP_SECTION = "quality-synthetic-sweep"
CALIBRATED_SECTION = "quality-synthetic-calibrated"
#: Per model preset: what its RESULTS.md sections' names and titles add to the defaults', so the
#: 256- and 1024-token models' numbers stand side by side.
SECTION_SUFFIX = {SYNTHETIC_PRESET: "", "synthetic-fine": "-fine", "cogvideox": "-cogvideox",
                  "cogvideox-fine": "-cogvideox-fine"}
TITLE_SUFFIX = {SYNTHETIC_PRESET: "", "synthetic-fine": " (1024 video tokens)",
                "cogvideox": " (diffusers CogVideoX, 256 video tokens)",
                "cogvideox-fine": " (diffusers CogVideoX, 1024 video tokens)"}


def preset_of(config) -> str | None:
    """The name of the synthetic or CogVideoX preset whose transformer config is ``config``, else None."""
    presets = {**{name: PRESETS[name] for name in SYNTHETIC_PRESETS}, **COGVIDEOX_PRESETS}
    return next((name for name, preset in presets.items() if preset == config), None)


def section_name(base: str, preset: str | None) -> str:
    """``base`` plus the preset's suffix; ValueError for a model of no synthetic preset."""
    if preset not in SECTION_SUFFIX:
        raise ValueError(f"--results needs a checkpoint of one of the presets {tuple(SECTION_SUFFIX)}")
    return base + SECTION_SUFFIX[preset]


def checkpoint_label(path: str | Path) -> str:
    """How a report names the model: a checkpoint's file name, or ``run/model`` for an exported
    folder (whose own name, ``model``, says nothing)."""
    path = Path(path)
    return f"{path.parent.name}/{path.name}" if path.is_dir() else path.name


def adherence_curve(log_path: Path) -> list[tuple[int, float]]:
    """(step, "valid and all right" %) of the periodic evaluations in a training log."""
    if not log_path.is_file():
        return []
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line]
    return [(r["step"], r["all_correct"]) for r in rows if "all_correct" in r]


def render_section(result: dict, curve: list[tuple[int, float]]) -> str:
    """The RESULTS.md section of one run of this script."""
    attrs = sorted({a for v in result["variants"] for a in v["attribute_accuracy"]})
    lines = [
        "## Quality: the trained text-to-video model" + TITLE_SUFFIX.get(result.get("preset"), ""),
        "",
        "Generated by `benchmarks/quality_synthetic.py --results`; do not edit by hand.",
        (f"Model: `{result['checkpoint']}` ({steps_label(result)}), the synthetic task's "
        f"{result['samples'] // len(result['seeds'])} captions x {len(result['seeds'])} noise seeds = "
        f"{result['samples']} videos, {result['sampler']['steps']} Euler steps, guidance "
        f"{result['sampler']['guidance_scale']}. asymrnr at q {result['q_ratio']} / kv {result['kv_ratio']}; "
        "`token dropping` = `token_selection=\"random\"`, the same kept counts (same attention FLOPs) "
        "with random instead of matched tokens. PSNR/SSIM against the unaccelerated videos from the "
        "same noise. \"all right\" = a valid video (one compact object per frame) with every caption "
        "attribute detected from the pixels."),
        "",
        "| variant | all right | valid | " + " | ".join(attrs) + " | PSNR dB | SSIM |",
        "|---|---|---|" + "---|" * len(attrs) + "---|---|",
    ]
    for v in result["variants"]:
        psnr = "" if v["psnr"] is None else f"{v['psnr']:.2f}"
        ssim = "" if v["ssim"] is None else f"{v['ssim']:.3f}"
        accuracy = " | ".join(f"{v['attribute_accuracy'].get(a, float('nan')):.1f}%" for a in attrs)
        lines.append(f"| {v['variant']} | {v['all_correct']:.1f}% | {v['valid']:.1f}% | {accuracy} | {psnr} | {ssim} |")
    if curve:
        lines += ["", "Adherence of the unaccelerated EMA model during training (periodic evaluation, 1 seed "
                  "per caption): " + ", ".join(f"step {s}: {a:.1f}%" for s, a in curve) + "."]
    lines += ["", (f"Machine: {result['machine']}. Command: `{result['command']}`. Date: {result['date']}. "
              f"Wall time {result['seconds']:.0f} s.")]
    return "\n".join(lines)


def render_sweep_section(result: dict, title: str = "Quality sensitivity sweep", flag: str = "--sweep") -> str:
    """The RESULTS.md section of one ``--sweep`` (or ``--calibrated``) run."""
    reference = result["variants"][0]
    lines = [
        f"## {title}: the trained text-to-video model" + TITLE_SUFFIX.get(result.get("preset"), ""),
        "",
        f"Generated by `benchmarks/quality_synthetic.py {flag} --results`; do not edit by hand.",
        (f"Model: `{result['checkpoint']}` ({steps_label(result)}), "
         f"{result['samples']} videos per variant ({result['samples'] // len(result['seeds'])} captions x "
         f"{len(result['seeds'])} noise seed{'' if len(result['seeds']) == 1 else 's'}), "
         f"{result['sampler']['steps']} Euler steps, guidance "
         f"{result['sampler']['guidance_scale']}, matching cached for 5 steps. \"ideal\" = full over reduced "
         "FLOPs of a reduced step (cost model; warmup steps run unreduced); \"change\" = points of "
         "\"all right\" against unaccelerated."),
        "",
        "| variant | ideal | all right | change | valid | PSNR dB | SSIM |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in result["variants"]:
        ideal = "" if v.get("ideal_speedup") is None else f"{v['ideal_speedup']:.2f}x"
        change = "" if v is reference else f"{v['all_correct'] - reference['all_correct']:+.1f}"
        psnr = "" if v["psnr"] is None else f"{v['psnr']:.2f}"
        ssim = "" if v["ssim"] is None else f"{v['ssim']:.3f}"
        lines.append(f"| {v['variant']} | {ideal} | {v['all_correct']:.1f}% | {change} | {v['valid']:.1f}% | "
                     f"{psnr} | {ssim} |")
    lines += ["", (f"Machine: {result['machine']}. Command: `{result['command']}`. Date: {result['date']}. "
              f"Wall time {result['seconds']:.0f} s.")]
    return "\n".join(lines)


def load_checkpoint_for(parser: argparse.ArgumentParser, checkpoint: str, device: str, results: bool):
    """``load_trained_model(checkpoint, device)`` -> ``(model, task, preset)``, or a parser error
    for a CUDA device without CUDA, or ``--results`` with a model of no synthetic preset."""
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but torch.cuda.is_available() is False")
    model, task = load_trained_model(checkpoint, device=device)
    preset = preset_of(model.transformer.config)
    if results and preset not in SECTION_SUFFIX:
        parser.error(f"--results needs a checkpoint of one of the presets {tuple(SECTION_SUFFIX)}")
    return model, task, preset


def model_fields(args: argparse.Namespace, model, preset: str | None) -> dict:
    """The fields every result of a run on a trained model starts with: which model (checkpoint,
    training step, preset, video tokens) and the ratios asked for."""
    metadata = read_checkpoint_metadata(args.checkpoint)
    return {
        "checkpoint": checkpoint_label(args.checkpoint),
        "checkpoint_step": metadata.get("step"),
        "training_steps": training_steps(metadata),
        "preset": preset,
        "video_tokens": model.transformer.config.video_tokens,
        "q_ratio": args.q_ratio,
        "kv_ratio": args.kv_ratio,
    }


def training_steps(metadata: dict) -> int | None:
    """Optimiser steps behind a trained model, counting the runs it started from
    (``train --init-from``: each run's ``init_step`` and, recursively, that model's
    ``init_runs``); ``None`` when the metadata has no step."""
    def earlier(runs: list[dict]) -> int:
        return sum(run.get("init_step", 0) + earlier(run.get("init_runs", [])) for run in runs)

    step = metadata.get("step")
    return None if step is None else step + earlier(metadata.get("runs", []))


def steps_label(result: dict) -> str:
    """``"training step N"``, and the total when the model was started from another's weights."""
    step, total = result["checkpoint_step"], result.get("training_steps", result["checkpoint_step"])
    label = f"training step {step}"
    return label if total in (None, step) else f"{label} of a run started from a trained model: {total} steps in all"


def names_matching(parser: argparse.ArgumentParser, names: list[str], only: str | None) -> list[str]:
    """The ``names`` that ``re.search(only)`` finds (all with ``only`` None); a parser error for a
    bad expression or one that matches none."""
    if only is None:
        return list(names)
    try:
        pattern = re.compile(only)
    except re.error as error:
        parser.error(f"--only is not a regular expression: {error}")
    kept = [name for name in names if pattern.search(name)]
    if not kept:
        parser.error(f"--only {only!r} matches none of: {'; '.join(names)}")
    return kept


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=None,
                        help="noise seeds per caption (default 4; 1 with --sweep)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--sweep", action="store_true",
                      help="run the sensitivity sweep (ratios, warmup, one block at a time) instead")
    mode.add_argument("--calibrated", action="store_true",
                      help="compare schedules calibrated by distance and by measured output error instead")
    parser.add_argument("--targets", default=",".join(f"{t:g}" for t in CALIBRATION_TARGETS),
                        help="with --calibrated: comma-separated predicted speedups (> 1) to calibrate for "
                             f"(default {','.join(f'{t:g}' for t in CALIBRATION_TARGETS)})")
    parser.add_argument("--max-ratio", type=float, default=None,
                        help="with --calibrated: no site gets a ratio above this (default: the whole ladder)")
    mode.add_argument("--unaccelerated-only", action="store_true",
                      help="score only the unaccelerated model (e.g. a newly trained one)")
    parser.add_argument("--only", metavar="REGEX",
                        help="run only the variants whose names match (re.search), e.g. '^q 0.5, block'")
    parser.add_argument("--q-ratio", type=float, default=0.5)
    parser.add_argument("--kv-ratio", type=float, default=0.3)
    parser.add_argument("--checkpoint", default=str(CHECKPOINT_PATH),
                        help="a reference checkpoint (safetensors) or a folder exported by `train --arch cogvideox`")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda (Inductor then generates Triton)")
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--results", action="store_true", help="regenerate this section of benchmarks/RESULTS.md")
    parser.add_argument("--training-log", default="runs/synthetic/log.jsonl",
                        help="training log whose periodic evaluations are listed in the section")
    args = parser.parse_args(argv)

    try:
        targets = tuple(float(t) for t in args.targets.split(",") if t.strip())
    except ValueError:
        parser.error(f"--targets must be comma-separated numbers, got {args.targets!r}")
    if not targets or any(not t > 1.0 for t in targets):
        parser.error(f"--targets must be speedups > 1, got {args.targets!r}")
    if args.max_ratio is not None:
        try:
            capped_ladder(args.max_ratio)
        except ValueError as error:
            parser.error(f"--max-ratio: {error}")
    num_seeds = args.seeds if args.seeds is not None else (1 if args.sweep or args.calibrated else 4)
    if num_seeds < 1:
        parser.error(f"--seeds must be >= 1, got {num_seeds}")
    model, task, preset = load_checkpoint_for(parser, args.checkpoint, args.device, args.results)
    captions, seeds = caption_grid(task, range(num_seeds))
    if args.sweep:
        configs = sweep_variants(args.q_ratio, args.kv_ratio, model.transformer.config.num_blocks)
    elif args.calibrated:
        configs = calibrated_variants(model, task, targets, max_ratio=args.max_ratio)
    elif args.unaccelerated_only:
        configs = {}
    else:
        configs = variants(args.q_ratio, args.kv_ratio)
    if args.only is not None:
        configs = {name: configs[name] for name in names_matching(parser, list(configs), args.only)}
    start = time.perf_counter()
    comparison = compare_variants(model, task, captions, seeds, configs,
                                  EVAL_SAMPLER, log=lambda line: print(line, flush=True))
    print()
    print(comparison.table())
    result = {
        **model_fields(args, model, preset),
        "sampler": {"steps": EVAL_SAMPLER.steps, "guidance_scale": EVAL_SAMPLER.guidance_scale},
        **comparison.to_dict(),
        "machine": machine_info(args.device),
        "command": "python benchmarks/quality_synthetic.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "date": date.today().isoformat(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    if args.results:
        if args.sweep:
            name, section = section_name(SWEEP_SECTION, result["preset"]), render_sweep_section(result)
        elif args.calibrated:
            name, section = section_name(CALIBRATED_SECTION, result["preset"]), render_sweep_section(
                result, "Schedules calibrated by distance and by measured error", "--calibrated")
        else:
            name, section = section_name(SECTION, result["preset"]), render_section(
                result, adherence_curve(Path(args.training_log)))
        print(f"wrote {replace_section(name, section)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
