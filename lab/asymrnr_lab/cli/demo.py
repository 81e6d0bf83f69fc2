"""The main job: sample with the reference DiT three ways (eager, Inductor, asymrnr) and compare.

Speed is a ratio measured in one process on the same inputs: each variant first runs one full
sampling loop as warm-up (this compiles every variant the loop needs), then the timed loops
run interleaved step by step (step 0 of eager, inductor, asymrnr, then step 1, ...), so that
all three see the same machine load. Quality is the final latent against
the plain Inductor result. The reference model has random (seeded) weights: this part
(:func:`run_demo`) measures speed and numerical closeness, not visual quality.

The quality part (:func:`run_quality_demo`) samples a few prompts with the shipped *trained*
text-to-video model, unaccelerated and under asymrnr from the same noise, with the given
settings and with the other preset's (the published method next to the defaults, or the
defaults next to the published method; :func:`quality_variants`), scores
them from the pixels and writes one picture per prompt. It has no timing column: the
unaccelerated videos are sampled eagerly and asymrnr's compile first (the speed part is the fair
comparison).

``asymrnr-compile demo`` (:func:`add_demo_command`) runs both, printing the settings first.
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
from asymrnr_lab.cli.progress import Progress
from asymrnr_lab.metrics import loop_speedup, psnr_db, relative_l2
from asymrnr_lab.models import (
    build_reference_model,
    reference_inputs,
    synthetic_latents,
)
from asymrnr_lab.models.config import PRESETS, resolve_config
from asymrnr_lab.sampling import SamplerConfig, sample, sample_lockstep

VARIANTS = ("eager", "inductor", "asymrnr")

#: Sampling steps of the speed part. With the default matching cache window of 2 steps, every
#: other step computes matchings, as in a 10- or 50-step run; 4 instead of 10 saves more than a
#: whole loop per variant (the demo's wall time is in README.md).
DEMO_STEPS = 4
#: Prompts of the quality part.
DEMO_QUALITY_PROMPTS = 3

#: Names of the quality part's asymrnr variants (also drawn in the pictures): the given settings,
#: and the same ratios under the other preset (:data:`COMPARED_PRESET`).
GIVEN_VARIANT = "asymrnr"
COMPARED_VARIANTS = {"published": "asymrnr published", "default": "asymrnr defaults"}
#: The preset the quality part runs next to the given settings': the published method next to
#: anything else (on the trained 1024-token model it keeps 59-62% of the videos right against
#: 98.4% for the defaults; docs/defaults.md), the defaults next to the published method.
COMPARED_PRESET = {"default": "published", "published": "default"}


def settings_line(config: AsymRnRConfig) -> str:
    """One line with the settings asymrnr runs with."""
    def on_off(flag: bool) -> str:
        return "on" if flag else "off"

    ratios = f"q_ratio {config.q_ratio}, kv_ratio {config.kv_ratio}"
    if config.h_ratio:
        ratios += f", h_ratio {config.h_ratio}"
    return (f"asymrnr settings (preset {config.preset}): {ratios}, cache_steps {config.cache_steps} (a matching is "
            f"computed on the first "
            f"step of every {config.cache_steps} and reused), warmup_steps {config.warmup_steps}, "
            f"match_on {config.match_on}, redraw_split {on_off(config.redraw_split)}, "
            f"proportional_attention {on_off(config.proportional_attention)}, similarity {config.similarity}")


def compared_config(config: AsymRnRConfig) -> AsymRnRConfig:
    """The other preset (:data:`COMPARED_PRESET`) at ``config``'s ratios and seed."""
    return AsymRnRConfig(preset=COMPARED_PRESET[config.preset], q_ratio=config.q_ratio, kv_ratio=config.kv_ratio,
                         h_ratio=config.h_ratio, seed=config.seed)


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
        the median over rounds, :func:`~asymrnr_lab.metrics.loop_speedup`)."""
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


def timed_sample(model: Callable[..., torch.Tensor], inputs: SamplingInputs, sampler: SamplerConfig,
                 on_step: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, list[float]]:
    """Run one sampling loop; returns the final latent and the seconds of every step.
    ``on_step(step, steps)`` is called after every step (progress display)."""
    stamps = [time.perf_counter()]

    def stamp(step: int, steps: int) -> None:
        stamps.append(time.perf_counter())
        if on_step is not None:
            on_step(step, steps)

    with torch.no_grad():
        latent = sample(model, inputs.noise, inputs.text, inputs.null_text, sampler, on_step=stamp)
    return latent, [b - a for a, b in itertools.pairwise(stamps)]


@dataclass
class QualityDemoResult:
    """The quality part: the trained model sampled unaccelerated and under each asymrnr variant."""

    comparison: Any  # asymrnr_lab.synthetic.compare.QualityComparison
    pictures: list[str]
    checkpoint_step: int
    configs: dict[str, AsymRnRConfig] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        comparison = self.comparison.to_dict()
        for variant in comparison["variants"]:
            # not comparable: the unaccelerated videos are sampled eagerly, asymrnr's compile first
            variant.pop("seconds", None)
        return {**comparison, "pictures": self.pictures, "checkpoint_step": self.checkpoint_step,
                "configs": {name: config.to_dict() for name, config in self.configs.items()}}


def quality_prompts(num_prompts: int):
    """``num_prompts`` captions of the shipped model's task, every attribute cycling through its
    values (prompt i has the i-th shape, colour, background and direction, modulo their counts), so
    that any two consecutive prompts differ in every attribute."""
    from asymrnr_lab.synthetic.config import SyntheticTaskConfig, all_captions
    from asymrnr_lab.synthetic.model import (
        CHECKPOINT_PATH,
        read_checkpoint_metadata,
    )

    task_fields = read_checkpoint_metadata(CHECKPOINT_PATH)["task_config"]
    task = SyntheticTaskConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in task_fields.items()})
    captions = all_captions(task)
    attributes = ("shape", "colour", "background", "direction")
    values = {name: list(dict.fromkeys(getattr(c, name) for c in captions)) for name in attributes}
    by_attributes = {}
    for caption in captions:
        by_attributes.setdefault(tuple(getattr(caption, name) for name in attributes), caption)
    return [by_attributes[tuple(values[name][i % len(values[name])] for name in attributes)]
            for i in range(num_prompts)]


def quality_variants(config: AsymRnRConfig, with_comparison: bool = True) -> dict[str, AsymRnRConfig]:
    """The quality part's asymrnr variants: ``config`` as given and, if ``with_comparison``, the
    same ratios under the other preset (:func:`compared_config`)."""
    variants = {GIVEN_VARIANT: config}
    if with_comparison:
        variants[COMPARED_VARIANTS[COMPARED_PRESET[config.preset]]] = compared_config(config)
    return variants


def picture_legend(variants: list[str]) -> str:
    """What is where in the pictures :func:`run_quality_demo` writes (variants in drawing order)."""
    names = ", ".join(variants)
    return (f"pictures, one PNG and one GIF per prompt, each with its caption drawn on top: "
            f"PNG: one row per variant, top to bottom: {names}; frames 1-8 left to right, numbered; "
            f"GIF: the same variants left to right ({names}), animated, the frame number on top")


def run_quality_demo(
    config: AsymRnRConfig,
    out_dir: str | Path,
    num_prompts: int = DEMO_QUALITY_PROMPTS,
    *,
    seed: int = 0,
    model_preset: str = QUALITY_DEMO_PRESET,
    with_comparison: bool = True,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> QualityDemoResult:
    """Sample ``num_prompts`` prompts with a shipped trained model (``model_preset``, one of
    :data:`~asymrnr_lab.synthetic.model.SYNTHETIC_PRESETS`; default the 1024-token one),
    unaccelerated (eager) and under asymrnr with ``config`` and, if ``with_comparison``, with
    the same ratios under the other preset (:func:`quality_variants`), from the same noise;
    score them and write one
    GIF and one PNG strip per prompt into ``out_dir`` (:func:`picture_legend` says what is where).
    ``progress`` draws each variant's sampling steps on stderr."""
    from asymrnr_lab.synthetic.compare import (
        compare_variants,
        write_comparison_gif,
        write_comparison_strip,
    )
    from asymrnr_lab.synthetic.generate import EVAL_SAMPLER
    from asymrnr_lab.synthetic.model import (
        SHIPPED_CHECKPOINTS,
        SYNTHETIC_PRESETS,
        load_trained_model,
        read_checkpoint_metadata,
    )

    checkpoint = SHIPPED_CHECKPOINTS[check_choice("model_preset", model_preset, SYNTHETIC_PRESETS)]
    model, task = load_trained_model(checkpoint)
    step = int(read_checkpoint_metadata(checkpoint).get("step", 0))
    captions = quality_prompts(num_prompts)
    configs = quality_variants(config, with_comparison)
    log(f"trained text-to-video DiT ({checkpoint.name}, step {step}): {model.config.video_tokens} video "
        f"tokens, {len(captions)} prompts, noise seed {seed}; variants: unaccelerated (eager), "
        + ", ".join(configs))
    bars: dict[str, Progress] = {}

    def on_variant(name: str) -> None:
        if progress:
            label = f"sampling {name}" + (" (the first steps compile)" if name in configs else "")
            bars[name] = Progress(label, EVAL_SAMPLER.steps)

    def on_step(name: str, step: int, steps: int) -> None:
        if name in bars:
            bars[name].update(step + 1)

    try:
        comparison = compare_variants(model, task, captions, [seed] * len(captions), configs, EVAL_SAMPLER,
                                      batch_size=len(captions), compile_reference=False, log=log,
                                      on_step=on_step, on_variant=on_variant)
    finally:
        for bar in bars.values():
            bar.close()
    out_dir = Path(out_dir)
    pictures = []
    for i, caption in enumerate(captions):
        videos = {name: v.videos[i] for name, v in comparison.variants.items()}
        stem = caption.text.replace(" ", "_")
        pictures.append(str(write_comparison_gif(videos, out_dir / f"{i}_{stem}.gif", caption=caption.text)))
        pictures.append(str(write_comparison_strip(videos, out_dir / f"{i}_{stem}.png", caption=caption.text)))
    return QualityDemoResult(comparison, pictures, step, configs)


def run_demo(
    preset: str = "attention",
    config: AsymRnRConfig | None = None,
    sampler: SamplerConfig | None = None,
    *,
    rounds: int = 1,
    seed: int = 0,
    log: Callable[[str], None] = print,
    progress: bool = True,
) -> DemoResult:
    """Run the comparison (see module docstring). ``rounds`` timed loops per variant;
    ``progress`` draws the steps of every loop on stderr."""
    config = config if config is not None else AsymRnRConfig()
    sampler = sampler if sampler is not None else SamplerConfig(steps=DEMO_STEPS)
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

    def bar(label: str, steps: int) -> Callable[[int, int], None] | None:
        if not progress:
            return None
        shown = Progress(label, steps)
        return lambda step, total: shown.update(step + 1)

    for name in VARIANTS:
        # eager needs no compilation: one step warms it up; the compiled ones run a whole loop,
        # which compiles every variant the loop needs
        warmup = SamplerConfig(steps=1, guidance_scale=sampler.guidance_scale, cfg_mode=sampler.cfg_mode) \
            if name == "eager" else sampler
        what = "one step" if name == "eager" else "one whole loop, compiling included"
        start = time.perf_counter()
        backend.reset()
        timed_sample(models[name], inputs, warmup,
                     on_step=bar(f"warm-up {name}" + ("" if name == "eager" else " (the first steps compile)"),
                                 warmup.steps))
        timings[name].warmup_seconds = time.perf_counter() - start
        log(f"warm-up {name} ({what}): {timings[name].warmup_seconds:.1f} s")
    for round_index in range(rounds):
        log(f"timed round {round_index + 1}/{rounds}: the three variants step by step, interleaved")
        backend.reset()
        with torch.no_grad():
            latents, seconds = sample_lockstep(models, inputs.noise, inputs.text, inputs.null_text, sampler,
                                               on_step=bar(f"timed round {round_index + 1}/{rounds}", sampler.steps))
        for name in VARIANTS:
            timings[name].latent = latents[name]
            timings[name].step_seconds.extend(seconds[name])
    report = backend.report()
    return DemoResult(preset, config, sampler, timings, report.ideal_speedup, report.to_dict(),
                      torch.get_num_threads())


# ---------------------------------------------------------------- command line

DESCRIPTION = """\
The main job, in two parts; prints the asymrnr settings first.

Speed: samples with the bundled reference DiT (random seeded weights, --preset) three ways,
eager, plain Inductor and asymrnr, in one process on the same inputs. Each variant first runs one
whole sampling loop as warm-up (compiling included), then the timed loops run the three variants
step by step, interleaved. Prints the whole-loop speedup against Inductor (the headline), the
ideal speedup (FLOP ratio from the cost model), the median-step speedup and the error of the final
latent against Inductor's.

Quality: samples --quality-prompts captions with the shipped TRAINED text-to-video model,
unaccelerated and under asymrnr with the given settings and with the settings that keep its
videos right (match_on hidden_states, redraw_split, proportional_attention, cache_steps 2), from
the same noise; prints adherence scored from the pixels and PSNR/SSIM against the unaccelerated
videos (no timing: the speed part is the fair comparison), and writes a PNG strip and a GIF per
prompt into --out.

Its wall time on 2 CPU cores, with an empty and a warm Inductor cache, is in README.md. Progress
(step k/n, elapsed seconds) goes to stderr."""


def add_demo_command(commands: Any) -> None:
    """Register ``demo`` on the CLI's subparsers."""
    from asymrnr_lab.cli import add_command
    from asymrnr_lab.synthetic.model import SYNTHETIC_PRESETS

    demo = add_command(commands, "demo", "the main job: speed of eager vs Inductor vs asymrnr on the reference "
                                         "DiT, then video quality on the trained text-to-video model", DESCRIPTION)
    demo.add_argument("--preset", default="attention", choices=list(PRESETS),
                      help="reference DiT size of the speed part")
    demo.add_argument("--steps", type=int, default=DEMO_STEPS, help="sampling steps of the speed part")
    demo.add_argument("--rounds", type=int, default=1, help="timed loops per variant")
    demo.add_argument("--json", help="also write the numbers to this JSON file")
    demo.add_argument("--out", default="out/demo", help="folder for the quality part's GIF/PNG pictures")
    demo.add_argument("--quality-prompts", type=int, default=DEMO_QUALITY_PROMPTS,
                      help="prompts sampled with the trained model for the quality part (0: skip it)")
    demo.add_argument("--quality-model", choices=SYNTHETIC_PRESETS, default=QUALITY_DEMO_PRESET,
                      help="trained model of the quality part (synthetic-fine: 1024 video tokens; "
                           "synthetic: the 256-token one, 5x faster on a CPU)")
    demo.add_argument("--no-comparison", dest="comparison", action="store_false",
                      help="quality part: run only the given settings, not also the other preset's (the published "
                           "method next to the defaults, the defaults next to --published)")
    add_reduction_options(demo)
    demo.set_defaults(run=demo_command)


#: The options :func:`add_reduction_options` adds, as ``AsymRnRConfig`` field names.
REDUCTION_OPTIONS = ("q_ratio", "kv_ratio", "cache_steps", "warmup_steps", "match_on", "redraw_split",
                     "proportional_attention")


def add_reduction_options(parser: argparse.ArgumentParser) -> None:
    """The asymrnr settings as flags. Unset flags take the preset's value (``--published``: the
    published method's, else the backend's defaults), so every flag default is None here."""
    defaults, published = AsymRnRConfig(), AsymRnRConfig(preset="published")

    def default_text(name: str) -> str:
        return f"default {getattr(defaults, name)}; published {getattr(published, name)}"

    parser.add_argument("--published", dest="asymrnr_preset", action="store_const", const="published",
                        default="default", help="start from the published method (preset='published') instead of "
                                                "the defaults chosen by measured quality (docs/defaults.md)")
    parser.add_argument("--q-ratio", type=float, help=f"query reduction ratio [0, 1) ({default_text('q_ratio')})")
    parser.add_argument("--kv-ratio", type=float,
                        help=f"key/value reduction ratio [0, 1) ({default_text('kv_ratio')})")
    parser.add_argument("--cache-steps", type=int, help=f"matching cache window ({default_text('cache_steps')})")
    parser.add_argument("--warmup-steps", type=int,
                        help=f"steps without reduction at the start ({default_text('warmup_steps')})")
    parser.add_argument("--match-on", choices=MATCH_SOURCES,
                        help=f"what q/kv are matched on ({default_text('match_on')})")
    parser.add_argument("--redraw-split", action=argparse.BooleanOptionalAction,
                        help=f"a new dst split per matching window ({default_text('redraw_split')})")
    parser.add_argument("--proportional-attention", action=argparse.BooleanOptionalAction,
                        help="weigh each kept key by the keys it stands for "
                             f"({default_text('proportional_attention')})")


def config_from_args(args: argparse.Namespace) -> AsymRnRConfig:
    """The config the flags of :func:`add_reduction_options` ask for: the preset, then every flag
    given."""
    given = {name: getattr(args, name) for name in REDUCTION_OPTIONS if getattr(args, name) is not None}
    return AsymRnRConfig(preset=args.asymrnr_preset, **given)


SPEED_LEGEND = (
    "loop = plain Inductor's whole sampling loop time over the variant's, in this process, steps that compute "
    "matchings included (the headline); ideal = FLOP ratio full / reduced (cost model, matching counted); "
    "median step = the same ratio for the median step (a second figure: most steps reuse matchings); errors are "
    "of the final latent against the plain Inductor result"
)


def compile_line(result: DemoResult) -> str:
    """The asymrnr backend's compile work, set against its warm-up time (which contains it)."""
    report = result.report
    return (f"asymrnr: {report['num_variants']} compiled variants (one per distinct reduction plan, e.g. computing "
            f"vs reusing matchings); Inductor compiled their subgraphs in {report['compile_seconds']:.1f} s, part of "
            f"the {result.timings['asymrnr'].warmup_seconds:.1f} s asymrnr warm-up above (which also counts Dynamo's "
            f"graph capture, the analysis and running the {result.sampler.steps} steps); {report['calls']} calls, "
            f"matching cache {report['cache_hits']} hits / {report['cache_misses']} misses")


def quality_legend(configs: dict[str, AsymRnRConfig]) -> str:
    lines = ["all right = valid video with every caption attribute detected from the pixels; PSNR/SSIM of each "
             "asymrnr variant's videos against the unaccelerated ones from the same noise",
             "a low PSNR with every video right is expected: the reduced model is a slightly different denoiser, "
             "and from the same noise its small differences in the first steps can settle the object at another "
             "position or phase of its motion (a right video, pixels elsewhere); 'all right' checks what the "
             "caption asks for, PSNR how close the pixels stay",
             "no timing column: the unaccelerated videos are sampled eagerly and asymrnr's include compiling, so "
             "their times are not comparable; the speed table above is the fair comparison",
             f"{GIVEN_VARIANT}: the settings printed first (by default the backend's defaults)"]
    for preset, name in COMPARED_VARIANTS.items():
        if name in configs:
            what = "the published method (preset='published')" if preset == "published" else "the backend's defaults"
            lines.append(f"{name}: the same ratios with {what}; docs/defaults.md says why they differ")
    return "\n".join(lines)


def demo_command(args: argparse.Namespace) -> int:
    from asymrnr_lab.sampling import SamplerConfig

    config = config_from_args(args)
    print(settings_line(config), flush=True)
    print("\nspeed: the reference DiT (random seeded weights), eager vs plain Inductor vs asymrnr", flush=True)
    result = run_demo(args.preset, config, SamplerConfig(steps=args.steps), rounds=args.rounds,
                      log=lambda line: print(line, flush=True))
    print()
    print(result.table())
    print()
    print(compile_line(result))
    print(SPEED_LEGEND)
    summary = {"speed": result.to_dict()}
    if args.quality_prompts > 0:
        summary["quality"] = _quality_demo(args, config)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.json}")
    return 0


def _quality_demo(args: argparse.Namespace, config: AsymRnRConfig) -> dict | None:
    from asymrnr_lab.synthetic.model import SHIPPED_CHECKPOINTS

    checkpoint = SHIPPED_CHECKPOINTS[args.quality_model]
    print(f"\nquality: the trained text-to-video model ({args.quality_model}, shipped checkpoint), "
          "unaccelerated vs asymrnr")
    if not checkpoint.is_file():
        print(f"skipped: no checkpoint at {checkpoint} (train one with `asymrnr-compile train`)")
        return None
    try:
        import PIL  # noqa: F401  (pictures need Pillow, which the lab's matplotlib dependency brings)
    except ImportError:
        print("skipped: the pictures need Pillow (matplotlib brings it): pip install -e ./lab")
        return None
    quality = run_quality_demo(config, args.out, args.quality_prompts, model_preset=args.quality_model,
                               with_comparison=args.comparison,
                               log=lambda line: print(line, flush=True))
    print()
    print(quality.comparison.table(seconds=False))
    print(quality_legend(quality.configs))
    print(picture_legend(list(quality.comparison.variants)) + ":")
    for path in quality.pictures:
        print(f"  {path}")
    return quality.to_dict()
