"""The main job: sample with the reference DiT three ways (eager, Inductor, asymrnr) and compare.

Speed is a ratio measured in one process on the same inputs: each variant first runs one full
sampling loop as warm-up (this compiles every variant the loop needs), then the timed loops
run interleaved step by step (step 0 of eager, inductor, asymrnr, then step 1, ...), so that
all three see the same machine load. Quality is the final latent against
the plain Inductor result. The reference model has random (seeded) weights: this part
(:func:`run_demo`) measures speed and numerical closeness, not visual quality.

The quality part (:func:`run_quality_demo`) samples a few prompts with the shipped *trained*
text-to-video model, unaccelerated and under asymrnr from the same noise, scores both from the
pixels and writes side-by-side pictures.

``asymrnr-compile demo`` (:func:`add_demo_command`) runs both.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from asymrnr_compile._validate import check_choice
from asymrnr_compile.backend import AsymRnRBackend
from asymrnr_compile.config import MATCH_SOURCES, AsymRnRConfig
from asymrnr_compile.models import (
    build_reference_model,
    reference_inputs,
    synthetic_latents,
)
from asymrnr_compile.models.config import resolve_config
from asymrnr_compile.sampling import (
    SamplerConfig,
    loop_speedup,
    psnr_db,
    relative_l2,
    sample,
    sample_lockstep,
)

VARIANTS = ("eager", "inductor", "asymrnr")

#: Trained model of the quality part: the 1024-token one, the model on which q 0.5 / kv 0.3 can be
#: kept within 3 points of the unaccelerated videos (benchmarks/RESULTS.md).
QUALITY_DEMO_PRESET = "synthetic-fine"
# Seed offset of the "empty prompt" embedding used for the unconditional branch.
NULL_TEXT_SEED_OFFSET = 17


@dataclass
class VariantTiming:
    """Measured numbers of one variant."""

    name: str
    step_seconds: list[float] = field(default_factory=list)
    warmup_seconds: float = 0.0
    latent: torch.Tensor | None = None

    @property
    def seconds_per_step(self) -> float:
        return statistics.median(self.step_seconds)


@dataclass
class DemoResult:
    """Everything the demo measured; ``to_dict()`` is JSON-serialisable."""

    preset: str
    config: AsymRnRConfig
    sampler: SamplerConfig
    timings: dict[str, VariantTiming]
    ideal_speedup: float
    report: dict[str, Any]
    threads: int

    def speedup(self, name: str, baseline: str = "inductor") -> float:
        """Median step time of ``baseline`` over ``name``'s (a second figure: most steps reuse matchings)."""
        return self.timings[baseline].seconds_per_step / self.timings[name].seconds_per_step

    def loop_speedup(self, name: str, baseline: str = "inductor") -> float:
        """Whole-loop time of ``baseline`` over ``name``'s, the headline (matching steps included;
        the median over rounds, :func:`~asymrnr_compile.sampling.loop_speedup`)."""
        return loop_speedup(self.timings[baseline].step_seconds, self.timings[name].step_seconds,
                            self.sampler.steps).loop

    def error_vs_inductor(self, name: str) -> tuple[float, float]:
        reference = self.timings["inductor"].latent
        latent = self.timings[name].latent
        assert reference is not None and latent is not None
        return relative_l2(latent, reference), psnr_db(latent, reference)

    def to_dict(self) -> dict[str, Any]:
        rows = {}
        for name, timing in self.timings.items():
            rel, psnr = self.error_vs_inductor(name)
            rows[name] = {
                "seconds_per_step": timing.seconds_per_step,
                "warmup_seconds": timing.warmup_seconds,
                "speedup_vs_inductor": self.speedup(name),
                "loop_speedup_vs_inductor": self.loop_speedup(name),
                "rel_l2_vs_inductor": rel,
                "psnr_db_vs_inductor": psnr,
            }
        return {
            "preset": self.preset,
            "config": self.config.to_dict(),
            "steps": self.sampler.steps,
            "threads": self.threads,
            "ideal_speedup": self.ideal_speedup,
            "variants": rows,
            "asymrnr_report": self.report,
        }

    def table(self) -> str:
        lines = [f"{'variant':<10}{'loop s':>8}{'loop':>8}{'ideal':>8}{'median step':>13}{'rel err':>10}{'PSNR dB':>9}"]
        for name, timing in self.timings.items():
            rel, psnr = self.error_vs_inductor(name)
            ideal = f"{self.ideal_speedup:.2f}x" if name == "asymrnr" else "1.00x" if name == "inductor" else ""
            loop_seconds = loop_speedup(timing.step_seconds, timing.step_seconds, self.sampler.steps).loop_seconds
            lines.append(f"{name:<10}{loop_seconds:>8.2f}{self.loop_speedup(name):>7.2f}x{ideal:>8}"
                         f"{self.speedup(name):>12.2f}x{rel:>10.2e}{psnr:>9.1f}")
        return "\n".join(lines)


@dataclass(frozen=True)
class SamplingInputs:
    """Initial latent and cond/uncond text embeddings of one sampling run (batch 1)."""

    noise: torch.Tensor
    text: torch.Tensor
    null_text: torch.Tensor


def demo_inputs(preset: str, seed: int = 0) -> SamplingInputs:
    """Structured, seeded inputs for sampling the reference DiT (never zeros or pure noise)."""
    inputs = reference_inputs(preset, seed=seed, batch_size=1)
    noise = synthetic_latents(tuple(inputs["hidden_states"].shape), seed=seed + 1)
    null_text = reference_inputs(preset, seed=seed + NULL_TEXT_SEED_OFFSET, batch_size=1)["encoder_hidden_states"]
    return SamplingInputs(noise, inputs["encoder_hidden_states"], null_text)


def timed_sample(model: Callable[..., torch.Tensor], inputs: SamplingInputs,
                 sampler: SamplerConfig) -> tuple[torch.Tensor, list[float]]:
    """Run one sampling loop; returns the final latent and the seconds of every step."""
    stamps = [time.perf_counter()]
    with torch.no_grad():
        latent = sample(model, inputs.noise, inputs.text, inputs.null_text, sampler,
                        on_step=lambda step, steps: stamps.append(time.perf_counter()))
    return latent, [b - a for a, b in itertools.pairwise(stamps)]


@dataclass
class QualityDemoResult:
    """The quality part: the trained model sampled with and without asymrnr."""

    comparison: Any  # asymrnr_compile.synthetic.compare.QualityComparison
    pictures: list[str]
    checkpoint_step: int

    def to_dict(self) -> dict[str, Any]:
        return {**self.comparison.to_dict(), "pictures": self.pictures, "checkpoint_step": self.checkpoint_step}


def quality_prompts(num_prompts: int):
    """``num_prompts`` captions of the shipped model's task, evenly spread over all of them
    (consecutive picks differ in several attributes)."""
    from asymrnr_compile.synthetic.config import SyntheticTaskConfig, all_captions
    from asymrnr_compile.synthetic.model import (
        CHECKPOINT_PATH,
        read_checkpoint_metadata,
    )

    task_fields = read_checkpoint_metadata(CHECKPOINT_PATH)["task_config"]
    task = SyntheticTaskConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in task_fields.items()})
    captions = all_captions(task)
    stride = max(1, len(captions) // max(1, num_prompts))
    return [captions[(i * stride + i) % len(captions)] for i in range(num_prompts)]


def run_quality_demo(
    config: AsymRnRConfig,
    out_dir: str | Path,
    num_prompts: int = 4,
    *,
    seed: int = 0,
    model_preset: str = QUALITY_DEMO_PRESET,
    log: Callable[[str], None] = print,
) -> QualityDemoResult:
    """Sample ``num_prompts`` prompts with a shipped trained model (``model_preset``, one of
    :data:`~asymrnr_compile.synthetic.model.SYNTHETIC_PRESETS`; default the 1024-token one),
    unaccelerated and under asymrnr (``config``), from the same noise; score both and write one
    side-by-side GIF and PNG strip per prompt into ``out_dir``."""
    from asymrnr_compile.synthetic.compare import (
        compare_variants,
        write_comparison_gif,
        write_comparison_strip,
    )
    from asymrnr_compile.synthetic.model import (
        SHIPPED_CHECKPOINTS,
        SYNTHETIC_PRESETS,
        load_trained_model,
        read_checkpoint_metadata,
    )

    checkpoint = SHIPPED_CHECKPOINTS[check_choice("model_preset", model_preset, SYNTHETIC_PRESETS)]
    model, task = load_trained_model(checkpoint)
    step = int(read_checkpoint_metadata(checkpoint).get("step", 0))
    captions = quality_prompts(num_prompts)
    log(f"trained text-to-video DiT ({checkpoint.name}, step {step}): {model.config.video_tokens} video "
        f"tokens, {len(captions)} prompts, noise seed {seed}")
    comparison = compare_variants(model, task, captions, [seed] * len(captions), {"asymrnr": config},
                                  batch_size=len(captions), compile_reference=False, log=log)
    out_dir = Path(out_dir)
    pictures = []
    for i, caption in enumerate(captions):
        videos = {name: v.videos[i] for name, v in comparison.variants.items()}
        stem = caption.text.replace(" ", "_")
        pictures.append(str(write_comparison_gif(videos, out_dir / f"{i}_{stem}.gif")))
        pictures.append(str(write_comparison_strip(videos, out_dir / f"{i}_{stem}.png")))
    return QualityDemoResult(comparison, pictures, step)


def run_demo(
    preset: str = "attention",
    config: AsymRnRConfig | None = None,
    sampler: SamplerConfig | None = None,
    *,
    rounds: int = 1,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> DemoResult:
    """Run the comparison (see module docstring). ``rounds`` timed loops per variant."""
    config = config if config is not None else AsymRnRConfig()
    sampler = sampler if sampler is not None else SamplerConfig(steps=10)
    model_config = resolve_config(preset)
    model = build_reference_model(preset, seed=seed)
    inputs = demo_inputs(preset, seed)
    backend = AsymRnRBackend(config)
    models = {
        "eager": model,
        "inductor": torch.compile(model, backend="inductor", fullgraph=True, dynamic=False),
        "asymrnr": torch.compile(model, backend=backend, fullgraph=True, dynamic=False),
    }
    timings = {name: VariantTiming(name) for name in VARIANTS}
    log(f"reference DiT preset {preset!r}: {model_config.video_tokens} video + {model_config.text_tokens} text tokens, "
        f"hidden {model_config.hidden_size}, {model_config.num_blocks} blocks, random seeded weights, "
        f"CFG batch 2, {sampler.steps} flow-matching Euler steps, {torch.get_num_threads()} threads")

    for name in VARIANTS:
        # eager needs no compilation: one step warms it up; the compiled ones run a whole loop,
        # which compiles every variant the loop needs
        warmup = SamplerConfig(steps=1, guidance_scale=sampler.guidance_scale, cfg_mode=sampler.cfg_mode) \
            if name == "eager" else sampler
        log(f"warm-up {name}" + (" (compiles what the loop needs)..." if name != "eager" else "..."))
        start = time.perf_counter()
        backend.reset()
        timed_sample(models[name], inputs, warmup)
        timings[name].warmup_seconds = time.perf_counter() - start
        log(f"  done in {timings[name].warmup_seconds:.1f} s")
    for round_index in range(rounds):
        log(f"timed round {round_index + 1}/{rounds}: the three variants step by step, interleaved")
        backend.reset()
        with torch.no_grad():
            latents, seconds = sample_lockstep(models, inputs.noise, inputs.text, inputs.null_text, sampler)
        for name in VARIANTS:
            timings[name].latent = latents[name]
            timings[name].step_seconds.extend(seconds[name])
    report = backend.report()
    return DemoResult(preset, config, sampler, timings, report.ideal_speedup, report.to_dict(),
                      torch.get_num_threads())


# ---------------------------------------------------------------- command line


def add_demo_command(commands: Any) -> None:
    """Register ``demo`` on the CLI's subparsers."""
    from asymrnr_compile.synthetic.model import SYNTHETIC_PRESETS

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
    add_reduction_options(demo)
    demo.set_defaults(run=demo_command)


def add_reduction_options(parser: argparse.ArgumentParser) -> None:
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


def demo_command(args: argparse.Namespace) -> int:
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
    print("loop = plain Inductor's whole sampling loop time over the variant's, in this process, steps that "
          "compute matchings included (the headline); ideal = FLOP ratio full / reduced (cost model, matching "
          "counted); median step = the same ratio for the median step (a second figure: most steps reuse "
          "matchings); errors are of the final latent against the plain Inductor result")
    summary = {"speed": result.to_dict()}
    if args.quality_prompts > 0:
        summary["quality"] = _quality_demo(args, config)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.json}")
    return 0


def _quality_demo(args: argparse.Namespace, config: AsymRnRConfig) -> dict | None:
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
