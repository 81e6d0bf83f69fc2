"""Small, read-only helpers to inspect FX nodes of a Dynamo graph.

Dynamo graphs call functions (``torch.cat``, ``torch._C._nn.linear``, ``operator.add``, ...),
tensor methods (``"view"``, ``"transpose"``, ...) and, for graphs from ``symbolic_trace``,
modules. :func:`op_name` maps all of them to one lower-case name (``"cat"``, ``"linear"``,
``"add"``, ``"view"``) so that the analyses can dispatch on it.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.fx
from torch import nn

#: Module classes of ``call_module`` nodes and the function they behave like.
MODULE_OPS: tuple[tuple[type[nn.Module], str], ...] = (
    (nn.Linear, "linear"),
    (nn.Conv3d, "conv3d"),
    (nn.Conv2d, "conv2d"),
    (nn.Conv1d, "conv1d"),
    (nn.LayerNorm, "layer_norm"),
    (nn.RMSNorm, "rms_norm"),
    (nn.GroupNorm, "group_norm"),
    (nn.Dropout, "dropout"),
    (nn.Identity, "identity"),
    (nn.GELU, "gelu"),
    (nn.SiLU, "silu"),
    (nn.ReLU, "relu"),
    (nn.Tanh, "tanh"),
    (nn.Sigmoid, "sigmoid"),
    (nn.Softmax, "softmax"),
    (nn.MultiheadAttention, "multi_head_attention"),
)

def op_name(node: torch.fx.Node, gm: torch.fx.GraphModule | None = None) -> str:
    """Canonical lower-case name of what ``node`` computes ("" for placeholders/outputs)."""
    if node.op == "call_method":
        return str(node.target)
    if node.op == "call_function":
        target = node.target
        if target is operator.getitem:
            return "getitem"
        if isinstance(target, torch._ops.OpOverload):
            return target._opname  # type: ignore[attr-defined]
        if isinstance(target, torch._ops.OpOverloadPacket):
            return target._qualified_op_name.split("::")[-1]  # type: ignore[attr-defined]
        return getattr(target, "__name__", str(target)).lower()
    if node.op == "call_module" and gm is not None:
        module = submodule(gm, str(node.target))
        for cls, name in MODULE_OPS:
            if isinstance(module, cls):
                return name
        return "module:" + type(module).__name__ if module is not None else "module"
    return ""


def submodule(gm: torch.fx.GraphModule, target: str) -> nn.Module | None:
    try:
        return gm.get_submodule(target)
    except (AttributeError, TypeError):
        return None


def node_value(node: Any, gm: torch.fx.GraphModule | None = None) -> Any:
    """The example value of a node (a FakeTensor, a tuple of them, a SymInt...), or None.

    Dynamo stores it in ``meta["example_value"]``, AOT graphs in ``meta["val"]``; ``get_attr``
    nodes resolve to the attribute itself.
    """
    if not isinstance(node, torch.fx.Node):
        return None
    for key in ("example_value", "val"):
        if key in node.meta:
            return node.meta[key]
    if node.op == "get_attr" and gm is not None:
        obj: Any = gm
        try:
            for part in str(node.target).split("."):
                obj = getattr(obj, part)
        except AttributeError:
            return None
        return obj
    return None


def is_linear(node: torch.fx.Node, gm: torch.fx.GraphModule | None = None) -> bool:
    return node.op in ("call_function", "call_module") and op_name(node, gm) == "linear"


def iter_nodes(value: Any) -> Iterator[torch.fx.Node]:
    """All FX nodes inside an argument structure (lists, tuples, dicts, slices)."""
    if isinstance(value, torch.fx.Node):
        yield value
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from iter_nodes(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_nodes(item)
    elif isinstance(value, slice):
        yield from iter_nodes((value.start, value.stop, value.step))


def input_nodes(node: torch.fx.Node) -> list[torch.fx.Node]:
    """All nodes ``node`` reads, in argument order, without repeats."""
    seen: dict[torch.fx.Node, None] = {}
    for arg in iter_nodes((node.args, node.kwargs)):
        seen.setdefault(arg, None)
    return list(seen)


def first_input(node: torch.fx.Node) -> Any:
    """The tensor an op acts on: ``self`` of a method, the first argument of a function."""
    if node.args:
        return node.args[0]
    for key in ("input", "self", "x", "tensors"):
        if key in node.kwargs:
            return node.kwargs[key]
    return None


def arg(node: torch.fx.Node, index: int, name: str, default: Any = None) -> Any:
    """Argument ``index`` (positional, counting ``self``) or keyword ``name`` of ``node``."""
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def rest_args(node: torch.fx.Node, start: int = 1) -> tuple[Any, ...]:
    """Positional arguments from ``start``, flattening a single list/tuple argument
    (``x.view(2, 3)`` and ``x.view((2, 3))`` give the same)."""
    rest = tuple(node.args[start:])
    if len(rest) == 1 and isinstance(rest[0], (list, tuple, torch.Size)):
        return tuple(rest[0])
    return rest


def module_path(node: torch.fx.Node) -> str | None:
    """Dotted path of the innermost module that produced ``node`` (from ``nn_module_stack``).

    Dynamo writes paths like ``L['self'].__dict__['_modules']['blocks'].0.attn`` or
    ``L['self'].blocks[0].attn``; both become ``"blocks.0.attn"``.
    """
    stack = node.meta.get("nn_module_stack")
    if not stack:
        return None
    entry = list(stack.values())[-1]
    raw = entry[0] if isinstance(entry, tuple) else str(entry)
    return normalize_module_path(str(raw))


#: Parts of a Dynamo module path that are not module names.
_PATH_NOISE = ("__dict__", "_modules")
#: Dynamo's names of the local / global scope; the next part names the root variable.
_SCOPES = ("L", "G")


def normalize_module_path(raw: str) -> str | None:
    """``"L['self'].__dict__['_modules']['blocks'].0.attn"`` -> ``"blocks.0.attn"``."""
    parts = [
        a or b or c
        for a, b, c in re.findall(r"\['([^']*)'\]|\[(\d+)\]|([A-Za-z_0-9]+)", raw)
    ]
    parts = [p for p in parts if p not in _PATH_NOISE]
    if len(parts) >= 2 and parts[0] in _SCOPES:
        parts = parts[2:]
    return ".".join(parts) if parts else None


def nodes_between(source: torch.fx.Node, targets: list[torch.fx.Node]) -> set[torch.fx.Node]:
    """Nodes on some path from ``source`` (excluded) to any of ``targets`` (included)."""
    below: set[torch.fx.Node] = set()
    stack = [source]
    while stack:
        for user in stack.pop().users:
            if user not in below:
                below.add(user)
                stack.append(user)
    between: set[torch.fx.Node] = set()
    stack = [t for t in targets if t in below]
    while stack:
        node = stack.pop()
        if node not in between:
            between.add(node)
            stack.extend(parent for parent in node.all_input_nodes if parent in below)
    return between


def permutation_of(node: torch.fx.Node, source: torch.fx.Node, ndim: int,
                   gm: torch.fx.GraphModule | None = None) -> tuple[int, ...] | None:
    """The dim permutation ``node`` applies to ``source`` (an ``ndim``-dim tensor), as
    ``x.permute(result)`` would write it, when it is a ``permute``, a transpose (``transpose``,
    ``swapaxes``, ``swapdims``, also with numpy's ``axis0``/``axis1`` keywords), ``t`` or
    ``movedim``/``moveaxis`` of it with int dims in range; else None."""
    if first_input(node) is not source or ndim < 0:
        return None
    name = op_name(node, gm)
    if name == "t":
        return (1, 0) if ndim == 2 else tuple(range(ndim))
    if name in ("movedim", "moveaxis"):
        return _moved_dims(arg(node, 1, "source"), arg(node, 2, "destination"), ndim)
    dims: list[Any]
    if name in ("transpose", "swapaxes", "swapdims"):
        dims = [arg(node, 1, "dim0", node.kwargs.get("axis0")), arg(node, 2, "dim1", node.kwargs.get("axis1"))]
    elif name == "permute":
        dims = list(rest_args(node)) or list(node.kwargs.get("dims", ()))
    else:
        return None
    if not _dims_in_range(dims, ndim) or not dims:
        return None
    dims = [dim % ndim for dim in dims]
    if name == "permute":
        return tuple(dims) if sorted(dims) == list(range(ndim)) else None
    order = list(range(ndim))
    order[dims[0]], order[dims[1]] = order[dims[1]], order[dims[0]]
    return tuple(order)


def _dims_in_range(dims: Sequence[Any], ndim: int) -> bool:
    return all(isinstance(dim, int) and not isinstance(dim, bool) and -ndim <= dim < ndim for dim in dims)


def _moved_dims(source: Any, destination: Any, ndim: int) -> tuple[int, ...] | None:
    """``movedim(source, destination)`` as a permutation (None unless both name distinct dims in
    range, as many of each)."""
    src = [source] if isinstance(source, int) else list(source or [])
    dst = [destination] if isinstance(destination, int) else list(destination or [])
    if len(src) != len(dst) or not _dims_in_range(src + dst, ndim):
        return None
    src, dst = [dim % ndim for dim in src], [dim % ndim for dim in dst]
    if len(set(src)) != len(src) or len(set(dst)) != len(dst):
        return None
    order: list[int | None] = [None] * ndim
    for moved, to in zip(src, dst):
        order[to] = moved
    rest = iter(dim for dim in range(ndim) if dim not in src)
    return tuple(dim if dim is not None else next(rest) for dim in order)
