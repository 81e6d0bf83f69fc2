"""``share_matching``: q and kv matched on a site's hidden states take one split and one matching.

Through the backend on the reference DiT: the rewritten graphs hold one ``match_tokens`` per site
instead of two (the counter that proves the rewrite fired), the kv indices are those of the ops on
the q split and the block's eager attention input, the kept queries are a prefix of the kept
keys, the cost model counts one matching per site, and where q and kv are matched on the
features the option changes nothing, bit for bit.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from reduction_checks import assert_reduced

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig, ops
from asymrnr_compile.analysis.cost import matching_flops
from asymrnr_compile.models import build_reference_model, reference_inputs
from asymrnr_compile.plan.reduction_plan import FeaturePlan, SitePlan
from asymrnr_compile.sampling import SamplerConfig, sample

PRESET = "tiny"
OPTIONS = {"q_ratio": 0.5, "kv_ratio": 0.3, "min_video_tokens": 16, "match_on": "hidden_states"}


def _match_nodes(backend: AsymRnRBackend) -> int:
    """``match_tokens`` calls in every rewritten graph of ``backend``'s variants."""
    return sum(1 for runtime in backend.graphs for variant in runtime.variants.values()
               if variant.rewrite is not None
               for node in variant.rewrite.gm.graph.nodes if node.target is ops.match_tokens)


def _run(share: bool, **options):
    torch._dynamo.reset()
    model = build_reference_model(PRESET).eval()
    inputs = reference_inputs(PRESET)
    records = []
    config = AsymRnRConfig(**{**OPTIONS, "cache_steps": 1, "share_matching": share, **options})
    backend = AsymRnRBackend(config, on_matching=records.append)
    attention_inputs = []
    hooks = [block.attn.register_forward_pre_hook(lambda _, args: attention_inputs.append(args[0]))
             for block in model.blocks]
    try:
        with torch.no_grad():
            out = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)(**inputs)
            attention_inputs.clear()
            model(**inputs)  # eager, for the first block's attention input
    finally:
        for hook in hooks:
            hook.remove()
    return model, backend, records, out, attention_inputs


def test_one_matching_per_site_gives_the_q_and_kv_indices():
    model, backend, records, out, attention_inputs = _run(share=True)
    assert_reduced(backend, sites={0, 1}, features={0: {"q", "kv"}, 1: {"q", "kv"}})
    assert _match_nodes(backend) == len(model.blocks)  # one per site, not one per site and feature
    assert torch.isfinite(out).all()
    by_key = {(r.site.index, r.feature): r for r in records}
    assert sorted(by_key) == [(s, f) for s in range(len(model.blocks)) for f in ("kv", "q")]
    for site in range(len(model.blocks)):
        q, kv = by_key[site, "q"], by_key[site, "kv"]
        assert torch.equal(q.split.dst, kv.split.dst) and torch.equal(q.split.src, kv.split.src)
        num_q, num_kv = q.indices.keep.shape[-1], kv.indices.keep.shape[-1]
        assert num_q < num_kv
        # One least-similar-first order: every kept query's token is a kept key's.
        assert torch.equal(kv.indices.keep[..., :num_q], q.indices.keep)
    # The first block sees the same input with or without reduction upstream: exact ops check.
    record = by_key[0, "kv"]
    matching = ops.match_tokens(attention_inputs[0], record.split)
    expected = ops.indices_over_heads(ops.reduction_indices(record.split, matching, record.indices.keep.shape[-1]))
    assert torch.equal(record.indices.keep, expected.keep)
    assert torch.equal(record.indices.restore, expected.restore)


def test_without_sharing_the_same_sites_run_two_matchings_on_two_splits():
    model, backend, records, _, _ = _run(share=False)
    assert_reduced(backend, sites={0, 1})
    assert _match_nodes(backend) == 2 * len(model.blocks)
    by_key = {(r.site.index, r.feature): r for r in records}
    assert not torch.equal(by_key[0, "q"].split.dst, by_key[0, "kv"].split.dst)


def test_cost_model_counts_one_matching_per_shared_site():
    _, shared_backend, _, _, _ = _run(share=True)
    _, separate_backend, _, _, _ = _run(share=False)
    shared, separate = shared_backend.graphs[0], separate_backend.graphs[0]
    saved = 0.0
    for reduction in separate.reductions:
        value = reduction.site.value.meta["example_value"]  # (B, H, L, d_v)
        num_dst = reduction.num_dst["kv"]
        saved += matching_flops(value.shape[0] * value.shape[1], reduction.site.video_tokens - num_dst, num_dst,
                                value.shape[-1])
    assert separate.cost.reduced_flops - shared.cost.reduced_flops == pytest.approx(saved, rel=1e-9)
    assert shared.cost.ideal_speedup > separate.cost.ideal_speedup
    assert all(r.shares_matching for r in shared.reductions)
    assert not any(r.shares_matching for r in separate.reductions)


def test_share_matching_changes_nothing_where_q_and_kv_match_on_the_features():
    _, shared_backend, _, shared_out, _ = _run(share=True, match_on="features")
    _, separate_backend, _, separate_out, _ = _run(share=False, match_on="features")
    assert_reduced(shared_backend, sites={0, 1})
    assert _match_nodes(shared_backend) == _match_nodes(separate_backend) == 4
    assert not any(r.shares_matching for r in shared_backend.graphs[0].reductions)
    assert torch.equal(shared_out, separate_out)


def test_shared_matching_over_a_sampling_loop_reuses_it_for_the_window():
    """cache_steps 2 over 4 steps: a matching on steps 0 and 2 only, one per site, both features
    cached from it; the loop's output is finite and differs from the unshared loop's."""
    model = build_reference_model(PRESET).eval()
    inputs = reference_inputs(PRESET)
    text, null_text = inputs["encoder_hidden_states"][:1], inputs["encoder_hidden_states"][1:]
    results = {}
    for share in (True, False):
        torch._dynamo.reset()
        records = []
        backend = AsymRnRBackend(AsymRnRConfig(**OPTIONS, cache_steps=2, share_matching=share),
                                 on_matching=records.append)
        compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
        with torch.no_grad():
            results[share] = sample(compiled, inputs["hidden_states"][:1], text, null_text, SamplerConfig(steps=4))
        assert_reduced(backend, sites={0, 1})
        assert sorted({r.step for r in records}) == [0, 2]
        graph = backend.report().to_dict()["graphs"][0]
        assert graph["cache_misses"] == 2 * 2 * 2  # 2 windows x 2 sites x (q, kv), from 1 or 2 matchings
        assert graph["cache_hits"] > 0
    assert torch.isfinite(results[True]).all()
    assert not torch.equal(results[True], results[False])


def test_bad_values_are_rejected():
    with pytest.raises(TypeError, match="share_matching"):
        AsymRnRConfig(share_matching=1)
    with pytest.raises(ValueError, match="shared matching needs both q and kv"):
        SitePlan(0, q=FeaturePlan(32, 16, True), shared_matching=True)
    assert AsymRnRConfig(preset="published").share_matching is False
