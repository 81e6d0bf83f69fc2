"""Regional compilation (each repeated block compiled once) against whole-model compilation.

For each diffusers family (CogVideoX, HunyuanVideo, Mochi, Wan, LTX-Video; tiny seeded configs,
driven over a short sampling loop the way its pipeline drives it, as in
``test_backend_diffusers.py``), ``compile_repeated_blocks`` with the asymrnr backend must:

- reduce the same attention sites as ``torch.compile(model, backend=...)``, at the same steps and
  calls, keeping the same tokens (every matching's kept indices equal as sets);
- give outputs within float tolerance of whole-model compilation;
- compile each block class once (one graph, one runtime serving every block instance), with
  per-instance matchings, and no Dynamo recompile after the first model call.

Inductor compiling every variant costs about a minute per family on 2 cores, so the default
run checks CogVideoX with the variants run eagerly (the rewritten graphs as they are: the same
analysis, plans, seeds, per-instance state and rewrite, without Inductor); every family with
Inductor is ``slow``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch._dynamo
from helpers import eager_compiler, max_relative_error
from torch._dynamo.utils import counters

import asymrnr_compile.backend
from asymrnr_compile import AsymRnRBackend, compile_repeated_blocks
from asymrnr_compile.runtime import AsymRnRRuntime

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers]); CI installs it")

from test_backend_diffusers import CLIENTS, REDUCE, STEPS, client_model, sample  # noqa: E402  (needs diffusers)

OUTPUT_TOLERANCE = 1e-4  # relative to the output's largest value: Inductor fuses the two differently
DEFAULT_FAMILY = "cogvideox"  # the cheapest; the others are slow
# Blocks of each repeated class, so that one compiled graph serves two block instances or more.
# The first CogVideoX, Mochi and dual-stream HunyuanVideo block get a strided view of the input,
# and Dynamo compiles the block once more for the contiguous input of the others (as under plain
# Inductor): CogVideoX and Mochi get three blocks.
BLOCKS = {
    "cogvideox": {"num_layers": 3},
    "hunyuan": {"num_layers": 2, "num_single_layers": 2},
    "mochi": {"num_layers": 3},
    "wan": {"num_layers": 2},
    "ltx": {"num_layers": 2},
}
# Per family: blocks with video attention (HunyuanVideo's token refiner and patch embedding, and
# Mochi's attention pool, are compiled too, unreduced: text-only attention, no attention).
VIDEO_BLOCKS = {"cogvideox": 3, "hunyuan": 4, "mochi": 3, "wan": 2, "ltx": 2}


def _params() -> list[Any]:
    params = [pytest.param(name, "eager", id=f"{name}-eager", marks=() if name == DEFAULT_FAMILY else pytest.mark.slow)
              for name in BLOCKS]
    return params + [pytest.param(name, "inductor", id=f"{name}-inductor", marks=pytest.mark.slow) for name in BLOCKS]



def _run(name: str, regional: bool) -> tuple[list[torch.Tensor], AsymRnRBackend, dict, int]:
    """Sample with ``name`` compiled whole or regionally; outputs, backend, the matchings by
    (step, call, global site index, feature) and the Dynamo graphs after the first model call."""
    torch._dynamo.reset()
    counters.clear()
    model, inputs, uncond = client_model(name, **BLOCKS[name])
    records: list[Any] = []
    backend = AsymRnRBackend(REDUCE, on_matching=records.append)
    if regional:
        compiled = compile_repeated_blocks(model, backend=backend, fullgraph=True)
    else:
        compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    graphs_after_first: list[int] = []

    def first_call_counted(*args: Any, **kwargs: Any) -> Any:
        output = compiled(*args, **kwargs)
        if not graphs_after_first:
            graphs_after_first.append(counters["stats"]["unique_graphs"])
        return output

    outputs = sample(name, first_call_counted, inputs, uncond)
    assert counters["stats"]["unique_graphs"] == graphs_after_first[0], "recompiled after the first model call"
    # which tokens are kept (the order of the kept sources, by distance, may differ on near ties)
    matchings = {(r.step, r.call_index, r.site.index, r.feature): r.indices.keep.sort(-1).values for r in records}
    return outputs, backend, matchings, graphs_after_first[0]


@pytest.mark.parametrize("name, compiler", _params())
def test_regional_reduces_like_the_whole_model(name: str, compiler: str, monkeypatch) -> None:
    if compiler == "eager":
        monkeypatch.setattr(asymrnr_compile.backend, "inductor_compiler", eager_compiler)
    whole_outputs, whole_backend, whole, _ = _run(name, regional=False)
    regional_outputs, backend, regional, graphs = _run(name, regional=True)

    assert whole, "whole-model compilation computed no matching"
    # the same sites and features reduced, at the same steps and calls, keeping the same tokens
    assert sorted(regional) == sorted(whole)
    for key, keep in whole.items():
        assert regional[key].shape == keep.shape, key
        assert torch.equal(regional[key], keep), key
    for regional_output, whole_output in zip(regional_outputs, whole_outputs, strict=True):
        assert max_relative_error(regional_output, whole_output) <= OUTPUT_TOLERANCE

    report = backend.report().to_dict()
    whole_report = whole_backend.report().to_dict()
    runtimes = [graph for graph in backend.graphs if isinstance(graph, AsymRnRRuntime)]
    # one runtime per compiled block graph, serving several block instances each
    instances = [r.to_dict()["instances"] for r in runtimes]
    assert sum(instances) == VIDEO_BLOCKS[name] and max(instances) >= 2, instances
    assert graphs == len(backend.graphs)  # every Dynamo graph went through the backend once
    assert all(r.fallback_reason is None and r.regional for r in runtimes)
    assert (report["cache_misses"], report["cache_hits"]) == (whole_report["cache_misses"], whole_report["cache_hits"])
    for runtime in runtimes:  # steps counted per model call, not per block call
        assert runtime.to_dict()["steps"] == STEPS
    assert CLIENTS[name].calls_per_step * STEPS == len(whole_outputs)
