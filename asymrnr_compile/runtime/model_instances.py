"""Model instances: which one makes a call.

Dynamo shares compiled code per code object, so two models of one class (Wan 2.2's two experts,
a model loaded in place of a deleted one) can run one compiled graph; their weights come in as
different tensors. A model instance is known by its first lifted parameter object
(:func:`weights_of`), held weakly by whoever keeps state per instance.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.fx

#: Marks a lifted parameter's placeholder: Dynamo names it after the module path,
#: ``L_self_modules_<path>_parameters_<name>_``.
PARAMETER_PLACEHOLDER_MARK = "_parameters_"


def find_weights_input(gm: torch.fx.GraphModule) -> int | None:
    """Position among the graph's inputs of its first lifted parameter (the model's weights come
    in as inputs under Dynamo's ``inline_inbuilt_nn_modules``), or None (no lifted parameter:
    e.g. weights frozen into the graph)."""
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    for position, node in enumerate(placeholders):
        if PARAMETER_PLACEHOLDER_MARK in str(node.target) and isinstance(node.meta.get("example_value"), torch.Tensor):
            return position
    return None


def weights_of(args: Sequence[Any], position: int | None) -> torch.Tensor | None:
    """Which model instance makes this call: its first lifted parameter (two models of one class
    running one graph pass different parameter objects; known by identity, not by storage, so
    that tensor subclasses without storage, e.g. quantised weights, work too), None when
    unknown."""
    if position is None or position >= len(args) or not isinstance(args[position], torch.Tensor):
        return None
    return args[position]
