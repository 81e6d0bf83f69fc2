"""End-to-end benchmark: speed, quality, memory and compile cost on real model families.

Per model, every variant samples the same structured latent with the same sampler, driven the
way the model's diffusers pipeline drives it (one batched cond/uncond call per step, or two
calls per step with the same timestep), all in one process:

- ``eager``: the model as is;
- ``inductor``: ``torch.compile(backend="inductor")``, the baseline of every speedup;
- ``asymrnr_q0.5_kv0.3`` and ``asymrnr_q0.3_kv0.2`` (conservative): the published AsymRnR
  (``preset="published"``) at fixed ratios, the matching cached for ``--cache-steps``;
- ``asymrnr_default``: the backend's defaults as a user gets them (q 0.5 / kv 0.3 matched on a
  32-dim projection of the hidden states, a new split per window, proportional attention, a
  matching every 2 steps);
- ``asymrnr_default_exact_matching`` / ``asymrnr_default_match_dims64``: the defaults with the
  exact matching (``match_dims=None``) / a 64-dim projection;
- ``asymrnr_default_cache1``: the defaults with a new matching every step (``cache_steps=1``,
  the quality options' most faithful setting);
- ``random_q0.5_kv0.3``: the plain token-dropping baseline at the same kept counts, i.e. the
  same attention FLOPs (``token_selection="random"``: no similarity matching);
- ``asymrnr_calibrated``: a schedule from ``asymrnr_compile.calibrate`` for a predicted 1.5x,
  on a redundancy profile of the same loop (skipped, with the reason in the JSON, when the
  calibrator is absent or fails).

Every compiled variant first runs one whole sampling loop as warm-up (compiling all it needs;
eager runs one step), then the timed loop runs the variants interleaved step by step
(:func:`asymrnr_lab.sampling.sample_lockstep`), so they share the machine's load
(docs/measuring.md). Quality is the final latent against plain Inductor's. The weights are random
(seeded): quality numbers measure closeness to the unreduced model, not visual quality.

    python benchmarks/e2e.py --model reference --json out/e2e_reference.json   # ~5 min, 2 cores
    python benchmarks/e2e.py --model all --json out/e2e_all.json                # ~25 min
    python benchmarks/e2e.py --model all --quick                                # smoke run, ~2 min
    python benchmarks/e2e.py --model cogvideox --device cuda --dtype bfloat16   # GPU: Triton
    python benchmarks/e2e.py --variants inductor,asymrnr_q0.5_kv0.3 --profile-matching-step 2 --threads 1
    python benchmarks/e2e.py --preset synthetic-fine --batch 16 --threads 1 \\
        --variants inductor,asymrnr_default,random_q0.5_kv0.3     # the speed/quality table's batch (CFG 32)

``--profile-matching-step LOOPS`` adds, per compiled variant, the CPU self time of every op in a
matching step against the loop's other steps (:func:`profile_matching_step`; plain Inductor's
steps are all "other", the baseline).

On a GPU, the same command runs every variant on the device (Inductor then generates Triton);
each model call is followed by ``torch.cuda.synchronize()`` so that step times are real, and
peak device memory is reported next to host RSS. ``python benchmarks/write_results.py
out/e2e_*.json`` puts the tables into ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import itertools
import json
import os
import resource
import shlex
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch._dynamo
from results_md import machine_info
from torch._dynamo.utils import counters

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_lab.metrics import loop_speedup, psnr_db, relative_l2
from asymrnr_lab.models import (
    build_reference_model,
    reference_inputs,
    synthetic_latents,
)
from asymrnr_lab.models.config import PRESETS
from asymrnr_lab.models.inputs import synthetic_text_embeddings
from asymrnr_lab.sampling import SamplerConfig, sample, sample_lockstep

FAMILIES = ("cogvideox", "hunyuan", "mochi", "wan", "ltx")
MODELS = ("reference", *FAMILIES)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: (variant name, AsymRnRConfig options) of the fixed-ratio variants. The named ratios are the
#: published method (``preset="published"``) with the matching window of ``--cache-steps``;
#: ``asymrnr_default`` is the backend's defaults as a user gets them, its own window included.
MAIN_RATIOS = {"q_ratio": 0.5, "kv_ratio": 0.3}
CONSERVATIVE_RATIOS = {"q_ratio": 0.3, "kv_ratio": 0.2}
PUBLISHED = {"preset": "published"}
DEFAULT_VARIANT = "asymrnr_default"
#: The defaults changed in one setting: another matching projection (``AsymRnRConfig.match_dims``;
#: the defaults' is 32 dimensions), the exact matching or a 64-dim one; a matching every step
#: (the defaults' window is 2 steps).
DEFAULT_CHANGED_VARIANTS = {"asymrnr_default_exact_matching": {"match_dims": None},
                            "asymrnr_default_match_dims64": {"match_dims": 64},
                            "asymrnr_default_cache1": {"cache_steps": 1}}
ASYMRNR_VARIANTS: dict[str, dict[str, Any]] = {
    "asymrnr_q0.5_kv0.3": {**PUBLISHED, **MAIN_RATIOS},
    "asymrnr_q0.3_kv0.2": {**PUBLISHED, **CONSERVATIVE_RATIOS},
    "random_q0.5_kv0.3": {**PUBLISHED, **MAIN_RATIOS, "token_selection": "random"},
    DEFAULT_VARIANT: {},
    **DEFAULT_CHANGED_VARIANTS,
}
#: Variants that keep the backend's own matching window instead of ``--cache-steps``.
OWN_CACHE_WINDOW = frozenset({DEFAULT_VARIANT, *DEFAULT_CHANGED_VARIANTS})
CALIBRATED = "asymrnr_calibrated"
VARIANTS = ("eager", "inductor", *ASYMRNR_VARIANTS, CALIBRATED)
#: What ``--variants`` runs when not given: every variant but the one-setting studies of the
#: defaults (:data:`DEFAULT_CHANGED_VARIANTS`), which are asked for by name.
DEFAULT_RUN_VARIANTS = tuple(v for v in VARIANTS if v not in DEFAULT_CHANGED_VARIANTS)
DEFAULT_STEPS = 10
DEFAULT_CACHE_STEPS = 5
CALIBRATION_TARGET_SPEEDUP = 1.5

# Reference preset at full size and in --quick mode.
REFERENCE_PRESET, QUICK_REFERENCE_PRESET = "attention", "tiny"
# --quick: sites have 32-128 video tokens; the default minimum (256) would skip them.
QUICK_MIN_VIDEO_TOKENS = 16
QUICK_STEPS, QUICK_CACHE_STEPS = 3, 2
# The negative prompt is shorter than the prompt: its last tokens are padding (mask 0).
UNCOND_PADDING = 8
NULL_TEXT_SEED_OFFSET = 17
# HunyuanVideo's embedded guidance, as its pipeline passes it (guidance_scale * 1000).
HUNYUAN_GUIDANCE = 6000.0
TIMESTEP_RANGE = 1000.0


# ---------------------------------------------------------------------------------------------
# Models and how their pipelines call them
# ---------------------------------------------------------------------------------------------


@dataclass
class Workload:
    """One model and the inputs of its sampling loop.

    Attributes:
        name: model key (``"reference"`` or a diffusers family).
        model: the module (eager).
        noise: initial latent ``(1, C, F, H, W)`` float32 (structured, seeded).
        text, null_text: cond and uncond text embeddings ``(1, T, D)``.
        sampler: steps and CFG call pattern (the pipeline's).
        call: ``call(fn)`` wraps a model callable (eager or compiled) into the sampler's
            ``model(hidden_states=, encoder_hidden_states=, timestep=)`` form.
        description: one line for the table.
        min_video_tokens: ``AsymRnRConfig.min_video_tokens`` for this workload.
    """

    name: str
    model: torch.nn.Module
    noise: torch.Tensor
    text: torch.Tensor
    null_text: torch.Tensor
    sampler: SamplerConfig
    call: Callable[[Callable[..., Any]], Callable[..., torch.Tensor]]
    description: str
    min_video_tokens: int = 256
    info: dict[str, Any] = field(default_factory=dict)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reference_workload(quick: bool, steps: int, device: torch.device, dtype: torch.dtype,
                        preset: str | None = None, batch: int = 1) -> Workload:
    from asymrnr_lab.models.config import resolve_config

    preset = preset if preset is not None else QUICK_REFERENCE_PRESET if quick else REFERENCE_PRESET
    config = resolve_config(preset)
    model = build_reference_model(preset, seed=0).to(device=device, dtype=dtype).eval()
    inputs = reference_inputs(preset, seed=0, batch_size=batch, device=device)
    noise = synthetic_latents(tuple(inputs["hidden_states"].shape), seed=1, device=device)
    null_text = reference_inputs(preset, seed=NULL_TEXT_SEED_OFFSET, batch_size=batch,
                                 device=device)["encoder_hidden_states"]

    def call(fn: Callable[..., Any]) -> Callable[..., torch.Tensor]:
        def model_fn(hidden_states, encoder_hidden_states, timestep):
            out = fn(hidden_states=hidden_states.to(dtype), encoder_hidden_states=encoder_hidden_states.to(dtype),
                     timestep=timestep)
            _synchronize(device)
            return out.float()
        return model_fn

    grid = config.grid
    return Workload(
        "reference", model, noise, inputs["encoder_hidden_states"], null_text,
        SamplerConfig(steps=steps, cfg_mode="batched"), call,
        f"bundled reference DiT, preset {preset!r}: joint attention, text first; batched CFG, "
        f"{batch} prompt(s) per batch",
        QUICK_MIN_VIDEO_TOKENS if quick else 256,
        {"grid": list(grid), "video_tokens": config.video_tokens, "text_tokens": config.text_tokens,
         "hidden": config.hidden_size, "heads": config.num_heads, "blocks": config.num_blocks,
         "cfg_mode": "batched", "prompts_per_batch": batch},
    )


def _diffusers_workload(name: str, quick: bool, steps: int, device: torch.device, dtype: torch.dtype) -> Workload:
    from asymrnr_lab.models import diffusers_models as dm

    spec = dm.E2E_SPECS[name]
    model = dm.build_e2e(name, seed=0, quick=quick, dtype=dtype, device=device)
    frames, height, width = dm.e2e_latent_size(name, quick)
    noise = synthetic_latents((1, spec.latent_channels, frames, height, width), seed=1, device=device)
    text_shape = (1, dm.E2E_TEXT_TOKENS, dm.E2E_TEXT_DIM)
    text = synthetic_text_embeddings(text_shape, seed=2, device=device)
    null_text = synthetic_text_embeddings(text_shape, seed=2 + NULL_TEXT_SEED_OFFSET, device=device)
    cond_mask = torch.ones(1, dm.E2E_TEXT_TOKENS, dtype=torch.bool, device=device)
    uncond_mask = cond_mask.clone()
    uncond_mask[:, -UNCOND_PADDING:] = False

    def extras(batch_text: torch.Tensor, is_cond: list[bool]) -> dict[str, Any]:
        """Per-call keyword inputs besides latent, text and timestep (batch rows cond/uncond)."""
        out: dict[str, Any] = {}
        if spec.text_mask:
            out["encoder_attention_mask"] = torch.cat([cond_mask if c else uncond_mask for c in is_cond])
        if name == "hunyuan":
            out["encoder_attention_mask"] = out["encoder_attention_mask"].to(dtype)
            out["pooled_projections"] = batch_text.mean(dim=1)
            out["guidance"] = torch.full((len(is_cond),), HUNYUAN_GUIDANCE, device=device, dtype=torch.float32)
        if name == "ltx":
            out.update(num_frames=frames, height=height, width=width)
        return out

    def to_model(x: torch.Tensor) -> torch.Tensor:
        x = x.to(dtype)
        if spec.layout == "bfchw":
            return x.permute(0, 2, 1, 3, 4).contiguous()
        if spec.layout == "tokens":
            return x.flatten(2).transpose(1, 2).contiguous()
        return x

    def from_model(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if spec.layout == "bfchw":
            y = y.permute(0, 2, 1, 3, 4)
        elif spec.layout == "tokens":
            y = y.transpose(1, 2).reshape(like.shape)
        return y.float().contiguous()

    def call(fn: Callable[..., Any]) -> Callable[..., torch.Tensor]:
        def model_fn(hidden_states, encoder_hidden_states, timestep):
            batch = hidden_states.shape[0]
            if spec.cfg_mode == "batched":
                is_cond = [True] * (batch // 2) + [False] * (batch - batch // 2)
            else:
                is_cond = [encoder_hidden_states is text] * batch
            if spec.timesteps_count_up:  # Mochi: the pipeline passes 1000 - t and negates the output
                timestep = TIMESTEP_RANGE - timestep
            batch_text = encoder_hidden_states.to(dtype)
            out = fn(hidden_states=to_model(hidden_states), encoder_hidden_states=batch_text,
                     timestep=timestep, return_dict=False, **extras(batch_text, is_cond))[0]
            _synchronize(device)
            out = from_model(out, hidden_states)
            return -out if spec.timesteps_count_up else out
        return model_fn

    patch = 1 if spec.layout == "tokens" else 2
    tokens = frames * (height // patch) * (width // patch)
    return Workload(
        name, model, noise, text, null_text, SamplerConfig(steps=steps, cfg_mode=spec.cfg_mode), call,
        f"diffusers {spec.cls_name}: {spec.description}",
        QUICK_MIN_VIDEO_TOKENS if quick else 256,
        {"class": spec.cls_name, "video_tokens": tokens, "text_tokens": dm.E2E_TEXT_TOKENS,
         "hidden": dm.E2E_HEADS * dm.E2E_HEAD_DIM, "heads": dm.E2E_HEADS,
         "blocks": 2 if quick else dm.E2E_BLOCKS, "cfg_mode": spec.cfg_mode},
    )


def build_workload(name: str, *, quick: bool = False, steps: int | None = None,
                   device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                   preset: str | None = None, batch: int = 1) -> Workload:
    """The model ``name`` (one of :data:`MODELS`) and its sampling inputs.

    ``steps`` defaults to 10 (3 with ``quick``); ``quick`` uses the tiny reference preset or a
    2 x 8 x 8 token grid with 2 blocks for the diffusers families. ``preset`` picks the
    reference DiT's size (default ``"attention"``; e.g. ``"cogvideox-2b-shape"`` on a GPU);
    ``batch`` its prompts per model call (default 1; batched CFG doubles it).
    """
    if preset is not None and name != "reference":
        raise ValueError(f"preset applies to the reference model only, not to {name!r}")
    if batch != 1 and name != "reference":
        raise ValueError(f"batch applies to the reference model only, not to {name!r}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    if name not in MODELS:
        raise ValueError(f"model must be one of {MODELS} or 'all', got {name!r}")
    steps = steps if steps is not None else (QUICK_STEPS if quick else DEFAULT_STEPS)
    device = torch.device(device)
    if name == "reference":
        return _reference_workload(quick, steps, device, dtype, preset, batch)
    return _diffusers_workload(name, quick, steps, device, dtype)


# ---------------------------------------------------------------------------------------------
# Variants
# ---------------------------------------------------------------------------------------------


def calibrated_options(workload: Workload, cache_steps: int) -> tuple[dict[str, Any] | None, str]:
    """AsymRnRConfig options with a calibrated schedule, or ``(None, why not)``.

    When ``asymrnr_compile.calibrate`` exists: profile the model's redundancy over the same
    sampling loop (``asymrnr_compile.profile``), then ``calibrate(profile,
    target_speedup=CALIBRATION_TARGET_SPEEDUP, best_effort=True)``. A missing or failing
    calibrator is reported as skipped, never raised. The options carry a private
    ``"_calibration"`` entry (seconds spent, target and predicted speedup) that
    :func:`make_variants` moves into the variant's JSON row before building the config.
    """
    if importlib.util.find_spec("asymrnr_compile.profiling.calibrate") is None:
        return None, "asymrnr_compile.profiling.calibrate is not available"
    try:
        import asymrnr_compile
        from asymrnr_compile.profiling.calibrate import calibrate, predicted_speedup

        def run(fn: Callable[..., Any]) -> torch.Tensor:
            return sample(workload.call(fn), workload.noise, workload.text, workload.null_text, workload.sampler)

        start = time.perf_counter()
        torch._dynamo.reset()
        profile = asymrnr_compile.profile(
            workload.model, run, config=AsymRnRConfig(preset="published", cache_steps=cache_steps,
                                                      min_video_tokens=workload.min_video_tokens))
        schedule = calibrate(profile, target_speedup=CALIBRATION_TARGET_SPEEDUP, best_effort=True,
                             model=workload.name)
        seconds = time.perf_counter() - start
        torch._dynamo.reset()
        return {"preset": "published", "schedule": schedule, "cache_steps": cache_steps,
                "_calibration": {"seconds": seconds, "target_speedup": CALIBRATION_TARGET_SPEEDUP,
                                 "predicted_speedup": predicted_speedup(profile, schedule)}}, ""
    except Exception as error:  # noqa: BLE001  (an unfinished calibrator must not stop the benchmark)
        return None, f"calibration failed: {type(error).__name__}: {error}"


@dataclass
class Variant:
    """One way of running the model, and what was measured about it."""

    name: str
    fn: Callable[..., Any]
    backend: AsymRnRBackend | None = None
    compiled: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    warmup_seconds: float = 0.0
    warmup_step_seconds: list[float] = field(default_factory=list)
    step_seconds: list[float] = field(default_factory=list)
    graphs: int = 0
    recompiles: int = 0
    latent: torch.Tensor | None = None
    peak_rss_mb: float = 0.0
    peak_device_mb: float | None = None


def make_variants(workload: Workload, cache_steps: int, names: tuple[str, ...] = VARIANTS,
                  skipped: dict[str, str] | None = None) -> list[Variant]:
    """The variants ``names`` of ``workload`` (skipped ones are added to ``skipped``)."""
    skipped = skipped if skipped is not None else {}
    model = workload.model
    variants = []
    for name in names:
        if name == "eager":
            variants.append(Variant(name, model, compiled=False))
        elif name == "inductor":
            variants.append(Variant(name, torch.compile(model, backend="inductor", fullgraph=True, dynamic=False)))
        else:
            if name == CALIBRATED:
                options, reason = calibrated_options(workload, cache_steps)
                if options is None:
                    skipped[name] = reason
                    continue
            else:
                options = dict(ASYMRNR_VARIANTS[name])
                if name not in OWN_CACHE_WINDOW:
                    options["cache_steps"] = cache_steps
            extra = {"calibration": options.pop("_calibration")} if "_calibration" in options else {}
            options.setdefault("min_video_tokens", workload.min_video_tokens)
            backend = AsymRnRBackend(AsymRnRConfig.from_options(options))
            fn = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
            variants.append(Variant(name, fn, backend, extra=extra))
    return variants


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


def _peak_rss_mb() -> float:
    """Peak resident set size of this process so far (MB); Linux reports KiB."""
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _graphs_compiled() -> int:
    return int(counters["stats"]["unique_graphs"])


def _reset_backends(variants: list[Variant]) -> None:
    for variant in variants:
        if variant.backend is not None:
            variant.backend.reset()


def measure(workload: Workload, variants: list[Variant], *, rounds: int = 1,
            log: Callable[[str], None] = print) -> None:
    """Warm every variant up (one step eager, one whole loop compiled), then time them
    interleaved step by step for ``rounds`` loops; fills in the variants' measurements."""
    sampler = workload.sampler
    device = workload.noise.device
    for variant in variants:
        warmup = SamplerConfig(steps=1, guidance_scale=sampler.guidance_scale, cfg_mode=sampler.cfg_mode) \
            if not variant.compiled else sampler
        log(f"  warm-up {variant.name}...")
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        _reset_backends([variant])
        graphs_before = _graphs_compiled()
        stamps = [time.perf_counter()]
        with torch.no_grad():
            sample(workload.call(variant.fn), workload.noise, workload.text, workload.null_text, warmup,
                   on_step=lambda step, steps, stamps=stamps: stamps.append(time.perf_counter()))
        variant.warmup_step_seconds = [b - a for a, b in itertools.pairwise(stamps)]
        variant.warmup_seconds = stamps[-1] - stamps[0]
        variant.graphs = _graphs_compiled() - graphs_before
        variant.recompiles = max(0, variant.graphs - 1)
        variant.peak_rss_mb = _peak_rss_mb()
        if device.type == "cuda":
            variant.peak_device_mb = torch.cuda.max_memory_allocated(device) / 2**20
        log(f"    {variant.warmup_seconds:.1f} s, {variant.graphs} Dynamo graph(s)")
    graphs_before = _graphs_compiled()
    for round_index in range(rounds):
        log(f"  timed round {round_index + 1}/{rounds}: {len(variants)} variants interleaved step by step")
        _reset_backends(variants)
        with torch.no_grad():
            latents, seconds = sample_lockstep({v.name: workload.call(v.fn) for v in variants}, workload.noise,
                                               workload.text, workload.null_text, sampler)
        for variant in variants:
            variant.latent = latents[variant.name]
            variant.step_seconds.extend(seconds[variant.name])
    # Any graph compiled after warm-up is a recompile of some variant (there should be none).
    late = _graphs_compiled() - graphs_before
    if late:
        log(f"  WARNING: {late} Dynamo graph(s) compiled during the timed loops")
        for variant in variants:
            if variant.compiled:
                variant.recompiles += late  # cannot attribute; charge every compiled variant


#: Ops ``--profile-matching-step`` prints (largest extra self time of a matching step first; the
#: JSON has them all).
PROFILE_TOP_OPS = 12
#: The custom op of the matcher: its inclusive time is the whole matching.
MATCH_OP_KEY = "asymrnr::match_tokens"


def profile_matching_step(workload: Workload, variant: Variant, repeats: int) -> dict[str, Any]:
    """Where a matching step's extra time goes: ``torch.profiler`` CPU self time per op.

    Runs ``repeats`` whole sampling loops of ``variant`` (warmed up), each after
    ``backend.reset()`` (a new video, so its matching steps compute matchings), with every
    model call profiled on its own; a variant without a backend (plain Inductor) has only
    "other" steps, the baseline to read a reduced step's ops against. Per op, the mean self
    time per matching step and per other step (reuse steps: the same kernels without the
    matching), in ms; the ops are sorted by the difference. Also the steps' total self times and
    the matcher's inclusive time per matching step. Profiling adds overhead to every op: read
    the split, not the absolute times.
    """
    per_step: dict[str, Counter[str]] = {"matching": Counter(), "other": Counter()}
    steps_seen: Counter[str] = Counter()
    matcher_ms: list[float] = []
    for _ in range(repeats):
        step_tables, step_matcher = _profiled_loop(workload, variant)
        matching = set(_matching_steps(variant.backend))
        for step, table in step_tables.items():
            kind = "matching" if step in matching else "other"
            per_step[kind].update(table)
            steps_seen[kind] += 1
            if kind == "matching":
                matcher_ms.append(step_matcher[step])

    def mean(kind: str, key: str) -> float:
        return per_step[kind][key] / steps_seen[kind] if steps_seen[kind] else 0.0

    keys = set(per_step["matching"]) | set(per_step["other"])
    ops = sorted(({"op": key, "matching_step_ms": mean("matching", key), "other_step_ms": mean("other", key)}
                  for key in keys), key=lambda op: op["other_step_ms"] - op["matching_step_ms"])
    total = {kind: sum(per_step[kind].values()) / steps_seen[kind] if steps_seen[kind] else None
             for kind in per_step}
    return {
        "repeats": repeats,
        "matching_steps_profiled": steps_seen["matching"],
        "other_steps_profiled": steps_seen["other"],
        "matching_step_self_ms": total["matching"],
        "other_step_self_ms": total["other"],
        "matcher_inclusive_ms": statistics.mean(matcher_ms) if matcher_ms else None,
        "ops": ops,
    }


#: Profiler keys that name one compiled graph by its hash: counted together, so that the subgraphs
#: (split at attention calls) of a computing and of a reusing variant compare.
_GRAPH_KEY_PREFIXES = ("## Call CompiledFxGraph", "Torch-Compiled Region")


def _op_key(key: str) -> str:
    return next((f"{prefix} (any)" for prefix in _GRAPH_KEY_PREFIXES if key.startswith(prefix)), key)


def _profiled_loop(workload: Workload, variant: Variant) -> tuple[dict[int, Counter[str]], dict[int, float]]:
    """One sampling loop of ``variant`` after ``backend.reset()``, every model call under
    ``torch.profiler``: per step, ms of self time per op, and the matcher's inclusive ms."""
    from torch.profiler import ProfilerActivity, profile

    _reset_backends([variant])
    step_tables: dict[int, Counter[str]] = defaultdict(Counter)
    step_matcher: dict[int, float] = defaultdict(float)
    current = {"step": 0}
    model_fn = workload.call(variant.fn)

    def profiled(**inputs: Any) -> torch.Tensor:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            out = model_fn(**inputs)
        for event in prof.key_averages():
            step_tables[current["step"]][_op_key(event.key)] += event.self_cpu_time_total / 1e3
            if event.key == MATCH_OP_KEY:
                step_matcher[current["step"]] += event.cpu_time_total / 1e3
        return out

    with torch.no_grad():
        sample(profiled, workload.noise, workload.text, workload.null_text, workload.sampler,
               on_step=lambda step, steps: current.update(step=step + 1))
    return step_tables, step_matcher


def profile_table(name: str, profile: dict[str, Any]) -> str:
    """The stdout table of :func:`profile_matching_step`."""
    lines = [f"{name}: per step, ms of CPU self time ({profile['matching_steps_profiled']} matching and "
             f"{profile['other_steps_profiled']} other steps profiled; the matcher {MATCH_OP_KEY} "
             f"{_fmt(profile['matcher_inclusive_ms'], '.1f', '-')} ms inclusive per matching step)",
             f"{'op':<48}{'matching step':>14}{'other step':>12}{'extra':>9}"]
    ops = profile["ops"]
    if not profile["matching_steps_profiled"]:  # a baseline: its largest ops, not differences
        ops = sorted(ops, key=lambda op: -op["other_step_ms"])
    for op in ops[:PROFILE_TOP_OPS]:
        extra = op["matching_step_ms"] - op["other_step_ms"]
        lines.append(f"{op['op'][:47]:<48}{op['matching_step_ms']:>14.1f}{op['other_step_ms']:>12.1f}{extra:>9.1f}")
    lines.append(f"{'all ops':<48}{_fmt(profile['matching_step_self_ms'], '14.1f', '-')}"
                 f"{_fmt(profile['other_step_self_ms'], '12.1f', '-')}")
    return "\n".join(lines)


def _asymrnr_numbers(backend: AsymRnRBackend) -> dict[str, Any]:
    report = backend.report().to_dict()
    cost = report.get("cost") or {}
    ideal = cost.get("ideal_speedup", report.get("ideal_speedup"))
    sites = [site for graph in report["graphs"] for site in graph.get("sites", [])]
    reduced = [site for site in sites if site.get("applied")]
    fallbacks = [g["fallback_reason"] for g in report["graphs"] if g.get("fallback_reason")]
    return {
        "ideal_speedup": ideal,
        "backend_compile_seconds": report["compile_seconds"],
        "compiled_variants": report["num_variants"],
        "sites_reduced": len(reduced),
        "sites_total": len(sites),
        "cache_hits": report["cache_hits"],
        "cache_misses": report["cache_misses"],
        "fallback_reasons": fallbacks,
        "rewrite_fired": bool(reduced) and report["num_variants"] > 0 and not fallbacks,
        "attention_share": next((g["cost"].get("attention_share") for g in report["graphs"] if "cost" in g), None),
    }


def _matching_steps(backend: AsymRnRBackend | None) -> list[int]:
    """The steps (within a loop) at which the variant computed matchings."""
    if backend is None:
        return []
    return sorted({step for graph in backend.graphs for step in getattr(graph, "matching_steps", [])})


def results_rows(workload: Workload, variants: list[Variant], skipped: dict[str, str]) -> list[dict[str, Any]]:
    """One JSON row per variant (and one per skipped variant)."""
    by_name = {v.name: v for v in variants}
    inductor = by_name.get("inductor")
    eager = by_name.get("eager")
    reference = inductor.latent if inductor is not None else None
    steps = workload.sampler.steps
    rows = []
    for variant in variants:
        matching_steps = _matching_steps(variant.backend)
        vs_inductor = loop_speedup(inductor.step_seconds, variant.step_seconds, steps, matching_steps) \
            if inductor else None
        vs_eager = loop_speedup(eager.step_seconds, variant.step_seconds, steps) if eager else None
        own = vs_inductor or loop_speedup(variant.step_seconds, variant.step_seconds, steps, matching_steps)
        row: dict[str, Any] = {
            "model": workload.name,
            "variant": variant.name,
            "loop_seconds": own.loop_seconds,
            "median_step_seconds": statistics.median(variant.step_seconds),
            "steps": steps,
            "loop_speedup_vs_inductor": vs_inductor.loop if vs_inductor else None,
            "median_step_speedup_vs_inductor": vs_inductor.median_step if vs_inductor else None,
            "loop_speedup_vs_eager": vs_eager.loop if vs_eager else None,
            "matching_steps": matching_steps,
            "matching_step_cost": own.matching_step_cost,
            "ideal_speedup": 1.0,
            "loop_efficiency": None,
            "rel_l2": relative_l2(variant.latent, reference) if reference is not None else None,
            "psnr_db": psnr_db(variant.latent, reference) if reference is not None else None,
            "warmup_seconds": variant.warmup_seconds,
            # Warm-up loop minus a timed loop of the same steps: Dynamo tracing + Inductor.
            "compile_seconds": (max(0.0, variant.warmup_seconds - sum(variant.step_seconds[:steps]))
                                if variant.compiled else 0.0),
            "compiled_variants": 1 if variant.name == "inductor" else 0,
            "dynamo_graphs": variant.graphs,
            "dynamo_recompiles": variant.recompiles,
            "peak_rss_mb": variant.peak_rss_mb,
            "peak_device_mb": variant.peak_device_mb,
        }
        if variant.backend is not None:
            row.update(_asymrnr_numbers(variant.backend))
            row["config"] = {k: v for k, v in variant.backend.config.to_dict().items() if k != "schedule"}
        row.update(variant.extra)
        if row.get("rewrite_fired") and row["ideal_speedup"] is not None and row["ideal_speedup"] <= 1.0:
            # the cost model counted no saving although sites were reduced: it cannot see them
            # (attention lengths that are data-dependent, as Mochi's text), so there is no ideal
            row["ideal_speedup"] = None
        if row["loop_speedup_vs_inductor"] is not None and row["ideal_speedup"]:
            row["loop_efficiency"] = row["loop_speedup_vs_inductor"] / row["ideal_speedup"]
        rows.append(row)
    for name, reason in skipped.items():
        rows.append({"model": workload.name, "variant": name, "skipped": reason})
    return rows


def run_model(name: str, *, quick: bool = False, steps: int | None = None, cache_steps: int | None = None,
              rounds: int = 1, device: str = "cpu", dtype: torch.dtype = torch.float32,
              variants: tuple[str, ...] = DEFAULT_RUN_VARIANTS, log: Callable[[str], None] = print,
              preset: str | None = None, profile_repeats: int = 0, batch: int = 1) -> dict[str, Any]:
    """Benchmark one model; returns ``{"model_info": ..., "rows": [...]}`` (see module docstring).
    With ``profile_repeats``, every compiled row also gets ``matching_step_profile``
    (:func:`profile_matching_step`, after the timed rounds)."""
    cache_steps = cache_steps if cache_steps is not None else (QUICK_CACHE_STEPS if quick else DEFAULT_CACHE_STEPS)
    load_before = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    torch._dynamo.reset()
    workload = build_workload(name, quick=quick, steps=steps, device=device, dtype=dtype, preset=preset,
                              batch=batch)
    log(f"{name}: {workload.description}; {workload.info['video_tokens']} video + {workload.info['text_tokens']} "
        f"text tokens, {workload.sampler.steps} steps ({workload.sampler.cfg_mode} CFG), cache_steps {cache_steps}")
    skipped: dict[str, str] = {}
    made = make_variants(workload, cache_steps, variants, skipped)
    for variant, reason in skipped.items():
        log(f"  skipping {variant}: {reason}")
    measure(workload, made, rounds=rounds, log=log)
    rows = results_rows(workload, made, skipped)
    if profile_repeats:
        by_name = {row["variant"]: row for row in rows}
        for variant in made:
            if variant.compiled:
                log(f"  profiling {variant.name}: {profile_repeats} loop(s), every model call")
                profile = profile_matching_step(workload, variant, profile_repeats)
                by_name[variant.name]["matching_step_profile"] = profile
                log(profile_table(variant.name, profile))
    torch._dynamo.reset()
    load_after = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return {"model_info": {"model": name, "description": workload.description, "cache_steps": cache_steps,
                           "steps": workload.sampler.steps, "load_average_1min": [load_before, load_after],
                           **workload.info}, "rows": rows}


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------


def _fmt(value: Any, spec: str, missing: str = "") -> str:
    if value is None:
        return missing
    if isinstance(value, float) and value == float("inf"):
        return "inf"
    return format(value, spec)


def table(rows: list[dict[str, Any]]) -> str:
    """The stdout summary: one line per (model, variant)."""
    header = (f"{'model':<10}{'variant':<20}{'loop s':>8}{'loop vs ind':>12}{'ideal':>7}{'loop eff':>9}"
              f"{'median step vs ind':>19}{'match step':>11}{'rel L2':>9}{'PSNR':>7}{'compile s':>10}{'vars':>5}"
              f"{'recomp':>7}{'RSS MB':>8}")
    lines = [header, "-" * len(header)]
    for row in rows:
        if "skipped" in row or "error" in row:
            what = f"skipped: {row['skipped']}" if "skipped" in row else f"ERROR: {row['error']}"
            lines.append(f"{row['model']:<10}{row['variant']:<20}  {what}")
            continue
        lines.append(
            f"{row['model']:<10}{row['variant']:<20}{row['loop_seconds']:>8.3f}"
            f"{_fmt(row['loop_speedup_vs_inductor'], '.2f'):>11}x{_fmt(row['ideal_speedup'], '.2f'):>6}x"
            f"{_fmt(row['loop_efficiency'], '.2f'):>9}{_fmt(row['median_step_speedup_vs_inductor'], '.2f'):>18}x"
            f"{_fmt(row['matching_step_cost'], '.2f'):>10}x{_fmt(row['rel_l2'], '.1e'):>9}"
            f"{_fmt(row['psnr_db'], '.1f'):>7}{row['compile_seconds']:>10.1f}"
            f"{row['compiled_variants']:>5}{row['dynamo_recompiles']:>7}{row['peak_rss_mb']:>8.0f}")
    return "\n".join(lines)


def run(models: list[str], *, quick: bool = False, steps: int | None = None, cache_steps: int | None = None,
        rounds: int = 1, device: str = "cpu", dtype: str = "float32", variants: tuple[str, ...] = DEFAULT_RUN_VARIANTS,
        command: str | None = None, log: Callable[[str], None] = print,
        on_model: Callable[[dict[str, Any]], None] | None = None, preset: str | None = None,
        profile_repeats: int = 0, batch: int = 1) -> dict[str, Any]:
    """Benchmark ``models`` and return the JSON document (``results``, ``models``, ``machine``,
    ``command``, ``date``). A model that fails is recorded as an ``error`` row and the run goes
    on; ``on_model(document_so_far)`` is called after every model (incremental JSON)."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch.cuda.is_available() is False")
    start = time.perf_counter()
    results: list[dict[str, Any]] = []
    infos: list[dict[str, Any]] = []
    document: dict[str, Any] = {}
    for name in models:
        try:
            out = run_model(name, quick=quick, steps=steps, cache_steps=cache_steps, rounds=rounds, device=device,
                            dtype=DTYPES[dtype], variants=variants, log=log,
                            preset=preset if name == "reference" else None, profile_repeats=profile_repeats,
                            batch=batch if name == "reference" else 1)
        except Exception as error:  # noqa: BLE001  (one failing family must not lose the others' numbers)
            log(f"  {name} FAILED: {type(error).__name__}: {error}")
            results.append({"model": name, "variant": "all", "error": f"{type(error).__name__}: {error}"})
            torch._dynamo.reset()
        else:
            results.extend(out["rows"])
            infos.append(out["model_info"])
        document = _document(results, infos, device, dtype, quick, rounds, start, command)
        if on_model is not None:
            on_model(document)
    return document


def _document(results: list[dict[str, Any]], infos: list[dict[str, Any]], device: str, dtype: str, quick: bool,
              rounds: int, start: float, command: str | None) -> dict[str, Any]:
    return {
        "results": results,
        "models": infos,
        "machine": machine_info(device),
        "device": device,
        "dtype": dtype,
        "quick": quick,
        "rounds": rounds,
        "wall_seconds": time.perf_counter() - start,
        "command": command if command is not None else "python " + " ".join(shlex.quote(a) for a in sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="reference", choices=[*MODELS, "all"])
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (default 10; 3 with --quick)")
    parser.add_argument("--cache-steps", type=int, default=None,
                        help="matching cache window (default 5; 2 with --quick)")
    parser.add_argument("--rounds", type=int, default=1, help="timed loops per variant (default 1)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES))
    parser.add_argument("--preset", default=None, choices=sorted(PRESETS),
                        help=f"reference DiT size (default {REFERENCE_PRESET}; cogvideox-2b-shape on a GPU)")
    parser.add_argument("--batch", type=int, default=1,
                        help="prompts per model call on the reference model (default 1; batched CFG doubles "
                             "it; the speed/quality table times 16)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny reference preset / 2x8x8 token grids, 2 blocks, 3 steps")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's, usually the core count)")
    parser.add_argument("--variants", default=",".join(DEFAULT_RUN_VARIANTS),
                        help=f"comma-separated subset of {','.join(VARIANTS)} (default: all but "
                             f"{','.join(DEFAULT_CHANGED_VARIANTS)})")
    parser.add_argument("--profile-matching-step", type=int, default=0, metavar="LOOPS",
                        help="after the timed rounds, profile LOOPS more loops of every compiled variant "
                             "(torch.profiler per model call) and list where a matching step's extra time "
                             "goes, op by op (default 0: off)")
    args = parser.parse_args(argv)
    variants = tuple(v for v in args.variants.split(",") if v)
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; allowed: {', '.join(VARIANTS)}")
    if args.steps is not None and args.steps < 1:
        parser.error("--steps must be >= 1")
    if args.rounds < 1:
        parser.error("--rounds must be >= 1")
    if args.batch < 1:
        parser.error("--batch must be >= 1")
    if args.profile_matching_step < 0:
        parser.error("--profile-matching-step must be >= 0")
    if args.threads is not None:
        if args.threads < 1:
            parser.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    models = list(MODELS) if args.model == "all" else [args.model]
    given = argv if argv is not None else sys.argv[1:]
    command = "python benchmarks/e2e.py " + " ".join(shlex.quote(a) for a in given)

    def write(document: dict[str, Any]) -> None:
        if args.json:
            path = Path(args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(document, indent=2, default=str))

    document = run(models, quick=args.quick, steps=args.steps, cache_steps=args.cache_steps, rounds=args.rounds,
                   device=args.device, dtype=args.dtype, variants=variants, command=command,
                   log=lambda line: print(line, flush=True), on_model=write, preset=args.preset,
                   profile_repeats=args.profile_matching_step, batch=args.batch)
    print()
    print(table(document["results"]))
    print(f"\n{document['machine']}; {document['wall_seconds'] / 60:.1f} min")
    if args.json:
        print(f"wrote {args.json}")
    return 1 if any("error" in row for row in document["results"]) else 0


if __name__ == "__main__":
    sys.exit(main())
