"""h reduction (hidden states before the q/k/v projections, restored after the output
projection) on a toy DiT whose blocks admit it."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from helpers import capture_graph, max_relative_error
from reduction_checks import assert_reduced
from torch._inductor.compile_fx import compile_fx
from toy_dit import GRID, ToyDiT, toy_inputs

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig, ops
from asymrnr_compile.analysis import find_attention_sites
from asymrnr_compile.passes.reduce_attention_tokens import reduce_attention_tokens
from asymrnr_compile.plan.reduction_plan import FeaturePlan, ReductionPlan, SitePlan

VIDEO = GRID[0] * GRID[1] * GRID[2]


@pytest.fixture(scope="module")
def captured():
    model = ToyDiT()
    inputs = toy_inputs()
    gm, example_inputs = capture_graph(model, inputs)
    return model, inputs, gm, example_inputs, find_attention_sites(gm)


def _plan(*site_plans):
    return ReductionPlan(tuple(site_plans), "euclidean", "replace", 2**20)


def test_keep_everything_h_plan_reproduces_the_graph(captured):
    _, _, gm, example_inputs, sites = captured
    assert all("h" in s.features for s in sites)
    plan = _plan(*(SitePlan(s.index, h=FeaturePlan(VIDEO, VIDEO, True)) for s in sites))
    result = reduce_attention_tokens(gm, sites, plan)
    assert result.rewritten_sites == [0, 1]
    extra = [getattr(ops.split_tokens(VIDEO, GRID, seed=slot.site_index), slot.field) for slot in result.extra_inputs]
    with torch.no_grad():
        plain = compile_fx(gm, list(example_inputs))(*example_inputs)
        rewritten = compile_fx(result.gm, [*example_inputs, *extra])(*example_inputs, *extra)
    assert max_relative_error(rewritten[0], plain[0]) <= 1e-5


def test_h_reduction_shrinks_the_projections(captured):
    _, _, gm, example_inputs, sites = captured
    keep = 96
    result = reduce_attention_tokens(gm, sites, _plan(SitePlan(0, h=FeaturePlan(VIDEO, keep, True))))
    shapes = {}
    extra = [getattr(ops.split_tokens(VIDEO, GRID, seed=0), slot.field) for slot in result.extra_inputs]
    linears = [n for n in result.gm.graph.nodes if n.target is torch._C._nn.linear]
    # the first block's q/k/v projections now see 8 text + 96 video tokens
    from torch.fx.interpreter import Interpreter

    class Recorder(Interpreter):
        def run_node(self, node):
            value = super().run_node(node)
            if node in linears[:6]:
                shapes[node.name] = tuple(value.shape)
            return value

    with torch.no_grad():
        Recorder(result.gm).run(*example_inputs, *extra)
    token_counts = sorted({shape[1] for shape in shapes.values()})
    assert 8 + keep in token_counts


def test_h_and_q_at_one_site_is_rejected(captured):
    _, _, gm, _, sites = captured
    with pytest.raises(ValueError, match="h reduction excludes q and kv"):
        reduce_attention_tokens(gm, sites, _plan(SitePlan(0, q=FeaturePlan(VIDEO, 96, True),
                                                          h=FeaturePlan(VIDEO, 96, True))))


def test_backend_h_ratio_runs_close_to_full_and_reports_it(captured):
    model, inputs, _, _, _ = captured
    torch._dynamo.reset()
    backend = AsymRnRBackend(AsymRnRConfig(h_ratio=0.2, q_ratio=0.5, kv_ratio=0.3, min_video_tokens=64))
    with torch.no_grad():
        out = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)(**inputs)
        torch._dynamo.reset()
        plain = torch.compile(model, backend="inductor", fullgraph=True, dynamic=False)(**inputs)
    torch._dynamo.reset()
    assert out.shape == plain.shape and torch.isfinite(out).all()
    assert max_relative_error(out, plain) < 0.25
    report = assert_reduced(backend, sites={0, 1}, features={0: {"h"}, 1: {"h"}})  # h excludes q and kv
    applied = report["graphs"][0]["sites"][0]["applied"]
    assert applied["h"]["kept_tokens"] == int(VIDEO * 0.8)
    assert report["cache_misses"] == 2 and report["ideal_speedup"] > 1.0
