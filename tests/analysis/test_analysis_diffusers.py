"""Attention sites of the real clients: diffusers' small seeded test configs.

Each model is captured and analysed once per module (a few seconds each).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.fx
from analysis_helpers import capture, summary

from asymrnr_compile.analysis import AttentionSite, describe, find_attention_sites

pytest.importorskip(
    "diffusers",
    reason="diffusers is not installed (pip install -e .[diffusers]); CI installs it",
)

from asymrnr_lab.models.diffusers_models import BUILDERS  # noqa: E402  (needs diffusers)

Analysed = Callable[[str], tuple[torch.fx.GraphModule, list[AttentionSite]]]


@pytest.fixture(scope="module")
def analysed() -> Analysed:
    """``analysed(name) -> (gm, sites)``; each model is captured and analysed once."""
    cache: dict[str, tuple[torch.fx.GraphModule, list[AttentionSite]]] = {}

    def get(name: str) -> tuple[torch.fx.GraphModule, list[AttentionSite]]:
        if name not in cache:
            torch.manual_seed(0)
            model, inputs = BUILDERS[name]()
            gm = capture(model.eval(), **inputs, return_dict=False)
            code, graph = gm.code, str(gm.graph)
            found = find_attention_sites(gm)
            assert (gm.code, str(gm.graph)) == (code, graph), "the analysis mutated the graph"
            cache[name] = (gm, found)
        return cache[name]

    return get


EXPECTED: dict[str, list[tuple[Any, ...]]] = {
    # (name, kind, text_position, text_tokens, video_tokens, grid, reducible, block_index)
    "cogvideox": [("transformer_blocks.0.attn1", "joint", "first", 8, 16, (1, 4, 4), True, 0)],
    "hunyuan": [
        ("context_embedder.token_refiner.refiner_blocks.0.attn", "unknown", None, None, None,
         None, False, 0),
        ("transformer_blocks.0.attn", "joint", "last", 12, 256, (1, 16, 16), True, 0),
        ("single_transformer_blocks.0.attn", "joint", "last", 12, 256, (1, 16, 16), True, 0),
    ],
    "mochi": [
        ("time_embed.pooler", "unknown", None, None, None, None, False, None),
        ("transformer_blocks.0.attn1#0", "joint", "last", None, 128, (2, 8, 8), True, 0),
        ("transformer_blocks.0.attn1#1", "joint", "last", None, 128, (2, 8, 8), True, 0),
        ("transformer_blocks.1.attn1#0", "joint", "last", None, 128, (2, 8, 8), True, 1),
        ("transformer_blocks.1.attn1#1", "joint", "last", None, 128, (2, 8, 8), True, 1),
    ],
    "wan": [
        ("blocks.0.attn1", "self", None, None, 128, (2, 8, 8), True, 0),
        ("blocks.0.attn2", "cross", None, None, 128, (2, 8, 8), True, 0),
        ("blocks.1.attn1", "self", None, None, 128, (2, 8, 8), True, 1),
        ("blocks.1.attn2", "cross", None, None, 128, (2, 8, 8), True, 1),
    ],
    "ltx": [
        ("transformer_blocks.0.attn1", "self", None, None, 512, (2, 16, 16), True, 0),
        ("transformer_blocks.0.attn2", "cross", None, None, 512, (2, 16, 16), True, 0),
    ],
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_site_list(analysed, name):
    _, found = analysed(name)
    assert summary(found) == EXPECTED[name]
    assert [s.index for s in found] == list(range(len(found)))


@pytest.mark.parametrize("name", list(BUILDERS))
def test_features_follow_the_kind(analysed, name):
    _, found = analysed(name)
    for site in found:
        if not site.reducible:
            assert site.features == () and site.reason
        elif site.kind == "cross":
            assert site.features == ("q",)
        else:
            assert site.features[:2] == ("q", "kv")
            assert set(site.features) <= {"q", "kv", "h"}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_sdpa_arguments_are_normalised(analysed, name):
    _, found = analysed(name)
    for site in found:
        assert site.query.op != "output" and site.key is not site.query
        for node in (site.query, site.key, site.value):
            assert node.meta["example_value"].dim() >= 3
        assert site.is_causal is False and site.dropout_p == 0.0


def test_cogvideox_h_nodes(analysed):
    _, (site,) = analysed("cogvideox")
    # cat([text, video]) on the hidden states before the projections, to_out after attention
    assert site.features == ("q", "kv", "h")
    assert site.hidden_states is not None and site.hidden_states.target is torch.cat
    assert site.token_dim == 1 and site.hidden_states_video_start == 8
    assert site.output_projection is not None and site.output_video_start == 8
    assert "to_out" in str(site.output_projection.meta["nn_module_stack"])
    assert site.video_start == 8


def test_hunyuan_masks_and_text_only_refiner(analysed):
    _, (refiner, dual, single) = analysed("hunyuan")
    assert refiner.reason.startswith("text-only attention")
    assert dual.attn_mask is not None and single.attn_mask is not None
    # dual stream: text joins after the projections, so the video stream alone enters them
    assert dual.hidden_states is not None and dual.hidden_states_video_start == 0
    assert dual.hidden_states.meta["example_value"].shape[1] == 256
    # single stream: cat([video, text]) before the projections
    assert single.hidden_states is not None
    assert single.hidden_states.meta["example_value"].shape[1] == 268
    for site in (dual, single):
        assert site.video_start == 0
        assert "h" not in site.features and "h unavailable" in site.reason


def test_mochi_text_length_is_symbolic(analysed):
    _, found = analysed("mochi")
    assert found[0].reason.startswith("text-only attention")  # the caption pooler
    for site in found[1:]:
        assert site.text_tokens is None and site.query_tokens is None
        assert site.video_start == 0
        assert "h" not in site.features


def test_ltx_cross_attention_mask(analysed):
    _, (self_site, cross_site) = analysed("ltx")
    assert self_site.attn_mask is None and cross_site.attn_mask is not None
    assert cross_site.key_tokens == 16


@pytest.mark.parametrize("name", list(BUILDERS))
def test_describe_and_json(analysed, name):
    _, found = analysed(name)
    lines = describe(found).splitlines()
    assert len(lines) == 1 + len(found)
    for site, line in zip(found, lines[1:]):
        assert line.split()[:2] == [str(site.index), site.name]
    json.dumps([s.to_dict() for s in found])
