"""Attention over video tokens that is not ``scaled_dot_product_attention``: found, and said why it stays.

AsymRnR reduces the tokens entering a softmax attention and restores its output
(:mod:`.find_sites` finds those as ``scaled_dot_product_attention`` calls). A model can mix its video
tokens in other ways, which the backend leaves as they are; a user must still learn that they are
there and why nothing happens to them. :func:`find_other_attention` reports

- ``flex_attention`` calls (a higher-order op in the graph) over video tokens: which query may see
  which key is a block mask over token positions (AnyFlow FAR's frame-causal chunks); removing
  tokens would need the mask rebuilt for the kept ones, which this backend does not do;
- matrix products (``matmul``, ``bmm``, a two-operand ``einsum``) that contract the video token
  axis of both operands (a token-mixing product):
  after a ``softmax`` it is attention written by hand, ``softmax(Q Kᵀ) V``; otherwise it is
  *linear* attention (``φ(Q) (φ(K)ᵀ V)``, SanaVideo), which has no softmax over tokens to reduce
  around: the method does not apply.

Each is an :class:`OtherAttention` with its node, module path and reason. Never mutates the graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx

from asymrnr_compile.analysis.fx_nodes import arg, module_path, node_value, op_name
from asymrnr_compile.analysis.propagate_layout import LayoutValue, is_layout
from asymrnr_compile.analysis.token_layout import Dim, shape_of, video_factors
from asymrnr_compile.reasons import USE_SDPA_FIX, Reason, ReasonKind

#: Ops that multiply two matrices (the two operands are args 0 and 1; contraction: a[-1] with b[-2]).
MATMUL_OPS = ("matmul", "bmm")
#: A ``softmax`` this many ops or fewer before a token-mixing matmul makes it hand-written attention.
SOFTMAX_LOOKBACK = 4

FLEX_REASON = Reason("flex_attention over the video tokens: a block mask decides which query sees which key, and it "
                     "would have to be rebuilt for the kept tokens; not reduced")
MANUAL_REASON = Reason("attention written by hand (softmax of a matmul, then a matmul with the values), not with "
                       "torch.nn.functional.scaled_dot_product_attention; not reduced (use "
                       "scaled_dot_product_attention)", fix=USE_SDPA_FIX)
LINEAR_REASON = Reason("linear attention (the tokens are mixed by a matmul without a softmax): AsymRnR reduces and "
                       "restores around a softmax attention, so it does not apply here", ReasonKind.NOT_APPLICABLE)


@dataclass(frozen=True)
class OtherAttention:
    """One token-mixing operation over video tokens that the backend leaves alone.

    Attributes:
        name: the module path of the op (``"transformer_blocks.0.attn1"``), else the node's name.
        node: the op's node name in the graph.
        kind: ``"flex_attention"``, ``"manual"`` (softmax attention by hand) or ``"linear"``.
        reason: why it is left alone, with its kind and fix (:class:`~asymrnr_compile.reasons.Reason`;
            :meth:`to_dict` gives its text).
    """

    name: str
    node: str
    kind: str
    reason: Reason

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "node": self.node, "kind": self.kind, "reason": str(self.reason)}


def _video_dim(layouts: Mapping[torch.fx.Node, LayoutValue], node: Any, axis: int) -> Dim | None:
    if not isinstance(node, torch.fx.Node):
        return None
    layout = layouts.get(node)
    if not is_layout(layout) or len(layout) < abs(axis):  # type: ignore[arg-type]
        return None
    dim = layout[axis]  # type: ignore[index]
    return dim if video_factors((dim,)) else None


def _after_softmax(node: torch.fx.Node, gm: torch.fx.GraphModule) -> bool:
    frontier = [a for a in node.all_input_nodes]
    for _ in range(SOFTMAX_LOOKBACK):
        if any(op_name(n, gm) in ("softmax", "_softmax", "log_softmax") for n in frontier):
            return True
        frontier = [a for n in frontier for a in n.all_input_nodes]
    return False


def find_other_attention(gm: torch.fx.GraphModule,
                         layouts: Mapping[torch.fx.Node, LayoutValue]) -> list[OtherAttention]:
    """Every flex attention and token-mixing matmul over video tokens in ``gm`` (see the module
    docstring); ``layouts`` is the analysis' layout of every node."""
    found: list[OtherAttention] = []
    for node in gm.graph.nodes:
        if node.op != "call_function":
            continue
        name = op_name(node, gm)
        if name == "flex_attention":
            if _video_dim(layouts, arg(node, 0, "query"), -2) is not None:
                found.append(OtherAttention(module_path(node) or node.name, node.name, "flex_attention", FLEX_REASON))
        elif name in MATMUL_OPS or name == "einsum":
            if _contracts_video_tokens(node, gm, layouts):
                manual = _after_softmax(node, gm)
                found.append(OtherAttention(module_path(node) or node.name, node.name, "manual" if manual else "linear",
                                            MANUAL_REASON if manual else LINEAR_REASON))
    return found


def _contracts_video_tokens(node: torch.fx.Node, gm: torch.fx.GraphModule,
                            layouts: Mapping[torch.fx.Node, LayoutValue]) -> bool:
    """Whether a matmul (``a[-1]`` with ``b[-2]``) or a two-operand einsum sums over an axis that
    holds video tokens in both operands."""
    if op_name(node, gm) == "einsum":
        equation = node.args[0] if node.args else None
        operands = list(node.args[1:])
        if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
            operands = list(operands[0])
        if not isinstance(equation, str) or "->" not in equation or "." in equation or len(operands) != 2:
            return False
        inputs, output = equation.replace(" ", "").split("->")
        subscripts = inputs.split(",")
        if len(subscripts) != 2:
            return False
        contracted = (set(subscripts[0]) & set(subscripts[1])) - set(output)
        return any(_video_dim(layouts, operands[0], subscripts[0].index(letter) - len(subscripts[0])) is not None
                   and _video_dim(layouts, operands[1], subscripts[1].index(letter) - len(subscripts[1])) is not None
                   for letter in contracted)
    a, b = arg(node, 0, "input"), arg(node, 1, "other", arg(node, 1, "mat2"))
    shape_a, shape_b = shape_of(node_value(a, gm)), shape_of(node_value(b, gm))
    if shape_a is None or shape_b is None or len(shape_a) < 2 or len(shape_b) < 2:
        return False
    return _video_dim(layouts, a, -1) is not None and _video_dim(layouts, b, -2) is not None


__all__ = ["FLEX_REASON", "LINEAR_REASON", "MANUAL_REASON", "OtherAttention", "find_other_attention"]
