"""Speed and quality of asymrnr against the training-free accelerators users already pick.

On a trained model of the synthetic text-to-video task (``--checkpoint``: the 1024-token
reference model, or the diffusers CogVideoX model trained by ``asymrnr-compile train --arch
cogvideox``), every row samples the same captions x ``--seeds`` noise seeds with the benchmark
sampler (20 Euler steps, guidance 2, batched CFG; ``--steps N`` samples and times N steps instead,
and writes a RESULTS.md section and plot of their own) and gets:

- **all right** (valid video, every caption attribute detected from the pixels), its change
  against unaccelerated, and PSNR / SSIM against the unaccelerated videos from the same noise;
- **FLOP ideal**: unaccelerated FLOPs over the row's, for the whole sampling loop. asymrnr rows:
  the backend's cost model (matching counted). diffusers hooks and cache-dit: ``FlopCounterMode``
  over one eager sampling loop of the timing batch, hooked against unhooked (their skipping is
  data-dependent). asymrnr stacked with the first-block cache or cache-dit, the cache's probe
  block exact (the cache then skips what it skips alone): the cache alone's FLOPs less what
  asymrnr's reduced block calls saved in the timed loops (:func:`stacked_flop_ideal`); with the
  probe block reduced too: the product of the two, an estimate (marked ``~``);
- **steps skipped**: for a step cache that counts its work (cache-dit), the model calls of one
  timed loop whose blocks it skipped;
- **loop speedup**: the whole sampling loop (all its steps, matching steps included) of plain
  Inductor over the row's, measured in this process on ``--timing-captions`` captions, after one
  warm-up loop of every row and one untimed round, the rows interleaved loop by loop for
  ``--rounds`` rounds; the median of the per-round ratios.

Rows: unaccelerated (plain Inductor); the backend's defaults (``backend="asymrnr"`` as is);
asymrnr with the published method (``preset="published"``, matching cached 5 steps), with split
seeds 0 and 1 (the splits are random: two draws show their spread); asymrnr
with the quality-preserving options (hidden-state matching, a new split per window, proportional
attention) cached 1 and 2 steps; token dropping at the published rows' kept counts (same
attention FLOPs, random tokens). On a diffusers model also diffusers 0.42's cache hooks at two
settings each (first-block cache, pyramid attention broadcast, FasterCache, TaylorSeer), the whole
transformer compiled with Inductor (``fullgraph=False``, the hooks break the graph), and asymrnr
with the quality options (cache 2) stacked with the first-block cache and asymrnr's defaults
stacked with TaylorSeer at both intervals (blocks compiled by
``asymrnr_compile.compile_repeated_blocks``). On the reference model the hook rows are listed as
not applicable, with the reason. On both models cache-dit's DBCache alone and with its TaylorSeer
calibrator (order 1), each at thresholds :data:`CACHE_DIT_THRESHOLDS` (optional dependency
``asymrnr-lab[cachedit]``; without it the rows are listed as not applicable), compiled like the
hook rows, and asymrnr's defaults stacked with each (DBCache and TaylorSeer at the first
threshold; blocks compiled by ``compile_repeated_blocks``, ``CacheDiT(asymrnr=...)``); where
cache-dit cannot attach the stacked rows are not applicable with the same reason. More stacked
rows: asymrnr's quality options matching every step (the asymrnr row that keeps the videos) on
DBCache at the first threshold (the cache row that keeps them); the defaults on DBCache at the
second and third thresholds; the defaults at q 0.6 / kv 0.4 (:data:`STRONGER_STACK_RATIOS`) on
DBCache at the third; and the defaults on DBCache at the first threshold with the cache's probe
block reduced too. Every other stacked row leaves the probe block (the first, whose output change the
cache compares) unreduced, as ``enable_asymrnr`` does by default (``exact_probe_blocks``).

    python benchmarks/speed_quality_table.py --checkpoint runs/cogvideox/model --seeds 1 --results
    python benchmarks/speed_quality_table.py --checkpoint lab/asymrnr_lab/assets/synthetic_dit_fine.safetensors \\
        --seeds 1 --results

Each row samples 96 videos per seed (on 2 CPU cores, AMD EPYC, with --seeds 1, before the
cache-dit rows: the 15 rows of the CogVideoX model about 28 minutes in all, the 6 rows of the
1024-token model about 31 minutes; 19 rows of the 1024-token CogVideoX model, cache-dit's
included, about 73 minutes);
``--only REGEX`` picks rows; ``--json PATH`` writes the numbers. Dynamo's recompile limit is raised
to :data:`RECOMPILE_LIMIT` inside this script: all rows are compiled at once for the interleaved
timing, and the hooks' graph breaks give some rows many small graphs (TaylorSeer recompiles on
every new input stride and would otherwise fall back to eager after 8).

``--plot PATH`` also draws the table as a PNG: whole-loop speedup over quality loss (points of
"all right" below unaccelerated, on a symmetric log axis), one labelled marker per measured row,
the frontier (:func:`frontier`: the rows no other row beats on both) as a step line and the
1-point bound dashed. With ``--results`` it is drawn by default to
``benchmarks/figures/speed_quality_<model>.png`` (:func:`model_slug`: architecture and video
tokens, ``reference_1024``, ``cogvideox_256``). ``--plot-from JSON [JSON ...]`` samples nothing
and redraws it from files written by ``--json`` (default path as with ``--results``); several
files of runs on the same model, captions and machine are merged (:func:`merge_results`):

    python benchmarks/speed_quality_table.py --plot-from table.json cache_dit_rows.json \\
        --plot benchmarks/figures/speed_quality_reference_1024.png
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path
from typing import Any

import torch
import torch._dynamo
from quality_synthetic import (
    HIDDEN_MATCHING,
    SECTION_SUFFIX,
    TITLE_SUFFIX,
    load_checkpoint_for,
    model_fields,
    names_matching,
    published_with,
    steps_label,
)
from results_md import machine_info, replace_section
from torch._dynamo.utils import counters

from asymrnr_compile.config import AsymRnRConfig
from asymrnr_lab.metrics import flop_counter_mode, whole_loop_speedup
from asymrnr_lab.synthetic.accelerators import (
    Accelerator,
    AsymRnR,
    CacheDiT,
    DiffusersCache,
    Eager,
    PlainInductor,
    cache_dit_problem,
    cache_dit_taylorseer,
    dbcache,
    faster_cache,
    first_block_cache,
    pyramid_attention_broadcast,
    taylorseer,
)
from asymrnr_lab.synthetic.cogvideox import COGVIDEOX_PRESETS
from asymrnr_lab.synthetic.compare import REFERENCE_VARIANT, compare_variants
from asymrnr_lab.synthetic.generate import EVAL_SAMPLER, SamplerConfig, caption_grid, generate_videos

SECTION = "speed-quality"
#: Dynamo's per-function recompile limit inside this script (torch's default is 8).
RECOMPILE_LIMIT = 64
#: Captions of the timed batch: CFG batch 32, half the quality batch; large enough that a step's
#: compute, not the hooks' Python overhead per call, dominates at 256 tokens.
DEFAULT_TIMING_CAPTIONS = 16
#: Noise seed of the timing batch (not one of the quality seeds 0-3).
TIMING_SEED = 9
#: cache-dit DBCache thresholds of the table: at 20 Euler steps (4 full warm-up steps, the first
#: block deciding) the first two skip 9 and 11 of the 20 steps of the shipped CogVideoX model, 7
#: and 11 of the reference model (timing batch seed, 8 captions); on the 1024-token model the three
#: skip 10, 13 and 14 of 20 (the table's timing batch, "steps skipped" in RESULTS.md, "The frontier
#: on 384 videos"); cache-dit's default 0.08 is made for 28-50
#: steps, whose per-step change is smaller.
CACHE_DIT_THRESHOLDS = (0.12, 0.2, 0.3)
#: Order of the cache-dit TaylorSeer rows (cache-dit's default; at these thresholds order 2 changed
#: the videos by as much as order 1).
CACHE_DIT_TAYLORSEER_ORDER = 1
#: Where ``--results`` draws the speed/quality plot unless ``--plot`` says otherwise.
FIGURES = Path(__file__).resolve().parent / "figures"
#: Size (inches) and resolution of the plot: small enough that the PNG stays under ~150 KB.
PLOT_SIZE_INCHES = (7.0, 4.5)
PLOT_DPI = 120
#: The quality bound the plot marks: points of "all right" lost against unaccelerated.
QUALITY_BOUND_POINTS = 1.0
#: The plot's x axis is linear within this many points of zero and logarithmic beyond (symlog):
#: the rows that keep the videos sit within a few points, the broken ones tens of points away.
LOSS_LINEAR_RANGE = 1.0
#: The x ticks the plot may show (those within its limits): quality loss in points.
LOSS_TICKS = (-50, -20, -10, -5, -2, -1, 0, 1, 2, 5, 10, 20, 50, 100)
#: Room beside the outermost rows: points of loss to the left (linear region), a factor to the right
#: (log region), and a share of the speedup range above and below.
LOSS_MARGIN_LEFT = 2.0
LOSS_MARGIN_RIGHT_FACTOR = 2.0
SPEEDUP_MARGIN_SHARE = 0.1
#: Font size of the row labels and the legend, of the title, and the markers' area (points^2).
LABEL_FONT_SIZE = 6
TITLE_FONT_SIZE = 8
MARKER_AREA = 18
#: Typographic points per inch (matplotlib's unit of offsets and font sizes).
POINTS_PER_INCH = 72
#: How far (points) a label sits from its marker; when every nearby place is taken the label goes
#: this many times farther, with a leader line.
LABEL_OFFSET = 5
LABEL_FAR_FACTOR = 3
#: Half the width (display pixels) of the band around a drawn line that labels keep out of.
LINE_HALF_WIDTH = 2
#: How much worse a label's area outside the axes counts than its area over another label or a
#: marker (outside, it runs into the tick labels or off the figure).
OUTSIDE_WEIGHT = 10
#: A label nearer another row's marker than its own counts as overlapping by this share of its area:
#: worse than touching a line, better than covering another label.
AMBIGUOUS_SHARE = 0.25
#: Line styles of the plot: grid, frontier, 1-point bound, label leader lines, and the legend's frame.
GRID_STYLE = {"lw": 0.3, "alpha": 0.5}
FRONTIER_STYLE = {"color": "tab:red", "lw": 1.0, "alpha": 0.7}
BOUND_STYLE = {"ls": "--", "color": "gray", "lw": 0.8}
LEADER_STYLE = {"arrowstyle": "-", "lw": 0.4, "color": "gray"}
LEGEND_ALPHA = 0.8
#: Fields that must agree for ``--plot-from`` to merge the rows of several JSON files: the same
#: model, captions, noise seeds, ratios, timing batch and machine.
MERGE_FIELDS = ("checkpoint", "preset", "video_tokens", "samples", "seeds", "q_ratio", "kv_ratio",
                "timing_captions", "machine")
#: How the plot shortens row names (regular expression, replacement), applied in turn.
SHORT_NAMES = (
    (r"threshold ", ""),
    (r"asymrnr, ", "asymrnr "),
    (r"quality options", "quality"),
    (r"split seed", "seed"),
    (r" \(published's FLOPs\)", ""),
    (r"(?<=\+ )cache-dit ", ""),
    (r"defaults at q ([0-9.]+) / kv ([0-9.]+)", r"q \1 / kv \2"),
    (r"first-block cache", "FBCache"),
    (r"pyramid attention broadcast", "PAB"),
)


@dataclass(frozen=True)
class Row:
    """One row of the table.

    Attributes:
        name: the row's label.
        accelerator: how it runs (an asymrnr config or an accelerator); None: not applicable.
        reason: why it is not applicable (with ``accelerator`` None).
        stacked_hook: for asymrnr stacked with a hook or a cache-dit cache, the cache alone (its
            FLOP ratio times the backend's ideal is the row's estimated ideal).
    """

    name: str
    accelerator: AsymRnRConfig | Accelerator | None
    reason: str = ""
    stacked_hook: DiffusersCache | CacheDiT | None = None


#: The row of asymrnr stacked with a diffusers hook.
STACK_ROW = "asymrnr quality options (cache 2) + first-block cache (0.05)"
#: The rows of asymrnr's defaults stacked with diffusers' TaylorSeer hook (the fastest hook that
#: keeps the videos of the diffusers models), by the hook's interval: it computes the blocks on a
#: fixed schedule, so asymrnr cannot change which steps it skips.
TAYLORSEER_STACK_ROWS = {interval: f"asymrnr defaults + TaylorSeer (interval {interval})" for interval in (2, 4)}
#: The rows of asymrnr's defaults stacked with cache-dit (DBCache, TaylorSeer) at the table's first
#: threshold, by name.
CACHE_DIT_STACK_ROWS = {
    "DBCache": f"asymrnr defaults + cache-dit DBCache (threshold {CACHE_DIT_THRESHOLDS[0]})",
    "TaylorSeer": f"asymrnr defaults + cache-dit TaylorSeer (order {CACHE_DIT_TAYLORSEER_ORDER}, "
                  f"threshold {CACHE_DIT_THRESHOLDS[0]})",
}

#: asymrnr's quality options matching every step (the asymrnr row that kept every video) stacked
#: with cache-dit's DBCache at the table's first threshold (the cache row that kept every video).
QUALITY_CACHE_DIT_STACK_ROW = (f"asymrnr quality options (cache 1) + cache-dit DBCache "
                               f"(threshold {CACHE_DIT_THRESHOLDS[0]})")
#: asymrnr's defaults stacked with DBCache at the table's second threshold (more skipped steps).
SECOND_THRESHOLD_STACK_ROW = f"asymrnr defaults + cache-dit DBCache (threshold {CACHE_DIT_THRESHOLDS[1]})"
#: asymrnr's defaults stacked with DBCache at the table's third threshold.
THIRD_THRESHOLD_STACK_ROW = f"asymrnr defaults + cache-dit DBCache (threshold {CACHE_DIT_THRESHOLDS[2]})"
#: q and kv ratios of the stronger stack: on the steps the cache computes in full, asymrnr may
#: reduce more. On DBCache 0.3 these kept 99.0% of 96 videos but lost 2.6 points on 384 (RESULTS.md,
#: "The frontier on 384 videos"); q 0.7 / kv 0.5 kept 89.6% of 96 (stacked_settings_quality.py).
STRONGER_STACK_RATIOS = {"q_ratio": 0.6, "kv_ratio": 0.4}
#: The defaults at the stronger ratios stacked with DBCache at the table's third threshold.
STRONGER_STACK_ROW = (f"asymrnr defaults at q {STRONGER_STACK_RATIOS['q_ratio']} / kv "
                      f"{STRONGER_STACK_RATIOS['kv_ratio']} + cache-dit DBCache (threshold {CACHE_DIT_THRESHOLDS[2]})")
#: The defaults' DBCache stack with the cache's probe block reduced too (``exact_probe_blocks=False``):
#: what leaving it exact changes.
REDUCED_PROBE_STACK_ROW = (f"asymrnr defaults, first block reduced too + cache-dit DBCache "
                           f"(threshold {CACHE_DIT_THRESHOLDS[0]})")


def is_diffusers_model(model: torch.nn.Module) -> bool:
    """Whether the model's transformer wraps a diffusers model the cache hooks apply to."""
    return hasattr(getattr(model.transformer, "model", None), "enable_cache")


def rows(model: torch.nn.Module, q_ratio: float, kv_ratio: float) -> list[Row]:
    """The table's rows for ``model`` (see the module docstring); hook rows have a reason and no
    accelerator on a model that is not of a diffusers class, cache-dit rows where cache-dit is not
    installed or cannot attach (:func:`cache_dit_problem`)."""
    ratios = {"q_ratio": q_ratio, "kv_ratio": kv_ratio}
    out = [
        Row("asymrnr, defaults", AsymRnRConfig()),
        Row("asymrnr, published (cache 5)", published_with(**ratios, cache_steps=5)),
        Row("asymrnr, published (cache 5, split seed 1)", published_with(**ratios, cache_steps=5, seed=1)),
        Row("asymrnr, quality options (cache 2)", published_with(**ratios, cache_steps=2, **HIDDEN_MATCHING)),
        Row("asymrnr, quality options (cache 1)", published_with(**ratios, cache_steps=1, **HIDDEN_MATCHING)),
        Row("token dropping (published's FLOPs)", published_with(**ratios, cache_steps=5, token_selection="random")),
    ]
    cache_dit_rows = {
        **{f"cache-dit DBCache (threshold {t})": dbcache(t) for t in CACHE_DIT_THRESHOLDS},
        **{f"cache-dit TaylorSeer (order {CACHE_DIT_TAYLORSEER_ORDER}, threshold {t})":
           cache_dit_taylorseer(CACHE_DIT_TAYLORSEER_ORDER, t) for t in CACHE_DIT_THRESHOLDS},
    }
    hooks = {
        "first-block cache (threshold 0.05)": first_block_cache(0.05),
        "first-block cache (threshold 0.1)": first_block_cache(0.1),
        "pyramid attention broadcast (every 2)": pyramid_attention_broadcast(2),
        "pyramid attention broadcast (every 3)": pyramid_attention_broadcast(3),
        "FasterCache (every 2)": faster_cache(2),
        "FasterCache (every 3)": faster_cache(3),
        "TaylorSeer (interval 2)": taylorseer(2),
        "TaylorSeer (interval 4)": taylorseer(4),
    }
    stack_hook = first_block_cache(0.05)
    stack = DiffusersCache(stack_hook.make_config,
                           asymrnr=published_with(**ratios, cache_steps=2, **HIDDEN_MATCHING))
    if is_diffusers_model(model):
        out += [Row(name, hook) for name, hook in hooks.items()]
        out.append(Row(STACK_ROW, stack, stacked_hook=stack_hook))
        for interval, name in TAYLORSEER_STACK_ROWS.items():
            alone = taylorseer(interval)
            out.append(Row(name, replace(alone, asymrnr=AsymRnRConfig()), stacked_hook=alone))
    else:
        reason = (f"diffusers' cache hooks attach to a diffusers model class (CacheMixin); this model's transformer "
                  f"is {type(model.transformer).__name__}")
        out += [Row(name, None, reason) for name in [*hooks, STACK_ROW, *TAYLORSEER_STACK_ROWS.values()]]
    problem = cache_dit_problem(model)
    out += [Row(name, None if problem else cache, problem) for name, cache in cache_dit_rows.items()]
    # stacked with asymrnr's defaults, blocks compiled regionally (CacheDiT(asymrnr=...))
    cache_dit_alone = {"DBCache": dbcache(CACHE_DIT_THRESHOLDS[0]),
                       "TaylorSeer": cache_dit_taylorseer(CACHE_DIT_TAYLORSEER_ORDER, CACHE_DIT_THRESHOLDS[0])}
    for kind, name in CACHE_DIT_STACK_ROWS.items():
        alone = cache_dit_alone[kind]
        out.append(Row(name, None, problem) if problem else
                   Row(name, replace(alone, asymrnr=AsymRnRConfig()), stacked_hook=alone))
    quality = published_with(**ratios, cache_steps=1, **HIDDEN_MATCHING)
    alone = cache_dit_alone["DBCache"]
    second, third = dbcache(CACHE_DIT_THRESHOLDS[1]), dbcache(CACHE_DIT_THRESHOLDS[2])
    stacks = {
        QUALITY_CACHE_DIT_STACK_ROW: (replace(alone, asymrnr=quality), alone),
        SECOND_THRESHOLD_STACK_ROW: (replace(second, asymrnr=AsymRnRConfig()), second),
        THIRD_THRESHOLD_STACK_ROW: (replace(third, asymrnr=AsymRnRConfig()), third),
        STRONGER_STACK_ROW: (replace(third, asymrnr=AsymRnRConfig(**STRONGER_STACK_RATIOS)), third),
        REDUCED_PROBE_STACK_ROW: (replace(alone, asymrnr=AsymRnRConfig(), exact_probe_blocks=False), alone),
    }
    out += [Row(name, None, problem) if problem else Row(name, stack, stacked_hook=cache)
            for name, (stack, cache) in stacks.items()]
    return out


def count_loop_flops(model: torch.nn.Module, transformer: Callable[..., torch.Tensor], captions: Sequence,
                     seeds: Sequence[int], task, sampler: SamplerConfig = EVAL_SAMPLER) -> int:
    """FLOPs (``FlopCounterMode``) of one eager sampling loop of ``captions`` with ``transformer``."""
    with flop_counter_mode() as counter:
        generate_videos(model, captions, seeds, task, sampler, transformer=transformer,
                        batch_size=len(captions))
    return counter.get_total_flops()


def hook_flop_ratio(model, hook: DiffusersCache | CacheDiT, captions, seeds, task, base_flops: int,
                    sampler: SamplerConfig = EVAL_SAMPLER) -> float:
    """Unhooked over hooked FLOPs of one eager sampling loop of the timing batch (a diffusers hook
    or a cache-dit cache)."""
    hooked = hook.build(model, compile=False)
    hooked.reset()
    return base_flops / count_loop_flops(model, hooked, captions, seeds, task, sampler)


def time_loops(model, accelerators: dict[str, Accelerator], captions, seeds, task, rounds: int,
               log: Callable[[str], None], sampler: SamplerConfig = EVAL_SAMPLER) -> dict[str, dict[str, Any]]:
    """Whole sampling loops of every accelerator on one batch, interleaved loop by loop (with
    ``sampler``: the quality benchmark's by default).

    Builds all of them (after one ``torch._dynamo.reset()``), runs one warm-up loop of each
    (compiling) and one untimed round of all in turn, then ``rounds`` rounds of one loop each in
    turn. Returns per name the loop
    seconds per round, the Dynamo graphs compiled in its warm-up, and the graphs compiled during
    the timed rounds (recompiles; charged to every row, as they cannot be attributed); for a step
    cache that counts its work (``stats``), also ``skipped_steps``, the steps it skipped in each
    timed loop, and ``loop_steps``, the model calls of a loop.
    """
    torch._dynamo.reset()
    built = {name: accelerator.build(model) for name, accelerator in accelerators.items()}
    out: dict[str, dict[str, Any]] = {}
    skipped: dict[str, list[int]] = {name: [] for name in built}
    steps: dict[str, int] = {}

    def loop(name: str) -> float:
        transformer = built[name]
        transformer.reset()
        start = time.perf_counter()
        generate_videos(model, captions, seeds, task, sampler, transformer=transformer,
                        batch_size=len(captions))
        seconds = time.perf_counter() - start
        if transformer.stats is not None:
            stats = transformer.stats()
            skipped[name].append(len(stats["cached_steps"]))
            steps[name] = stats["steps"]
        return seconds

    for name in built:
        before = counters["stats"]["unique_graphs"]
        seconds = loop(name)
        out[name] = {"warmup_seconds": seconds, "graphs": counters["stats"]["unique_graphs"] - before, "seconds": []}
        log(f"  warm-up {name}: {seconds:.1f} s, {out[name]['graphs']} Dynamo graph(s)")
    # One untimed interleaved round: a hooked row's first loop after other rows ran can still
    # compile (measured: plain Inductor's first loop after a first-block-cache row's warm-up took
    # 2.7x its later loops, with a recompile of CogVideoXBlock.forward, whose frame the hook's
    # graph breaks compiled).
    for name in built:
        loop(name)
    before = counters["stats"]["unique_graphs"]
    for round_index in range(rounds):
        for name in built:
            out[name]["seconds"].append(loop(name))
        log(f"  timed round {round_index + 1}/{rounds}: "
            + ", ".join(f"{name} {out[name]['seconds'][-1]:.2f} s" for name in built))
    late = counters["stats"]["unique_graphs"] - before
    if late:
        log(f"  WARNING: {late} Dynamo graph(s) compiled during the timed rounds")
    for name in built:
        out[name]["recompiles_during_timing"] = late
        if name in steps:  # the timed loops' counts
            out[name].update(skipped_steps=skipped[name][-rounds:], loop_steps=steps[name])
        backend = built[name].backend
        if backend is not None:  # what its graphs ran, over all the loops above (for stacked_flop_ideal)
            out[name].update(loops=rounds + 2, graphs_run=backend.report().to_dict()["graphs"])
    return out


def stacked_flop_ideal(base_flops: float, cache_flop_ratio: float, graphs_run: Sequence[Mapping[str, Any]],
                       loops: int) -> float:
    """Unaccelerated over stacked FLOPs of one loop, for asymrnr on a step cache whose probe
    blocks are exact (the cache then skips the steps it skips alone): the cache alone's FLOPs
    (``base_flops / cache_flop_ratio``, FlopCounterMode) less what asymrnr saved in the block calls
    it reduced, over ``loops`` loops. Per graph (cost model): its reduced calls (calls not run
    unreduced) times full less reduced cost of one call that reuses its matching, less the
    matchings of the calls that computed one (``matching_calls``: under a step cache nearly every
    full step can open a new matching window, more than the configured amortisation counts); a
    graph without those counts saves its reduced calls times full less amortised reduced cost."""
    saved = 0.0
    for graph in graphs_run:
        cost = graph.get("cost_per_call")
        if cost is None:
            continue
        reduced_calls = graph.get("calls", 0) - sum(graph.get("unreduced_calls", {}).values())
        if "matching_calls" in graph and "matching_gflops" in cost:
            reuse = cost["reduced_gflops"] - cost["matching_gflops"] / cost["matching_window"]
            saved += (reduced_calls * (cost["full_gflops"] - reuse)
                      - graph["matching_calls"] * cost["matching_gflops"]) * 1e9
        else:
            saved += reduced_calls * (cost["full_gflops"] - cost["reduced_gflops"]) * 1e9
    return base_flops / (base_flops / cache_flop_ratio - saved / loops)


def render_section(result: dict[str, Any]) -> str:
    """The RESULTS.md section of one run."""
    title = "## Speed and quality against diffusers' accelerators: the trained text-to-video model"
    steps = sampling_steps(result)
    lines = [
        title + TITLE_SUFFIX.get(result.get("preset"), "") + steps_suffix(steps, " ({} sampling steps)"),
        "",
        "Generated by `benchmarks/speed_quality_table.py --results`; do not edit by hand.",
        (f"Model: `{result['checkpoint']}` ({steps_label(result)}, {result['video_tokens']} video "
         f"tokens). Quality: {result['samples']} videos ({result['captions_per_seed']} captions x "
         f"{len(result['seeds'])} noise seed{'' if len(result['seeds']) == 1 else 's'}), {steps} Euler steps, "
         "guidance 2, "
         "batched CFG; \"all right\" = a valid video with every caption attribute detected from the pixels; "
         "\"change\" = points against unaccelerated; PSNR/SSIM against the unaccelerated videos from the same noise. "
         "\"FLOP ideal\" = unaccelerated over the row's FLOPs for the whole loop (asymrnr: cost model, matching "
         "counted; hooks and cache-dit: FlopCounterMode over one eager loop of the timing batch, CPU attention "
         "counted; stacked: the cache's FLOPs less asymrnr's savings in the block calls it reduced; `~` = product "
         "of the two, an estimate). "
         f"\"loop speedup\" = plain Inductor's whole {steps}-step sampling loop over the row's, on "
         f"{result['timing_captions']} captions (CFG batch {2 * result['timing_captions']}), every row compiled and "
         f"warmed up (one loop each, then one untimed round), then {result['rounds']} rounds interleaved loop by "
         "loop, median of the per-round ratios. "
         "\"steps skipped\" = the model calls of one timed loop whose blocks a step cache skipped (median over "
         "the timed loops, from the cache's own count). "
         f"asymrnr at q {result['q_ratio']} / kv {result['kv_ratio']}."),
        "",
        "| row | all right | change | valid | PSNR dB | SSIM | FLOP ideal | loop speedup | loop s | steps skipped "
        "| graphs |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        if not row.get("applicable", True):
            lines.append(f"| {row['row']} | | | | | | | | | | not applicable: {row['reason']} |")
            continue
        psnr = "" if row.get("psnr") is None else f"{row['psnr']:.2f}"
        ssim = "" if row.get("ssim") is None else f"{row['ssim']:.3f}"
        ideal = row.get("flop_ideal")
        ideal_text = "" if ideal is None else ("~" if row.get("flop_ideal_estimated") else "") + f"{ideal:.2f}x"
        speed = row.get("loop_speedup")
        skipped = row.get("skipped_steps")
        skipped_text = "" if not skipped else f"{statistics.median(skipped):g}/{row['loop_steps']}"
        lines.append(
            f"| {row['row']} | {row['all_correct']:.1f}% | {row['change']:+.1f} | {row['valid']:.1f}% | {psnr} "
            f"| {ssim} | {ideal_text} | {'' if speed is None else f'{speed:.2f}x'} | {row.get('loop_seconds', 0):.2f} "
            f"| {skipped_text} | {row.get('graphs', '')} |")
    lines += ["", (f"Machine: {result['machine']}; load average {result['load_average']['before'][0]:.1f} before, "
                   f"{result['load_average']['after'][0]:.1f} after. Command: `{result['command']}`. Date: "
                   f"{result['date']}. Wall time {result['seconds']:.0f} s.")]
    return "\n".join(lines)


def sampling_steps(result: Mapping[str, Any]) -> int:
    """The Euler steps of a run's loops (files written before ``--steps`` existed ran the quality
    benchmark's)."""
    return result.get("sampling_steps", EVAL_SAMPLER.steps)


def steps_suffix(steps: int, template: str) -> str:
    """``template`` filled with ``steps`` for a run at another step count than the quality
    benchmark's (a section and title of its own), else empty."""
    return "" if steps == EVAL_SAMPLER.steps else template.format(steps)


def model_slug(result: Mapping[str, Any]) -> str:
    """A short, stable name of the result's model for file names, one per preset like the RESULTS.md
    sections: its architecture and video tokens (``reference_1024``, ``cogvideox_256``); for a model
    of no preset, the checkpoint's name instead of the architecture."""
    preset = result.get("preset")
    if preset in COGVIDEOX_PRESETS:
        arch = "cogvideox"
    elif preset in SECTION_SUFFIX:
        arch = "reference"
    else:
        arch = re.sub(r"[^a-z0-9]+", "_", Path(result["checkpoint"]).stem.lower()).strip("_") or "model"
    return f"{arch}_{result['video_tokens']}"


def default_plot_path(result: Mapping[str, Any]) -> Path:
    """Where the plot of ``result`` goes without ``--plot``: ``benchmarks/figures/speed_quality_<slug>.png``."""
    steps = steps_suffix(sampling_steps(result), "_steps{}")
    return FIGURES / f"speed_quality_{model_slug(result)}{steps}.png"


def plotted(row: Mapping[str, Any]) -> bool:
    """Whether a row of the JSON has a place on the plot: applicable, with a measured loop speedup
    and a change of "all right"."""
    return bool(row.get("applicable", True)) and row.get("loop_speedup") is not None \
        and row.get("change") is not None


def quality_loss(row: Mapping[str, Any]) -> float:
    """Points of "all right" the row lost against unaccelerated (unaccelerated's minus the row's,
    ``-change``; negative: it gained)."""
    return -row["change"]


def dominates(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether row ``a`` is at least as fast as ``b`` and loses at most as much quality, and is
    strictly better on one of the two."""
    speed_a, speed_b, loss_a, loss_b = a["loop_speedup"], b["loop_speedup"], quality_loss(a), quality_loss(b)
    return speed_a >= speed_b and loss_a <= loss_b and (speed_a > speed_b or loss_a < loss_b)


def frontier(points: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The Pareto-optimal rows of ``points`` (rows of the JSON that ``--json`` writes): those that
    no other row dominates (:func:`dominates`: ``loop_speedup`` at least as high and quality loss at
    most as high, one strictly). Rows that are not applicable or have no measured speedup are left
    out; rows at the same place are all kept. Sorted by quality loss, then speedup."""
    candidates = [row for row in points if plotted(row)]
    kept = [row for row in candidates if not any(dominates(other, row) for other in candidates)]
    return sorted(kept, key=lambda row: (quality_loss(row), row["loop_speedup"]))


def merge_results(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One result from the JSON files of several runs on the same model, captions and machine
    (:data:`MERGE_FIELDS`): the first file's fields and unaccelerated row; of every other row name
    the first occurrence, except that a not-applicable entry gives way to a later measured one;
    every row's change against the first file's unaccelerated row; ``merged_from`` the number of
    files. ValueError when the files disagree on a merge field or on the sampling steps, or the first
    has no unaccelerated row."""
    first = results[0]
    for index, other in enumerate(results[1:], start=2):
        differing = [field for field in MERGE_FIELDS if other.get(field) != first.get(field)]
        if sampling_steps(other) != sampling_steps(first):
            differing.append("sampling_steps")
        if differing:
            raise ValueError(f"JSON file {index} is not of the first file's run: they differ in "
                             f"{', '.join(differing)}")
    reference = next((row for row in first["rows"] if row["row"] == REFERENCE_VARIANT), None)
    if reference is None:
        raise ValueError(f"the first JSON file has no {REFERENCE_VARIANT!r} row")
    merged: dict[str, Mapping[str, Any]] = {}
    for result in results:
        for row in result["rows"]:
            known = merged.get(row["row"])
            if known is None or (not known.get("applicable", True) and row.get("applicable", True)):
                merged[row["row"]] = row
    rows_out = [{**row, "change": row["all_correct"] - reference["all_correct"]}
                if row.get("applicable", True) and row.get("all_correct") is not None else dict(row)
                for row in merged.values()]
    return {**first, "rows": rows_out, "merged_from": len(results)}


def short_name(name: str) -> str:
    """A row's name shortened for the plot's labels (:data:`SHORT_NAMES`)."""
    for pattern, replacement in SHORT_NAMES:
        name = re.sub(pattern, replacement, name)
    return name


#: The plot's row families, in legend order: (label, marker, colour).
FAMILIES = {
    REFERENCE_VARIANT: ("unaccelerated (plain Inductor)", "s", "black"),
    "asymrnr": ("asymrnr", "o", "tab:blue"),
    "dropping": ("token dropping", "v", "tab:gray"),
    "cache": ("step caches (diffusers, cache-dit)", "D", "tab:orange"),
    "stacked": ("asymrnr + a step cache", "^", "tab:green"),
}


def row_family(name: str) -> str:
    """Which of :data:`FAMILIES` the row named ``name`` belongs to."""
    if name == REFERENCE_VARIANT:
        return REFERENCE_VARIANT
    if "+" in name:
        return "stacked"
    if name.startswith("asymrnr"):
        return "asymrnr"
    return "dropping" if name.startswith("token dropping") else "cache"


def model_title(result: Mapping[str, Any]) -> str:
    """How the plot's title names the model: checkpoint, architecture and video tokens."""
    arch = "diffusers CogVideoX" if result.get("preset") in COGVIDEOX_PRESETS else "reference DiT"
    return f"{result['checkpoint']} ({arch}, {result['video_tokens']} video tokens)"


def _overlap(a, b) -> float:
    """Area (display units) shared by two bounding boxes."""
    return max(0.0, min(a.x1, b.x1) - max(a.x0, b.x0)) * max(0.0, min(a.y1, b.y1) - max(a.y0, b.y0))


def _distance(box, point) -> float:
    """Distance (display units) from ``point`` to the nearest point of ``box``."""
    x, y = point
    return math.hypot(max(box.x0 - x, 0.0, x - box.x1), max(box.y0 - y, 0.0, y - box.y1))


def _place_labels(fig, ax, rows: Sequence[Mapping[str, Any]], lines: Sequence[Sequence[tuple[float, float]]]) -> None:
    """Label every row's marker with its short name, each at the first offset around the marker
    (nearest first, then farther out with a leader line) whose text overlaps no marker, no label
    placed before it, none of the axis-parallel ``lines`` (data coordinates) and nothing outside
    the axes, and (without a leader line) is nearer its own marker than any other; else at the
    offset that overlaps least (area outside the axes weighted :data:`OUTSIDE_WEIGHT`; a label
    nearer another marker counts as overlapping by :data:`AMBIGUOUS_SHARE` of its own area)."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    half = LABEL_OFFSET * fig.dpi / POINTS_PER_INCH / 2  # about half a marker, display units
    area = ax.get_window_extent(renderer).padded(-half)  # clear of the spines by half a marker
    step = LABEL_OFFSET
    # beside, diagonal, then above and below (twice as far: past the marker's height) the marker
    offsets = [(dx * scale, dy * scale, scale > 1)
               for scale in (1, LABEL_FAR_FACTOR)
               for dx, dy in ((step, 0), (-step, 0), (step, step), (step, -step), (-step, step),
                              (-step, -step), (0, 2 * step), (0, -2 * step))]
    centres = [ax.transData.transform((quality_loss(row), row["loop_speedup"])) for row in rows]
    taken = [Bbox.from_extents(x - half, y - half, x + half, y + half) for x, y in centres]
    for line in lines:
        for start, end in zip(line, line[1:]):
            (x0, y0), (x1, y1) = ax.transData.transform(start), ax.transData.transform(end)
            taken.append(Bbox.from_extents(min(x0, x1) - LINE_HALF_WIDTH, min(y0, y1) - LINE_HALF_WIDTH,
                                           max(x0, x1) + LINE_HALF_WIDTH, max(y0, y1) + LINE_HALF_WIDTH))
    # the frontier's rows first (they matter most), then the rest by speedup
    on_frontier = {id(row) for row in frontier(rows)}
    order = sorted(range(len(rows)), key=lambda i: (id(rows[i]) not in on_frontier, -rows[i]["loop_speedup"]))
    for index in order:
        row = rows[index]
        best = None
        for dx, dy, far in offsets:
            label = ax.annotate(
                short_name(row["row"]), (quality_loss(row), row["loop_speedup"]), xytext=(dx, dy),
                textcoords="offset points", fontsize=LABEL_FONT_SIZE,
                ha="left" if dx > 0 else "right" if dx < 0 else "center",
                va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                arrowprops=LEADER_STYLE if far else None)
            box = label.get_window_extent(renderer)
            outside = box.width * box.height - _overlap(box, area)
            cost = OUTSIDE_WEIGHT * outside + sum(_overlap(box, other) for other in taken)
            own = _distance(box, centres[index])
            if not far and any(_distance(box, centre) < own for other, centre in enumerate(centres) if other != index):
                cost += AMBIGUOUS_SHARE * box.width * box.height
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, label, box)
            else:
                label.remove()
            if cost == 0:
                break
        taken.append(best[2])


def draw_plot(result: Mapping[str, Any], path: str | Path) -> Path:
    """Draw ``result`` (what ``--json`` writes, or :func:`merge_results` of several) as a PNG at
    ``path``: whole-loop speedup against plain Inductor over quality loss in points of "all right",
    one labelled marker per measured row, the frontier (:func:`frontier`) as a step line, the
    1-point bound dashed; the title names the model, the videos per row and the machine."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    rows = [row for row in result["rows"] if plotted(row)]
    best = frontier(rows)
    losses = [quality_loss(row) for row in rows] + [0.0, QUALITY_BOUND_POINTS]
    speeds = [row["loop_speedup"] for row in rows] + [1.0]
    fig, ax = plt.subplots(figsize=PLOT_SIZE_INCHES)
    try:
        ax.set_xscale("symlog", linthresh=LOSS_LINEAR_RANGE)
        low, high = min(losses) - LOSS_MARGIN_LEFT, LOSS_MARGIN_RIGHT_FACTOR * max(losses)
        ax.set_xlim(low, high)
        pad = SPEEDUP_MARGIN_SHARE * (max(speeds) - min(speeds) or 1.0)  # 1x: every row at one speed
        ax.set_ylim(min(speeds) - pad, max(speeds) + pad)
        ax.xaxis.set_major_locator(FixedLocator([t for t in LOSS_TICKS if low <= t <= high]))
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.grid(True, **GRID_STYLE)
        steps = [(quality_loss(row), row["loop_speedup"]) for row in best]
        # the step line's corners (where="post": each frontier row's speedup until the next row's loss)
        corners = [corner for (x, y), (next_x, _) in zip(steps, steps[1:]) for corner in ((x, y), (next_x, y))]
        corners += steps[-1:]
        if best:
            ax.step(*zip(*steps), where="post", label="frontier (rows no other row beats)", zorder=1,
                    **FRONTIER_STYLE)
        ax.axvline(QUALITY_BOUND_POINTS, label=f"{QUALITY_BOUND_POINTS:g}-point bound", **BOUND_STYLE)
        for family, (label, marker, colour) in FAMILIES.items():
            members = [row for row in rows if row_family(row["row"]) == family]
            if members:
                ax.scatter([quality_loss(row) for row in members], [row["loop_speedup"] for row in members],
                           marker=marker, color=colour, s=MARKER_AREA, label=label, zorder=2)
        ax.set_xlabel('quality loss: points of "all right" below unaccelerated (lower is better; symlog)')
        ax.set_ylabel("whole-loop speedup vs plain Inductor")
        runs = result.get("merged_from", 1)
        steps = sampling_steps(result)
        title = [f"Speed vs quality: {model_title(result)}, {result['samples']} videos per row, {steps} steps",
                 result.get("machine", ""), f"rows merged from {runs} runs, each timed separately" if runs > 1 else ""]
        ax.set_title("\n".join(line for line in title if line), fontsize=TITLE_FONT_SIZE)
        fig.tight_layout()
        bound = [(QUALITY_BOUND_POINTS, y) for y in ax.get_ylim()]
        _place_labels(fig, ax, rows, [corners, bound])
        ax.legend(loc="best", fontsize=LABEL_FONT_SIZE, framealpha=LEGEND_ALPHA)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=PLOT_DPI)
    finally:
        plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint",
                        help="a reference checkpoint (safetensors) or a folder exported by `train --arch cogvideox`")
    source.add_argument("--plot-from", nargs="+", metavar="JSON",
                        help="sample nothing: redraw the plot from JSON files written by --json (several: runs on "
                             "the same model and captions, their rows merged, the first file's row of a name kept)")
    parser.add_argument("--seeds", type=int, default=4, help="noise seeds per caption for quality (default 4)")
    parser.add_argument("--captions", type=int, default=None,
                        help="quality on the first N captions only (default: all 96; a smoke run)")
    parser.add_argument("--timing-captions", type=int, default=DEFAULT_TIMING_CAPTIONS,
                        help=f"captions of the timed batch (default {DEFAULT_TIMING_CAPTIONS}: CFG batch "
                             f"{2 * DEFAULT_TIMING_CAPTIONS})")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads for sampling and timing (default: torch's, usually the core count)")
    parser.add_argument("--steps", type=int, default=EVAL_SAMPLER.steps,
                        help=f"Euler steps of every sampling loop, quality and timing (default {EVAL_SAMPLER.steps}, "
                             "the quality benchmark's; with another count --results writes a section of its own)")
    parser.add_argument("--q-ratio", type=float, default=0.5)
    parser.add_argument("--kv-ratio", type=float, default=0.3)
    parser.add_argument("--only", metavar="REGEX", help="run only the rows whose names match (re.search)")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default) or cuda (Inductor then generates Triton; each loop ends with a copy "
                             "to the host, so its time is real)")
    parser.add_argument("--json", help="write the numbers here")
    parser.add_argument("--results", action="store_true",
                        help="regenerate this model's section of RESULTS.md (and draw the plot)")
    parser.add_argument("--plot", metavar="PATH",
                        help="draw the speed/quality plot here (PNG; default with --results or --plot-from: "
                             "benchmarks/figures/speed_quality_<model>.png, e.g. reference_1024, cogvideox_256)")
    args = parser.parse_args(argv)
    if args.plot_from:
        return redraw(parser, args)
    for flag in ("seeds", "timing_captions", "rounds", "captions", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.steps < 2:
        parser.error(f"--steps must be >= 2, got {args.steps}")
    sampler = replace(EVAL_SAMPLER, steps=args.steps)
    model, task, preset = load_checkpoint_for(parser, args.checkpoint, args.device, args.results)
    table_rows = rows(model, args.q_ratio, args.kv_ratio)
    chosen = set(names_matching(parser, [row.name for row in table_rows], args.only))
    table_rows = [row for row in table_rows if row.name in chosen]
    runnable = [row for row in table_rows if row.accelerator is not None]
    load_before = os.getloadavg()
    start = time.perf_counter()
    log = lambda line: print(line, flush=True)  # noqa: E731

    with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
        captions, seeds = caption_grid(task, range(args.seeds))
        if args.captions is not None:
            keep = [i for i in range(len(captions)) if i % task.num_captions < args.captions]
            captions, seeds = [captions[i] for i in keep], [seeds[i] for i in keep]
        comparison = compare_variants(model, task, captions, seeds, {row.name: row.accelerator for row in runnable},
                                      sampler, log=log)
        print(comparison.table())
        timing_captions = caption_grid(task, [TIMING_SEED])[0][:: max(1, task.num_captions // args.timing_captions)]
        timing_captions = timing_captions[: args.timing_captions]
        timing_seeds = [TIMING_SEED] * len(timing_captions)
        log(f"timing {len(runnable) + 1} rows on {len(timing_captions)} captions, {args.rounds} rounds")
        accelerators: dict[str, Accelerator] = {REFERENCE_VARIANT: PlainInductor()}
        for row in runnable:
            accelerators[row.name] = AsymRnR(row.accelerator) if isinstance(row.accelerator, AsymRnRConfig) \
                else row.accelerator
        timing = time_loops(model, accelerators, timing_captions, timing_seeds, task, args.rounds, log, sampler)
        log("counting FLOPs of the hook rows (eager)")
        base_flops = count_loop_flops(model, Eager().build(model), timing_captions, timing_seeds, task, sampler)

        result_rows = []
        base_seconds = timing[REFERENCE_VARIANT]["seconds"]
        for name, variant in comparison.variants.items():
            row = next((r for r in runnable if r.name == name), None)
            reference = comparison.variants[REFERENCE_VARIANT].report.all_correct
            entry: dict[str, Any] = {"row": name, **variant.report.to_dict(),
                                     "change": variant.report.all_correct - reference}
            backend_ideal = None if variant.backend_report is None else variant.backend_report["ideal_speedup"]
            if row is None:
                entry["flop_ideal"] = 1.0
            elif isinstance(row.accelerator, AsymRnRConfig):
                entry["flop_ideal"] = backend_ideal
            elif row.stacked_hook is not None:
                hook_ratio = hook_flop_ratio(model, row.stacked_hook, timing_captions, timing_seeds, task, base_flops,
                                             sampler)
                if getattr(row.accelerator, "exact_probe_blocks", False) and "graphs_run" in timing[name]:
                    entry["flop_ideal"] = stacked_flop_ideal(base_flops, hook_ratio, timing[name]["graphs_run"],
                                                             timing[name]["loops"])
                else:  # asymrnr changes which steps the cache skips: the product, an estimate
                    entry.update(flop_ideal=hook_ratio * backend_ideal, flop_ideal_estimated=True)
            else:
                entry["flop_ideal"] = hook_flop_ratio(model, row.accelerator, timing_captions, timing_seeds, task,
                                                      base_flops, sampler)
            entry.update(loop_speedup=whole_loop_speedup(base_seconds, timing[name]["seconds"]),
                         loop_seconds=statistics.median(timing[name]["seconds"]),
                         round_seconds=timing[name]["seconds"], graphs=timing[name]["graphs"],
                         recompiles_during_timing=timing[name]["recompiles_during_timing"])
            if "skipped_steps" in timing[name]:
                entry.update(skipped_steps=timing[name]["skipped_steps"], loop_steps=timing[name]["loop_steps"])
            result_rows.append(entry)
        result_rows += [{"row": row.name, "applicable": False, "reason": row.reason}
                        for row in table_rows if row.accelerator is None]

    result = {
        **model_fields(args, model, preset),
        "samples": len(captions),
        "captions_per_seed": len(captions) // args.seeds,
        "seeds": list(range(args.seeds)),
        "timing_captions": len(timing_captions),
        "sampling_steps": args.steps,
        "rounds": args.rounds,
        "rows": result_rows,
        "machine": machine_info(args.device),
        "load_average": {"before": load_before, "after": os.getloadavg()},
        "command": "python benchmarks/speed_quality_table.py " + shlex.join(sys.argv[1:] if argv is None else argv),
        "date": date.today().isoformat(),
        "seconds": round(time.perf_counter() - start, 1),
    }
    print(render_section(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    if args.results:
        name = SECTION + SECTION_SUFFIX[preset] + steps_suffix(args.steps, "-steps{}")
        print(f"wrote {replace_section(name, render_section(result))}")
    if args.plot or args.results:
        print(f"wrote {draw_plot(result, args.plot or default_plot_path(result))}")
    return 0


def redraw(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``--plot-from``: draw the plot of the JSON files' merged rows (:func:`merge_results`)."""
    if args.results or args.json:
        parser.error("--plot-from only draws the plot; --results and --json need a run (--checkpoint)")
    try:
        result = merge_results([json.loads(Path(path).read_text()) for path in args.plot_from])
    except (OSError, ValueError, KeyError) as error:
        parser.error(f"--plot-from: {error}")
    print(f"wrote {draw_plot(result, args.plot or default_plot_path(result))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
