"""Checks on a captured graph that decide, before any planning, that it is compiled unchanged:
symbolic shapes, attention written out by hand, and settings regional compilation cannot honour.
"""

from __future__ import annotations

import torch
import torch.fx

from asymrnr_compile.analysis.fx_nodes import op_name
from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.reasons import Reason

#: A graph whose attention is written out by hand (matmul, softmax, matmul).
WITHOUT_SDPA = Reason("attention is computed without scaled_dot_product_attention",
                      fix="compute attention with torch.nn.functional.scaled_dot_product_attention")
#: Matrix products that, two of them around a softmax, make attention written out by hand.
MATMUL_OPS = frozenset({"matmul", "bmm", "baddbmm", "einsum"})
#: Matrix products of one attention: scores (q @ k^T) and output (weights @ v).
MATMULS_PER_ATTENTION = 2


def has_symbolic_shapes(gm: torch.fx.GraphModule) -> bool:
    """Whether an input of ``gm`` has a symbolic size (a graph captured with ``dynamic=True``)."""
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        value = node.meta.get("example_value")
        if isinstance(value, torch.SymInt):
            return True
        if isinstance(value, torch.Tensor) and any(isinstance(s, torch.SymInt) for s in value.shape):
            return True
    return False


def regional_refusal(config: AsymRnRConfig, names_blocks: bool) -> str | None:
    """Why a graph compiled under regional compilation cannot be reduced with ``config``, or None.
    One compiled block graph serves every block of its class, so settings that differ per block
    in the graph itself (a schedule's rows, random-selection seeds baked into the graph) cannot be
    honoured; ``skip_blocks`` can where the block calls say which block they are
    (``names_blocks``: compiled by :func:`asymrnr_compile.compile_repeated_blocks`)."""
    whole_model = "compile the whole model: torch.compile(model, backend='asymrnr', ...)"
    if config.schedule is not None:
        return Reason("schedules are not supported under regional compilation (compile the whole model)",
                      fix=whole_model)
    if config.skip_blocks and not names_blocks:
        return Reason("skip_blocks under regional compilation needs the blocks compiled by "
                      "asymrnr_compile.compile_repeated_blocks (which names each block's calls)",
                      fix="compile with asymrnr_compile.compile_repeated_blocks(model, ...), or compile the whole "
                          "model")
    if config.token_selection == "random":
        return Reason("token_selection='random' is not supported under regional compilation: its seeds are "
                      "compiled into the graph all blocks share (compile the whole model)", fix=whole_model)
    return None


def computes_attention_by_hand(gm: torch.fx.GraphModule) -> bool:
    """Whether the graph computes attention without SDPA: a softmax between two matrix products,
    or torch's fused ``multi_head_attention_forward``."""
    names = [op_name(node, gm) for node in gm.graph.nodes]
    if "multi_head_attention_forward" in names:
        return True
    return "softmax" in names and sum(name in MATMUL_OPS for name in names) >= MATMULS_PER_ATTENTION
