"""asymrnr under diffusers' context parallelism (Ulysses, 2 CPU ranks on gloo; see cp_harness.py).

Asserted per case, on every rank:

- it reduced: no graph fell back, matchings were computed and the sites the report says it
  reduces are the sites its compiled variants rewrote (``reduction_checks``; the single-process
  reference is asserted the same way);
- every video self-attention site is reduced (its ``applied`` entry in the report), with the
  full-sequence grid: the reduction runs after the all-to-all, on the whole sequence of the
  rank's heads;
- Dynamo captured one graph and compiled nothing more after the first step;
- the gathered output (diffusers' all-gather at ``proj_out``; every rank holds it):
  - equals the single-process asymrnr output (same config, same steps) where every reduced site
    sees the whole sequence (Wan with kv only; LTX-Video, whose cross-attention queries also
    pass the all-to-all), to float tolerance;
  - where a site only sees the rank's shard (Wan's cross-attention queries: the shard-local
    design, its queries matched within the rank's frames), stays within the single-process
    asymrnr error to the unreduced output (with a margin).

Cost: the default cases are Wan (one block, kv only, one compiled variant) through Inductor and
LTX-Video (q and kv) with the rewritten graphs run uncompiled (``eager_graphs``: the same
capture, analysis, rewrite and exchange, without Inductor's code generation); the others are
``slow``. LTX-Video runs without ``encoder_attention_mask``: in diffusers 0.42.1 its per-head
mask is all-gathered over the key axis but not scattered over heads, and Ulysses fails eagerly
(a broadcast error in SDPA), with or without this package.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch._dynamo
from cp_harness import CPCase, build_case, run_ranks, run_steps
from helpers import eager_compiler
from reduction_checks import assert_evidence_reduced, assert_reduced

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_compile.analysis.parallel_cost import Hardware, ModelShape, step_cost

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers])")
if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

TIMEOUT_S = 240.0  # each rank compiles one graph of one block; measured ~30 s on 2 busy cores
EXACT = 1e-5  # max abs difference: same math, other head split (float reassociation)
BYTES_TOLERANCE = 0.10  # measured collective bytes vs the scaling model
SHARD_LOCAL_MARGIN = 1.5  # the CP error to unreduced may exceed the single-process one by this factor

# The tiny grids have 128 and 512 video tokens. The published matching (on the per-head q and v):
# on a rank the hidden states before the projections are a shard of the sequence, so the
# defaults' hidden-state matching falls back to it there (docs/multi_device.md), and the
# single-process run it is compared with must match the same features.
SMALL = {"preset": "published", "min_video_tokens": 16}
CASES = {
    # one block (self + cross attention), 2 x 8 x 8 tokens; kv only: the cross site is not reduced
    "wan_kv": CPCase("wan", {"num_layers": 1}, asymrnr={"q_ratio": 0.0, "kv_ratio": 0.3, "cache_steps": 1, **SMALL}),
    # q too: the self site exact, the cross site's queries are the rank's frame: shard-local
    "wan_q_kv": CPCase("wan", {"num_layers": 1}, asymrnr={"q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2, **SMALL},
                       timesteps=(999.0, 749.0, 499.0)),
    # 2 x 16 x 16 tokens, self + cross attention (text split and exchanged too: both sites exact)
    "ltx_q_kv": CPCase("ltx", input_overrides={"encoder_attention_mask": None},
                       asymrnr={"q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2, **SMALL},
                       timesteps=(1000.0, 750.0, 500.0)),
    # the same without Inductor's code generation, so that LTX-Video runs in the default suite
    "ltx_q_kv_eager_graphs": CPCase("ltx", input_overrides={"encoder_attention_mask": None},
                                     asymrnr={"q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2, **SMALL},
                                     timesteps=(1000.0, 750.0, 500.0), eager_graphs=True),
}
EXACT_CASES = {"wan_kv", "ltx_q_kv", "ltx_q_kv_eager_graphs"}
DEFAULT_CASES = {"wan_kv", "ltx_q_kv_eager_graphs"}


def _single_process(case: CPCase) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """The single-process asymrnr outputs (asserted reduced: a reference that fell back would
    let a rank that reduced nothing pass) and the unreduced (eager) outputs of ``case``."""
    model, inputs = build_case(case)
    torch._dynamo.reset()
    backend = AsymRnRBackend(AsymRnRConfig(**case.asymrnr))
    reduced, _ = run_steps(model, inputs, case.timesteps, backend)
    assert_reduced(backend)
    torch._dynamo.reset()
    with torch.no_grad():
        plain = [model(**{**inputs, "timestep": torch.full_like(inputs["timestep"], t)})[0] for t in case.timesteps]
    return reduced, plain


def predicted_payload_bytes(case: CPCase, output: torch.Tensor) -> float:
    """The scaling model's collective bytes per step and rank for ``case`` on 2 ranks (Ulysses)."""
    model, inputs = build_case(case)
    tokens = _video_tokens(case.family, inputs)
    batch = output.shape[0]
    shape = ModelShape(
        case.family, tokens, 0, inputs["encoder_hidden_states"].shape[1], model.config.num_attention_heads,
        model.config.attention_head_dim, 0, len(model.transformer_blocks if case.family == "ltx" else model.blocks),
        output.numel() // (batch * tokens), batch, cross_in_exchange=case.family == "ltx")
    hardware = Hardware(bytes_per_element=output.element_size())
    return step_cost(shape, 2, "ulysses", hardware=hardware).payload_bytes


def _video_tokens(family: str, inputs: dict[str, Any]) -> int:
    if family == "ltx":
        return inputs["hidden_states"].shape[1]
    _, _, frames, height, width = inputs["hidden_states"].shape
    return frames * (height // 2) * (width // 2)  # patch 1 x 2 x 2


def _self_sites(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [site for graph in report["graphs"] for site in graph["sites"] if site["kind"] == "self"]


@pytest.mark.parametrize("name", [pytest.param(n, marks=() if n in DEFAULT_CASES else pytest.mark.slow)
                                  for n in CASES])
def test_ulysses_two_ranks_reduce_every_video_self_attention_site(name, tmp_path, monkeypatch):
    case = CASES[name]
    if case.eager_graphs:  # the single-process reference too (the ranks do it in their processes)
        import asymrnr_compile.backend

        monkeypatch.setattr(asymrnr_compile.backend, "inductor_compiler", eager_compiler)
    reference, plain = _single_process(case)
    ranks = run_ranks(case, tmp_path, world_size=2, timeout_s=TIMEOUT_S)
    for rank, result in enumerate(ranks):
        report = result["report"]
        # no fallback, matchings computed, the applied sites really rewritten (cp_harness sends the proof)
        assert_evidence_reduced(result["reduction"], where=f"rank {rank}: ")
        sites = _self_sites(report)
        assert sites, f"rank {rank}: no self-attention site found"
        for site in sites:
            assert site.get("applied"), f"rank {rank}: {site['name']} not reduced: {site.get('reason')}"
            assert site["video_tokens"] == _video_tokens(case.family, build_case(case)[1]), site
        assert result["graphs"][0] == 1 and result["graphs"][-1] == 1, f"rank {rank}: graphs {result['graphs']}"
        measured = sum(sum(calls) for calls in result["collectives"].values())
        predicted = predicted_payload_bytes(case, reference[0])
        assert abs(measured - predicted) <= BYTES_TOLERANCE * predicted, f"rank {rank}: {measured} vs {predicted}"
        for step, (got, want, unreduced) in enumerate(zip(result["outputs"], reference, plain)):
            assert got.shape == want.shape
            if name in EXACT_CASES:
                assert (got - want).abs().max().item() <= EXACT, f"rank {rank} step {step}"
            else:
                single = (want - unreduced).abs().max().item()
                assert (got - unreduced).abs().max().item() <= SHARD_LOCAL_MARGIN * single, f"rank {rank} step {step}"
