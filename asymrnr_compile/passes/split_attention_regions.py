"""Split a graph into attention regions and the segments between them, for regional compilation.

Every variant of a model (unreduced, computing matchings, reusing them) differs only around its
attention calls. Splitting the graph there lets the runtime compile each segment once and share
it between variants, and lets structurally identical segments (one per transformer block) hit
Inductor's FX graph cache, so that extra variants cost little compile time.

Before::

    x = norm(h); q = to_q(x); ...; attn = sdpa(q, k, v); h = h + to_out(attn); ...

After (the driver graph; each ``submod_*`` is a GraphModule compiled on its own)::

    q, k, v, h = submod_0(inputs...)      # segment: everything up to the first region
    attn = submod_1(q, k, v, ...)          # attention region 0: [reduce ->] sdpa [-> restore]
    q2, k2, v2, h = submod_2(attn, h, ...) # segment: rest of block 0, start of block 1
    ...

A node belongs to an attention region when it is an SDPA call or carries
``node.meta[REGION_META]`` (set by the rewrite pass on every node it inserts around a site).
Region nodes of one site are contiguous in graph order.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx
from torch.fx.passes.split_module import split_module

from asymrnr_compile.analysis.sdpa import is_sdpa

REGION_META = "asymrnr_region"


@dataclass
class SplitGraph:
    """The driver graph and what each of its submodules is.

    Attributes:
        driver: GraphModule calling ``submod_<k>`` in order; same inputs and outputs as the
            original graph.
        attention_submodules: names of the submodules that are attention regions.
        segment_submodules: names of the other submodules.
    """

    driver: torch.fx.GraphModule
    attention_submodules: list[str]
    segment_submodules: list[str]


def _is_tensor(node: torch.fx.Node) -> bool:
    value = node.meta.get("example_value", node.meta.get("val"))
    return isinstance(value, torch.Tensor)


def _region_of(node: torch.fx.Node, sdpa_count: list[int]) -> object | None:
    if REGION_META in node.meta:
        return node.meta[REGION_META]
    if is_sdpa(node):
        sdpa_count[0] += 1
        return ("sdpa", sdpa_count[0])
    return None


def split_attention_regions(gm: torch.fx.GraphModule) -> SplitGraph:
    """Split ``gm`` (not modified) into alternating segments and attention regions."""
    partition: dict[torch.fx.Node, int] = {}
    is_region: dict[int, bool] = {}
    current_key: object = None
    pid = 0
    sdpa_count = [0]
    for node in gm.graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        region = _region_of(node, sdpa_count)
        key = ("segment",) if region is None else ("region", region)
        if key != current_key:
            if partition:
                pid += 1
            current_key = key
        producer = node.args[0] if node.target is operator.getitem and node.args else None
        if isinstance(producer, torch.fx.Node) and producer in partition and not _is_tensor(producer):
            # Unpack tuples where they are made: only tensors may cross between compiled parts.
            partition[node] = partition[producer]
            continue
        partition[node] = pid
        is_region[pid] = region is not None
    driver = split_module(gm, gm, lambda node: partition[node], keep_original_order=True)
    attention, segments = [], []
    for node in driver.graph.nodes:
        if node.op == "call_module":
            pid = int(node.target.rsplit("_", 1)[1])
            (attention if is_region[pid] else segments).append(node.target)
    return SplitGraph(driver, attention, segments)
