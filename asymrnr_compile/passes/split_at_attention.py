"""Split a graph at its attention calls into subgraphs, each compiled on its own.

Every variant of a model (unreduced, computing matchings, reusing them) differs only around its
attention calls. Splitting the graph there lets the runtime compile each subgraph between
attention calls once and share it between variants, and lets structurally identical subgraphs
(one per transformer block) hit Inductor's FX graph cache, so that extra variants cost little
compile time. (Not to be confused with regional compilation, :mod:`asymrnr_compile.regional`,
which compiles one transformer block per graph.)

Before::

    x = norm(h); q = to_q(x); ...; attn = sdpa(q, k, v); h = h + to_out(attn); ...

After (the driver graph; each ``submod_*`` is a GraphModule compiled on its own)::

    q, k, v, h = submod_0(inputs...)      # between: everything up to the first attention
    attn = submod_1(q, k, v, ...)          # attention subgraph 0: [reduce ->] sdpa [-> restore]
    q2, k2, v2, h = submod_2(attn, h, ...) # between: rest of block 0, start of block 1
    ...

A node belongs to an attention subgraph when it is an SDPA call or carries
``node.meta[ATTENTION_SUBGRAPH_META]`` (set by the rewrite passes on every node they insert
around a site: the site index). The tagged nodes of one site are contiguous in graph order.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx
from torch.fx.passes.split_module import split_module

from asymrnr_compile.analysis.sdpa import is_sdpa

#: ``node.meta`` key of a node inserted around an attention site (value: the site index), so that
#: the split keeps it in that site's attention subgraph.
ATTENTION_SUBGRAPH_META = "asymrnr_attention_subgraph"


@dataclass
class SplitGraph:
    """The driver graph and what each of its submodules is.

    Attributes:
        driver: GraphModule calling ``submod_<k>`` in order; same inputs and outputs as the
            original graph.
        attention_submodules: names of the submodules that are attention subgraphs (one SDPA
            call and the nodes tagged with its site).
        between_submodules: names of the submodules between attention calls (the same in every
            variant).
    """

    driver: torch.fx.GraphModule
    attention_submodules: list[str]
    between_submodules: list[str]


def _is_tensor(node: torch.fx.Node) -> bool:
    value = node.meta.get("example_value", node.meta.get("val"))
    return isinstance(value, torch.Tensor)


def _attention_of(node: torch.fx.Node, sdpa_count: list[int]) -> object | None:
    """Which attention subgraph ``node`` belongs to (its tag, or a new key per untagged SDPA
    call), or None: between attention calls."""
    if ATTENTION_SUBGRAPH_META in node.meta:
        return node.meta[ATTENTION_SUBGRAPH_META]
    if is_sdpa(node):
        sdpa_count[0] += 1
        return ("sdpa", sdpa_count[0])
    return None


def split_at_attention(gm: torch.fx.GraphModule) -> SplitGraph:
    """Split ``gm`` (not modified) into alternating subgraphs between attention calls and
    attention subgraphs."""
    partition: dict[torch.fx.Node, int] = {}
    is_attention: dict[int, bool] = {}
    current_key: object = None
    pid = 0
    sdpa_count = [0]
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        attention = _attention_of(node, sdpa_count)
        key = ("between",) if attention is None else ("attention", attention)
        if key != current_key:
            if partition:
                pid += 1
            current_key = key
        producer = node.args[0] if node.target is operator.getitem and node.args else None
        if isinstance(producer, torch.fx.Node) and producer in partition and not _is_tensor(producer):
            # Unpack tuples where they are made: only tensors may cross between compiled subgraphs.
            partition[node] = partition[producer]
            continue
        partition[node] = pid
        is_attention[pid] = attention is not None
    driver = split_module(gm, gm, lambda node: partition[node], keep_original_order=True)
    attention_names, between_names = [], []
    for node in driver.graph.nodes:
        if node.op == "call_module":
            pid = int(node.target.rsplit("_", 1)[1])
            (attention_names if is_attention[pid] else between_names).append(node.target)
    return SplitGraph(driver, attention_names, between_names)
