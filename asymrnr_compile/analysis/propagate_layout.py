"""Forward dataflow of token layouts over a Dynamo FX graph.

:func:`propagate_token_layouts` gives every node a :data:`~.token_layout.Layout` (a tuple for
nodes that return several tensors, None for non-tensors). Video grid axes are *born* at

- the spatial output axes of a ``conv3d`` (``f, h, w``) or ``conv2d`` (``h, w``; frames folded
  into the batch of a per-frame Conv2d ride along as an opaque batch factor and reappear in
  front of ``h, w`` when unfolded into the token axis), and
- ``torch.meshgrid`` of 3 (``f, h, w``) or 2 (``h, w``) coordinate vectors (positional grids
  such as LTX-Video's RoPE coordinates),

and then follow the tensor through views, permutes, slicing, concatenation, linear layers,
norms and elementwise ops. An elementwise op whose data input is opaque on an axis but whose
other input knows that axis (``q * rope_cos``) passes the knowledge on.

Like ``torch.fx.passes.shape_prop.ShapeProp`` it only reads ``node.meta`` and never mutates the
graph. Unknown ops fall back to an opaque layout (or, when the output has exactly the shape of
an input, to that input's layout); every computed layout is checked against the node's
example value and replaced by an opaque one on mismatch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.fx

from asymrnr_compile.analysis import op_kinds
from asymrnr_compile.analysis.fx_nodes import (
    arg,
    first_input,
    node_value,
    op_name,
    permutation_of,
    rest_args,
)
from asymrnr_compile.analysis.sdpa import is_sdpa
from asymrnr_compile.analysis.sequence_shards import all_to_all_layout, slab_dim
from asymrnr_compile.analysis.token_layout import (
    GRID_AXES,
    Dim,
    Factor,
    Layout,
    Size,
    broadcast_layout,
    concat_dims,
    dim_size,
    layout_matches,
    merge_dims,
    opaque_dim,
    opaque_layout,
    permute_layout,
    reshape_layout,
    shape_of,
    size_add,
    size_eq,
    slice_dim,
)

logger = logging.getLogger("asymrnr_compile.analysis")



class Pieces(tuple):  # type: ignore[type-arg]
    """Layouts (or None) of the tensors returned by a tuple-returning op (split, unbind...)."""

    __slots__ = ()


LayoutValue = Layout | Pieces | None


def is_layout(value: object) -> bool:
    """Whether ``value`` is one tensor's layout (not None, not :class:`Pieces`)."""
    return isinstance(value, tuple) and not isinstance(value, Pieces)

#: Labels of the output axes of an N-d coordinate meshgrid, by N.
MESHGRID_AXES: dict[int, tuple[str, ...]] = {3: GRID_AXES, 2: GRID_AXES[1:]}


class _Context:
    """What a handler may read: the node, its inputs' layouts and shapes, its output value."""

    def __init__(
        self,
        node: torch.fx.Node,
        lookup: Callable[[torch.fx.Node], LayoutValue],
        gm: torch.fx.GraphModule | None,
    ) -> None:
        self.node = node
        self.gm = gm
        self._lookup = lookup
        self.value = node_value(node, gm)
        self.out_shape = shape_of(self.value)

    def shape(self, x: Any) -> tuple[Size, ...] | None:
        return shape_of(node_value(x, self.gm)) if isinstance(x, torch.fx.Node) else None

    def layout(self, x: Any) -> Layout | None:
        """Layout of a tensor argument (opaque when unknown), None for non-tensors."""
        if not isinstance(x, torch.fx.Node):
            return None
        shape = self.shape(x)
        if shape is None:
            return None
        known = self._lookup(x)
        if is_layout(known) and layout_matches_safe(known, shape):
            return known
        return opaque_layout(shape)

    def tensor_inputs(self) -> list[torch.fx.Node]:
        found: list[torch.fx.Node] = []
        for a in list(self.node.args) + list(self.node.kwargs.values()):
            if isinstance(a, torch.fx.Node) and self.shape(a) is not None and a not in found:
                found.append(a)
        return found


def layout_matches_safe(value: Any, shape: Sequence[Size]) -> bool:
    """Whether ``value`` is a layout (not a tuple of layouts) describing ``shape``."""
    if not all(isinstance(d, tuple) and d and isinstance(d[0], tuple) for d in value):
        return False
    if any(not all(isinstance(f, Factor) for seg in d for f in seg) for d in value):
        return False
    return layout_matches(value, shape)


# ---------------------------------------------------------------------------------------------
# handlers: each returns a Layout, a tuple of layouts, or None (= opaque / not a tensor)


def _elementwise(ctx: _Context) -> LayoutValue:
    if ctx.out_shape is None:
        return None
    tensors = ctx.tensor_inputs()
    if op_name(ctx.node, ctx.gm) in op_kinds.FIRST_INPUT_ONLY:
        tensors = tensors[:1]
    inputs = [(ctx.layout(x), ctx.shape(x)) for x in tensors]
    inputs = [(lay, shp) for lay, shp in inputs if lay is not None and shp is not None]
    return broadcast_layout(ctx.out_shape, inputs)


def _normalize_dim(dim: Any, ndim: int) -> int | None:
    if isinstance(dim, bool) or not isinstance(dim, int) or ndim == 0:
        return None
    if not -ndim <= dim < ndim:
        return None
    return dim % ndim


def _linear(ctx: _Context) -> LayoutValue:
    layout = ctx.layout(first_input(ctx.node))
    if layout is None or ctx.out_shape is None or not layout:
        return None
    return layout[:-1] + (opaque_dim(ctx.out_shape[-1]),)


def _matmul(ctx: _Context) -> LayoutValue:
    a, b = arg(ctx.node, 0, "input"), arg(ctx.node, 1, "other", arg(ctx.node, 1, "mat2"))
    la, lb = ctx.layout(a), ctx.layout(b)
    sa, sb = ctx.shape(a), ctx.shape(b)
    if la is None or lb is None or sa is None or sb is None or ctx.out_shape is None:
        return None
    if len(la) < 2 or len(lb) < 2:
        return None
    batch_shape = ctx.out_shape[:-2]
    batch = broadcast_layout(batch_shape, [(la[:-2], sa[:-2]), (lb[:-2], sb[:-2])])
    return batch + (la[-2], lb[-1])


def _conv(ctx: _Context, axes: tuple[str, ...]) -> LayoutValue:
    layout = ctx.layout(first_input(ctx.node))
    if layout is None or ctx.out_shape is None:
        return None
    spatial = len(ctx.out_shape) - 2
    if spatial < 1 or len(layout) != len(ctx.out_shape):
        return None  # unbatched conv: leave opaque
    batch = layout[0] if size_eq(dim_size(layout[0]), ctx.out_shape[0]) else opaque_dim(
        ctx.out_shape[0]
    )
    source = _source_id(ctx.node)
    dims: list[Dim] = [batch, opaque_dim(ctx.out_shape[1])]
    for k, size in enumerate(ctx.out_shape[2:]):
        label = axes[k] if len(axes) == spatial else None
        dims.append(((Factor(size, label, source if label else None),),))
    return tuple(dims)


def _source_id(node: torch.fx.Node) -> int:
    """A stable id for the video source created at ``node`` (its position in the graph)."""
    for k, other in enumerate(node.graph.nodes):
        if other is node:
            return k
    return -1  # pragma: no cover - a node always belongs to its graph


def _meshgrid(ctx: _Context) -> LayoutValue:
    if not isinstance(ctx.value, (tuple, list)) or not ctx.value:
        return None
    shape = shape_of(ctx.value[0])
    if shape is None:
        return None
    labels = MESHGRID_AXES.get(len(shape))
    source = _source_id(ctx.node)
    if labels is None:
        layout = opaque_layout(shape)
    else:
        layout = tuple(((Factor(s, lab, source),),) for s, lab in zip(shape, labels))
    return Pieces(layout for _ in ctx.value)


def _reshape(ctx: _Context) -> LayoutValue:
    layout = ctx.layout(first_input(ctx.node))
    if layout is None or ctx.out_shape is None:
        return None
    return reshape_layout(layout, ctx.out_shape)


def _permute(ctx: _Context) -> LayoutValue:
    source = first_input(ctx.node)
    layout = ctx.layout(source)
    if layout is None:
        return None
    order = permutation_of(ctx.node, source, len(layout), ctx.gm)
    return None if order is None else permute_layout(layout, order)


def _slice_bound(value: Any, size: Size, default: Size) -> Size | None:
    if value is None:
        return default
    if isinstance(value, torch.fx.Node) or isinstance(value, bool):
        return None
    if not isinstance(value, int):
        return None
    if isinstance(size, int):
        if value < 0:
            value = max(0, size + value)
        return min(value, size)
    return size_add(size, value) if value < 0 else value


def _sliced(dim: Dim, index: slice) -> Dim | None:
    if index.step not in (None, 1):
        return None
    size = dim_size(dim)
    start = _slice_bound(index.start, size, 0)
    stop = _slice_bound(index.stop, size, size)
    if start is None or stop is None:
        return None
    return slice_dim(dim, start, stop)


def _getitem(ctx: _Context) -> LayoutValue:
    node = ctx.node
    source, index = node.args[0], node.args[1]
    if isinstance(node_value(source, ctx.gm), (tuple, list)):
        known = ctx._lookup(source) if isinstance(source, torch.fx.Node) else None
        if isinstance(index, int) and isinstance(known, Pieces):
            return known[index] if -len(known) <= index < len(known) else None
        return None
    layout = ctx.layout(source)
    if layout is None or ctx.out_shape is None:
        return None
    items = index if isinstance(index, tuple) else (index,)
    consuming = 0
    for item in items:
        if item is None or item is Ellipsis:
            continue
        value = node_value(item, ctx.gm)
        if isinstance(value, torch.Tensor) and value.dtype == torch.bool:
            consuming += value.dim()
        else:
            consuming += 1
    out: list[Dim | None] = []
    d = 0
    advanced = 0
    for item in items:
        if item is None:
            out.append(opaque_dim(1))
        elif item is Ellipsis:
            keep = len(layout) - consuming
            out.extend(layout[d : d + keep])
            d += keep
        elif isinstance(item, slice):
            if d >= len(layout):
                return None
            out.append(_sliced(layout[d], item))
            d += 1
        elif isinstance(item, (int, torch.SymInt)) and not isinstance(item, bool):
            d += 1
        elif isinstance(item, torch.fx.Node):
            value = node_value(item, ctx.gm)
            if isinstance(value, torch.Tensor):
                advanced += 1
                out.append(None)
                d += value.dim() if value.dtype == torch.bool else 1
            else:
                d += 1  # a symbolic integer index drops the dim
        else:
            return None
    out.extend(layout[d:])
    if advanced > 1 or len(out) != len(ctx.out_shape):
        return None
    return tuple(o if o is not None else opaque_dim(s) for o, s in zip(out, ctx.out_shape))


def _split(ctx: _Context) -> LayoutValue:
    node = ctx.node
    name = op_name(node, ctx.gm)
    layout = ctx.layout(first_input(node))
    pieces = ctx.value
    if layout is None or not isinstance(pieces, (tuple, list)):
        return None
    if name == "unbind":
        dim = _normalize_dim(arg(node, 1, "dim", 0), len(layout))
        if dim is None:
            return None
        piece = layout[:dim] + layout[dim + 1 :]
        return Pieces(piece for _ in pieces)
    dim = _normalize_dim(arg(node, 2, "dim", 0), len(layout))
    if dim is None:
        return None
    result: list[Layout | None] = []
    offset: Size = 0
    for piece in pieces:
        shape = shape_of(piece)
        if shape is None or len(shape) != len(layout):
            return None
        end = size_add(offset, shape[dim])
        # whole segments, else a slab of frames (a sequence-parallel shard, see sequence_shards)
        sub = slice_dim(layout[dim], offset, end) or slab_dim(layout[dim], offset, end)
        offset = end
        new_dim = sub if sub is not None else opaque_dim(shape[dim])
        result.append(layout[:dim] + (new_dim,) + layout[dim + 1 :])
    return Pieces(result)


def _cat(ctx: _Context) -> LayoutValue:
    node = ctx.node
    tensors = arg(node, 0, "tensors")
    if not isinstance(tensors, (list, tuple)) or ctx.out_shape is None:
        return None
    ndim = len(ctx.out_shape)
    dim = _normalize_dim(arg(node, 1, "dim", node.kwargs.get("axis", 0)), ndim)
    if dim is None:
        return None
    parts: list[Layout] = []
    for t in tensors:
        layout = ctx.layout(t)
        if layout is None:
            return None
        if len(layout) != ndim:
            continue  # legacy empty (0,) tensors are skipped by torch.cat
        parts.append(layout)
    if not parts:
        return None
    out: list[Dim] = []
    for k in range(ndim):
        if k == dim:
            out.append(concat_dims([p[k] for p in parts]))
        else:
            merged = merge_dims([(p[k], True) for p in parts])
            out.append(merged if merged is not None else opaque_dim(ctx.out_shape[k]))
    return tuple(out)


def _stack(ctx: _Context) -> LayoutValue:
    node = ctx.node
    tensors = arg(node, 0, "tensors")
    if not isinstance(tensors, (list, tuple)) or ctx.out_shape is None:
        return None
    ndim = len(ctx.out_shape)
    dim = _normalize_dim(arg(node, 1, "dim", 0), ndim)
    layouts = [ctx.layout(t) for t in tensors]
    if dim is None or any(lay is None or len(lay) != ndim - 1 for lay in layouts):
        return None
    inner: list[Dim] = []
    for k in range(ndim - 1):
        merged = merge_dims([(lay[k], True) for lay in layouts])  # type: ignore[index]
        inner.append(merged if merged is not None else opaque_dim(ctx.out_shape[k]))
    return tuple(inner[:dim]) + (opaque_dim(ctx.out_shape[dim]),) + tuple(inner[dim:])


def _expand(ctx: _Context) -> LayoutValue:
    layout = ctx.layout(first_input(ctx.node))
    shape = ctx.shape(first_input(ctx.node))
    if layout is None or shape is None or ctx.out_shape is None:
        return None
    ndim = len(ctx.out_shape)
    out: list[Dim] = []
    for j, size in enumerate(ctx.out_shape):
        k = j - (ndim - len(shape))
        if k >= 0 and size_eq(shape[k], size):
            out.append(layout[k])
        else:
            out.append(opaque_dim(size))
    return tuple(out)


def _repeat(ctx: _Context) -> LayoutValue:
    # dims that are not repeated (factor 1) keep their layout; others become opaque
    return _expand(ctx)


def _repeat_interleave(ctx: _Context) -> LayoutValue:
    layout = ctx.layout(first_input(ctx.node))
    if layout is None or ctx.out_shape is None:
        return None
    dim = _normalize_dim(arg(ctx.node, 2, "dim"), len(layout))
    if dim is None or len(layout) != len(ctx.out_shape):
        return None
    return layout[:dim] + (opaque_dim(ctx.out_shape[dim]),) + layout[dim + 1 :]


def _reduce(ctx: _Context) -> LayoutValue:
    node = ctx.node
    name = op_name(node, ctx.gm)
    layout = ctx.layout(first_input(node))
    if layout is None:
        return None
    if name == "norm":
        dims, keepdim = arg(node, 2, "dim"), arg(node, 3, "keepdim", False)
    else:
        dims, keepdim = arg(node, 1, "dim"), arg(node, 2, "keepdim", False)
    if isinstance(dims, torch.fx.Node):  # torch.max(a, b): elementwise, not a reduction
        return _elementwise(ctx)
    ndim = len(layout)
    if dims is None:
        reduced = set(range(ndim))
    else:
        dims = [dims] if isinstance(dims, int) else list(dims)
        norm = [_normalize_dim(d, ndim) for d in dims]
        if any(d is None for d in norm):
            return None
        reduced = set(norm)  # type: ignore[arg-type]
    out: list[Dim] = []
    for k, dim in enumerate(layout):
        if k in reduced:
            if keepdim:
                out.append(opaque_dim(1))
        else:
            out.append(dim)
    result = tuple(out)
    if isinstance(ctx.value, (tuple, list)):
        return Pieces(result for _ in ctx.value)
    return result


def _reorder_along_dim(ctx: _Context) -> LayoutValue:
    node = ctx.node
    layout = ctx.layout(first_input(node))
    if layout is None:
        return None
    name = op_name(node, ctx.gm)
    if name in ("flip",):
        dims = rest_args(node) or node.kwargs.get("dims", ())
    elif name == "roll":
        dims = arg(node, 2, "dims")
    elif name == "topk":
        dims = arg(node, 2, "dim", -1)
    else:
        dims = arg(node, 1, "dim", -1)
    if dims is None:
        return None
    dims = [dims] if isinstance(dims, int) else list(dims)
    out = list(layout)
    for d in dims:
        k = _normalize_dim(d, len(layout))
        if k is None:
            return None
        out[k] = opaque_dim(dim_size(layout[k]))
    result = tuple(out)
    if isinstance(ctx.value, (tuple, list)):
        shapes = [shape_of(v) for v in ctx.value]
        return Pieces(
            result if s is not None and layout_matches(result, s) else None for s in shapes
        )
    return result


def _pad(ctx: _Context) -> LayoutValue:
    layout = ctx.layout(first_input(ctx.node))
    pad = arg(ctx.node, 1, "pad")
    if layout is None or not isinstance(pad, (list, tuple)) or ctx.out_shape is None:
        return None
    out = list(layout)
    for k in range(len(pad) // 2):
        d = len(layout) - 1 - k
        if d < 0:
            return None
        amounts = pad[2 * k : 2 * k + 2]
        if any(not (isinstance(a, int) and a == 0) for a in amounts):
            out[d] = opaque_dim(ctx.out_shape[d])
    return tuple(out)


def _narrow_select(ctx: _Context) -> LayoutValue:
    node = ctx.node
    layout = ctx.layout(first_input(node))
    if layout is None:
        return None
    dim = _normalize_dim(arg(node, 1, "dim"), len(layout))
    if dim is None:
        return None
    if op_name(node, ctx.gm) == "select":
        return layout[:dim] + layout[dim + 1 :]
    start, length = arg(node, 2, "start"), arg(node, 3, "length")
    if not isinstance(start, int) or not isinstance(length, int):
        return None
    sub = _sliced(layout[dim], slice(start, start + length if start >= 0 else None))
    if sub is None or ctx.out_shape is None:
        return None
    return layout[:dim] + (sub,) + layout[dim + 1 :]


def _sdpa(ctx: _Context) -> LayoutValue:
    query = arg(ctx.node, 0, "query")
    layout = ctx.layout(query)
    if layout is None or ctx.out_shape is None or not layout:
        return None
    return layout[:-1] + (opaque_dim(ctx.out_shape[-1]),)


def _einsum(ctx: _Context) -> LayoutValue:
    """``einsum(equation, *operands)`` without ellipsis: each output axis takes the layout its
    letter has in the operands (the most informative, as for broadcasting)."""
    node = ctx.node
    equation = node.args[0] if node.args else node.kwargs.get("equation")
    operands = list(node.args[1:])
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = list(operands[0])
    if not isinstance(equation, str) or "->" not in equation or "." in equation or ctx.out_shape is None:
        return None
    inputs, output = equation.replace(" ", "").split("->")
    subscripts = inputs.split(",")
    if len(subscripts) != len(operands):
        return None
    layouts = [ctx.layout(x) for x in operands]
    out: list[Dim] = []
    for letter, size in zip(output, ctx.out_shape):
        candidates = [(layout[sub.index(letter)], True) for sub, layout in zip(subscripts, layouts)
                      if layout is not None and letter in sub and len(layout) == len(sub)]
        merged = merge_dims(candidates)
        out.append(merged if merged is not None else opaque_dim(size))
    return tuple(out) if len(out) == len(ctx.out_shape) else None


def _view_as_complex(ctx: _Context) -> LayoutValue:
    layout = ctx.layout(first_input(ctx.node))
    return layout[:-1] if layout else None


def _view_as_real(ctx: _Context) -> LayoutValue:
    layout = ctx.layout(first_input(ctx.node))
    return layout + (opaque_dim(2),) if layout is not None else None


def _outer(ctx: _Context) -> LayoutValue:
    a, b = ctx.layout(arg(ctx.node, 0, "input")), ctx.layout(arg(ctx.node, 1, "vec2"))
    if a is None or b is None or len(a) != 1 or len(b) != 1:
        return None
    return (a[0], b[0])


def _all_to_all(ctx: _Context) -> LayoutValue:
    """``all_to_all_single(x, output_splits, input_splits, group)``: see
    :func:`~.sequence_shards.all_to_all_layout` (None: opaque)."""
    layout = ctx.layout(first_input(ctx.node))
    if layout is None:
        return None
    return all_to_all_layout(layout, arg(ctx.node, 1, "output_split_sizes"), arg(ctx.node, 2, "input_split_sizes"))


def _fallback(ctx: _Context) -> LayoutValue:
    """Unknown op: keep the layout only when the output has exactly an input's shape."""
    if ctx.out_shape is None:
        return None
    for x in ctx.tensor_inputs():
        shape = ctx.shape(x)
        if shape is not None and len(shape) == len(ctx.out_shape) and all(
            size_eq(a, b) for a, b in zip(shape, ctx.out_shape)
        ):
            return _elementwise(ctx)
    return None


LayoutRule = Callable[[_Context], LayoutValue]
"""How one op maps its inputs' token layouts to its output's."""

LAYOUT_RULES: dict[str, LayoutRule] = {}
"""The layout rule of every op name (:func:`~asymrnr_compile.analysis.fx_nodes.op_name`) the
analysis understands; any other op gets :func:`_fallback`."""


def register_layout_rule(names: Iterable[str], rule: LayoutRule) -> None:
    """Use ``rule`` for the ops ``names``. An op has one rule: registering it twice raises."""
    for name in names:
        if name in LAYOUT_RULES:
            raise ValueError(f"op {name!r} already has the layout rule {LAYOUT_RULES[name].__name__}")
        LAYOUT_RULES[name] = rule


def _conv3d(ctx: _Context) -> LayoutValue:
    return _conv(ctx, GRID_AXES)


def _conv2d(ctx: _Context) -> LayoutValue:  # per frame: (h, w)
    return _conv(ctx, GRID_AXES[1:])


def _conv1d(ctx: _Context) -> LayoutValue:
    return _conv(ctx, ())


register_layout_rule([*op_kinds.ELEMENTWISE, *op_kinds.TRAILING_NORMS, "group_norm", "softmax", "log_softmax",
                      "normalize"], _elementwise)
register_layout_rule(op_kinds.LINEARS, _linear)
register_layout_rule(("matmul", "bmm", "mm"), _matmul)
register_layout_rule(("conv3d",), _conv3d)
register_layout_rule(("conv2d",), _conv2d)
register_layout_rule(("conv1d",), _conv1d)
register_layout_rule(("meshgrid",), _meshgrid)
register_layout_rule(op_kinds.RESHAPES, _reshape)
register_layout_rule(op_kinds.PERMUTES, _permute)
register_layout_rule(("getitem",), _getitem)
register_layout_rule(op_kinds.SPLITS, _split)
register_layout_rule(op_kinds.CATS, _cat)
register_layout_rule(("stack",), _stack)
register_layout_rule(op_kinds.EXPANDS, _expand)
register_layout_rule(("repeat",), _repeat)
register_layout_rule(("repeat_interleave",), _repeat_interleave)
register_layout_rule([*op_kinds.REDUCTIONS, "norm"], _reduce)
register_layout_rule([*op_kinds.REORDERS_ALONG_DIM, "cumsum", "cumprod"], _reorder_along_dim)
register_layout_rule(("pad",), _pad)
register_layout_rule(("narrow", "select"), _narrow_select)
register_layout_rule(("einsum",), _einsum)
register_layout_rule(("view_as_complex",), _view_as_complex)
register_layout_rule(("view_as_real",), _view_as_real)
register_layout_rule(("outer",), _outer)
register_layout_rule(("all_to_all_single",), _all_to_all)


def _handler(name: str) -> LayoutRule:
    return LAYOUT_RULES.get(name, _fallback)


def layout_of(
    node: torch.fx.Node,
    lookup: Callable[[torch.fx.Node], LayoutValue],
    gm: torch.fx.GraphModule | None = None,
) -> LayoutValue:
    """Layout of ``node``'s output given its inputs' layouts (``lookup``); never raises."""
    if node.op not in ("call_function", "call_method", "call_module"):
        return None
    ctx = _Context(node, lookup, gm)
    name = op_name(node, gm)
    try:
        # attention is recognised by its targets (analysis/sdpa.py, the one definition), not by name
        result = _sdpa(ctx) if is_sdpa(node) else _handler(name)(ctx)
    except Exception as exc:  # noqa: BLE001 - an odd node must not stop the analysis
        logger.debug("layout of %s (%s) not understood: %s", node.name, name, exc)
        result = None
    return _checked(result, ctx.value)


def _checked(result: LayoutValue, value: Any) -> LayoutValue:
    """``result`` if it describes ``value``, else an opaque layout of ``value``."""
    if isinstance(value, torch.Tensor):
        shape = shape_of(value)
        if shape is None:
            return None
        if is_layout(result) and layout_matches_safe(result, shape):
            return result
        return opaque_layout(shape)
    if isinstance(value, (tuple, list)):
        parts = result if isinstance(result, Pieces) and len(result) == len(value) else None
        return Pieces(_checked(parts[k] if parts else None, v) for k, v in enumerate(value))
    return None


def propagate_token_layouts(
    gm: torch.fx.GraphModule,
    seeds: Mapping[torch.fx.Node, LayoutValue] | None = None,
) -> dict[torch.fx.Node, LayoutValue]:
    """Token layout of every node of ``gm``, in one pass in graph order.

    Args:
        gm: a graph with ``example_value`` (or ``val``) metadata; nodes without it get None.
        seeds: layouts to use for some nodes instead of computing them.

    Returns:
        ``{node: layout}``; see the module docstring.
    """
    env: dict[torch.fx.Node, LayoutValue] = {}
    for node in gm.graph.nodes:
        if seeds is not None and node in seeds:
            env[node] = seeds[node]
        elif node.op in ("placeholder", "get_attr"):
            env[node] = _checked(None, node_value(node, gm))
        else:
            env[node] = layout_of(node, env.get, gm)
    return env


def propagate_over(
    nodes: Sequence[torch.fx.Node],
    base: Mapping[torch.fx.Node, LayoutValue],
    seeds: Mapping[torch.fx.Node, LayoutValue],
    gm: torch.fx.GraphModule | None = None,
) -> dict[torch.fx.Node, LayoutValue]:
    """Recompute the layouts of ``nodes`` (in graph order) from ``seeds``, reading every other
    node's layout from ``base``. Used to follow one token axis through a sub-graph."""
    overlay: dict[torch.fx.Node, LayoutValue] = dict(seeds)

    def lookup(n: torch.fx.Node) -> LayoutValue:
        return overlay[n] if n in overlay else base.get(n)

    for node in nodes:
        if node in seeds:
            continue
        overlay[node] = layout_of(node, lookup, gm)
    return overlay


def video_axis(layout: LayoutValue) -> int | None:
    """The first axis of ``layout`` holding video grid factors, or None."""
    if not is_layout(layout):
        return None
    for k, dim in enumerate(layout):  # type: ignore[arg-type]
        if any(f.is_video for seg in dim for f in seg):
            return k
    return None


__all__ = [
    "LayoutValue",
    "Pieces",
    "is_layout",
    "layout_of",
    "propagate_over",
    "propagate_token_layouts",
    "video_axis",
]

