"""Context parallelism: the scaling model's predictions, and its collective bytes against a
measured 2-rank CPU run.

1. Predictions (:mod:`asymrnr_compile.analysis.parallel_cost`) per step and rank at P = 1, 2, 4,
   8 for CogVideoX-2B, HunyuanVideo and Wan 2.1 14B token counts: Ulysses with the reduction
   after the exchange (implemented), Ulysses shard-local and ring shard-local (modelled only),
   default ratios q 0.5 / kv 0.3, bf16, the assumed rates of ``Hardware()``.
2. Measured: the tiny Wan and LTX-Video transformers on 2 CPU ranks (gloo, loopback), Ulysses,
   compiled with asymrnr, through the test harness (``tests/parallel/cp_harness.py``): the input
   bytes of every collective call of one steady-state step, profiled, against the model.

Writes the section ``context-parallel`` of RESULTS.md (``--write``) and prints it.

    OMP_NUM_THREADS=1 python benchmarks/context_parallel.py --write
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "tests" / "parallel"))

from cp_harness import CPCase, build_case, run_ranks  # noqa: E402
from results_md import machine_info, replace_section  # noqa: E402

from asymrnr_compile.analysis.parallel_cost import (  # noqa: E402
    MODELS,
    Hardware,
    ModelShape,
    Reduction,
    step_cost,
)

RANKS = (1, 2, 4, 8)
# The published matching (per-head q and v): under Ulysses the hidden states are sequence shards.
SMALL = {"preset": "published", "min_video_tokens": 16}
# Steps: compute, reuse, compute (cache window 2): the profiled last step runs a variant compiled
# two steps earlier. (A step that compiles a new variant runs extra collectives while compiling:
# measured 80 more all-to-alls on the 2-block Wan, 3 more on LTX-Video.)
STEPS = (999.0, 749.0, 499.0)
MEASURED = {
    "Wan (tiny, 2 blocks)": CPCase("wan", {"num_layers": 2},
                                   asymrnr={"q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2, **SMALL},
                                   timesteps=STEPS),
    "LTX-Video (tiny)": CPCase("ltx", input_overrides={"encoder_attention_mask": None},
                               asymrnr={"q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2, **SMALL},
                               timesteps=STEPS),
}


def predictions() -> str:
    rows = ["| model | P | Ulysses x vs 1 device | asymrnr x at P (after exchange) | total x | "
            "asymrnr x at P (Ulysses shard-local) | ring x vs 1 device | asymrnr x at P (ring shard-local) | "
            "wire MB/rank (Ulysses) | comm share of step (Ulysses) |", "|" + "---|" * 10]
    for name, model in MODELS.items():
        single = step_cost(model, 1)
        for ranks in RANKS:
            plain = step_cost(model, ranks)
            after = step_cost(model, ranks, reduction=Reduction())
            local = step_cost(model, ranks, reduction=Reduction(), placement="shard_local")
            comm = plain.wire_bytes / Hardware().link_bandwidth / plain.seconds
            if ranks == 1:
                ring_cells = "-", "-"
            else:
                ring = step_cost(model, ranks, "ring")
                ring_red = step_cost(model, ranks, "ring", Reduction(), placement="shard_local")
                ring_cells = f"{single.seconds / ring.seconds:.2f}", f"{ring.seconds / ring_red.seconds:.2f}"
            rows.append(f"| {name} ({model.video_tokens:,} video tokens) | {ranks} | "
                        f"{single.seconds / plain.seconds:.2f} | {plain.seconds / after.seconds:.2f} | "
                        f"{single.seconds / after.seconds:.2f} | {plain.seconds / local.seconds:.2f} | "
                        f"{ring_cells[0]} | {ring_cells[1]} | {plain.wire_bytes / 1e6:,.0f} | {comm:.1%} |")
    return "\n".join(rows)


def _shape(case: CPCase, output_batch: int, element: int, output_numel: int) -> ModelShape:
    model, inputs = build_case(case)
    if case.family == "ltx":
        tokens, blocks = inputs["hidden_states"].shape[1], len(model.transformer_blocks)
    else:
        _, _, frames, height, width = inputs["hidden_states"].shape
        tokens, blocks = frames * (height // 2) * (width // 2), len(model.blocks)
    return ModelShape(case.family, tokens, 0, inputs["encoder_hidden_states"].shape[1],
                      model.config.num_attention_heads, model.config.attention_head_dim, 0, blocks,
                      output_numel // (output_batch * tokens), output_batch, cross_in_exchange=case.family == "ltx")


def measured(timeout_s: float) -> str:
    rows = ["| model | rank | all-to-all calls | all-gather calls | measured bytes/step | model bytes/step | "
            "difference | self sites reduced | wall s (2 ranks) |", "|" + "---|" * 9]
    for name, case in MEASURED.items():
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            ranks = run_ranks(case, Path(tmp), timeout_s=timeout_s)
            wall = time.perf_counter() - start
        for rank, result in enumerate(ranks):
            output = result["outputs"][-1]
            shape = _shape(case, output.shape[0], output.element_size(), output.numel())
            model_bytes = step_cost(shape, 2, hardware=Hardware(bytes_per_element=output.element_size())).payload_bytes
            calls = result["collectives"]
            got = sum(sum(v) for v in calls.values())
            sites = [s for g in result["report"]["graphs"] for s in g["sites"] if s["kind"] == "self"]
            reduced = sum(1 for s in sites if s.get("applied"))
            rows.append(f"| {name} | {rank} | {len(calls['_c10d_functional::all_to_all_single'])} | "
                        f"{len(calls['_c10d_functional::all_gather_into_tensor'])} | {got:,} | {model_bytes:,.0f} | "
                        f"{(got - model_bytes) / model_bytes:+.1%} | {reduced} of {len(sites)} | {wall:.0f} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="replace the section in benchmarks/RESULTS.md")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for each 2-rank run")
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    table = measured(args.timeout)
    load_after = os.getloadavg()[0]
    hw = Hardware()
    body = f"""## Context parallelism: scaling model and measured collective bytes ({time.strftime('%Y-%m-%d')})

Command: `OMP_NUM_THREADS=1 python benchmarks/context_parallel.py --write`. Machine: {machine_info('cpu')};
load average {load_before:.1f} before the measured runs, {load_after:.1f} after. No GPU: no speed is measured
here; the speed columns are the model's predictions.

**Measured** (2 CPU ranks, gloo on loopback, diffusers Ulysses `ulysses_degree=2`, compiled with asymrnr
q 0.5 / kv 0.3): the input bytes of every collective call of one steady-state step (torch profiler,
`record_shapes`), against `parallel_cost.step_cost(...).payload_bytes` for the same shapes:

{table}

**Predicted** per step and rank (`asymrnr_compile/analysis/parallel_cost.py`): bf16, batch 2 (guidance),
q 0.5 / kv 0.3 at every video self/joint site, cache window 5, dst stride 2 x 2 x 2; time = FLOPs /
{hw.flop_rate / 1e12:.0f} TFLOP/s + wire bytes / {hw.link_bandwidth / 1e9:.0f} GB/s, no overlap (assumed rates, an H100
at half its dense bf16 peak). "asymrnr x at P" is the unreduced over the reduced step at the same P; "total x" is
one unreduced device over P ranks with asymrnr (after the exchange, the implemented design). Ring needs GPU
attention kernels (log-sum-exp) and is modelled only; CogVideoX and HunyuanVideo have no built-in diffusers plan
(HunyuanVideo takes a user plan; CogVideoX calls SDPA directly).

{predictions()}
"""
    print(body)
    if args.write:
        replace_section("context-parallel", body)


if __name__ == "__main__":
    main()
