"""Real diffusers pipelines with their transformer compiled regionally under asymrnr.

``asymrnr_compile.compile_repeated_blocks(pipe.transformer, ...)`` compiles each repeated block
once and hooks the transformer so its blocks learn the grid and the step from each call. Over
two videos of the tiny offline pipelines of ``test_pipelines.py``: every video attention reduced
in every block, steps and calls counted per transformer call (not per block call), the second
video detected as new, no Dynamo recompile in it; and the frames equal whole-model asymrnr's
within float tolerance (``slow``: that compiles the transformer twice).

Only CogVideoX text-to-video runs by default, with the variants run eagerly (the same analysis,
plans, per-instance state and rewritten graphs, without Inductor's minute of compiling on 2
cores); every family with Inductor is ``slow``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch._dynamo
from helpers import eager_compiler
from test_pipelines import (  # noqa: F401  (_fresh_dynamo: the autouse fixture, a clean Dynamo per test)
    CASES,
    REDUCE,
    STEPS,
    _compile,
    _fresh_dynamo,
    _make_pipeline,
    _sample,
    _unique_graphs,
)

import asymrnr_compile.backend
from asymrnr_compile import AsymRnRBackend, compile_repeated_blocks
from asymrnr_compile.runtime import AsymRnRRuntime

REGIONAL_CASES = ("cogvideox_t2v", "hunyuan_t2v", "mochi_t2v", "wan_t2v", "ltx_t2v")
DEFAULT_CASE = "cogvideox_t2v"
FRAMES_TOLERANCE = 1e-4  # frames are in [0, 1]; Inductor fuses the block and the whole model differently


def _params() -> list[Any]:
    eager = [pytest.param(name, "eager", id=f"{name}-eager", marks=() if name == DEFAULT_CASE else pytest.mark.slow)
             for name in REGIONAL_CASES]
    return eager + [pytest.param(name, "inductor", id=f"{name}-inductor", marks=pytest.mark.slow)
                    for name in REGIONAL_CASES]



def _regional_pipeline(name: str) -> tuple[Any, AsymRnRBackend]:
    pipe = _make_pipeline(CASES[name])
    backend = AsymRnRBackend(REDUCE)
    compile_repeated_blocks(pipe.transformer, backend=backend, fullgraph=True)
    return pipe, backend


def _assert_reduced(report: dict[str, Any]) -> None:
    """Every attention site with video tokens reduced; graphs without any (HunyuanVideo's patch
    embedding and text-only token refiner, compiled as repeated blocks too) run unreduced."""
    video_sites = []
    for graph in report["graphs"]:
        sites = [site for site in graph["sites"] if site["video_tokens"]]
        if sites:
            assert graph["fallback_reason"] is None, graph["fallback_reason"]
        video_sites += sites
    assert video_sites, "no attention site with video tokens"
    for site in video_sites:
        assert site.get("applied"), f"{site['name']} ({site['kind']}) not reduced: {site['reason']}"


def _runtimes(backend: AsymRnRBackend) -> list[AsymRnRRuntime]:
    return [graph for graph in backend.graphs if isinstance(graph, AsymRnRRuntime)]


@pytest.mark.parametrize("name, compiler", _params())
def test_regional_pipeline_two_videos_reduced(name: str, compiler: str, monkeypatch) -> None:
    if compiler == "eager":
        monkeypatch.setattr(asymrnr_compile.backend, "inductor_compiler", eager_compiler)
    case = CASES[name]
    pipe, backend = _regional_pipeline(name)
    calls = STEPS * case.calls_per_step

    _sample(case, pipe, 0)
    first = backend.report().to_dict()
    _assert_reduced(first)
    runtimes = _runtimes(backend)
    assert runtimes and first["cache_misses"] > 0
    for runtime in runtimes:  # per block instance: the transformer's steps and calls
        graph = runtime.to_dict()
        assert graph["regional"] and graph["steps"] == STEPS and graph["calls"] == calls * graph["instances"]
    graphs = _unique_graphs()

    _sample(case, pipe, 1)
    second = backend.report().to_dict()
    assert _unique_graphs() == graphs, "the second video recompiled"
    for runtime in runtimes:
        assert runtime.to_dict()["steps"] == 2 * STEPS
    # a new video: matchings recomputed at its step 0, exactly as many as the first video's
    assert second["cache_misses"] == 2 * first["cache_misses"]
    assert second["cache_hits"] == 2 * first["cache_hits"]


@pytest.mark.slow
@pytest.mark.parametrize("name", REGIONAL_CASES)
def test_regional_pipeline_frames_equal_whole_model(name: str) -> None:
    case = CASES[name]
    frames = {}
    torch._dynamo.reset()
    pipe = _make_pipeline(case)
    _compile(pipe, AsymRnRBackend(REDUCE))
    frames["whole"] = _sample(case, pipe, 0)
    torch._dynamo.reset()
    pipe, _ = _regional_pipeline(name)
    frames["regional"] = _sample(case, pipe, 0)
    torch.testing.assert_close(frames["regional"], frames["whole"], atol=FRAMES_TOLERANCE, rtol=0)
