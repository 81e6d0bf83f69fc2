"""FLOP cost model of a captured graph, full and with token reduction.

Counts the multiply-adds of the matrix ops of a Dynamo graph from the shapes in
``node.meta["example_value"]`` (linear, convolutions, matmuls, attention), at 2 FLOPs per
multiply-add, the convention of ``torch.utils.flop_counter``. Element-wise ops are not counted:
on the models we target they are a small share and memory-bound.

With a reduction (per site, the kept token counts of ``q`` and ``kv``), an attention site costs
``2 * B * H * Lq' * Lk' * (d + d_v)`` with ``Lq' = Lq - N + K_q`` and ``Lk' = Lk - N + K_kv``,
plus the matching (``2 * B * H * N_src * N_dst * d`` per feature), computed once per cache
window and so amortised over ``cache_steps`` calls. The ideal speedup of a plan is the full
graph's FLOPs over the reduced graph's (DESIGN.md Sec. 6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.fx

from asymrnr_compile.analysis.fx_nodes import nodes_between
from asymrnr_compile.analysis.site import AttentionSite

FLOPS_PER_MAC = 2

_LINEAR_TARGETS = {torch._C._nn.linear, torch.nn.functional.linear}
_MATMUL_TARGETS = {torch.matmul, torch.bmm, torch.mm, torch.Tensor.matmul, torch.Tensor.bmm, torch.Tensor.mm,
                   torch.baddbmm, torch.addmm}
_CONV_TARGETS = {torch.conv1d, torch.conv2d, torch.conv3d, torch.nn.functional.conv1d,
                 torch.nn.functional.conv2d, torch.nn.functional.conv3d}
_SDPA_TARGETS = {torch._C._nn.scaled_dot_product_attention, torch.nn.functional.scaled_dot_product_attention}


def _value(node: Any) -> torch.Tensor | None:
    if not isinstance(node, torch.fx.Node):
        return None
    value = node.meta.get("example_value", node.meta.get("val"))
    return value if isinstance(value, torch.Tensor) else None


def _static_numel(shape: torch.Size) -> int | None:
    try:
        return math.prod(int(s) for s in shape)
    except (TypeError, ValueError, RuntimeError):
        return None


def _static_ints(*sizes: Any) -> tuple[int, ...] | None:
    """The sizes as ints, or None if one is symbolic (``int()`` would guard, or fail when unbacked)."""
    from torch.fx.experimental.symbolic_shapes import is_concrete_int

    return tuple(int(s) for s in sizes) if all(is_concrete_int(s) for s in sizes) else None


def attention_flops(leading: int, q_tokens: int, kv_tokens: int, head_dim: int, value_dim: int | None = None) -> int:
    """FLOPs of softmax(Q K^T) V over ``leading`` (batch x heads) independent problems."""
    value_dim = head_dim if value_dim is None else value_dim
    return FLOPS_PER_MAC * leading * q_tokens * kv_tokens * (head_dim + value_dim)


def matching_flops(leading: int, num_src: int, num_dst: int, channels: int) -> int:
    """FLOPs of the source-to-destination similarity matrix of one matching."""
    return FLOPS_PER_MAC * leading * num_src * num_dst * channels


def node_flops(node: torch.fx.Node) -> int:
    """FLOPs of one graph node (0 for ops that are not matrix products or unknown shapes)."""
    if node.op != "call_function":
        return 0
    out = _value(node)
    args = node.args
    if node.target in _LINEAR_TARGETS and args:
        weight = _value(args[1] if len(args) > 1 else node.kwargs.get("weight"))
        numel = _static_numel(out.shape) if out is not None else None
        if weight is None or numel is None:
            return 0
        return FLOPS_PER_MAC * numel * int(weight.shape[-1])
    if node.target in _CONV_TARGETS and len(args) > 1:
        weight = _value(args[1])
        numel = _static_numel(out.shape) if out is not None else None
        if weight is None or numel is None:
            return 0
        return FLOPS_PER_MAC * numel * math.prod(int(s) for s in weight.shape[1:])
    if node.target in _MATMUL_TARGETS and out is not None:
        tensors = [_value(a) for a in args if _value(a) is not None]
        numel = _static_numel(out.shape)
        if len(tensors) < 2 or numel is None:
            return 0
        inner = int(tensors[-2].shape[-1]) if tensors[-2].dim() > 0 else 1
        return FLOPS_PER_MAC * numel * inner
    if node.target in _SDPA_TARGETS:
        query = _value(args[0] if args else node.kwargs.get("query"))
        key = _value(args[1] if len(args) > 1 else node.kwargs.get("key"))
        value = _value(args[2] if len(args) > 2 else node.kwargs.get("value"))
        if query is None or key is None or value is None:
            return 0
        leading = _static_numel(query.shape[:-2])
        try:
            q_tokens, kv_tokens = int(query.shape[-2]), int(key.shape[-2])
        except (TypeError, ValueError, RuntimeError):
            return 0
        if leading is None:
            return 0
        return attention_flops(leading, q_tokens, kv_tokens, int(query.shape[-1]), int(value.shape[-1]))
    return 0


def graph_flops(gm: torch.fx.GraphModule) -> int:
    """FLOPs of one call of the graph (matrix ops only)."""
    return sum(node_flops(node) for node in gm.graph.nodes)


@dataclass(frozen=True)
class CostEstimate:
    """Full and reduced FLOPs of one graph call.

    Attributes:
        full_flops: the unreduced graph.
        reduced_flops: with the reduction, matching amortised over the cache window.
        attention_flops: the attention part of ``full_flops``.
    """

    full_flops: int
    reduced_flops: float
    attention_flops: int

    @property
    def ideal_speedup(self) -> float:
        return self.full_flops / self.reduced_flops if self.reduced_flops else 1.0

    def to_dict(self) -> dict[str, float]:
        return {"full_gflops": self.full_flops / 1e9, "reduced_gflops": self.reduced_flops / 1e9,
                "attention_share": self.attention_flops / self.full_flops if self.full_flops else 0.0,
                "ideal_speedup": self.ideal_speedup}


def _hidden_states_path_flops(site: AttentionSite) -> int:
    """FLOPs of the projections that h reduction shrinks (attention itself excluded)."""
    if site.hidden_states is None or site.output_projection is None:
        return 0
    nodes = nodes_between(site.hidden_states, [site.query, site.key, site.value])
    nodes |= nodes_between(site.node, [site.output_projection])
    return sum(node_flops(node) for node in nodes if node is not site.node)


def estimate_cost(gm: torch.fx.GraphModule, kept: Mapping[AttentionSite, Mapping[str, tuple[int, int]]],
                  cache_steps: int) -> CostEstimate:
    """Cost of ``gm`` with, per site, ``{feature: (num_dst, num_keep)}`` for ``"q"``, ``"kv"``, ``"h"``.

    q shortens the attention's query axis, kv its key axis, h both axes and every projection
    between the hidden states and the output projection (by the kept fraction of its tokens).
    The matching of every reduced feature is counted once per ``cache_steps`` calls.
    """
    full = graph_flops(gm)
    attention_full = sum(node_flops(n) for n in gm.graph.nodes
                         if n.op == "call_function" and n.target in _SDPA_TARGETS)
    saved = 0.0
    for site, features in kept.items():
        query, key, value = _value(site.query), _value(site.key), _value(site.value)
        if query is None or key is None or value is None or site.video_tokens is None:
            continue
        leading = _static_numel(query.shape[:-2]) or 0
        sizes = _static_ints(query.shape[-1], value.shape[-1], query.shape[-2], key.shape[-2])
        if sizes is None:  # data-dependent lengths (Mochi's text): no estimate for this site
            continue
        head_dim, value_dim, q_tokens, kv_tokens = sizes
        n = site.video_tokens
        q_reduced, kv_reduced = q_tokens, kv_tokens
        matching = 0
        for feature, (num_dst, num_keep) in features.items():
            removed = n - num_keep
            if feature in ("q", "h"):
                q_reduced = q_tokens - removed
            if feature in ("kv", "h"):
                kv_reduced = kv_tokens - removed
            if feature == "h":
                hidden = _value(site.hidden_states)
                channels = int(hidden.shape[-1]) if hidden is not None else head_dim
                batch = _static_numel(hidden.shape[:-2]) if hidden is not None else leading
                matching += matching_flops(batch or 0, n - num_dst, num_dst, channels)
                saved += _hidden_states_path_flops(site) * removed / q_tokens
            else:
                matching += matching_flops(leading, n - num_dst, num_dst, head_dim if feature == "q" else value_dim)
        before = attention_flops(leading, q_tokens, kv_tokens, head_dim, value_dim)
        after = attention_flops(leading, q_reduced, kv_reduced, head_dim, value_dim)
        saved += before - after - matching / cache_steps
    return CostEstimate(full, full - saved, attention_full)
