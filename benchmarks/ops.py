"""Ops benchmark: chunked matching vs a naive full-distance-matrix matcher.

At CogVideoX-2B scale (DESIGN.md section 2: B=2 under CFG, H=30 heads, grid 13x30x45 ->
N=17,550 video tokens, head dim 64, dst stride (2, 2, 2), float32), this times
:func:`asymrnr_compile.ops.match_tokens` against a naive matcher that materialises the whole
``(B*H, N_src, N_dst)`` squared-distance matrix (as the published code does, ~7.4 GB here) and
reduces it, and measures the peak extra memory of each in its own child process
(``ru_maxrss`` after one call minus the child's RSS before it).

Following DESIGN.md section 6, speed is a ratio measured in one process, interleaved, with
warm-up, on the same inputs. When the naive matrix cannot fit in the available memory, both are
timed at the largest frame count where it fits, and the naive memory at full scale is
extrapolated (it is proportional to N_src * N_dst).

Usage::

    python benchmarks/ops.py --json out/ops.json          # full scale (a few minutes)
    python benchmarks/ops.py --quick --json out/ops.json  # 5x30x45 grid, seconds
    python benchmarks/ops.py --matcher-cost               # matching cost before/after (~2 min)
    python benchmarks/ops.py --matcher-cost --quick       # CogVideoX-2B at 5 frames (~30 s)
    python benchmarks/ops.py --kernel-operators           # operators per kernel vs token count

``--matcher-cost`` times one matching of one site and feature before (the matcher as it was,
kept here as :func:`legacy_match`) and after, interleaved, at 1 and 2 threads, at the reference
``attention`` preset size and at CogVideoX-2B scale; counts the aten operators one matching plus
its keep/restore indices runs (``torch.profiler``: top-level operators, and those that launch a
kernel on a GPU, i.e. not views or allocations); and measures peak extra memory at CogVideoX-2B
scale in child processes.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from asymrnr_compile.ops import (
    DEFAULT_DST_STRIDE,
    DEFAULT_MATCH_CHUNK_BYTES,
    count_dst_tokens,
    match_chunk_size,
    match_tokens,
    num_kept_tokens,
    reduction_indices,
    split_tokens,
)
from asymrnr_compile.ops.match_triton import KERNEL_RANGE

BATCH, HEADS, CHANNELS = 2, 30, 64
FULL_GRID = (13, 30, 45)
QUICK_GRID = (5, 30, 45)
WARMUP_GRID = (2, 4, 4)
FULL_REPEATS, QUICK_REPEATS = 3, 3
SPLIT_SEED, DATA_SEED = 0, 0
FLOAT32_BYTES = 4
BYTES_PER_MB = 2**20
KB_PER_MB = 1024  # ru_maxrss and VmHWM are in KiB on Linux
CLEAR_REFS_RESET_PEAK = "5"  # /proc/self/clear_refs: reset the peak RSS to the current RSS
NAIVE_MEMORY_HEADROOM = 1.25  # naive needs its matrix plus inputs and transients
NAIVE_MEMORY_RESERVE = 2 * 2**30  # bytes left for everything else on the machine
IMPLEMENTATIONS = ("chunked", "naive", "legacy")

# Matching cost (--matcher-cost): one site and feature, the published q ratio.
COST_SIZES = {  # name: (batch, heads, channels, grid, text tokens before the video)
    "attention": (2, 4, 64, (4, 24, 24), 32),  # reference DiT preset `attention`, CFG batch
    "cogvideox-2b": (BATCH, HEADS, CHANNELS, FULL_GRID, 226),
}
COST_QUICK_SIZES = {"attention": COST_SIZES["attention"],
                    "cogvideox-2b-5f": (BATCH, HEADS, CHANNELS, QUICK_GRID, 226)}
COST_THREADS = (1, 2)
COST_RATIO = 0.5
COST_REPEATS = {"attention": 15, "cogvideox-2b": 3, "cogvideox-2b-5f": 3}
LEGACY_EUCLIDEAN_DST_NORM_WEIGHT = -0.5
# Operators that launch no kernel on a GPU: views, metadata and allocations. ``aten::to`` with
# nothing under it is a no-op conversion (same dtype and device).
NO_KERNEL_OPS = frozenset(
    f"aten::{name}" for name in (
        "view", "reshape", "_reshape_alias", "_unsafe_view", "transpose", "permute", "expand",
        "slice", "select", "unsqueeze", "squeeze", "as_strided", "detach", "alias", "t",
        "narrow", "unflatten", "empty", "empty_like", "new_empty", "empty_strided", "resize_",
        "lift_fresh", "contiguous",
    )
)


def naive_match(x: torch.Tensor, split) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Reference matcher: the full ``(P, N_src, N_dst)`` squared-distance matrix, then its row
    minimum and a sort. Uses the layout that is fastest to reduce (min over the last axis)."""
    leading = math.prod(x.shape[:-2])
    channels = x.shape[-1]
    dst = x.index_select(-2, split.dst).reshape(leading, -1, channels)
    src = x.index_select(-2, split.src).reshape(leading, -1, channels)
    dst_sq = dst.square().sum(-1).unsqueeze(1)
    src_sq = src.square().sum(-1).unsqueeze(-1)
    full = torch.baddbmm(dst_sq, src, dst.transpose(1, 2), alpha=-2.0)
    full.add_(src_sq).clamp_min_(0.0)
    distance, nearest = full.min(dim=-1)
    del full
    order = torch.argsort(distance, dim=-1, descending=True, stable=True)
    return order, nearest, distance


def chunked_match(x: torch.Tensor, split, chunk_bytes: int):
    return match_tokens(x, split, "euclidean", chunk_bytes=chunk_bytes)


def legacy_match(x: torch.Tensor, split, chunk_bytes: int, start: int = 0):
    """The euclidean matcher as it was before the matching-cost work (commit 920cb8d), for
    before/after timing: per 64 MiB chunk of src tokens a gather, a copy into an augmented
    operand, a matmul against ``[d, -|d|^2/2]``, ``max(dim=-1)`` and the distance; lists of
    chunk results concatenated; one argsort."""
    video = x[..., start:, :].detach()
    dst, src = split.dst, split.src
    num_dst, num_src = dst.shape[0], src.shape[0]
    leading_shape = video.shape[:-2]
    leading = math.prod(leading_shape)
    channels = video.shape[-1]
    dst_feat = video.index_select(-2, dst).reshape(leading, num_dst, channels).float()
    dst_sq = dst_feat.square().sum(-1, keepdim=True)
    dst_feat = torch.cat([dst_feat, dst_sq.mul_(LEGACY_EUCLIDEAN_DST_NORM_WEIGHT)], dim=-1)
    dst_t = dst_feat.transpose(1, 2)
    operand_channels = channels + 1
    chunk = match_chunk_size(leading, num_src, num_dst, FLOAT32_BYTES, chunk_bytes)
    block_buffer = torch.empty(leading * chunk * num_dst)
    src_buffer = torch.empty(leading * chunk * operand_channels)
    best_values, best_indices = [], []
    for lo in range(0, num_src, chunk):
        rows = min(num_src, lo + chunk) - lo
        src_feat = video.index_select(-2, src[lo : lo + rows]).reshape(leading, rows, channels)
        operand = src_buffer[: leading * rows * operand_channels].view(
            leading, rows, operand_channels)
        operand[..., :channels].copy_(src_feat)
        operand[..., channels].fill_(1.0)
        block = block_buffer[: leading * rows * num_dst].view(leading, rows, num_dst)
        torch.bmm(operand, dst_t, out=block)
        score, index = block.max(dim=-1)
        src_sq = operand[..., :channels].square().sum(-1)
        best_values.append((src_sq - 2.0 * score).clamp_min(0.0))
        best_indices.append(index)
    distance = torch.cat(best_values, dim=-1).reshape(*leading_shape, num_src)
    nearest = torch.cat(best_indices, dim=-1).reshape(*leading_shape, num_src)
    src_order = torch.argsort(distance, dim=-1, descending=True, stable=True)
    return src_order, nearest, distance


def make_inputs(grid: tuple[int, int, int]):
    num_tokens = math.prod(grid)
    generator = torch.Generator().manual_seed(DATA_SEED)
    x = torch.randn(BATCH, HEADS, num_tokens, CHANNELS, generator=generator)
    return x, split_tokens(num_tokens, grid, DEFAULT_DST_STRIDE, seed=SPLIT_SEED)


def naive_matrix_bytes(grid: tuple[int, int, int]) -> int:
    num_tokens = math.prod(grid)
    num_dst = count_dst_tokens(num_tokens, grid, DEFAULT_DST_STRIDE)
    return BATCH * HEADS * num_dst * (num_tokens - num_dst) * FLOAT32_BYTES


def available_bytes() -> int:
    with open("/proc/meminfo") as meminfo:
        for line in meminfo:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("MemAvailable not found in /proc/meminfo")


def current_rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / BYTES_PER_MB


def reset_peak_rss() -> None:
    """Reset the kernel's peak RSS of this process (VmHWM) to the current RSS, so that the
    peak read after a call is the call's, not that of making its inputs (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write(CLEAR_REFS_RESET_PEAK)
    except OSError:
        pass


def peak_rss_mb() -> float:
    """Peak RSS since the last :func:`reset_peak_rss` (VmHWM), else since the start, in MB."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / KB_PER_MB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / KB_PER_MB


def run_child(impl: str, grid: tuple[int, int, int], chunk_bytes: int) -> None:
    """Child process: one call of one implementation; prints its peak extra RSS as JSON.

    A call on a tiny grid first loads the libraries and thread pools the call uses, so that the
    measured extra RSS is the call's working memory, not code pages.
    """
    def call(inputs):
        if impl == "chunked":
            chunked_match(*inputs, chunk_bytes)
        elif impl == "legacy":
            legacy_match(*inputs, chunk_bytes)
        else:
            naive_match(*inputs)

    call(make_inputs(WARMUP_GRID))
    x, split = make_inputs(grid)
    before_mb = current_rss_mb()
    reset_peak_rss()
    start = time.perf_counter()
    call((x, split))
    seconds = time.perf_counter() - start
    peak_mb = peak_rss_mb()
    print(json.dumps({"impl": impl, "peak_rss_mb": peak_mb - before_mb,
                      "cold_seconds": seconds, "rss_before_mb": before_mb}))


def measure_memory(impl: str, grid: tuple[int, int, int], chunk_bytes: int) -> dict:
    cmd = [sys.executable, __file__, "--child", impl, "--grid", *map(str, grid),
           "--chunk-bytes", str(chunk_bytes)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def time_interleaved(grid, chunk_bytes: int, repeats: int, with_naive: bool) -> dict:
    """Median seconds of each implementation, alternating calls after one warm-up each."""
    x, split = make_inputs(grid)
    impls = {"chunked": lambda: chunked_match(x, split, chunk_bytes)}
    if with_naive:
        impls["naive"] = lambda: naive_match(x, split)
    results = {name: fn() for name, fn in impls.items()}  # warm-up
    times = {name: [] for name in impls}
    for _ in range(repeats):
        for name, fn in impls.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    out = {name: statistics.median(t) for name, t in times.items()}
    if with_naive:
        got, want = results["chunked"].nearest, results["naive"][1]
        out["nearest_agreement"] = float((got.reshape(want.shape) == want).double().mean())
    return out


def largest_naive_grid(grid: tuple[int, int, int]) -> tuple[int, int, int] | None:
    budget = (available_bytes() - NAIVE_MEMORY_RESERVE) / NAIVE_MEMORY_HEADROOM
    for frames in range(grid[0], 0, -1):
        candidate = (frames, grid[1], grid[2])
        if naive_matrix_bytes(candidate) <= budget:
            return candidate
    return None


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    total_gib = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30
    return (f"{model}, {os.cpu_count()} CPU cores, {total_gib:.0f} GiB RAM, "
            f"torch threads {torch.get_num_threads()}, {platform.system()}")


def run(grid: tuple[int, int, int], repeats: int, chunk_bytes: int, command: str) -> dict:
    num_tokens = math.prod(grid)
    num_dst = count_dst_tokens(num_tokens, grid, DEFAULT_DST_STRIDE)
    naive_grid = largest_naive_grid(grid)

    chunked_mem = measure_memory("chunked", grid, chunk_bytes)
    timing = time_interleaved(grid, chunk_bytes, repeats, with_naive=naive_grid == grid)
    result = {
        "seconds": timing["chunked"],
        "peak_rss_mb": chunked_mem["peak_rss_mb"],
        "batch": BATCH,
        "heads": HEADS,
        "grid": list(grid),
        "num_tokens": num_tokens,
        "num_dst": num_dst,
        "num_src": num_tokens - num_dst,
        "channels": CHANNELS,
        "dst_stride": list(DEFAULT_DST_STRIDE),
        "dtype": "float32",
        "similarity": "euclidean",
        "chunk_bytes": chunk_bytes,
        "naive_matrix_mb_full_scale": naive_matrix_bytes(grid) / BYTES_PER_MB,
        "repeats": repeats,
        "timing": "median of repeats, chunked and naive interleaved in one process after warm-up",
        "torch": torch.__version__,
        "machine": machine(),
        "command": command,
    }
    if naive_grid is None:
        result.update(naive_seconds=None, naive_peak_rss_mb=None, time_ratio_vs_naive=None,
                      naive_note="naive matrix does not fit in memory even for one frame")
        return result
    naive_mem = measure_memory("naive", naive_grid, chunk_bytes)
    if naive_grid == grid:
        naive_timing = timing
        result["naive_grid"] = list(grid)
    else:
        naive_timing = time_interleaved(naive_grid, chunk_bytes, repeats, with_naive=True)
        scale = naive_matrix_bytes(grid) / naive_matrix_bytes(naive_grid)
        result.update(
            naive_grid=list(naive_grid),
            chunked_seconds_at_naive_grid=naive_timing["chunked"],
            naive_peak_rss_mb_extrapolated_full_scale=naive_mem["peak_rss_mb"] * scale,
        )
    result.update(
        naive_seconds=naive_timing["naive"],
        naive_peak_rss_mb=naive_mem["peak_rss_mb"],
        time_ratio_vs_naive=naive_timing["chunked"] / naive_timing["naive"],
        nearest_agreement=naive_timing["nearest_agreement"],
    )
    return result


def legacy_reduction_indices(split, src_order, nearest, num_keep: int):
    """``reduction_indices`` as it was before the matching-cost work (12 operators)."""
    dst, src = split.dst, split.src
    num_dst, num_src = dst.shape[0], src.shape[0]
    leading = src_order.shape[:-1]
    num_keep_src = num_keep - num_dst
    keep = torch.cat([dst.expand(*leading, num_dst), src[src_order[..., :num_keep_src]]], dim=-1)
    positions = torch.arange(num_src).expand_as(src_order)
    rank = torch.empty_like(src_order).scatter_(-1, src_order, positions)
    src_row = torch.where(rank < num_keep_src, rank + num_dst, nearest)
    dst_row = torch.arange(num_dst).expand(*leading, num_dst)
    row_in_split_order = torch.cat([dst_row, src_row], dim=-1)
    split_order = torch.cat([dst, src])
    inverse = torch.empty_like(split_order).scatter_(
        0, split_order, torch.arange(num_dst + num_src))
    return keep, row_in_split_order.index_select(-1, inverse)


def _is_operator(name: str) -> bool:
    """An aten operator, or one launch of the fused Triton matching kernel (its profiler range;
    under Triton's CPU interpreter the range also holds the interpreter's copies)."""
    return name.startswith("aten::") or name == KERNEL_RANGE


def count_operators(fn) -> dict:
    """Profile one call of ``fn``: the operators it runs at top level (aten operators and Triton
    kernel launches, not counting those inside another), all of them and those that launch a
    kernel on a GPU."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    top = []
    for event in prof.events():
        if not _is_operator(event.name):
            continue
        parent = event.cpu_parent
        while parent is not None and not _is_operator(parent.name):
            parent = parent.cpu_parent
        if parent is None:
            top.append(event)
    kernels = [e for e in top if e.name not in NO_KERNEL_OPS
               and not (e.name == "aten::to" and not e.cpu_children)]
    names = {}
    for event in kernels:
        names[event.name] = names.get(event.name, 0) + 1
    return {"top_level": len(top), "kernels": len(kernels), "kernel_ops": names}


def cost_inputs(size):
    batch, heads, channels, grid, text = size
    num_tokens = math.prod(grid)
    generator = torch.Generator().manual_seed(DATA_SEED)
    x = torch.randn(batch, heads, text + num_tokens, channels, generator=generator)
    split = split_tokens(num_tokens, grid, DEFAULT_DST_STRIDE, seed=SPLIT_SEED)
    return x, split, num_kept_tokens(num_tokens, len(split.dst), COST_RATIO)


def matcher_cost(sizes: dict, chunk_bytes: int, repeats: dict | None, command: str) -> dict:
    """Before/after matcher seconds per thread count, operator counts, agreement, memory."""
    out = {"command": command, "machine": machine(), "torch": torch.__version__,
           "chunk_bytes": chunk_bytes, "ratio": COST_RATIO, "sizes": {}}
    threads_before = torch.get_num_threads()
    try:
        for name, size in sizes.items():
            count = (repeats or COST_REPEATS).get(name, QUICK_REPEATS)
            out["sizes"][name] = size_cost(size, chunk_bytes, count)
    finally:
        torch.set_num_threads(threads_before)
    return out


def size_cost(size: tuple, chunk_bytes: int, repeats: int) -> dict:
    """:func:`matcher_cost` for one size."""
    x, split, num_keep = cost_inputs(size)
    batch, heads, channels, grid, text = size

    def after():
        return match_tokens(x, split, start=text, chunk_bytes=chunk_bytes)

    def before():
        return legacy_match(x, split, chunk_bytes, start=text)

    old, new = before(), after()
    num_src, num_dst = len(split.src), len(split.dst)
    chunk = match_chunk_size(batch * heads, num_src, num_dst, FLOAT32_BYTES, chunk_bytes)
    row = {
        "batch": batch, "heads": heads, "channels": channels, "grid": list(grid),
        "num_src": num_src, "num_dst": num_dst, "chunks": math.ceil(num_src / chunk),
        "nearest_agreement": float((old[1] == new.nearest).double().mean()),
        "src_order_agreement": float((old[0] == new.src_order).double().mean()),
        "operators_after": count_operators(lambda: reduction_indices(split, after(), num_keep)),
        "operators_before": count_operators(
            lambda: legacy_reduction_indices(split, *before()[:2], num_keep)),
        "seconds": {},
    }
    for threads in COST_THREADS:
        torch.set_num_threads(threads)
        before(), after()  # warm-up at this thread count
        times = {"before": [], "after": []}
        for _ in range(repeats):
            for label, fn in (("before", before), ("after", after)):
                start = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - start)
        row["seconds"][str(threads)] = {k: statistics.median(v) for k, v in times.items()}
    if (batch, heads, channels) == (BATCH, HEADS, CHANNELS):
        row["peak_rss_mb"] = {
            label: measure_memory(impl, grid, chunk_bytes)["peak_rss_mb"]
            for label, impl in (("before", "legacy"), ("after", "chunked"))}
    return row


def print_cost(result: dict) -> None:
    print(f"matching cost, one site and feature (euclidean, float32, chunk_bytes "
          f"{result['chunk_bytes']}), before -> after")
    for name, row in result["sizes"].items():
        grid = "x".join(map(str, row["grid"]))
        print(f"{name}: B={row['batch']} H={row['heads']} c={row['channels']} grid {grid} "
              f"N_src={row['num_src']} N_dst={row['num_dst']} ({row['chunks']} chunk(s))")
        for threads, sec in row["seconds"].items():
            print(f"  {threads} thread(s): {sec['before'] * 1e3:9.1f} ms -> "
                  f"{sec['after'] * 1e3:9.1f} ms  ({sec['before'] / sec['after']:.2f}x)")
        ops_b, ops_a = row["operators_before"], row["operators_after"]
        print(f"  operators (matcher + keep/restore): kernels {ops_b['kernels']} -> "
              f"{ops_a['kernels']}, all top-level {ops_b['top_level']} -> {ops_a['top_level']}")
        print(f"    after: {ops_a['kernel_ops']}")
        print(f"  agreement with before: nearest {row['nearest_agreement']:.6f}, "
              f"src_order {row['src_order_agreement']:.6f}")
        if "peak_rss_mb" in row:
            mem = row["peak_rss_mb"]
            print(f"  peak extra RSS: {mem['before']:.0f} MB -> {mem['after']:.0f} MB")


def print_table(result: dict) -> None:
    grid = "x".join(map(str, result["grid"]))
    print(f"matching B={result['batch']} H={result['heads']} grid {grid} "
          f"(N={result['num_tokens']}, N_dst={result['num_dst']}) c={result['channels']} float32")
    print(f"{'impl':<10}{'seconds':>10}{'peak RSS MB':>14}")
    print(f"{'chunked':<10}{result['seconds']:>10.2f}{result['peak_rss_mb']:>14.0f}")
    if result.get("naive_seconds") is not None:
        naive_grid = "x".join(map(str, result["naive_grid"]))
        print(f"{'naive':<10}{result['naive_seconds']:>10.2f}{result['naive_peak_rss_mb']:>14.0f}"
              f"   (grid {naive_grid})")
        print(f"time ratio chunked / naive: {result['time_ratio_vs_naive']:.2f}, "
              f"nearest agreement {result['nearest_agreement']:.4f}")
    if "naive_peak_rss_mb_extrapolated_full_scale" in result:
        print(f"naive peak RSS extrapolated to full scale: "
              f"{result['naive_peak_rss_mb_extrapolated_full_scale']:.0f} MB")


def write_json(path: Path, result: dict, key: str = "match") -> None:
    """Set the ``key`` entry of the JSON file at ``path``, keeping any other entries."""
    data = {}
    if path.exists():
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError:
            data = {}
        if not isinstance(data, dict):
            data = {}
    data[key] = result
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


KERNEL_OPERATOR_GRIDS = ((2, 8, 8), (4, 16, 16), (4, 24, 24))
"""Token grids of ``--kernel-operators`` (128 to 2,304 video tokens; B=2, H=4, d=64)."""


def _one_matching(x, split, similarity: str, kernel: str, keep: int):
    return reduction_indices(split, match_tokens(x, split, similarity, kernel=kernel), keep)


def kernel_operators(command: str) -> dict:
    """Operators of one matching plus its keep/restore indices, per kernel and similarity, at
    growing token counts: the GPU launch proxy. The Triton kernel runs where it can (a CUDA
    device, or Triton's CPU interpreter with ``TRITON_INTERPRET=1``); it is one operator, its
    launch, either way."""
    from asymrnr_compile.ops.match_triton import triton_runs_on

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    kernels = ["aten"] + (["triton"] if triton_runs_on(device) else [])
    rows = []
    for grid in KERNEL_OPERATOR_GRIDS:
        num_tokens = math.prod(grid)
        x = torch.randn(2, 4, num_tokens, CHANNELS, device=device)
        split = split_tokens(num_tokens, grid, DEFAULT_DST_STRIDE, seed=SPLIT_SEED, device=device)
        keep = num_kept_tokens(num_tokens, len(split.dst), COST_RATIO)
        for kernel in kernels:
            for similarity in ("euclidean", "cosine", "dot"):
                counts = count_operators(functools.partial(_one_matching, x, split, similarity, kernel, keep))
                rows.append({"tokens": num_tokens, "kernel": kernel, "similarity": similarity, **counts})
    return {"command": command, "machine": machine(), "device": str(device), "rows": rows}


def print_kernel_operators(result: dict) -> None:
    print(f"operators of one matching + keep/restore indices (GPU-kernel ops / all top-level), {result['device']}")
    for row in result["rows"]:
        print(f"  {row['tokens']:>6} tokens  {row['kernel']:<7} {row['similarity']:<10} "
              f"{row['kernels']:>3} / {row['top_level']:>3}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write results (key 'match') to this file")
    parser.add_argument("--quick", action="store_true",
                        help=f"grid {QUICK_GRID} instead of {FULL_GRID}")
    parser.add_argument("--repeats", type=int, default=None, help="timed calls per implementation")
    parser.add_argument("--chunk-bytes", type=int, default=DEFAULT_MATCH_CHUNK_BYTES,
                        help="match_tokens chunk_bytes (default: the library default)")
    parser.add_argument("--matcher-cost", action="store_true",
                        help="matcher before/after: time at 1 and 2 threads, operator count, "
                             "peak memory, at the attention preset and CogVideoX-2B sizes "
                             "(JSON key 'matcher_cost'); with --quick CogVideoX-2B at 5 frames")
    parser.add_argument("--kernel-operators", action="store_true",
                        help="operators of one matching per kernel (aten, triton where it runs) at "
                             "growing token counts (JSON key 'kernel_operators')")
    parser.add_argument("--child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)
    parser.add_argument("--grid", type=int, nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeats is not None and args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.chunk_bytes < 1:
        parser.error("--chunk-bytes must be >= 1")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.child:
        run_child(args.child, tuple(args.grid), args.chunk_bytes)
        return
    command = "python " + " ".join([os.path.relpath(__file__), *sys.argv[1:]])
    if args.kernel_operators:
        result = kernel_operators(command)
        print_kernel_operators(result)
        if args.json:
            write_json(args.json, result, key="kernel_operators")
        return
    if args.matcher_cost:
        sizes = COST_QUICK_SIZES if args.quick else COST_SIZES
        repeats = None if args.repeats is None else dict.fromkeys(sizes, args.repeats)
        result = matcher_cost(sizes, args.chunk_bytes, repeats, command)
        print_cost(result)
        if args.json:
            write_json(args.json, result, key="matcher_cost")
        return
    grid = QUICK_GRID if args.quick else FULL_GRID
    repeats = args.repeats or (QUICK_REPEATS if args.quick else FULL_REPEATS)
    result = run(grid, repeats, args.chunk_bytes, command)
    print_table(result)
    if args.json:
        write_json(args.json, result)


if __name__ == "__main__":
    main()
