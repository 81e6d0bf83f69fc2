"""Attention site discovery on small hand-written models: layouts, bad input, invariants."""

from __future__ import annotations

import json
import logging

import analysis_toys as toys
import pytest
import torch
import torch.fx
from analysis_helpers import capture, summary

from asymrnr_compile.analysis import AttentionSite, describe, find_attention_sites
from asymrnr_compile.reasons import ReasonKind, kind_of

GRID = toys.GRID
N = toys.N_VIDEO


def _capture(model: torch.nn.Module, *args: torch.Tensor) -> torch.fx.GraphModule:
    torch.manual_seed(0)
    return capture(model.eval(), *args)


@pytest.fixture(scope="module")
def graphs() -> dict[str, torch.fx.GraphModule]:
    """Each toy captured once for the module (capturing costs ~0.3-1 s each)."""
    torch.manual_seed(0)
    video, text = toys.video_input(), toys.text_input()
    text_mask = torch.ones(toys.B, toys.TEXT, dtype=torch.bool)
    text_mask[:, -2:] = False
    return {
        "latte": _capture(toys.LatteStyle(), video),
        "fused": _capture(toys.FusedQKV(), video),
        "text_last": _capture(toys.TextLastMasked(), video, text, text_mask),
        "frames_cross": _capture(toys.FramesInBatchCross(), video, text),
        "causal": _capture(toys.Causal(), video),
        "hand_written": _capture(toys.HandWritten(), video),
        "mha": _capture(toys.TorchMultiheadAttention(need_weights=True), video),
        "mha_fast": _capture(toys.TorchMultiheadAttention(need_weights=False), video),
        "no_attention": _capture(toys.NoAttention(), video),
        "loop": _capture(toys.LoopedBlocks(), video),
        "coordinate_rope": _capture(toys.CoordinateRope(), toys.token_input()),
        "leaky_projection": _capture(toys.LeakyProjection(), video),
        "rope_on_q_only": _capture(toys.CoordinateRope(rope_keys=False), toys.token_input()),
    }


@pytest.fixture(scope="module")
def sites(graphs: dict[str, torch.fx.GraphModule]) -> dict[str, list[AttentionSite]]:
    return {name: find_attention_sites(gm) for name, gm in graphs.items()}


def test_latte_spatial_attention_has_frames_in_batch_and_temporal_is_left_alone(sites):
    spatial, temporal = sites["latte"]
    assert summary([spatial]) == [("spatial", "self", None, None, 16, (1, 4, 4), True, None)]
    assert spatial.features == ("q", "kv", "h")
    assert summary([temporal]) == [("temporal", "self", None, None, 4, None, False, None)]
    assert temporal.features == ()
    assert temporal.reason == "only 4 tokens on the attention axis (temporal attention)"
    assert kind_of(temporal.reason) is ReasonKind.NOT_APPLICABLE  # by design: no warning beside reduced sites


def test_fused_qkv_projection_is_found_and_h_reducible(sites, graphs):
    (site,) = sites["fused"]
    assert (site.kind, site.video_tokens, site.grid, site.reducible) == ("self", N, GRID, True)
    assert site.features == ("q", "kv", "h")
    qkv_input = site.hidden_states
    assert qkv_input is not None and site.token_dim == 1
    # one fused projection reads the hidden states
    assert [u.op for u in qkv_input.users] == ["call_function"]
    assert site.output_projection is not None
    assert site.output_projection.meta["nn_module_stack"]  # the ``proj`` Linear
    assert "proj" in list(site.output_projection.meta["nn_module_stack"].values())[-1][0]


def test_text_last_joint_attention_with_padding_mask_and_flattened_heads(sites):
    (site,) = sites["text_last"]
    assert summary([site]) == [(site.name, "joint", "last", toys.TEXT, N, GRID, True, None)]
    assert site.attn_mask is not None
    assert site.video_start == 0
    assert site.query.meta["example_value"].dim() == 3  # (B * H, L, d)
    assert site.query_tokens == site.key_tokens == N + toys.TEXT
    assert site.features == ("q", "kv", "h")
    assert site.hidden_states_video_start == 0 and site.output_video_start == 0


def test_per_frame_conv2d_grid_and_cross_attention(sites):
    self_site, cross_site = sites["frames_cross"]
    assert summary(sites["frames_cross"]) == [
        ("attn1", "self", None, None, N, GRID, True, None),
        ("attn2", "cross", None, None, N, GRID, True, None),
    ]
    assert self_site.features == ("q", "kv", "h")
    assert cross_site.features == ("q",)
    assert cross_site.key_tokens == toys.TEXT


def test_grid_from_a_rope_coordinate_meshgrid_and_h_refused_for_the_rope_table(sites):
    (site,) = sites["coordinate_rope"]
    assert (site.kind, site.video_tokens, site.grid, site.reducible) == ("self", N, GRID, True)
    assert site.features == ("q", "kv")  # the (N, d) RoPE table would need gathering for h
    assert site.reason.startswith("h unavailable") and "token axis" in site.reason
    assert site.hidden_states is not None and site.hidden_states.op == "placeholder"
    assert site.token_dim == 1


def test_self_attention_is_recognised_when_only_q_carries_the_grid(sites):
    # the keys' token axis is unlabelled, but q and k are projected from the same tensor
    (site,) = sites["rope_on_q_only"]
    assert (site.kind, site.video_tokens, site.grid, site.reducible) == ("self", N, GRID, True)
    assert site.features == ("q", "kv")


def test_h_refused_when_a_projection_is_read_outside_the_attention(sites):
    (site,) = sites["leaky_projection"]
    assert (site.kind, site.reducible, site.features) == ("self", True, ("q", "kv"))
    assert "also reads" in site.reason
    assert site.hidden_states is not None and site.output_projection is not None


def test_causal_attention_is_not_reducible(sites):
    (site,) = sites["causal"]
    assert (site.kind, site.is_causal, site.reducible, site.features) == ("self", True, False, ())
    assert site.reason == "causal mask"


def test_graphs_without_sdpa_give_no_sites(sites):
    assert sites["hand_written"] == []
    assert sites["no_attention"] == []


def test_multihead_attention_never_raises(sites):
    for name in ("mha", "mha_fast"):
        for site in sites[name]:  # either no site or an honest one
            assert site.reducible or site.reason


def test_attention_in_a_loop_gives_one_site_per_call(sites):
    assert [s.name for s in sites["loop"]] == ["attn#0", "attn#1", "attn#2"]
    assert [s.index for s in sites["loop"]] == [0, 1, 2]
    assert all(s.reducible and s.grid == GRID for s in sites["loop"])
    assert len({s.hidden_states for s in sites["loop"]}) == 3


def test_analysis_does_not_mutate_the_graph(graphs):
    for name, gm in graphs.items():
        before = (gm.code, str(gm.graph), [dict(n.meta) for n in gm.graph.nodes])
        find_attention_sites(gm)
        after = (gm.code, str(gm.graph), [dict(n.meta) for n in gm.graph.nodes])
        assert before == after, name


def test_describe_has_a_row_per_site_and_to_dict_is_json(sites):
    for name, found in sites.items():
        text = describe(found)
        lines = text.splitlines()
        assert lines[0].split()[:3] == ["#", "site", "kind"]
        if not found:
            assert "no attention sites" in text
            continue
        assert len(lines) == 1 + len(found), name
        for site, line in zip(found, lines[1:]):
            assert line.split()[:3] == [str(site.index), site.name, site.kind]
        payload = json.loads(json.dumps([s.to_dict() for s in found]))
        assert [p["name"] for p in payload] == [s.name for s in found]


def test_describe_columns():
    sites_text = describe([])
    assert "reducible" in sites_text and "reason" in sites_text


def test_graph_without_shape_metadata_gives_unreducible_sites():
    gm = torch.fx.symbolic_trace(toys.FusedQKV())
    (site,) = find_attention_sites(gm)
    assert not site.reducible
    assert "token dimension" in site.reason


def test_unexpected_error_becomes_an_unreducible_site(graphs, monkeypatch, caplog):
    import asymrnr_compile.analysis.find_sites as find_sites

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(find_sites, "read_token_axes", boom)
    with caplog.at_level(logging.WARNING, logger="asymrnr_compile"):
        found = find_attention_sites(graphs["fused"])
    (site,) = found
    assert not site.reducible and "boom" in site.reason
    assert site.node.target is torch.nn.functional.scaled_dot_product_attention
    assert any("boom" in record.getMessage() for record in caplog.records)


def test_dynamic_shapes_are_recognised_but_not_reduced():
    """With ``dynamic=True`` the video length is symbolic: the site is found, left alone."""
    graphs: list[torch.fx.GraphModule] = []

    def record(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    model = torch.compile(toys.FusedQKV().eval(), backend=record, dynamic=True, fullgraph=True)
    with torch.no_grad():
        model(toys.video_input())
    (site,) = find_attention_sites(graphs[0])
    assert (site.kind, site.video_tokens, site.reducible) == ("self", None, False)
    assert site.reason == "the number of video tokens is symbolic"
