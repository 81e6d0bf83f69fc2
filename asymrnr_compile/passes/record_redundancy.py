"""Profiling pass: add redundancy statistics of every site and feature as extra graph outputs.

For each profiled site, right after its SDPA call, the pass inserts per feature the matching of
the video tokens (``ops.match_tokens`` on the split given as graph inputs) and the statistics of
the nearest-destination distances (``ops.redundancy``), and appends the statistics vector to the
graph's outputs. The model's own outputs are untouched (the inserted nodes only read features). The inserted
nodes are tagged as part of the site's attention subgraph (``ATTENTION_SUBGRAPH_META``), so that
``split_at_attention`` keeps them with the attention call and identical blocks compile once.
The pass only edits graphs; the numbers come from ``ops/``.

Features (paper Sec. 3.2 and 3.4; the published schedules record tiers of the same four):

- ``"q"``: the SDPA query (after QK-norm and RoPE),
- ``"k"``: the SDPA key, ``"v"``: the SDPA value (the kv reduction matches on V),
- ``"h"``: the hidden states entering the q/k/v projections (``site.hidden_states``).

Before::

    attn = scaled_dot_product_attention(q, k, v)

After (for ``q``; likewise ``k``, ``v`` and ``h``)::

    attn = scaled_dot_product_attention(q, k, v)
    q_matching = match_tokens(q, TokenSplit(asymrnr_profile_site0_q_dst, ..._src), start=T)
    q_norm     = normalised_distance(q, q_matching.distance, N, start=T)
    q_stats    = redundancy_stats(q_norm, N, N_dst, quantiles, ratios)   # -> extra output (S,)

With ``error_ratios`` (q and v probes; h and k get NaN)::

    q_errors   = reduction_errors(q, k, v, attn, q_split, q_matching, "q", error_ratios, start=T)
    q_stats    = cat([q_stats, q_errors])                                  # -> extra output (S + R,)
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.fx

from asymrnr_compile import ops
from asymrnr_compile.analysis.sdpa import sdpa_arguments
from asymrnr_compile.analysis.site import AttentionSite
from asymrnr_compile.ops import redundancy
from asymrnr_compile.passes.graph_utils import copy_graph_module, graph_output
from asymrnr_compile.passes.split_at_attention import ATTENTION_SUBGRAPH_META

PROFILE_FEATURES: tuple[str, ...] = ("h", "q", "k", "v")
"""Features whose redundancy is recorded, in the order of a profile's feature axis."""

ERROR_REDUCTION: dict[str, str] = {"q": "q", "v": "kv"}
"""Probe feature -> the reduction whose output error it records (kv reduction matches on V)."""


@dataclass(frozen=True)
class FeatureProbe:
    """What to record for one (site, feature).

    Attributes:
        site_index: the site's ``index``.
        feature: one of :data:`PROFILE_FEATURES`.
        num_tokens: ``N``, video tokens of the span.
        num_dst: ``N_dst`` of the split.
        start: first video token on the feature's token axis (-2 for q/k/v, ``token_dim`` for h).
    """

    site_index: int
    feature: str
    num_tokens: int
    num_dst: int
    start: int

    @property
    def placeholder_prefix(self) -> str:
        return f"asymrnr_profile_site{self.site_index}_{self.feature}"


@dataclass
class ProfileRewrite:
    """The profiling graph and the order of its extra inputs (splits) and outputs (statistics).

    Attributes:
        gm: the rewritten copy of the graph.
        extra_inputs: ``(probe, "dst" | "src")`` per appended placeholder, in order.
        extra_outputs: the probe of each appended output (a statistics vector), in order.
        num_original_outputs: outputs of the original graph (they come first).
    """

    gm: torch.fx.GraphModule
    extra_inputs: list[tuple[FeatureProbe, str]] = field(default_factory=list)
    extra_outputs: list[FeatureProbe] = field(default_factory=list)
    num_original_outputs: int = 0


def _feature_node(site: AttentionSite, feature: str, node_map: dict, sdpa_kwargs: dict) -> torch.fx.Node:
    if feature == "h":
        return node_map[site.hidden_states]
    return sdpa_kwargs[{"q": "query", "k": "key", "v": "value"}[feature]]


def record_redundancy(gm: torch.fx.GraphModule, sites: list[AttentionSite], probes: list[FeatureProbe], *,
                      similarity: str = "euclidean", match_chunk_bytes: int = ops.DEFAULT_MATCH_CHUNK_BYTES,
                      match_kernel: str = "auto",
                      quantiles: tuple[float, ...] = redundancy.DEFAULT_QUANTILES,
                      ratios: tuple[float, ...] = redundancy.DEFAULT_PROFILE_RATIOS,
                      error_ratios: tuple[float, ...] = ()) -> ProfileRewrite:
    """A copy of ``gm`` that also returns the statistics of every probe (``gm`` is not modified).

    Args:
        gm: the Dynamo graph (its output is a tuple, as Dynamo produces).
        sites: the analysis of ``gm``; probes name sites by ``index``.
        probes: what to record; ``"h"`` needs ``site.hidden_states``.
        similarity, match_chunk_bytes, match_kernel: as ``similarity``, ``chunk_bytes`` and ``kernel``
            in ``ops.match_tokens``.
        quantiles, ratios, error_ratios: the statistics' layout (``ops.redundancy.stat_names``).
            With ``error_ratios``, the ``q`` and ``v`` probes also measure the output error of
            the q and kv reductions at those ratios (``ops.redundancy.reduction_errors``, one
            attention call per ratio); ``h`` and ``k`` probes get NaN there.

    Raises:
        ValueError: a probe names an unknown site or an unavailable feature.
    """
    by_index = {site.index: site for site in sites}
    new_gm, node_map = copy_graph_module(gm)
    graph = new_gm.graph
    output_node, original = graph_output(graph)
    result = ProfileRewrite(new_gm, num_original_outputs=len(original))
    first_compute = next(node for node in graph.nodes if node.op != "placeholder")
    new_outputs: list[torch.fx.Node] = []
    for probe in probes:
        site = by_index.get(probe.site_index)
        if site is None:
            raise ValueError(f"probe names site {probe.site_index}, but the graph has sites {sorted(by_index)}")
        if probe.feature not in PROFILE_FEATURES:
            raise ValueError(f"probe feature must be one of {PROFILE_FEATURES}, got {probe.feature!r}")
        if probe.feature == "h" and site.hidden_states is None:
            raise ValueError(f"site {site.name}: no hidden states found for the 'h' probe")
        sdpa = node_map[site.node]
        sdpa_kwargs = sdpa_arguments(sdpa)
        feature_node = _feature_node(site, probe.feature, node_map, sdpa_kwargs)
        with graph.inserting_before(first_compute):
            split_nodes = []
            for name in ("dst", "src"):
                split_nodes.append(graph.placeholder(f"{probe.placeholder_prefix}_{name}"))
                result.extra_inputs.append((probe, name))
        with graph.inserting_before(sdpa.next):  # after attention: every feature exists by then
            split = graph.call_function(ops.TokenSplit, tuple(split_nodes))
            matching = graph.call_function(ops.match_tokens, (feature_node, split, similarity),
                                           {"start": probe.start, "chunk_bytes": match_chunk_bytes,
                                            "kernel": match_kernel})
            distance = graph.call_function(operator.getitem, (matching, 2))
            normalised = graph.call_function(redundancy.normalised_distance,
                                             (feature_node, distance, probe.num_tokens, similarity),
                                             {"start": probe.start})
            stats = graph.call_function(redundancy.redundancy_stats,
                                        (normalised, probe.num_tokens, probe.num_dst, tuple(quantiles),
                                         tuple(ratios)))
            inserted = [split, matching, distance, normalised, stats]
            if error_ratios:
                reduction = ERROR_REDUCTION.get(probe.feature)
                if reduction is None:
                    errors = graph.call_method("new_full", (stats, (len(error_ratios),), math.nan))
                else:
                    errors = graph.call_function(
                        redundancy.reduction_errors,
                        (sdpa_kwargs["query"], sdpa_kwargs["key"], sdpa_kwargs["value"], sdpa, split, matching,
                         reduction, tuple(error_ratios)),
                        {"start": probe.start, "attn_mask": sdpa_kwargs.get("attn_mask"),
                         "scale": sdpa_kwargs.get("scale")})
                stats = graph.call_function(torch.cat, ([stats, errors],))
                inserted += [errors, stats]
        for node in inserted:
            node.meta[ATTENTION_SUBGRAPH_META] = site.index  # part of the site's attention subgraph
        new_outputs.append(stats)
        result.extra_outputs.append(probe)
    output_node.args = (tuple(output_node.args[0]) + tuple(new_outputs),)
    graph.lint()
    new_gm.recompile()
    return result
