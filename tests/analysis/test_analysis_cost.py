"""The sympy cost model against torch.utils.flop_counter on the reference DiT."""

from __future__ import annotations

import pytest
import sympy
import torch
from helpers import capture_graph
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from asymrnr_compile import ops
from asymrnr_compile.analysis import find_attention_sites
from asymrnr_compile.analysis.cost import (
    ATTENTION_EXPR,
    KKV,
    KQ,
    SYMBOLS,
    GraphCostModel,
    graph_flops,
)
from asymrnr_compile.passes.reduce_attention_tokens import reduce_attention_tokens
from asymrnr_compile.plan.reduction_plan import FeaturePlan, ReductionPlan, SitePlan
from asymrnr_lab.models import build_reference_model, reference_inputs
from asymrnr_lab.models.config import resolve_config

PRESET = "small"  # 2 blocks, 576 video + 16 text tokens, hidden 128 = 4 heads x 32


@pytest.fixture(scope="module")
def captured():
    model = build_reference_model(PRESET)
    gm, example_inputs = capture_graph(model, reference_inputs(PRESET))
    return gm, example_inputs, find_attention_sites(gm)


def _counted(fn, *args) -> int:
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH), torch.no_grad():
        fn(*args)
    return counter.get_total_flops()


def test_attention_expression_is_symbolic():
    assert isinstance(ATTENTION_EXPR, sympy.Expr)
    assert sympy.diff(ATTENTION_EXPR, KQ) == 2 * SYMBOLS["B"] * SYMBOLS["H"] * (SYMBOLS["T_k"] + KKV) * (
        SYMBOLS["d"] + SYMBOLS["d_v"])


@pytest.mark.parametrize("q_ratio, kv_ratio", [(0.0, 0.0), (0.5, 0.0), (0.0, 0.3), (0.5, 0.3), (0.8, 0.6)])
def test_cost_model_agrees_with_the_flop_counter(captured, q_ratio, kv_ratio):
    gm, example_inputs, sites = captured
    config = resolve_config(PRESET)
    grid = (config.latent_frames, config.latent_height // 2, config.latent_width // 2)
    model = GraphCostModel(gm, sites)
    if q_ratio == kv_ratio == 0:
        counted = _counted(gm, *example_inputs)
        assert abs(model.full_flops - counted) <= 0.05 * counted
        assert graph_flops(gm) == model.full_flops
        return
    site_plans, kept, extra = [], {}, {}
    for site in sites:
        n = site.video_tokens
        split = ops.split_tokens(n, grid, seed=site.index)
        num_dst = len(split.dst)
        features = {}
        for feature, ratio in (("q", q_ratio), ("kv", kv_ratio)):
            if ratio > 0:
                keep = ops.num_kept_tokens(n, num_dst, ratio)
                features[feature] = FeaturePlan(n, keep, compute_matching=False)
                probe = torch.randn(2, 4, n, 32, generator=torch.Generator().manual_seed(site.index))
                indices = ops.reduction_indices(split, ops.match_tokens(probe, split), keep)
                extra[(site.index, feature)] = indices
        kept[site.index] = {f: (num_dst, p.num_keep) for f, p in features.items()}
        site_plans.append(SitePlan(site.index, **features))
    rewrite = reduce_attention_tokens(gm, sites, ReductionPlan(tuple(site_plans), "euclidean", "replace", 2**26))
    assert rewrite.rewritten_sites == [s.index for s in sites]
    inputs = [getattr(extra[(slot.site_index, slot.feature)], slot.field) for slot in rewrite.extra_inputs]
    counted = _counted(rewrite.gm, *example_inputs, *inputs)
    predicted = model.reduced_flops(kept)  # matching is cached here: nothing to amortise
    assert abs(predicted - counted) <= 0.05 * counted, (predicted, counted)
    assert predicted < model.full_flops


def test_projected_matching_term(captured):
    """``match_dims``: the matching term is the projection of the N video tokens plus the score
    matmul on k channels, per matched tensor (per head, or the hidden states), and the exact
    term where k is not below the channels."""
    _, _, sites = captured
    model = GraphCostModel(captured[0], sites)
    site = model.sites[sites[0].index]
    v, n = site.values, site.num_tokens
    num_dst, keep, dims = 72, n // 2, 8
    unmatched = site.flops(q=keep)

    def matching(**options) -> float:
        return site.flops(q=keep, num_dst={"q": num_dst}, cache_steps=1, **options) - unmatched

    per_head = v[SYMBOLS["B"]] * v[SYMBOLS["H"]]
    head_dim = v[SYMBOLS["d"]]
    hidden_batch, hidden_channels = v[SYMBOLS["B_h"]], v[SYMBOLS["C_h"]]
    assert matching() == pytest.approx(2 * per_head * (n - num_dst) * num_dst * head_dim)
    assert matching(match_dims=head_dim) == pytest.approx(matching())
    assert matching(match_dims=dims) == pytest.approx(
        2 * per_head * n * head_dim * dims + 2 * per_head * (n - num_dst) * num_dst * dims)
    assert matching(match_dims=dims, on_hidden_states=True) == pytest.approx(
        2 * hidden_batch * n * hidden_channels * dims + 2 * hidden_batch * (n - num_dst) * num_dst * dims)
    assert matching(match_dims=dims, on_hidden_states=True) < matching()
    # amortised over the cache window like the exact term
    window = 4
    amortised = site.flops(q=keep, num_dst={"q": num_dst}, cache_steps=window, match_dims=dims) - unmatched
    assert amortised == pytest.approx(matching(match_dims=dims) / window)


def test_an_estimate_carries_one_call_s_matchings_and_their_window(captured):
    """``estimate`` splits the amortised matching back out: the matchings of one call that
    computes them (every site and feature) and the calls that share them; without a window
    (matchings cached for good) no matching is counted."""
    gm, _, sites = captured
    model = GraphCostModel(gm, sites)
    kept = {}
    for site in sites:
        n = site.video_tokens
        kept[site.index] = {"q": (n // 8, n // 2), "kv": (n // 8, 3 * n // 4)}
    window = 2
    estimate = model.estimate(kept, window, match_dims=8)
    reuse = model.reduced_flops(kept, match_dims=8)
    every_call = model.reduced_flops(kept, 1, match_dims=8)
    assert estimate.matching_flops == pytest.approx(every_call - reuse) and estimate.matching_flops > 0
    assert estimate.matching_window == window
    assert estimate.reduced_flops_without_matching == pytest.approx(reuse)
    assert estimate.reduced_flops == pytest.approx(reuse + estimate.matching_flops / window)
    assert estimate.to_dict()["matching_gflops"] == pytest.approx(estimate.matching_flops / 1e9)
    cached = model.estimate(kept, float("inf"))
    assert cached.matching_flops == 0 and cached.reduced_flops_without_matching == cached.reduced_flops
