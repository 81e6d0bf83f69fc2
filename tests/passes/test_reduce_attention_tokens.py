"""The rewrite pass: compiled output against eager references, and counters proving it fired.

The pass is tested on hand-made site records (its contract) for exact row-level properties, and
on the reference DiT through the real analysis for the keep-everything identity.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import capture_graph, max_relative_error
from torch._inductor.compile_fx import compile_fx

from asymrnr_compile import ops
from asymrnr_compile.analysis.fx_nodes import permutation_of
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.passes.reduce_attention_tokens import reduce_attention_tokens
from asymrnr_compile.plan.reduction_plan import INDEX_FIELDS, MATCHING_FIELDS, FeaturePlan, ReductionPlan, SitePlan

BATCH, HEADS, HEAD_DIM = 2, 2, 8
GRID = (2, 4, 4)
VIDEO = GRID[0] * GRID[1] * GRID[2]
TEXT = 5
CHUNK_BYTES = 2**20


class JointAttention(torch.nn.Module):
    """Projections of [text, video] (or [video, text]) tokens into one SDPA; returns its output."""

    def __init__(self, text_first: bool = True, with_mask: bool = False) -> None:
        super().__init__()
        width = HEADS * HEAD_DIM
        self.to_q, self.to_k, self.to_v = (torch.nn.Linear(width, width) for _ in range(3))
        self.text_first = text_first
        self.with_mask = with_mask

    def forward(self, video: torch.Tensor, text: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        tokens = torch.cat([text, video] if self.text_first else [video, text], dim=1)
        b, length, _ = tokens.shape
        q, k, v = (proj(tokens).view(b, length, HEADS, HEAD_DIM).transpose(1, 2)
                   for proj in (self.to_q, self.to_k, self.to_v))
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _inputs(with_mask: bool = False, text_first: bool = True) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    width = HEADS * HEAD_DIM
    inputs = {"video": torch.randn(BATCH, VIDEO, width, generator=generator),
              "text": torch.randn(BATCH, TEXT, width, generator=generator)}
    if with_mask:
        length = VIDEO + TEXT
        mask = torch.ones(BATCH, 1, length, length, dtype=torch.bool)
        text_keys = slice(0, TEXT) if text_first else slice(VIDEO, length)
        mask[1, :, :, text_keys.start + TEXT - 2:text_keys.stop] = False  # padded text in batch 1
        inputs["mask"] = mask
    return inputs


def _manual_site(gm: torch.fx.GraphModule, text_first: bool) -> list[AttentionSite]:
    (sdpa,) = [n for n in gm.graph.nodes if n.target is torch._C._nn.scaled_dot_product_attention]
    query, key, value = sdpa.args[:3]
    mask = sdpa.kwargs.get("attn_mask")
    return [AttentionSite(
        name="attn", index=0, node=sdpa, query=query, key=key, value=value, attn_mask=mask,
        kind="joint", query_tokens=VIDEO + TEXT, key_tokens=VIDEO + TEXT,
        text_position="first" if text_first else "last", text_tokens=TEXT, video_tokens=VIDEO,
        grid=GRID, reducible=True, features=("q", "kv"),
    )]


def _plan(*site_plans: SitePlan, proportional_attention: bool = False) -> ReductionPlan:
    return ReductionPlan(tuple(site_plans), "euclidean", "replace", CHUNK_BYTES,
                         proportional_attention=proportional_attention)


def _split_inputs(result, grid=GRID, seed=0) -> list[torch.Tensor]:
    extra = []
    for slot in result.extra_inputs:
        split = ops.split_tokens(VIDEO, grid, seed=seed + slot.site_index)
        extra.append(getattr(split, slot.field))
    return extra


def _run(result, example_inputs, extra):
    with torch.no_grad():
        eager = result.gm(*example_inputs, *extra)
        compiled = compile_fx(result.gm, [*example_inputs, *extra])(*example_inputs, *extra)
    for a, b in zip(eager, compiled):
        if a.is_floating_point():
            assert max_relative_error(b, a) < 1e-5
        else:
            assert torch.equal(a, b)
    return compiled


def _kept_and_restore(result, outputs, feature, extra, num_keep):
    """Reduction indices recomputed from the matching the graph returned."""
    start = result.num_original_outputs
    fields = {slot.field: t for slot, t in zip(result.extra_outputs, outputs[start:]) if slot.feature == feature}
    split_fields = {slot.field: t for slot, t in zip(result.extra_inputs, extra) if slot.feature == feature}
    split = ops.TokenSplit(split_fields["dst"], split_fields["src"])
    matching = ops.Matching(*(fields[name] for name in MATCHING_FIELDS))
    return ops.reduction_indices(split, matching, num_keep)


@pytest.mark.parametrize("text_first", [True, False])
def test_q_reduction_keeps_rows_exact_and_copies_matched_rows(text_first):
    model = JointAttention(text_first=text_first).eval()
    inputs = _inputs(text_first=text_first)
    gm, example_inputs = capture_graph(model, inputs)
    num_keep = 12
    plan = _plan(SitePlan(0, q=FeaturePlan(VIDEO, num_keep, compute_matching=True)))
    result = reduce_attention_tokens(gm, _manual_site(gm, text_first), plan)
    assert result.rewritten_sites == [0]
    outputs = _run(result, example_inputs, _split_inputs(result))
    with torch.no_grad():
        full = model(**inputs)
    reduced = outputs[0]
    start = TEXT if text_first else 0
    text_rows = slice(0, TEXT) if text_first else slice(VIDEO, VIDEO + TEXT)
    torch.testing.assert_close(reduced[:, :, text_rows], full[:, :, text_rows], rtol=1e-5, atol=1e-6)

    indices = _kept_and_restore(result, outputs, "q", _split_inputs(result), num_keep)
    video_full, video_reduced = full[:, :, start:start + VIDEO], reduced[:, :, start:start + VIDEO]
    kept_full = ops.gather_tokens(video_full, indices.keep)
    kept_reduced = ops.gather_tokens(video_reduced, indices.keep)
    torch.testing.assert_close(kept_reduced, kept_full, rtol=1e-5, atol=1e-6)
    # every row equals the kept row standing for it
    standing = ops.gather_tokens(kept_full, indices.restore)
    torch.testing.assert_close(video_reduced, standing, rtol=1e-5, atol=1e-6)


def test_kv_reduction_equals_attention_over_gathered_keys_with_gathered_mask():
    model = JointAttention(text_first=False, with_mask=True).eval()
    inputs = _inputs(with_mask=True, text_first=False)
    gm, example_inputs = capture_graph(model, inputs)
    num_keep = 20
    plan = _plan(SitePlan(0, kv=FeaturePlan(VIDEO, num_keep, compute_matching=True)))
    result = reduce_attention_tokens(gm, _manual_site(gm, text_first=False), plan)
    extra = _split_inputs(result)
    outputs = _run(result, example_inputs, extra)
    indices = _kept_and_restore(result, outputs, "kv", extra, num_keep)

    with torch.no_grad():
        tokens = torch.cat([inputs["video"], inputs["text"]], dim=1)
        q, k, v = (proj(tokens).view(BATCH, -1, HEADS, HEAD_DIM).transpose(1, 2)
                   for proj in (model.to_q, model.to_k, model.to_v))
        k_small = ops.reduce_tokens(k, indices)
        v_small = ops.reduce_tokens(v, indices)
        mask_small = ops.reduce_mask(inputs["mask"], indices)
        expected = F.scaled_dot_product_attention(q, k_small, v_small, attn_mask=mask_small)
    assert k_small.shape[-2] == num_keep + TEXT
    torch.testing.assert_close(outputs[0], expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("with_mask", [False, True])
def test_proportional_attention_adds_the_log_multiplicity_of_the_kept_keys(with_mask):
    model = JointAttention(text_first=True, with_mask=with_mask).eval()
    inputs = _inputs(with_mask=with_mask, text_first=True)
    gm, example_inputs = capture_graph(model, inputs)
    num_keep = 12
    plan = _plan(SitePlan(0, q=FeaturePlan(VIDEO, 20, compute_matching=True),
                          kv=FeaturePlan(VIDEO, num_keep, compute_matching=True)), proportional_attention=True)
    result = reduce_attention_tokens(gm, _manual_site(gm, text_first=True), plan)
    assert result.rewritten_sites == [0]
    bias_nodes = [n for n in result.gm.graph.nodes if n.target is ops.proportional_attention_mask]
    assert len(bias_nodes) == 1  # the rewrite fired
    extra = _split_inputs(result)
    outputs = _run(result, example_inputs, extra)
    q_indices = _kept_and_restore(result, outputs, "q", extra, 20)
    kv_indices = _kept_and_restore(result, outputs, "kv", extra, num_keep)

    with torch.no_grad():
        tokens = torch.cat([inputs["text"], inputs["video"]], dim=1)
        q, k, v = (proj(tokens).view(BATCH, -1, HEADS, HEAD_DIM).transpose(1, 2)
                   for proj in (model.to_q, model.to_k, model.to_v))
        k_small, v_small = (ops.reduce_tokens(t, kv_indices, start=TEXT) for t in (k, v))
        bias = ops.key_multiplicity(kv_indices).float().log()  # (B, H, K)
        logits_bias = F.pad(bias, (TEXT, 0)).unsqueeze(-2)  # text keys first: 0
        if with_mask:
            mask = ops.reduce_mask(inputs["mask"], kv_indices, start=TEXT)
            logits_bias = logits_bias.masked_fill(~mask, float("-inf"))
        full_rows = F.scaled_dot_product_attention(q, k_small, v_small, attn_mask=logits_bias)
        expected = ops.restore_tokens(ops.reduce_tokens(full_rows, q_indices, start=TEXT), q_indices, start=TEXT)
    assert bool((ops.key_multiplicity(kv_indices) > 1).any())  # some key does stand for others
    torch.testing.assert_close(outputs[0], expected, rtol=1e-5, atol=1e-6)
    plain = reduce_attention_tokens(gm, _manual_site(gm, text_first=True), _plan(*plan.sites))
    assert not any(n.target is ops.proportional_attention_mask for n in plain.gm.graph.nodes)


def test_cached_matching_enters_as_inputs_and_reproduces_the_computed_variant():
    model = JointAttention().eval()
    inputs = _inputs()
    gm, example_inputs = capture_graph(model, inputs)
    sites = _manual_site(gm, text_first=True)
    compute = reduce_attention_tokens(gm, sites, _plan(
        SitePlan(0, q=FeaturePlan(VIDEO, 16, True), kv=FeaturePlan(VIDEO, 24, True))))
    reuse = reduce_attention_tokens(gm, sites, _plan(
        SitePlan(0, q=FeaturePlan(VIDEO, 16, False), kv=FeaturePlan(VIDEO, 24, False))))
    assert [s.field for s in compute.extra_outputs] == [*MATCHING_FIELDS, *INDEX_FIELDS] * 2
    assert reuse.extra_outputs == []
    assert [s.field for s in reuse.extra_inputs] == [*INDEX_FIELDS] * 2
    assert "match_tokens" not in reuse.gm.code
    computed = _run(compute, example_inputs, _split_inputs(compute))
    cached = {(s.feature, s.field): t for s, t in zip(compute.extra_outputs, computed[1:])}
    split_inputs = {(s.feature, s.field): t for s, t in zip(compute.extra_inputs, _split_inputs(compute))}
    reuse_extra = [split_inputs.get((s.feature, s.field), cached.get((s.feature, s.field)))
                   for s in reuse.extra_inputs]
    reused = _run(reuse, example_inputs, reuse_extra)
    torch.testing.assert_close(reused[0], computed[0], rtol=0, atol=0)


def test_rewrite_leaves_the_input_graph_untouched_and_shows_the_ops():
    model = JointAttention().eval()
    gm, _ = capture_graph(model, _inputs())
    before = gm.code
    result = reduce_attention_tokens(gm, _manual_site(gm, True), _plan(
        SitePlan(0, q=FeaturePlan(VIDEO, 16, True), kv=FeaturePlan(VIDEO, 24, True))))
    assert gm.code == before
    code = result.gm.code
    for op in ("match_tokens", "reduction_indices", "reduce_tokens", "restore_tokens"):
        assert op in code
    assert "asymrnr_site0_q_dst" in code


def test_plan_errors_name_the_site_and_feature():
    model = JointAttention().eval()
    gm, _ = capture_graph(model, _inputs())
    sites = _manual_site(gm, True)
    with pytest.raises(ValueError, match="plan names site 3"):
        reduce_attention_tokens(gm, sites, _plan(SitePlan(3, q=FeaturePlan(VIDEO, 16, True))))
    sites[0].features = ("q",)
    with pytest.raises(ValueError, match="feature 'kv' is not reducible"):
        reduce_attention_tokens(gm, sites, _plan(SitePlan(0, kv=FeaturePlan(VIDEO, 16, True))))


def test_keep_everything_plan_reproduces_plain_inductor_on_the_reference_dit():
    from asymrnr_compile.analysis import find_attention_sites
    from asymrnr_lab.models import build_reference_model, reference_inputs

    model = build_reference_model("tiny")
    gm, example_inputs = capture_graph(model, reference_inputs("tiny"))
    sites = [s for s in find_attention_sites(gm) if s.reducible]
    assert len(sites) == 2
    plan = _plan(*(SitePlan(s.index, q=FeaturePlan(s.video_tokens, s.video_tokens, True),
                            kv=FeaturePlan(s.video_tokens, s.video_tokens, True)) for s in sites))
    result = reduce_attention_tokens(gm, sites, plan)
    assert result.rewritten_sites == [0, 1]
    extra = []
    for slot in result.extra_inputs:
        site = sites[slot.site_index]
        extra.append(getattr(ops.split_tokens(site.video_tokens, site.grid, seed=slot.site_index), slot.field))
    with torch.no_grad():
        plain = compile_fx(gm, list(example_inputs))(*example_inputs)
    outputs = _run(result, example_inputs, extra)
    assert max_relative_error(outputs[0], plain[0]) < 1e-5


def _site_with_hidden_states(gm: torch.fx.GraphModule, text_first: bool) -> list[AttentionSite]:
    """The manual site plus its hidden states: the [text, video] concatenation the projections read."""
    (site,) = _manual_site(gm, text_first)
    (tokens,) = [n for n in gm.graph.nodes if n.target is torch.cat]
    site.hidden_states, site.token_dim = tokens, 1
    site.hidden_states_video_start = TEXT if text_first else 0
    return [site]


def _split_of(result, extra, feature) -> ops.TokenSplit:
    fields = {slot.field: t for slot, t in zip(result.extra_inputs, extra) if slot.feature == feature}
    return ops.TokenSplit(fields["dst"], fields["src"])


@pytest.mark.parametrize("text_first", [True, False])
def test_matching_on_hidden_states_applies_one_matching_to_every_head(text_first):
    """match_on="hidden_states": q and kv are matched on the projections' input (B, L, C), once per
    batch element; the rewritten graph equals an eager reference built from the ops."""
    model = JointAttention(text_first=text_first, with_mask=True).eval()
    inputs = _inputs(with_mask=True, text_first=text_first)
    gm, example_inputs = capture_graph(model, inputs)
    sites = _site_with_hidden_states(gm, text_first)
    assert sites[0].hidden_matching_problem() is None
    keep_q, keep_kv = 12, 20
    plan = ReductionPlan((SitePlan(0, q=FeaturePlan(VIDEO, keep_q, True), kv=FeaturePlan(VIDEO, keep_kv, True)),),
                         "euclidean", "replace", CHUNK_BYTES, proportional_attention=True, match_on="hidden_states")
    result = reduce_attention_tokens(gm, sites, plan)
    assert result.rewritten_sites == [0]
    matchers = [n for n in result.gm.graph.nodes if n.target is ops.match_tokens]
    assert len(matchers) == 2 and all(n.args[0].target is torch.cat for n in matchers)  # the counter
    extra = _split_inputs(result)
    outputs = _run(result, example_inputs, extra)
    returned = {(s.feature, s.field): t for s, t in zip(result.extra_outputs, outputs[result.num_original_outputs:])}
    assert returned["q", "src_order"].shape == (BATCH, VIDEO - len(_split_of(result, extra, "q").dst))
    assert returned["q", "keep"].shape == (BATCH, 1, keep_q)

    start = TEXT if text_first else 0
    with torch.no_grad():
        tokens = torch.cat([inputs["text"], inputs["video"]] if text_first else [inputs["video"], inputs["text"]], 1)
        q, k, v = (proj(tokens).view(BATCH, -1, HEADS, HEAD_DIM).transpose(1, 2)
                   for proj in (model.to_q, model.to_k, model.to_v))
        shared = {}
        for feature, keep in (("q", keep_q), ("kv", keep_kv)):
            split = _split_of(result, extra, feature)
            matching = ops.match_tokens(tokens, split, start=start)
            shared[feature] = ops.indices_over_heads(ops.reduction_indices(split, matching, keep))
        k_small, v_small = (ops.reduce_tokens(t, shared["kv"], start=start) for t in (k, v))
        mask = ops.reduce_mask(inputs["mask"], shared["kv"], start=start)
        mask = ops.proportional_attention_mask(mask, k_small, shared["kv"], start=start)
        mask = ops.reduce_mask(mask, shared["q"], start=start, dim=-2)
        q_small = ops.reduce_tokens(q, shared["q"], start=start)
        expected = ops.restore_tokens(F.scaled_dot_product_attention(q_small, k_small, v_small, attn_mask=mask),
                                      shared["q"], start=start)
    torch.testing.assert_close(outputs[0], expected, rtol=1e-5, atol=1e-6)


def test_matching_on_hidden_states_falls_back_to_the_features_where_none_were_found():
    model = JointAttention(text_first=True).eval()
    gm, example_inputs = capture_graph(model, _inputs())
    sites = _manual_site(gm, text_first=True)  # no hidden_states recorded
    assert "no common input" in sites[0].hidden_matching_problem()
    plan = ReductionPlan((SitePlan(0, q=FeaturePlan(VIDEO, 12, True)),), "euclidean", "replace", CHUNK_BYTES,
                         match_on="hidden_states")
    result = reduce_attention_tokens(gm, sites, plan)
    (matcher,) = [n for n in result.gm.graph.nodes if n.target is ops.match_tokens]
    assert matcher.args[0].target is not torch.cat  # the queries, not the hidden states
    outputs = _run(result, example_inputs, _split_inputs(result))
    returned = {s.field: t for s, t in zip(result.extra_outputs, outputs[result.num_original_outputs:])}
    assert returned["keep"].shape == (BATCH, HEADS, 12)  # matched per head, on the queries


class JointAttentionThenMerge(JointAttention):
    """:class:`JointAttention` followed by the heads merge diffusers does after attention."""

    def forward(self, video: torch.Tensor, text: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out = super().forward(video, text, mask)
        return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


def test_restored_output_is_laid_out_for_the_heads_merge_after_attention():
    """The restore writes (B, H, L, d) in (B, L, H, d) memory order when the output's only reader
    transposes it so: the merge's reshape is then a view, not a strided copy (ops.with_dim_order)."""
    plan = _plan(SitePlan(0, q=FeaturePlan(VIDEO, 16, True), kv=FeaturePlan(VIDEO, 24, True)))
    merged, inputs = capture_graph(JointAttentionThenMerge().eval(), _inputs())
    result = reduce_attention_tokens(merged, _manual_site(merged, True), plan)
    (layout,) = [n for n in result.gm.graph.nodes if n.target is ops.with_dim_order]
    assert layout.args[0].target is ops.restore_tokens and layout.args[1] == (0, 2, 1, 3)
    extra = _split_inputs(result)
    (reader,) = layout.users
    assert permutation_of(reader, layout, 4) == (0, 2, 1, 3)
    outputs = _run(result, inputs, extra)
    assert outputs[0].shape == (BATCH, VIDEO + TEXT, HEADS * HEAD_DIM)

    plain, _ = capture_graph(JointAttention().eval(), _inputs())  # returns the SDPA output itself
    result = reduce_attention_tokens(plain, _manual_site(plain, True), plan)
    assert not [n for n in result.gm.graph.nodes if n.target is ops.with_dim_order]


def test_permutation_of_reads_transposes_and_permutes_of_their_source():
    def f(x, y):
        return (x.transpose(1, 2), torch.transpose(x, -1, 0), x.permute(0, 2, 1, 3), x.swapaxes(2, 1),
                x.view(-1), y.transpose(1, 2))

    graph = torch.fx.symbolic_trace(f).graph
    x, y = [n for n in graph.nodes if n.op == "placeholder"]
    readers = [n for n in graph.nodes if n.op in ("call_method", "call_function")]
    found = [permutation_of(node, x, 4) for node in readers]
    assert found == [(0, 2, 1, 3), (3, 1, 2, 0), (0, 2, 1, 3), (0, 2, 1, 3), None, None]


def test_permutation_of_reads_movedim_t_and_numpy_keywords_and_refuses_dims_out_of_range():
    def f(x, m):
        return (x.movedim(1, 3), torch.movedim(x, (0, 1), (2, 3)), x.moveaxis(-1, 0), m.t(),
                torch.swapaxes(x, axis0=0, axis1=3), x.transpose(1, 4), x.movedim((0, 0), (1, 2)),
                x.permute(0, 1, 1, 2))

    graph = torch.fx.symbolic_trace(f).graph
    x, m = [n for n in graph.nodes if n.op == "placeholder"]
    readers = [n for n in graph.nodes if n.op in ("call_method", "call_function")]
    found = [permutation_of(node, m if node.target == "t" else x, 2 if node.target == "t" else 4)
             for node in readers]
    # each as x.permute(found) writes it: checked against torch itself below
    assert found == [(0, 2, 3, 1), (2, 3, 0, 1), (3, 0, 1, 2), (1, 0), (3, 1, 2, 0), None, None, None]
    x_value = torch.randn(2, 3, 4, 5)
    assert torch.equal(x_value.movedim(1, 3), x_value.permute(found[0]))
    assert torch.equal(torch.movedim(x_value, (0, 1), (2, 3)), x_value.permute(found[1]))
    assert torch.equal(x_value.moveaxis(-1, 0), x_value.permute(found[2]))
