"""Attention sites of the bundled reference DiT (joint attention, text first, RoPE on video)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.fx
from analysis_helpers import capture, summary

from asymrnr_compile.analysis import AttentionSite, describe, find_attention_sites
from asymrnr_lab.models import PRESETS, build_reference_model, reference_inputs

PRESET = "tiny"


@pytest.fixture(scope="module")
def analysed() -> tuple[torch.fx.GraphModule, list[AttentionSite]]:
    model = build_reference_model(PRESET).eval()
    gm = capture(model, **reference_inputs(PRESET))
    return gm, find_attention_sites(gm)


def test_tiny_preset_site_list(analysed):
    _, found = analysed
    config = PRESETS[PRESET]
    grid = config.grid
    n = grid[0] * grid[1] * grid[2]
    t = config.text_tokens
    assert summary(found) == [
        (f"blocks.{i}.attn", "joint", "first", t, n, grid, True, i)
        for i in range(config.num_blocks)
    ]
    assert (grid, t, config.num_blocks) == ((2, 4, 4), 8, 2)  # the "tiny" preset


def test_nodes_for_the_rewrite(analysed):
    _, found = analysed
    for site in found:
        assert site.block == f"blocks.{site.block_index}"
        assert site.video_start == PRESETS[PRESET].text_tokens
        assert site.query_tokens == site.key_tokens == site.video_start + site.video_tokens
        assert site.attn_mask is None and not site.is_causal
        # q and k are cat([text, rope(video)]) right before attention
        assert site.query.target is torch.cat and site.key.target is torch.cat
        assert site.hidden_states is not None and site.hidden_states.target is torch.cat
        assert site.hidden_states_video_start == site.video_start and site.token_dim == 1
        assert site.output_projection is not None
        assert "to_out" in str(site.output_projection.meta["nn_module_stack"])
        # RoPE tables have one row per video token, so h stays off (see the reason)
        assert site.features == ("q", "kv")
        assert site.reason.startswith("h unavailable")


def test_describe_and_json(analysed):
    gm, found = analysed
    code = gm.code
    lines = describe(found).splitlines()
    assert [line.split()[1] for line in lines[1:]] == [s.name for s in found]
    json.dumps([s.to_dict() for s in found])
    find_attention_sites(gm)
    assert gm.code == code
