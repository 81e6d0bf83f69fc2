"""``match_dims``: the backend matches on a random projection of the features.

On the reference DiT: every ``match_tokens`` node of the rewritten graphs carries the projection
(the counter that proves the rewrite asked for it), the recorded matchings are those of the ops
with the same projection on the block's eager attention input, and ``match_dims`` at or above
the channel count is the exact matching, bit for bit, at the same cost-model FLOPs.
"""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
from reduction_checks import assert_reduced

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig, ops
from asymrnr_compile.config import DEFAULT_MATCH_DIMS
from asymrnr_lab.models import build_reference_model, reference_inputs

PRESET = "small"  # 576 video tokens, hidden 128: a projection onto 8 dims saves FLOPs
OPTIONS = {"q_ratio": 0.5, "kv_ratio": 0.3, "min_video_tokens": 16, "match_on": "hidden_states", "cache_steps": 1}
PROJECTED_DIMS = 8


def _run(**options):
    torch._dynamo.reset()
    model = build_reference_model(PRESET).eval()
    inputs = reference_inputs(PRESET)
    records = []
    backend = AsymRnRBackend(AsymRnRConfig(**{**OPTIONS, **options}), on_matching=records.append)
    attention_inputs = []
    hooks = [block.attn.register_forward_pre_hook(lambda _, args: attention_inputs.append(args[0]))
             for block in model.blocks]
    try:
        with torch.no_grad():
            out = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)(**inputs)
            attention_inputs.clear()
            model(**inputs)  # eager: the first block's attention input
    finally:
        for hook in hooks:
            hook.remove()
    return model, backend, records, out, attention_inputs


def _match_nodes(backend: AsymRnRBackend) -> list:
    return [node for runtime in backend.graphs for variant in runtime.variants.values() if variant.rewrite
            for node in variant.rewrite.gm.graph.nodes if node.target is ops.match_tokens]


def test_matchings_run_on_the_projection():
    model, backend, records, out, attention_inputs = _run(match_dims=PROJECTED_DIMS, seed=4)
    assert_reduced(backend, sites={0, 1})
    nodes = _match_nodes(backend)
    assert len(nodes) == 2 * len(model.blocks)
    assert all(node.kwargs["project_dims"] == PROJECTED_DIMS and node.kwargs["projection_seed"] == 4
               for node in nodes)
    assert torch.isfinite(out).all()
    hidden = attention_inputs[0]
    assert hidden.shape[-1] > PROJECTED_DIMS
    for record in (r for r in records if r.site.index == 0):
        num_keep = record.indices.keep.shape[-1]
        projected = ops.match_tokens(hidden, record.split, project_dims=PROJECTED_DIMS, projection_seed=4)
        expected = ops.indices_over_heads(ops.reduction_indices(record.split, projected, num_keep))
        assert torch.equal(record.indices.keep, expected.keep)
        exact = ops.match_tokens(hidden, record.split)
        exact_keep = ops.indices_over_heads(ops.reduction_indices(record.split, exact, num_keep)).keep
        assert not torch.equal(record.indices.keep, exact_keep)  # the projection changed the choice


def test_match_dims_at_the_channel_count_is_the_exact_matching():
    model, exact_backend, _, exact_out, attention_inputs = _run(match_dims=None)
    channels = attention_inputs[0].shape[-1]
    _, projected_backend, _, projected_out, _ = _run(match_dims=channels)
    assert_reduced(projected_backend, sites={0, 1})
    assert torch.equal(projected_out, exact_out)
    assert all(node.kwargs["project_dims"] is None for node in _match_nodes(exact_backend))
    # The cost model: the same FLOPs at the channel count, fewer with a smaller projection.
    exact_cost, same_cost = exact_backend.graphs[0].cost, projected_backend.graphs[0].cost
    assert same_cost.reduced_flops == pytest.approx(exact_cost.reduced_flops)
    _, small_backend, _, _, _ = _run(match_dims=PROJECTED_DIMS)
    assert small_backend.graphs[0].cost.reduced_flops < exact_cost.reduced_flops


def test_the_defaults_match_on_a_projection():
    model, backend, _, _, _ = _run()
    nodes = _match_nodes(backend)
    assert len(nodes) == 2 * len(model.blocks)
    assert all(node.kwargs["project_dims"] == DEFAULT_MATCH_DIMS for node in nodes)


def test_bad_match_dims_are_rejected():
    with pytest.raises(ValueError, match="match_dims"):
        AsymRnRConfig(match_dims=0)
    with pytest.raises(TypeError, match="match_dims"):
        AsymRnRConfig(match_dims="64")
    assert AsymRnRConfig(preset="published").match_dims is None
