"""The profiling pass: the input graph is left alone, the copy keeps the model's outputs, a counter
per probe proves the pass fired, and every recorded statistic equals ``ops.redundancy`` run eagerly
on the same feature tensor with the same split and similarity.

The graph is a Dynamo capture of the bundled reference DiT at the tiny preset (two joint sites of
8 text + 32 video tokens on a 2x4x4 grid), run with ``GraphModule.__call__``: nothing is compiled.
Probes and splits are built as the profiler builds them (``site_seed``, ``split_tokens``).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.fx
from helpers import capture_graph

from asymrnr_compile import ops
from asymrnr_compile.analysis import find_attention_sites
from asymrnr_compile.ops import redundancy
from asymrnr_compile.passes.record_redundancy import (
    ERROR_REDUCTION,
    PROFILE_FEATURES,
    FeatureProbe,
    ProfileRewrite,
    record_redundancy,
)
from asymrnr_compile.passes.split_at_attention import ATTENTION_SUBGRAPH_META
from asymrnr_compile.plan.seeds import site_seed
from asymrnr_compile.profiling.profiler import SPLIT_OF_FEATURE
from asymrnr_lab.models import build_reference_model, reference_inputs

SEED = 3
TEXT, VIDEO, GRID = 8, 32, (2, 4, 4)
NUM_DST = 4  # one dst per 2x2x2 chunk of the 2x4x4 grid
ERROR_RATIOS = (0.3, 0.5)


@pytest.fixture(scope="module")
def captured():
    model = build_reference_model("tiny")
    gm, example_inputs = capture_graph(model, reference_inputs("tiny"))
    sites = find_attention_sites(gm)
    return gm, example_inputs, sites


def _probes(sites, features=PROFILE_FEATURES) -> list[FeatureProbe]:
    """Every feature of every site, as the profiler builds them."""
    probes = []
    for site in sites:
        for feature in features:
            start = site.hidden_states_video_start if feature == "h" else site.video_start
            probes.append(FeatureProbe(site.index, feature, site.video_tokens,
                                       ops.count_dst_tokens(site.video_tokens, site.grid), start))
    return probes


def _split(site, feature) -> ops.TokenSplit:
    seed = site_seed(SEED, site.index, SPLIT_OF_FEATURE[feature])
    return ops.split_tokens(site.video_tokens, site.grid, seed=seed)


def _extra_inputs(rewrite: ProfileRewrite, sites) -> list[torch.Tensor]:
    by_index = {site.index: site for site in sites}
    return [getattr(_split(by_index[probe.site_index], probe.feature), name) for probe, name in rewrite.extra_inputs]


def _graph_snapshot(gm: torch.fx.GraphModule):
    return (gm.code, [(n.name, n.op, str(n.target), str(n.args), str(n.kwargs),
                       dict(n.meta).get(ATTENTION_SUBGRAPH_META)) for n in gm.graph.nodes])


class _Recorder(torch.fx.Interpreter):
    """Runs a graph and keeps the values of the nodes asked for."""

    def __init__(self, gm, wanted):
        super().__init__(gm)
        self.wanted = set(wanted)
        self.values: dict[torch.fx.Node, torch.Tensor] = {}

    def run_node(self, n):
        value = super().run_node(n)
        if n in self.wanted:
            self.values[n] = value
        return value


def _site_values(gm, example_inputs, sites) -> dict[int, dict[str, torch.Tensor]]:
    """Per site index: h, q, k, v and the attention output, read from the original graph."""
    wanted = {}
    for site in sites:
        wanted[site.index] = {"h": site.hidden_states, "q": site.query, "k": site.key, "v": site.value,
                              "attn": site.node}
    recorder = _Recorder(gm, [n for nodes in wanted.values() for n in nodes.values()])
    with torch.no_grad():
        recorder.run(*example_inputs)
    return {index: {name: recorder.values[node] for name, node in nodes.items()} for index, nodes in wanted.items()}


def _expected_stats(x, split, probe, similarity, quantiles, ratios) -> torch.Tensor:
    """What ops.redundancy computes eagerly from the feature tensor (the pass's contract)."""
    matching = ops.match_tokens(x, split, similarity, start=probe.start)
    normalised = redundancy.normalised_distance(x, matching.distance, probe.num_tokens, similarity, start=probe.start)
    return redundancy.redundancy_stats(normalised, probe.num_tokens, probe.num_dst, quantiles, ratios)


def test_the_tiny_reference_dit_has_two_joint_sites_with_every_feature(captured):
    _, _, sites = captured
    assert [(s.index, s.kind, s.video_tokens, s.grid, s.video_start) for s in sites] == \
        [(0, "joint", VIDEO, GRID, TEXT), (1, "joint", VIDEO, GRID, TEXT)]
    for site in sites:
        assert site.hidden_states is not None and site.hidden_states_video_start == TEXT
        assert tuple(site.hidden_states.meta["example_value"].shape) == (2, TEXT + VIDEO, 64)
        assert ops.count_dst_tokens(site.video_tokens, site.grid) == NUM_DST


def test_input_graph_is_untouched_and_the_copy_keeps_the_outputs(captured):
    gm, example_inputs, sites = captured
    before = _graph_snapshot(gm)
    with torch.no_grad():
        expected = gm(*example_inputs)
    rewrite = record_redundancy(gm, sites, _probes(sites))
    assert _graph_snapshot(gm) == before  # the input graph is not modified
    assert rewrite.gm is not gm and rewrite.gm.graph is not gm.graph
    assert len(list(rewrite.gm.graph.nodes)) > len(list(gm.graph.nodes))
    assert rewrite.num_original_outputs == len(expected) == 1
    with torch.no_grad():
        got = rewrite.gm(*example_inputs, *_extra_inputs(rewrite, sites))
        again = gm(*example_inputs)  # the original still runs, alone, on its own inputs
    assert len(got) == len(expected) + len(sites) * len(PROFILE_FEATURES)
    for a, b in zip(got[:rewrite.num_original_outputs], expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(again[0], expected[0], rtol=0, atol=0)


def test_one_extra_output_and_two_extra_inputs_per_probe_in_order(captured):
    gm, example_inputs, sites = captured
    probes = _probes(sites)
    rewrite = record_redundancy(gm, sites, probes)
    assert rewrite.extra_outputs == probes
    assert rewrite.extra_inputs == [(probe, name) for probe in probes for name in ("dst", "src")]

    original_placeholders = [n.name for n in gm.graph.nodes if n.op == "placeholder"]
    placeholders = [n.name for n in rewrite.gm.graph.nodes if n.op == "placeholder"]
    extra = [f"asymrnr_profile_site{p.site_index}_{p.feature}_{name}" for p, name in rewrite.extra_inputs]
    assert placeholders == original_placeholders + extra  # appended after the model's inputs

    nodes = list(rewrite.gm.graph.nodes)
    matches = [n for n in nodes if n.target is ops.match_tokens]
    stats = [n for n in nodes if n.target is redundancy.redundancy_stats]
    assert len(matches) == len(stats) == len(probes)
    assert [n.target for n in nodes if n.target is redundancy.reduction_errors] == []  # not asked for
    (output,) = [n for n in nodes if n.op == "output"]
    outputs_stats = list(output.args[0][rewrite.num_original_outputs:])
    assert set(outputs_stats) == set(stats) and len(outputs_stats) == len(probes)
    # In probe order: each output's statistics read that probe's feature (stats <- normalised <- feature).
    by_index = {site.index: site for site in sites}
    feature_nodes = {"h": "hidden_states", "q": "query", "k": "key", "v": "value"}
    for probe, node in zip(probes, outputs_stats):
        assert node.target is redundancy.redundancy_stats
        normalised = node.args[0]
        assert normalised.target is redundancy.normalised_distance
        original = getattr(by_index[probe.site_index], feature_nodes[probe.feature])
        assert normalised.args[0].name == original.name
        assert node.args[1:3] == (probe.num_tokens, probe.num_dst)
        match = normalised.args[1].args[0]
        assert match.target is ops.match_tokens and match.kwargs["start"] == probe.start
        split_args = [a.name for a in match.args[1].args]
        assert split_args == [f"{probe.placeholder_prefix}_dst", f"{probe.placeholder_prefix}_src"]
    # Each inserted node belongs to its site's attention subgraph; the model's nodes are untagged.
    for node in outputs_stats:
        assert node.meta[ATTENTION_SUBGRAPH_META] == node.args[0].args[1].args[0].meta[ATTENTION_SUBGRAPH_META]
    assert {n.meta[ATTENTION_SUBGRAPH_META] for n in nodes if ATTENTION_SUBGRAPH_META in n.meta} == {0, 1}
    assert not any(ATTENTION_SUBGRAPH_META in n.meta for n in gm.graph.nodes)

    with torch.no_grad():
        outputs = rewrite.gm(*example_inputs, *_extra_inputs(rewrite, sites))
    names = redundancy.stat_names()
    for vector in outputs[rewrite.num_original_outputs:]:
        assert vector.shape == (len(names),) and vector.dtype == torch.float32
        assert bool(torch.isfinite(vector).all())


def test_only_the_probes_asked_for_are_recorded(captured):
    gm, example_inputs, sites = captured
    probes = [p for p in _probes(sites) if (p.site_index, p.feature) in {(1, "v"), (0, "h")}]
    rewrite = record_redundancy(gm, sites, probes)
    assert [(p.site_index, p.feature) for p in rewrite.extra_outputs] == [(0, "h"), (1, "v")]
    assert sum(n.target is ops.match_tokens for n in rewrite.gm.graph.nodes) == 2
    with torch.no_grad():
        outputs = rewrite.gm(*example_inputs, *_extra_inputs(rewrite, sites))
    assert len(outputs) == 1 + 2
    empty = record_redundancy(gm, sites, [])
    assert empty.extra_inputs == [] and empty.extra_outputs == []
    assert sum(n.op == "placeholder" for n in empty.gm.graph.nodes) == len(example_inputs)


@pytest.mark.parametrize(("similarity", "quantiles", "ratios"), [
    ("euclidean", redundancy.DEFAULT_QUANTILES, redundancy.DEFAULT_PROFILE_RATIOS),
    ("cosine", (0.0, 0.5, 1.0), (0.25, 0.9)),
    ("dot", (0.2,), (0.5,)),
])
def test_statistics_equal_ops_redundancy_on_the_same_features(captured, similarity, quantiles, ratios):
    gm, example_inputs, sites = captured
    probes = _probes(sites)
    rewrite = record_redundancy(gm, sites, probes, similarity=similarity, quantiles=quantiles, ratios=ratios)
    with torch.no_grad():
        outputs = rewrite.gm(*example_inputs, *_extra_inputs(rewrite, sites))
    values = _site_values(gm, example_inputs, sites)
    names = redundancy.stat_names(quantiles, ratios)
    by_index = {site.index: site for site in sites}
    checked = 0
    for probe, got in zip(rewrite.extra_outputs, outputs[rewrite.num_original_outputs:]):
        x = values[probe.site_index][probe.feature]
        split = _split(by_index[probe.site_index], probe.feature)
        expected = _expected_stats(x, split, probe, similarity, quantiles, ratios)
        assert got.shape == (len(names),)
        torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
        # Another probe's split gives other numbers: the pass used this probe's own split.
        other = _split(by_index[1 - probe.site_index], probe.feature)
        assert not torch.allclose(got, _expected_stats(x, other, probe, similarity, quantiles, ratios))
        checked += 1
    assert checked == len(sites) * len(PROFILE_FEATURES)
    # The similarity was passed on: the euclidean statistics of the same tensors differ.
    if similarity != "euclidean":
        probe = rewrite.extra_outputs[1]
        x = values[probe.site_index][probe.feature]
        euclidean = _expected_stats(x, _split(sites[0], probe.feature), probe, "euclidean", quantiles, ratios)
        assert not torch.allclose(outputs[rewrite.num_original_outputs + 1], euclidean)


def test_statistics_are_sane_numbers(captured):
    """Concrete properties of the default statistics, independent of ops.redundancy's code."""
    gm, example_inputs, sites = captured
    rewrite = record_redundancy(gm, sites, _probes(sites))
    with torch.no_grad():
        outputs = rewrite.gm(*example_inputs, *_extra_inputs(rewrite, sites))
    names = redundancy.stat_names()
    ratios = redundancy.DEFAULT_PROFILE_RATIOS
    for vector in outputs[rewrite.num_original_outputs:]:
        stat = dict(zip(names, vector.tolist()))
        assert 0 < stat["mean"] < 2  # euclidean: about 1 = no more alike than random tokens
        quantile_values = [stat[f"p{round(100 * q):02d}"] for q in redundancy.DEFAULT_QUANTILES]
        assert quantile_values == sorted(quantile_values) and quantile_values[0] > 0
        drop_means = [stat[f"drop_mean@{r:g}"] for r in ratios]
        drop_shares = [stat[f"drop_share@{r:g}"] for r in ratios]
        # A larger ratio drops more of the (ascending) nearest distances.
        assert drop_means == sorted(drop_means) and drop_shares == sorted(drop_shares)
        assert drop_means[-1] <= stat["mean"] + 1e-6 and 0 < drop_shares[-1] < 1
    # Edge ratios: 0 drops nothing; 0.9 keeps only the N_dst = 4 destinations, dropping all 28 sources.
    assert ops.num_kept_tokens(VIDEO, NUM_DST, 0.0) == VIDEO and ops.num_kept_tokens(VIDEO, NUM_DST, 0.9) == NUM_DST
    edge = record_redundancy(gm, sites, _probes(sites), quantiles=(0.0, 1.0), ratios=(0.0, 0.9))
    with torch.no_grad():
        outputs = edge.gm(*example_inputs, *_extra_inputs(edge, sites))
    assert redundancy.stat_names((0.0, 1.0), (0.0, 0.9)) == \
        ("mean", "p00", "p100", "drop_mean@0", "drop_mean@0.9", "drop_share@0", "drop_share@0.9")
    for vector in outputs[edge.num_original_outputs:]:
        mean, low, high, drop_none, drop_all, share_none, share_all = vector.tolist()
        assert 0 < low <= mean <= high
        assert drop_none == 0.0 and share_none == 0.0
        assert math.isclose(drop_all, mean, rel_tol=1e-5) and math.isclose(share_all, 1.0, rel_tol=1e-5)


def test_error_ratios_append_the_reduction_errors_of_q_and_v(captured):
    gm, example_inputs, sites = captured
    probes = _probes(sites)
    rewrite = record_redundancy(gm, sites, probes, error_ratios=ERROR_RATIOS)
    nodes = list(rewrite.gm.graph.nodes)
    errors = [n for n in nodes if n.target is redundancy.reduction_errors]
    # One error measurement per q and v probe (graph order within a site is not probe order).
    assert sorted((n.meta[ATTENTION_SUBGRAPH_META], n.args[6]) for n in errors) == \
        sorted((p.site_index, ERROR_REDUCTION[p.feature]) for p in probes if p.feature in ("q", "v"))
    assert sorted(n.args[6] for n in errors) == ["kv", "kv", "q", "q"]
    assert all(n.args[7] == ERROR_RATIOS for n in errors)
    with torch.no_grad():
        outputs = rewrite.gm(*example_inputs, *_extra_inputs(rewrite, sites))
    values = _site_values(gm, example_inputs, sites)
    by_index = {site.index: site for site in sites}
    num_stats = len(redundancy.stat_names())
    assert len(redundancy.stat_names(error_ratios=ERROR_RATIOS)) == num_stats + len(ERROR_RATIOS)
    for probe, got in zip(rewrite.extra_outputs, outputs[rewrite.num_original_outputs:]):
        assert got.shape == (num_stats + len(ERROR_RATIOS),)
        site = by_index[probe.site_index]
        captured_values = values[probe.site_index]
        x = captured_values[probe.feature]
        split = _split(site, probe.feature)
        expected = _expected_stats(x, split, probe, "euclidean", redundancy.DEFAULT_QUANTILES,
                                   redundancy.DEFAULT_PROFILE_RATIOS)
        torch.testing.assert_close(got[:num_stats], expected, rtol=1e-6, atol=1e-7)
        if probe.feature in ("h", "k"):  # no reduction of their own to measure
            assert bool(torch.isnan(got[num_stats:]).all())
            continue
        matching = ops.match_tokens(x, split, start=probe.start)
        expected_errors = redundancy.reduction_errors(
            captured_values["q"], captured_values["k"], captured_values["v"], captured_values["attn"], split,
            matching, ERROR_REDUCTION[probe.feature], ERROR_RATIOS, start=probe.start, attn_mask=site.attn_mask,
            scale=site.scale)
        torch.testing.assert_close(got[num_stats:], expected_errors, rtol=1e-5, atol=1e-7)
        assert bool((got[num_stats:] > 0).all())
        assert float(got[num_stats + 1]) > float(got[num_stats])  # dropping more costs more
    with torch.no_grad():
        plain = gm(*example_inputs)
    torch.testing.assert_close(outputs[0], plain[0], rtol=0, atol=0)  # measuring changes nothing


def test_bad_probes_raise(captured):
    gm, _, sites = captured
    with pytest.raises(ValueError, match=r"probe names site 7, but the graph has sites \[0, 1\]"):
        record_redundancy(gm, sites, [FeatureProbe(7, "q", VIDEO, NUM_DST, TEXT)])
    with pytest.raises(ValueError, match="probe feature must be one of"):
        record_redundancy(gm, sites, [FeatureProbe(0, "kv", VIDEO, NUM_DST, TEXT)])
    before = _graph_snapshot(gm)
    sites_without_h = [*sites]

    sites_without_h[0] = dataclasses.replace(sites[0], hidden_states=None)
    with pytest.raises(ValueError, match="no hidden states found for the 'h' probe"):
        record_redundancy(gm, sites_without_h, [FeatureProbe(0, "h", VIDEO, NUM_DST, TEXT)])
    assert _graph_snapshot(gm) == before
