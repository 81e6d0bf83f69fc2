"""asymrnr stacked with what diffusers users already run: cache hooks, quantisation, offloading, modes.

Every stack runs on a tiny real diffusers pipeline (offline,
:func:`asymrnr_lab.models.diffusers_pipelines.tiny_pipeline`) twice: with
``pipe.transformer = torch.compile(pipe.transformer, backend=asymrnr)`` and with the same stack
compiled by plain Inductor (the baseline). Per stack:

- **speed**: whole pipeline calls (denoising loop and VAE decode), after one warm-up call of each
  (which compiles), interleaved (baseline, asymrnr, baseline, ...), ``--rounds`` each; the
  speedup is the ratio of the median call times;
- **error**: the decoded video (all frames, values in [0, 1]) of asymrnr against the baseline's,
  same seed: relative L2 and PSNR (random weights: numerical closeness, not visual quality);
- whether the stack did anything: its own effect, the baseline's video against plain Inductor
  without the stack (same family, seed), as PSNR (``inf``: the stack changed nothing);
- what asymrnr did: attention sites reduced of those seen, Dynamo graphs, steps and calls
  counted, Dynamo graphs compiled after the warm-up (recompiles);
- or the named reason the stack cannot run (the exception, or why it was not tried).

    python benchmarks/compositions.py --json out/compositions.json [--results]   # ~15 min on 2 cores

``--stacks`` picks stacks by name (default all); ``--results`` writes the table into
``benchmarks/RESULTS.md`` (section ``compositions``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch._dynamo
from torch._dynamo.utils import counters

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_lab.metrics import psnr_db, relative_l2
from asymrnr_lab.models.diffusers_pipelines import SMALL_GRID, TinyPipeline, tiny_pipeline


@dataclass(frozen=True)
class Stack:
    """One composition: what is applied to the pipeline before its transformer is compiled.

    Attributes:
        name: the row's name.
        family: the pipeline (``"cogvideox"`` or ``"wan"``).
        apply: modifies the built pipeline (enables a hook, quantises...); None: nothing.
        compile_kwargs: extra ``torch.compile`` arguments (``mode``); ``fullgraph=True`` unless
            ``fullgraph`` is False (hooks that break the graph on purpose).
        not_tried: a reason the stack is not run on the machine at hand (e.g. it needs a GPU).
        regional: compile the repeated blocks instead of the whole transformer: asymrnr with
            ``asymrnr_compile.compile_repeated_blocks``, the baseline with ``block.compile()``
            on the same blocks.
    """

    name: str
    family: str = "cogvideox"
    apply: Callable[[TinyPipeline], None] | None = None
    compile_kwargs: dict[str, Any] = field(default_factory=dict)
    fullgraph: bool = True
    not_tried: str | None = None
    regional: bool = False


def _enable_cache(make_config: Callable[[TinyPipeline], Any]) -> Callable[[TinyPipeline], None]:
    def apply(tiny: TinyPipeline) -> None:
        tiny.pipe.transformer.enable_cache(make_config(tiny))
    return apply


def _first_block_cache(tiny: TinyPipeline) -> Any:
    from diffusers.hooks import FirstBlockCacheConfig

    return FirstBlockCacheConfig(threshold=0.2)


def _pyramid_attention_broadcast(tiny: TinyPipeline) -> Any:
    from diffusers.hooks import PyramidAttentionBroadcastConfig

    return PyramidAttentionBroadcastConfig(spatial_attention_block_skip_range=2,
                                           spatial_attention_timestep_skip_range=(100, 800),
                                           current_timestep_callback=lambda: tiny.pipe.current_timestep)


def _faster_cache(tiny: TinyPipeline) -> Any:
    from diffusers.hooks import FasterCacheConfig

    return FasterCacheConfig(spatial_attention_block_skip_range=2, spatial_attention_timestep_skip_range=(-1, 681),
                             low_frequency_weight_update_timestep_range=(99, 641),
                             high_frequency_weight_update_timestep_range=(-1, 301),
                             unconditional_batch_skip_range=2, unconditional_batch_timestep_skip_range=(-1, 781),
                             attention_weight_callback=lambda _: 0.3,
                             current_timestep_callback=lambda: tiny.pipe.current_timestep,
                             tensor_format="BFCHW")


def _taylorseer_cache(tiny: TinyPipeline) -> Any:
    from diffusers.hooks import TaylorSeerCacheConfig

    # lite mode: blocks skipped on cached steps, proj_out predicted (the default patterns, "^blocks.*attn"
    # and the like, fullmatch no module of CogVideoX or Wan, whose attention modules are attn1 / attn2)
    return TaylorSeerCacheConfig(cache_interval=2, disable_cache_before_step=2, max_order=1,
                                 taylor_factors_dtype=torch.float32, use_lite_mode=True)


def _int8_weight_only(tiny: TinyPipeline) -> None:
    from torchao.quantization import Int8WeightOnlyConfig, quantize_

    quantize_(tiny.pipe.transformer, Int8WeightOnlyConfig())


def _model_cpu_offload(tiny: TinyPipeline) -> None:
    tiny.pipe.enable_model_cpu_offload()


def stacks(gpu: bool) -> list[Stack]:
    import asymrnr_compile

    no_gpu = None if gpu else "needs a CUDA GPU (CUDA graphs); not run on a CPU"
    no_regional = None if hasattr(asymrnr_compile, "compile_repeated_blocks") else \
        "regional compilation (asymrnr_compile.compile_repeated_blocks) is not in this version"
    return [
        Stack("compile only"),
        Stack("first-block cache (threshold 0.2)", apply=_enable_cache(_first_block_cache), fullgraph=False),
        Stack("pyramid attention broadcast", apply=_enable_cache(_pyramid_attention_broadcast), fullgraph=False),
        Stack("FasterCache", apply=_enable_cache(_faster_cache), fullgraph=False),
        Stack("TaylorSeer cache", apply=_enable_cache(_taylorseer_cache), fullgraph=False),
        Stack("first-block cache (threshold 0.2), regional compilation", apply=_enable_cache(_first_block_cache),
              fullgraph=False, regional=True, not_tried=no_regional),
        Stack("compile only, Wan (split CFG)", family="wan"),
        Stack("first-block cache, Wan (split CFG), regional compilation", family="wan",
              apply=_enable_cache(_first_block_cache), fullgraph=False, regional=True, not_tried=no_regional),
        Stack("torchao int8 weight-only", apply=_int8_weight_only),
        Stack("enable_model_cpu_offload()", apply=_model_cpu_offload),
        Stack('mode="max-autotune-no-cudagraphs"', compile_kwargs={"mode": "max-autotune-no-cudagraphs"}),
        Stack('mode="reduce-overhead" (CPU: no CUDA graphs)', compile_kwargs={"mode": "reduce-overhead"}),
        Stack('mode="reduce-overhead" on a GPU', compile_kwargs={"mode": "reduce-overhead"}, not_tried=no_gpu),
    ]


def _build(stack: Stack, args: argparse.Namespace, backend: Any) -> TinyPipeline:
    """The stack's tiny pipeline, compiled by ``backend``. ``isolate_recompiles``: every stack's
    baseline is a ``backend="inductor"`` compile of the same classes, and those compare equal, so
    one stack's graph-broken entries (hooks) would otherwise pass another's guards and run in its
    place (lab/asymrnr_lab/synthetic/accelerators.py)."""
    tiny = tiny_pipeline(stack.family, size=args.size, num_frames=args.frames, steps=args.steps,
                         num_layers=args.layers)
    if stack.apply is not None:
        stack.apply(tiny)
    if not stack.regional:
        tiny.pipe.transformer = torch.compile(tiny.pipe.transformer, backend=backend, fullgraph=stack.fullgraph,
                                              dynamic=False, isolate_recompiles=True, **stack.compile_kwargs)
        return tiny
    import asymrnr_compile
    from asymrnr_compile.regional import repeated_block_classes

    transformer = tiny.pipe.transformer
    if backend == "inductor":
        classes = set(repeated_block_classes(transformer))
        for module in transformer.modules():
            if type(module).__name__ in classes:
                module.compile(backend="inductor", fullgraph=stack.fullgraph, dynamic=False, isolate_recompiles=True,
                               **stack.compile_kwargs)
    else:
        asymrnr_compile.compile_repeated_blocks(transformer, backend=backend, fullgraph=stack.fullgraph,
                                                **stack.compile_kwargs)
    return tiny


def _sites(report: dict[str, Any]) -> tuple[int, int]:
    sites = [site for graph in report["graphs"] for site in graph["sites"] if site.get("video_tokens")]
    return sum(bool(site.get("applied")) for site in sites), len(sites)


def run_stack(stack: Stack, args: argparse.Namespace, plain: dict[str, torch.Tensor]) -> dict[str, Any]:
    """One stack, both sides. ``plain``: the video of plain Inductor without a stack, per family
    (filled by the stack named "compile only"), for the stack's own effect."""
    result: dict[str, Any] = {"stack": stack.name, "family": stack.family}
    if stack.not_tried:
        return {**result, "works": False, "reason": stack.not_tried}
    torch._dynamo.reset()
    counters.clear()
    config = AsymRnRConfig(q_ratio=args.q_ratio, kv_ratio=args.kv_ratio, **SMALL_GRID)
    backend = AsymRnRBackend(config)
    try:
        base = _build(stack, args, "inductor")
        asym = _build(stack, args, backend)
        start = time.perf_counter()
        reference = base(seed=0)
        base_warmup = time.perf_counter() - start
        start = time.perf_counter()
        video = asym(seed=0)
        asym_warmup = time.perf_counter() - start
        graphs_after_warmup = counters["stats"]["unique_graphs"]
        seconds: dict[str, list[float]] = {"inductor": [], "asymrnr": []}
        for round_ in range(args.rounds):
            for name, tiny in (("inductor", base), ("asymrnr", asym)):
                start = time.perf_counter()
                tiny(seed=1 + round_)
                seconds[name].append(time.perf_counter() - start)
    except Exception as error:  # a stack that cannot work: its reason is the result
        reason = f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"
        return {**result, "works": False, "reason": reason[:400], "traceback": traceback.format_exc()[-3000:]}
    if not stack.apply and not stack.compile_kwargs and not stack.regional:
        plain[stack.family] = reference
    report = backend.report().to_dict()
    reduced, video_sites = _sites(report)
    effect = psnr_db(reference, plain[stack.family]) if stack.family in plain else None
    base_median, asym_median = statistics.median(seconds["inductor"]), statistics.median(seconds["asymrnr"])
    return {
        **result, "works": True,
        "speedup": base_median / asym_median, "inductor_seconds": base_median, "asymrnr_seconds": asym_median,
        "seconds": seconds, "warmup_seconds": {"inductor": base_warmup, "asymrnr": asym_warmup},
        "relative_l2": relative_l2(video, reference), "psnr_db": psnr_db(video, reference),
        "stack_effect_psnr_db": effect,
        "sites_reduced": reduced, "video_sites": video_sites, "asymrnr_graphs": len(report["graphs"]),
        "steps": report["steps"], "calls": report["calls"],
        "recompiles": counters["stats"]["unique_graphs"] - graphs_after_warmup,
        "fallback_reasons": sorted({g["fallback_reason"] for g in report["graphs"] if g.get("fallback_reason")}),
    }


def _effect(result: dict[str, Any]) -> str:
    effect = result.get("stack_effect_psnr_db")
    return "" if effect is None else f"{effect:.1f}"


def table(results: list[dict[str, Any]]) -> str:
    lines = ["| stack | works | speedup vs same stack under Inductor | call s (Inductor / asymrnr) | video PSNR dB "
             "/ rel. L2 vs same stack | the stack's own effect (PSNR dB) | video sites reduced (of found) "
             "| graphs, recompiles | note |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if not r["works"]:
            lines.append(f"| {r['stack']} | no | | | | | | | {r['reason']} |")
            continue
        note = "; ".join(r["fallback_reasons"])[:200]
        lines.append(
            f"| {r['stack']} | yes | {r['speedup']:.2f}x | {r['inductor_seconds']:.2f} / {r['asymrnr_seconds']:.2f} "
            f"| {r['psnr_db']:.1f} / {r['relative_l2']:.4f} | {_effect(r)} "
            f"| {r['sites_reduced']} of {r['video_sites']} "
            f"| {r['asymrnr_graphs']}, {r['recompiles']} | {note} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="height = width in pixels (128: 8x8 tokens a frame)")
    parser.add_argument("--frames", type=int, default=9, help="frames (9: 3 latent frames)")
    parser.add_argument("--steps", type=int, default=8, help="num_inference_steps")
    parser.add_argument("--layers", type=int, default=3, help="transformer blocks (a first-block cache needs 2+)")
    parser.add_argument("--rounds", type=int, default=3, help="timed calls of each side, interleaved")
    parser.add_argument("--q-ratio", type=float, default=0.5)
    parser.add_argument("--kv-ratio", type=float, default=0.3)
    parser.add_argument("--stacks", nargs="*", help="run only the stacks whose names contain one of these")
    parser.add_argument("--json")
    parser.add_argument("--results", action="store_true", help="write the table into benchmarks/RESULTS.md")
    parser.add_argument("--from-json", help="write RESULTS.md from this script's JSON instead of running")
    args = parser.parse_args(argv)
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        _write_results(data["results"], argparse.Namespace(**data["settings"]), data["load_average"],
                       data.get("command", "python benchmarks/compositions.py"), data["threads"])
        print(table(data["results"]))
        return 0
    gpu = torch.cuda.is_available()
    selected = [s for s in stacks(gpu) if not args.stacks or any(key in s.name for key in args.stacks)]
    load_before = os.getloadavg()
    results = []
    plain: dict[str, torch.Tensor] = {}
    for stack in selected:
        print(f"{stack.name}...", flush=True)
        results.append(run_stack(stack, args, plain))
        print(table(results[-1:]).splitlines()[-1], flush=True)
    load = {"before": load_before, "after": os.getloadavg()}
    print(table(results))
    settings = {key: getattr(args, key) for key in ("size", "frames", "steps", "layers", "rounds", "q_ratio",
                                                    "kv_ratio")}
    command = ("python benchmarks/compositions.py " + " ".join(argv if argv is not None else sys.argv[1:])).strip()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"settings": settings, "threads": torch.get_num_threads(),
                                               "torch": torch.__version__, "load_average": load,
                                               "command": command, "results": results}, indent=2))
    if args.results:
        _write_results(results, args, load, command, torch.get_num_threads())
    return 0


def _write_results(results: list[dict[str, Any]], args: argparse.Namespace, load: dict[str, Any], command: str,
                   threads: int) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results_md import machine_info, replace_section

    machine = machine_info("cpu").replace(f"{torch.get_num_threads()} threads", f"{threads} threads")
    body = ("### Composition with diffusers' cache hooks, quantisation, offloading and compile modes\n\n"
            f"Machine: {machine}; load average {load['before'][0]:.1f} before, "
            f"{load['after'][0]:.1f} after (`uptime`). Command: `{command}`. Tiny CogVideoX pipeline "
            f"({args.layers} blocks, {args.size} px, {args.frames} frames, {args.steps} steps; Wan where named), "
            f"asymrnr q {args.q_ratio} / kv {args.kv_ratio}; each row compares asymrnr with the same stack "
            f"compiled by plain Inductor: median whole-call time (denoising and VAE decode) over {args.rounds} "
            "interleaved calls after a warm-up call, and the decoded video of one seed (random weights: "
            "closeness, not visual quality). \"The stack's own effect\": the stack under Inductor against plain "
            "Inductor without it (inf: the stack changed nothing). What each row means: docs/deployment.md.\n\n"
            + table(results))
    replace_section("compositions", body)


if __name__ == "__main__":
    sys.exit(main())
