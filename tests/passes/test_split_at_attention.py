"""Splitting a graph at its attention calls into subgraphs keeps its meaning."""

from __future__ import annotations

import operator

import torch
from helpers import capture_graph

from asymrnr_compile.passes.split_at_attention import ATTENTION_SUBGRAPH_META, split_at_attention
from asymrnr_lab.models import build_reference_model, reference_inputs


def test_split_has_one_subgraph_per_attention_and_subgraphs_between():
    model = build_reference_model("tiny")
    inputs = reference_inputs("tiny")
    gm, example_inputs = capture_graph(model, inputs)
    split = split_at_attention(gm)
    # two blocks: between, attention, between, attention, between
    assert len(split.attention_submodules) == 2 and len(split.between_submodules) == 3
    for name in split.attention_submodules:
        subgraph = getattr(split.driver, name)
        targets = [n.target for n in subgraph.graph.nodes if n.op == "call_function"]
        assert targets == [torch._C._nn.scaled_dot_product_attention]
    with torch.no_grad():
        expected = gm(*example_inputs)
        got = split.driver(*example_inputs)
    torch.testing.assert_close(got[0], expected[0], rtol=0, atol=0)


def test_tagged_nodes_join_their_attention_subgraph():
    class Model(torch.nn.Module):
        def forward(self, q, k, v):
            scaled = q * 2.0
            out = torch.nn.functional.scaled_dot_product_attention(scaled, k, v)
            return (out + 1.0,)

    inputs = {name: torch.randn(1, 2, 6, 4) for name in ("q", "k", "v")}
    gm, _ = capture_graph(Model(), inputs)
    for node in gm.graph.nodes:
        if node.target in (operator.mul, torch._C._nn.scaled_dot_product_attention):
            node.meta[ATTENTION_SUBGRAPH_META] = 0
    split = split_at_attention(gm)
    (attention_name,) = split.attention_submodules
    subgraph = getattr(split.driver, attention_name)
    targets = [n.target for n in subgraph.graph.nodes if n.op == "call_function"]
    assert targets == [operator.mul, torch._C._nn.scaled_dot_product_attention]
    assert len(split.between_submodules) == 1  # the + 1.0 after attention
