"""What the backend tells a user when attention stays unreduced, and regional seeding by shape.

- ``last_backend()`` answers after a run that reduced nothing (the string form);
- each distinct reason a graph runs unreduced warns once, and every site left alone has a reason;
- a one-frame grid is split within the frame (``site_dst_stride``);
- regional compilation reduces the same sites as whole-model compilation when the token count
  equals the model's width (an input whose last axis has the video's length is the features').
"""

from __future__ import annotations

import gc
import importlib.util
import warnings
from pathlib import Path

import pytest
import torch
import torch._dynamo
import toy_dit
from helpers import eager_compiler
from reduction_checks import rewritten_sites
from toy_dit import ToyDiT, toy_inputs

import asymrnr_compile
from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_compile.config import AsymRnRWarning
from asymrnr_compile.plan.select_sites import site_dst_stride
from asymrnr_compile.reasons import ReasonKind, kind_of
from asymrnr_compile.runtime import AsymRnRRuntime


@pytest.fixture(autouse=True)
def _eager_variants(monkeypatch):
    monkeypatch.setattr("asymrnr_compile.backend.inductor_compiler", eager_compiler)


def test_last_backend_answers_after_a_run_that_reduced_nothing():
    torch._dynamo.reset()
    model, inputs = ToyDiT(), toy_inputs()
    options = {"min_video_tokens": 100_000}  # every site too small: nothing is reduced
    compiled = torch.compile(model, backend="asymrnr", dynamic=False, options=options)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", AsymRnRWarning)
        compiled(**inputs)
    gc.collect()
    report = asymrnr_compile.last_backend().report().to_dict()
    torch._dynamo.reset()
    (graph,) = report["graphs"]
    assert graph["fallback_reason"].startswith("no attention site to reduce")
    assert [site["reason"] for site in graph["sites"]] == ["128 video tokens < min_video_tokens=100000"] * 2


def test_every_site_left_alone_has_its_reason_in_the_report():
    torch._dynamo.reset()
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, min_video_tokens=16, skip_blocks=(1,)))
    with torch.no_grad():
        torch.compile(ToyDiT(), backend=backend, dynamic=False)(**toy_inputs())
    torch._dynamo.reset()
    (graph,) = backend.report().to_dict()["graphs"]
    reduced, skipped = graph["sites"]
    assert reduced["applied"] and skipped["reason"] == "block 1 is in skip_blocks"
    assert rewritten_sites(backend.graphs[0]) == {0}


def test_each_distinct_reason_warns_once():
    backend = AsymRnRBackend(AsymRnRConfig(min_video_tokens=100_000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AsymRnRWarning)
        backend._warn_once("not accelerated: a", "first reason")
        backend._warn_once("not accelerated: a", "first reason")
        backend._warn_once("not accelerated: b", "second reason")
    assert [str(w.message) for w in caught] == ["first reason", "second reason"]


@pytest.mark.parametrize(("grid", "stride", "expected"), [
    ((1, 8, 8), (2, 2, 2), (1, 2, 2)),   # one frame on the token axis: split within it
    ((2, 1, 8), (2, 2, 2), (2, 1, 2)),
    ((2, 8, 8), (2, 2, 2), (2, 2, 2)),
    ((2, 8, 8), (4, 2, 2), (4, 2, 2)),   # a stride longer than an axis > 1 stays the user's (reported)
    (None, (2, 2, 2), (2, 2, 2)),
])
def test_a_one_frame_grid_is_split_within_the_frame(grid, stride, expected):
    assert site_dst_stride(grid, stride) == expected


def test_regional_compilation_reduces_when_the_token_count_equals_the_width():
    """Wan with hidden width 64 and a 4 x 4 x 4 token grid: the (B, 64, 64) hidden states have the
    video's length on two axes; the last one is the features'."""
    diffusers = pytest.importorskip("diffusers")
    heads, head_dim = 2, 32  # width 64
    grid = (4, 4, 4)
    assert heads * head_dim == grid[0] * grid[1] * grid[2]

    def build():
        torch.manual_seed(0)
        return diffusers.WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=4,
            out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=32).eval()

    inputs = {"hidden_states": torch.randn(1, 4, grid[0], 2 * grid[1], 2 * grid[2]),
              "encoder_hidden_states": torch.randn(1, 12, 16), "timestep": torch.tensor([900.0]),
              "return_dict": False}
    reduced = {}
    for regional in (False, True):
        torch._dynamo.reset()
        backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, min_video_tokens=16))
        model = build()
        compiled = asymrnr_compile.compile_repeated_blocks(model, backend=backend) if regional else \
            torch.compile(model, backend=backend, dynamic=False)
        with torch.no_grad():
            compiled(**inputs)
        runtimes = [graph for graph in backend.graphs if isinstance(graph, AsymRnRRuntime)]
        assert runtimes, backend.report().summary()
        names = set()
        for runtime in runtimes:
            for index in rewritten_sites(runtime):
                site = runtime.sites[index]
                names.add((site.name.split(".")[-1], site.kind))
        reduced[regional] = names
        torch._dynamo.reset()
    assert reduced[True] == reduced[False] == {("attn1", "self"), ("attn2", "cross")}


def test_a_video_site_left_alone_beside_reduced_ones_warns_with_its_reason(monkeypatch):
    """A graph with some sites reduced still says why a video site is not (here: a causal mask)."""
    original = toy_dit.F.scaled_dot_product_attention
    calls = {"n": 0}

    def second_is_causal(q, k, v, **kwargs):
        calls["n"] += 1
        return original(q, k, v, is_causal=calls["n"] % 2 == 0, **kwargs)

    monkeypatch.setattr(toy_dit.F, "scaled_dot_product_attention", second_is_causal)
    torch._dynamo.reset()
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, min_video_tokens=16))
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AsymRnRWarning)
        torch.compile(ToyDiT(), backend=backend, dynamic=False)(**toy_inputs())
    torch._dynamo.reset()
    assert rewritten_sites(backend.graphs[0]) == {0}
    messages = [str(w.message) for w in caught if issubclass(w.category, AsymRnRWarning)]
    assert messages == ["asymrnr: attention blocks.1 over video tokens runs unreduced: causal mask."], messages


def _analysis_toys():
    """tests/analysis/analysis_toys.py (torch only), loaded by path: the analysis tests' toys."""
    path = Path(__file__).resolve().parents[1] / "analysis" / "analysis_toys.py"
    spec = importlib.util.spec_from_file_location("analysis_toys", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_temporal_attention_beside_reduced_spatial_attention_is_by_design_and_does_not_warn():
    """Latte-style blocks: the spatial site is reduced; the temporal one (4 frames on its axis)
    stays, with a NOT_APPLICABLE reason in the report and no warning."""
    toys = _analysis_toys()
    torch.manual_seed(0)
    model = toys.LatteStyle().eval()
    torch._dynamo.reset()
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, min_video_tokens=16))
    with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AsymRnRWarning)
        torch.compile(model, backend=backend, dynamic=False)(toys.video_input())
    torch._dynamo.reset()
    runtime = backend.graphs[0]
    spatial, temporal = runtime.sites
    assert rewritten_sites(runtime) == {spatial.index}
    assert kind_of(temporal.reason) is ReasonKind.NOT_APPLICABLE and temporal.video_tokens == 4
    report = backend.report().to_dict()
    assert "temporal attention" in report["graphs"][0]["sites"][temporal.index]["reason"]
    assert [str(w.message) for w in caught if issubclass(w.category, AsymRnRWarning)] == []


def test_dynamos_restart_signal_is_not_taken_for_a_failed_analysis(monkeypatch):
    """Dynamo restarts a trace by raising RestartAnalysis (e.g. TensorifyScalarRestartAnalysis from
    compile_fx under dynamic shapes); the backend must let it through, not compile unchanged and warn."""
    from torch._dynamo.exc import TensorifyScalarRestartAnalysis

    def restart(*args, **kwargs):
        raise TensorifyScalarRestartAnalysis()

    monkeypatch.setattr("asymrnr_compile.backend.analyse_graph", restart)
    backend = AsymRnRBackend(AsymRnRConfig(min_video_tokens=16))
    gm = torch.fx.symbolic_trace(torch.nn.Linear(4, 4))
    with pytest.raises(TensorifyScalarRestartAnalysis):
        backend(gm, [torch.randn(2, 4)])
    assert backend.graphs == []
