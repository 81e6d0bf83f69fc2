"""Warm starts: the first pipeline call of a new process, with an empty and with a filled compile cache.

A tiny real diffusers pipeline (offline, :func:`asymrnr_lab.models.diffusers_pipelines.tiny_pipeline`)
with ``pipe.transformer = torch.compile(pipe.transformer, backend=...)``, for asymrnr and for plain
Inductor. Every run is a fresh child process (nothing in memory survives), in this order per backend:

- ``cold``: an empty ``TORCHINDUCTOR_CACHE_DIR`` (a user's first run); it also saves
  ``torch.compiler.save_cache_artifacts()`` to a file;
- ``warm (disk)``: the same cache directory again (a restart on the same machine);
- ``warm (artifacts)``: another empty cache directory, filled by
  ``torch.compiler.load_cache_artifacts(bytes)`` before the first call (a new machine or
  container that was handed the saved artifacts).

Each child reports the first call's seconds (Dynamo capture, asymrnr's analysis, compilation or
cache loads, and the 3-step call itself), the second call's (steady state), Inductor's FX graph
cache and AOTAutograd cache hits and misses, and its frames; the parent checks that every warm
run's frames equal the cold run's.

    python benchmarks/warm_start.py --json out/warm_start.json [--results]   # ~3-4 min on 2 cores

``--results`` writes the table into ``benchmarks/RESULTS.md`` (section ``warm_start``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROCESS_START = time.perf_counter()

RUNS = ("cold", "warm (disk)", "warm (artifacts)")


def child(backend_name: str, family: str, size: int, frames: int, steps: int, frames_path: str,
          save_artifacts: str | None = None, load_artifacts: str | None = None) -> dict:
    """One process: build the pipeline, compile its transformer, call it twice."""
    import torch
    from torch._dynamo.utils import counters

    from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
    from asymrnr_lab.models.diffusers_pipelines import SMALL_GRID, tiny_pipeline

    imported = time.perf_counter() - PROCESS_START
    tiny = tiny_pipeline(family, size=size, num_frames=frames, steps=steps)
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, **SMALL_GRID)) \
        if backend_name == "asymrnr" else "inductor"
    tiny.pipe.transformer = torch.compile(tiny.pipe.transformer, backend=backend, fullgraph=True, dynamic=False)
    loaded = None
    if load_artifacts:
        info = torch.compiler.load_cache_artifacts(Path(load_artifacts).read_bytes())
        loaded = {kind: len(keys) for kind, keys in info.artifacts.items()} if info else {}
    cache_dir = Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR", "."))
    kernels_before = len(list(cache_dir.rglob("*.so")))  # compiled C++ kernels on disk (CPU)
    start = time.perf_counter()
    video = tiny(seed=0)
    first = time.perf_counter() - start
    start = time.perf_counter()
    tiny(seed=1)
    second = time.perf_counter() - start
    saved = None
    if save_artifacts:
        artifacts = torch.compiler.save_cache_artifacts()
        if artifacts is not None:
            data, info = artifacts
            Path(save_artifacts).write_bytes(data)
            saved = {"bytes": len(data), **{kind: len(keys) for kind, keys in info.artifacts.items()}}
    torch.save(video, frames_path)
    result = {
        "import_seconds": imported,
        "first_call_seconds": first,
        "second_call_seconds": second,
        "process_seconds": time.perf_counter() - PROCESS_START,
        "fxgraph": {key.removeprefix("fxgraph_cache_"): value for key, value in counters["inductor"].items()
                    if key.startswith("fxgraph_cache")},
        "aot_autograd": {key.removeprefix("autograd_cache_"): value for key, value in counters["aot_autograd"].items()
                         if key.startswith("autograd_cache")},
        "dynamo_graphs": counters["stats"]["unique_graphs"],
        "artifacts_saved": saved,
        "artifacts_loaded": loaded,
        "kernel_files": {"before_first_call": kernels_before, "after": len(list(cache_dir.rglob("*.so")))},
    }
    if isinstance(backend, AsymRnRBackend):
        report = backend.report().to_dict()
        result.update(sites_reduced=sum(bool(site.get("applied")) for graph in report["graphs"]
                                        for site in graph["sites"]),
                      variants=report["num_variants"], compile_seconds=report["compile_seconds"],
                      subgraphs_compiled=sum(graph.get("subgraphs_compiled", 0) for graph in report["graphs"]))
    return result


def run_child(backend: str, cache_dir: str, args: argparse.Namespace, frames_path: str, *,
              save: str | None = None, load: str | None = None) -> dict:
    command = [sys.executable, __file__, "--child", backend, "--family", args.family, "--size", str(args.size),
               "--frames", str(args.frames), "--steps", str(args.steps), "--frames-path", frames_path]
    if save:
        command += ["--save-artifacts", save]
    if load:
        command += ["--load-artifacts", load]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache_dir}
    start = time.perf_counter()
    out = subprocess.run(command, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"child {backend} failed:\n{out.stderr[-4000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["wall_seconds"] = time.perf_counter() - start
    return result


def measure(args: argparse.Namespace) -> dict:
    import torch

    results: dict = {"settings": {"family": args.family, "size": args.size, "frames": args.frames,
                                  "steps": args.steps, "threads": os.environ.get("OMP_NUM_THREADS"),
                                  "torch": torch.__version__}, "runs": []}
    with tempfile.TemporaryDirectory(prefix="warm-start-") as tmp:
        for backend in args.backends:
            disk, fresh = Path(tmp, f"{backend}-cache"), Path(tmp, f"{backend}-cache-fresh")
            artifacts = str(Path(tmp, f"{backend}.artifacts"))
            paths = {run: str(Path(tmp, f"{backend}-{i}.pt")) for i, run in enumerate(RUNS)}
            for run in RUNS:
                print(f"{backend}: {run}...", flush=True)
                cache = fresh if run == "warm (artifacts)" else disk
                result = run_child(backend, str(cache), args, paths[run], save=artifacts if run == "cold" else None,
                                   load=artifacts if run == "warm (artifacts)" else None)
                cold_frames = torch.load(paths["cold"])
                result["max_abs_diff_vs_cold"] = float((torch.load(paths[run]) - cold_frames).abs().max())
                results["runs"].append({"backend": backend, "run": run, **result})
    return results


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def _frames_note(diff: float) -> str:
    return "identical" if diff == 0 else f"max abs diff {diff:.2e}"


def table(results: dict) -> str:
    lines = ["| backend | run | first call (s) | second call (s) | process (s) | FX graph cache hit / miss "
             "| AOTAutograd cache hit / miss / bypass | kernels (.so) on disk before the call | frames vs cold |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results["runs"]:
        fx, aot = r["fxgraph"], r["aot_autograd"]
        lines.append(
            f"| {r['backend']} | {r['run']} | {r['first_call_seconds']:.1f} | {r['second_call_seconds']:.2f} "
            f"| {r['process_seconds']:.1f} | {fx.get('hit', 0)} / {fx.get('miss', 0)} "
            f"| {aot.get('hit', 0)} / {aot.get('miss', 0)} / {aot.get('bypass', 0)} "
            f"| {r.get('kernel_files', {}).get('before_first_call', '')} "
            f"| {_frames_note(r['max_abs_diff_vs_cold'])} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--family", default="cogvideox", choices=["cogvideox", "wan"])
    parser.add_argument("--size", type=int, default=64, help="height = width in pixels (default 64: 4x4 tokens)")
    parser.add_argument("--frames", type=int, default=9, help="frames (default 9: 3 latent frames)")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--backends", nargs="+", default=["asymrnr", "inductor"], choices=["asymrnr", "inductor"])
    parser.add_argument("--json")
    parser.add_argument("--results", action="store_true", help="write the table into benchmarks/RESULTS.md")
    parser.add_argument("--from-json", help="take the results from this script's JSON instead of measuring")
    parser.add_argument("--child", choices=["asymrnr", "inductor"], help=argparse.SUPPRESS)
    parser.add_argument("--frames-path", help=argparse.SUPPRESS)
    parser.add_argument("--save-artifacts", help=argparse.SUPPRESS)
    parser.add_argument("--load-artifacts", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.family, args.size, args.frames, args.steps, args.frames_path,
                               args.save_artifacts, args.load_artifacts)))
        return 0
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        for key in ("family", "size", "frames", "steps"):
            setattr(args, key, results["settings"][key])
    else:
        load_before = os.getloadavg()
        results = measure(args)
        results["load_average"] = {"before": load_before, "after": os.getloadavg()}
    print(table(results))
    if args.json and not args.from_json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.results:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from results_md import machine_info, replace_section

        load = results["load_average"]
        threads = results["settings"].get("threads") or torch_threads()
        machine = machine_info("cpu").replace(f"{torch_threads()} threads", f"{threads} threads")
        prefix = f"OMP_NUM_THREADS={results['settings']['threads']} " if results["settings"].get("threads") else ""
        body = (f"### Warm starts: a tiny {args.family} pipeline's first call in a new process\n\n"
                f"Machine: {machine}; load average {load['before'][0]:.1f} before, "
                f"{load['after'][0]:.1f} after. Command: `"
                f"{prefix}"
                f"python benchmarks/warm_start.py "
                f"--family {args.family} --size {args.size} --frames {args.frames} --steps {args.steps} --results`. "
                "Each row is a fresh process; see docs/deployment.md for the recipe.\n\n" + table(results))
        replace_section("warm_start", body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
