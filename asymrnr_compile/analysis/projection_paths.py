"""Find the nodes h-reduction needs around one attention site, and whether h can be reduced.

h-reduction gathers the video tokens of the hidden states *before* the q/k/v projections, runs
the projections, norms, RoPE, attention and output projection on fewer tokens, and restores
full length after the output projection. This module finds

- ``hidden_states``: the ``(B, L, C)`` input of the linear projections feeding q, k and v
  (walking up from the SDPA arguments through any op until a linear layer);
- ``output_projection``: the first linear layer after the SDPA output (walking down),

and checks that tokens can be reduced there: a *marker* factor is put on the token axis of
``hidden_states`` (resp. the SDPA output) and followed through every node between it and q/k/v
(resp. the output projection) with the same layout rules as the main propagation. h is
offered only when the marker reaches the attention axis of q, k and v (resp. the output
projection) and every op on the way treats tokens independently:

- elementwise ops whose other inputs do not vary along the token axis (a RoPE table of one row
  per token does: it would have to be gathered too, so h is refused);
- linear layers and norms over channels;
- views and permutes that keep the token axis whole and do not hard-code its length (a
  ``reshape(B, 256, H, d)`` would break once the axis is shorter; ``-1`` is fine);
- slicing and concatenation of whole text/video segments on the token axis, when the slice
  bounds are counted from the text side (``[:T]``/``[T:]`` for text first,
  ``[:-T]``/``[-T:]`` for text last), so they stay correct with fewer video tokens.

Anything else (padding, per-batch loops, token-mixing ops, unknown ops) refuses h with a
reason naming the node.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx

from asymrnr_compile.analysis import op_kinds
from asymrnr_compile.analysis.classify_site import SDPA_TOKEN_AXIS, TokenAxes
from asymrnr_compile.analysis.fx_nodes import (
    arg,
    first_input,
    input_nodes,
    is_linear,
    node_value,
    op_name,
    rest_args,
)
from asymrnr_compile.analysis.propagate_layout import (
    LayoutValue,
    Pieces,
    is_layout,
    layout_of,
    propagate_over,
)
from asymrnr_compile.analysis.sdpa import is_sdpa
from asymrnr_compile.analysis.token_layout import (
    MARKER_AXIS,
    Dim,
    Factor,
    Layout,
    Segment,
    Size,
    concrete,
    dim_size,
    opaque_dim,
    segment_has_marker,
    segment_size,
    shape_of,
    size_add,
    size_eq,
    strip_units,
)

#: Reason given when no candidate let the marker through and no check named a node.
UNFOLLOWED = "the token axis could not be followed"

#: Most nodes visited when walking from q/k/v up to their projections, or from the SDPA output
#: down to the output projection.
MAX_WALK_NODES = 256


@dataclass(frozen=True)
class ProjectionPaths:
    """The h-reduction nodes of one site and whether h can be reduced there.

    Attributes:
        hidden_states: input of the q/k/v projections, or None.
        hidden_states_token_dim: its token axis, or None.
        hidden_states_video_start: start of the video span on that axis, or None.
        output_projection: the output projection's result, or None.
        output_video_start: start of the video span on its token axis, or None.
        h_problem: why h cannot be reduced here; None when it can.
    """

    hidden_states: torch.fx.Node | None = None
    hidden_states_token_dim: int | None = None
    hidden_states_video_start: int | None = None
    output_projection: torch.fx.Node | None = None
    output_video_start: int | None = None
    h_problem: str | None = "not analysed"


@dataclass(frozen=True)
class _Followed:
    """Result of following the marker from one seed."""

    problem: str | None
    token_dim: int | None = None
    video_start: int | None = None


class _Graph:
    """Positions of the nodes of one graph, for bounded reachability.

    In-place mutations (``out[..., 0::2] = x`` is a ``setitem`` node; ``copy_``, ``add_``...)
    carry data without a graph edge to later readers of the mutated tensor; they are added as
    extra edges: a reader of ``out`` placed after the mutation also reads the mutation.
    """

    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.gm = gm
        self.position = {node: k for k, node in enumerate(gm.graph.nodes)}
        self.extra_parents: dict[torch.fx.Node, list[torch.fx.Node]] = {}
        self.extra_children: dict[torch.fx.Node, list[torch.fx.Node]] = {}
        for node in gm.graph.nodes:
            mutated = mutated_input(node, gm)
            if mutated is None:
                continue
            for reader in mutated.users:
                if reader is not node and self.position[reader] > self.position[node]:
                    self.extra_parents.setdefault(reader, []).append(node)
                    self.extra_children.setdefault(node, []).append(reader)

    def parents(self, node: torch.fx.Node) -> list[torch.fx.Node]:
        return input_nodes(node) + self.extra_parents.get(node, [])

    def children(self, node: torch.fx.Node) -> list[torch.fx.Node]:
        return list(node.users) + self.extra_children.get(node, [])

    def ancestors(self, targets: Iterable[torch.fx.Node], above: int) -> set[torch.fx.Node]:
        """``targets`` and every node they read, transitively, placed after position ``above``."""
        seen: set[torch.fx.Node] = set()
        queue = deque(t for t in targets if self.position[t] > above)
        while queue:
            node = queue.popleft()
            if node in seen:
                continue
            seen.add(node)
            for parent in self.parents(node):
                if self.position.get(parent, -1) > above and parent not in seen:
                    queue.append(parent)
        return seen

    def descendants(self, source: torch.fx.Node, below: int) -> set[torch.fx.Node]:
        """``source`` and every node reading it, transitively, placed up to position ``below``."""
        seen: set[torch.fx.Node] = set()
        queue = deque([source])
        while queue:
            node = queue.popleft()
            if node in seen:
                continue
            seen.add(node)
            for child in self.children(node):
                if self.position.get(child, below + 1) <= below and child not in seen:
                    queue.append(child)
        return seen

    def between(
        self, source: torch.fx.Node, targets: Sequence[torch.fx.Node]
    ) -> list[torch.fx.Node]:
        """Nodes on some path from ``source`` to a target, in graph order (source excluded)."""
        below = max(self.position[t] for t in targets)
        above = self.position[source]
        nodes = self.descendants(source, below) & self.ancestors(targets, above)
        nodes.discard(source)
        return sorted(nodes, key=self.position.__getitem__)


# ---------------------------------------------------------------------------------------------
# walking to the projections


def mutated_input(node: torch.fx.Node, gm: torch.fx.GraphModule) -> torch.fx.Node | None:
    """The tensor ``node`` mutates in place (``setitem``, ``copy_``, ``add_``...), or None."""
    if node.op not in ("call_function", "call_method"):
        return None
    name = op_name(node, gm)
    if name in op_kinds.IN_PLACE or (
        node.op == "call_method" and name.endswith("_") and not name.startswith("_")
    ):
        target = first_input(node)
        return target if isinstance(target, torch.fx.Node) else None
    return None


def _linears_above(
    graph: _Graph, start: torch.fx.Node
) -> list[torch.fx.Node]:
    """Linear nodes reached walking up from ``start`` without passing through a linear."""
    found: list[torch.fx.Node] = []
    seen: set[torch.fx.Node] = set()
    queue = deque([start])
    while queue and len(seen) < MAX_WALK_NODES:
        node = queue.popleft()
        if node in seen:
            continue
        seen.add(node)
        if is_linear(node, graph.gm):
            found.append(node)
            continue
        if node.op in ("placeholder", "get_attr") or (is_sdpa(node) and node is not start):
            continue
        queue.extend(p for p in graph.parents(node) if p not in seen)
    return found


def _linears_below(graph: _Graph, sdpa: torch.fx.Node) -> list[torch.fx.Node]:
    """Linear nodes reached walking down from ``sdpa`` without passing through a linear."""
    found: list[torch.fx.Node] = []
    seen: set[torch.fx.Node] = set()
    queue = deque([sdpa])
    while queue and len(seen) < MAX_WALK_NODES:
        node = queue.popleft()
        if node in seen:
            continue
        seen.add(node)
        if node is not sdpa and is_linear(node, graph.gm):
            found.append(node)
            continue
        if node is not sdpa and is_sdpa(node):
            continue
        queue.extend(u for u in graph.children(node) if u not in seen)
    return found


def _linear_input(node: torch.fx.Node) -> torch.fx.Node | None:
    x = first_input(node)
    return x if isinstance(x, torch.fx.Node) else None


# ---------------------------------------------------------------------------------------------
# the marker


def _marker(size: Size, site_index: int) -> Segment:
    return (Factor(size, MARKER_AXIS, site_index),)


def _marked_dim(dim: Dim, axes: TokenAxes, site_index: int) -> Dim | None:
    """``dim`` with its video segment replaced by the marker (or built from sizes if opaque)."""
    video = axes.video_segment
    if video is not None:
        for k, segment in enumerate(dim):
            if strip_units(segment) == strip_units(video):
                return dim[:k] + (_marker(segment_size(segment), site_index),) + dim[k + 1 :]
    if axes.video_tokens is None or len(dim) != 1:
        return None
    size = dim_size(dim)
    marker = _marker(axes.video_tokens, site_index)
    if size_eq(size, axes.video_tokens):
        return (marker,)
    if axes.kind == "joint" and axes.text_tokens is not None and axes.text_position in ("first", "last"):
        if size_eq(size, axes.video_tokens + axes.text_tokens):
            text = opaque_dim(axes.text_tokens)[0]
            return (text, marker) if axes.text_position == "first" else (marker, text)
    return None


def _marker_axis(layout: LayoutValue) -> int | None:
    if not is_layout(layout):
        return None
    for k, dim in enumerate(layout):  # type: ignore[arg-type]
        if any(segment_has_marker(seg) for seg in dim):
            return k
    return None


def _marker_offset(dim: Dim) -> Size | None:
    offset: Size = 0
    for segment in dim:
        if segment_has_marker(segment):
            return offset
        offset = size_add(offset, segment_size(segment))
    return None


def _carries_marker(value: LayoutValue) -> bool:
    if isinstance(value, Pieces):
        return any(_carries_marker(v) for v in value)
    return _marker_axis(value) is not None


# ---------------------------------------------------------------------------------------------
# token-wise checks of one node


def _returns_tensors(node: torch.fx.Node, gm: torch.fx.GraphModule) -> bool:
    value = node_value(node, gm)
    if isinstance(value, (tuple, list)):
        return any(isinstance(v, torch.Tensor) for v in value)
    return isinstance(value, torch.Tensor)


def _tensor_args(node: torch.fx.Node, gm: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [
        x
        for x in input_nodes(node)
        if isinstance(node_value(x, gm), torch.Tensor)
    ]


def _slice_bound_ok(raw: Any, position: Size, lo: Size, hi: Size) -> str | None:
    """A slice bound at ``position`` is fine when it is counted from the side without video."""
    if raw is None:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool):
        return "a symbolic slice bound on the token axis"
    before = concrete(position) is not None and concrete(lo) is not None and position <= lo
    after = concrete(position) is not None and concrete(hi) is not None and position >= hi
    if before and raw >= 0:
        return None
    if after and raw < 0:
        return None
    return f"slice bound {raw} on the token axis would move once video tokens are removed"


def _index_problem(node: torch.fx.Node, layout: Layout, t: int, gm: Any) -> str | None:
    index = node.args[1]
    items = index if isinstance(index, tuple) else (index,)
    consuming = sum(1 for i in items if i is not None and i is not Ellipsis)
    d = 0
    for item in items:
        if item is None:
            continue
        if item is Ellipsis:
            d += len(layout) - consuming
            continue
        if d == t:
            if not isinstance(item, slice):
                return f"{node.name} indexes the token axis"
            if item.step not in (None, 1):
                return f"{node.name} slices the token axis with a step"
            dim = layout[t]
            size = dim_size(dim)
            lo = _marker_offset(dim)
            if lo is None:
                return None
            hi = size_add(lo, segment_size(next(s for s in dim if segment_has_marker(s))))
            for raw, default in ((item.start, 0), (item.stop, size)):
                if raw is None:
                    continue
                position: Size = raw if isinstance(raw, int) and raw >= 0 else (
                    size_add(size, raw) if isinstance(raw, int) else default
                )
                problem = _slice_bound_ok(raw, position, lo, hi)
                if problem is not None:
                    return f"{node.name}: {problem}"
        d += 1
    return None


def _side_carries_tokens(
    node: torch.fx.Node, side: torch.fx.Node, t: int, ndim: int, gm: Any
) -> bool:
    shape = shape_of(node_value(side, gm))
    if shape is None:
        return False
    k = t - (ndim - len(shape))
    return 0 <= k < len(shape) and not size_eq(shape[k], 1)


def _node_problem(
    node: torch.fx.Node,
    layouts: Mapping[torch.fx.Node, LayoutValue],
    on_path: set[torch.fx.Node],
    gm: torch.fx.GraphModule,
) -> str | None:
    """Why ``node`` does not treat the marked tokens independently, or None."""
    name = op_name(node, gm)
    if name == "setitem":
        return _setitem_problem(node, layouts, on_path, gm)
    if mutated_input(node, gm) is not None and name not in op_kinds.ELEMENTWISE:
        return f"{node.name} ({name}) writes into a tensor in place"
    if not _returns_tensors(node, gm):
        return None  # a size query (``sym_size``): recomputed at run time, so it adapts
    marked_inputs = [
        x for x in input_nodes(node) if x in on_path and _carries_marker(layouts.get(x))
    ]
    if not marked_inputs:
        return None  # a text-only branch: text tokens are never reduced
    main = marked_inputs[0]
    if name == "getitem" and isinstance(node_value(main, gm), (tuple, list)):
        return None
    layout = layouts.get(main)
    t = _marker_axis(layout)
    if t is None or not is_layout(layout):
        return None
    ndim = len(layout)
    sides = [x for x in _tensor_args(node, gm) if x not in on_path]
    out = layouts.get(node)
    label = f"{node.name} ({name})"
    t_out = _marker_axis(out)
    if name in op_kinds.ELEMENTWISE and t_out is not None and is_layout(out):
        t, ndim = t_out, len(out)  # type: ignore[arg-type]  # side inputs align with the output

    if name in op_kinds.ELEMENTWISE:
        if name in op_kinds.FIRST_INPUT_ONLY:
            return None
        for side in sides:
            if _side_carries_tokens(node, side, t, ndim, gm):
                return (
                    f"{side.name} varies along the token axis at {label} (e.g. a positional "
                    "table); it would need gathering too"
                )
        return None
    if name in op_kinds.TRAILING_NORMS:
        normalized = arg(node, 1, "normalized_shape", ())
        n = len(normalized) if isinstance(normalized, (list, tuple)) else 1
        return f"{label} normalises over the token axis" if t >= ndim - n else None
    if name in op_kinds.ALONG_DIM:
        dim = arg(node, 1, "dim")
        if isinstance(dim, int) and dim % ndim != t:
            return None
        return f"{label} mixes values along the token axis"
    if name in op_kinds.REDUCTIONS:
        dims = arg(node, 1, "dim")
        if dims is None:
            return f"{label} reduces over the token axis"
        dims = [dims] if isinstance(dims, int) else list(dims)
        if any(not isinstance(d, int) or d % ndim == t for d in dims):
            return f"{label} reduces over the token axis"
        return None
    if name in op_kinds.LINEARS:
        return f"{label} projects along the token axis" if t == ndim - 1 else None
    if name in op_kinds.PERMUTES:
        return None
    if name in op_kinds.RESHAPES:
        return _reshape_problem(node, name, out, label)
    if name == "getitem":
        return _index_problem(node, layout, t, gm)
    if name in op_kinds.SPLITS:
        dim = arg(node, 1 if name == "unbind" else 2, "dim", 0)
        if isinstance(dim, int) and dim % ndim != t:
            return None
        return f"{label} splits the token axis into fixed sizes"
    if name in op_kinds.CATS or name == "stack":
        dim = arg(node, 1, "dim", 0)
        if name != "stack" and isinstance(dim, int) and dim % ndim == t:
            return None
        for side in sides:
            if _side_carries_tokens(node, side, t, ndim, gm):
                return f"{label} joins {side.name}, which has the token axis too"
        return None
    if name in op_kinds.EXPANDS:
        return None
    if name in ("repeat", "repeat_interleave"):
        return f"{label} repeats along the token axis" if _marker_axis(out) is None else None
    return f"{label} is not known to treat tokens independently"


def _setitem_problem(
    node: torch.fx.Node,
    layouts: Mapping[torch.fx.Node, LayoutValue],
    on_path: set[torch.fx.Node],
    gm: torch.fx.GraphModule,
) -> str | None:
    """``target[index] = value``: fine when it writes whole tokens of the marked tensor."""
    target = first_input(node)
    value = node.args[2] if len(node.args) > 2 else None
    layout = layouts.get(target) if isinstance(target, torch.fx.Node) else None
    t = _marker_axis(layout)
    if t is None or not is_layout(layout):
        if isinstance(value, torch.fx.Node) and _carries_marker(layouts.get(value)):
            return f"{node.name} writes the tokens into another tensor"
        return None
    problem = _index_problem(node, layout, t, gm)  # type: ignore[arg-type]
    if problem is not None:
        return problem
    if isinstance(value, torch.fx.Node) and value not in on_path:
        ndim = len(layout)  # type: ignore[arg-type]
        if _side_carries_tokens(node, value, t, ndim, gm):
            return f"{node.name} writes {value.name}, which has the token axis too"
    return None


def _reshape_problem(
    node: torch.fx.Node, name: str, out: LayoutValue, label: str
) -> str | None:
    t_out = _marker_axis(out)
    if t_out is None or not is_layout(out):
        return f"{label} splits or merges the token axis"
    if any(len(strip_units(seg)) > 1 for seg in out[t_out] if segment_has_marker(seg)):
        return f"{label} merges the token axis with another axis"
    if name in ("view", "reshape", "_unsafe_view"):
        shape = rest_args(node) or tuple(node.kwargs.get("shape", ()) or ())
        if len(shape) == len(out):
            size = shape[t_out]
            if isinstance(size, int) and not isinstance(size, bool) and size != -1:
                return f"{label} hard-codes the token count {size}"
    if name in ("view_as", "reshape_as"):
        return f"{label} takes its shape from another tensor"
    return None


# ---------------------------------------------------------------------------------------------
# following the marker


def _follow(
    graph: _Graph,
    env: Mapping[torch.fx.Node, LayoutValue],
    source: torch.fx.Node,
    seed: Layout,
    targets: Sequence[torch.fx.Node],
    target_axis: int | None,
    consumer: torch.fx.Node | None,
) -> _Followed:
    """Follow the marker from ``source`` (laid out as ``seed``) to ``targets``.

    ``consumer`` is the one node outside the path allowed to read the targets (the SDPA for
    q/k/v: the source, the hidden states, is gathered into a copy, so its other readers keep
    full length). None for the output side: the source (the SDPA output) is itself short, and
    the target (the output projection) is restored to full length, so its readers do not
    matter.
    """
    path = graph.between(source, targets)
    if not all(t in path for t in targets):
        return _Followed(f"{source.name} does not feed every target")
    layouts = propagate_over(path, env, {source: seed}, graph.gm)
    on_path = set(path) | {source}
    if consumer is None:  # the source itself (the SDPA output) carries fewer tokens
        problem = _escaping_reader(source, layouts, env, on_path, None, graph.gm)
        if problem is not None:
            return _Followed(problem)
    for node in path:
        problem = _node_problem(node, layouts, on_path, graph.gm)
        if problem is not None:
            return _Followed(problem)
        if _lost_marker(node, layouts, on_path, graph.gm):
            return _Followed(
                f"the token axis is lost at {node.name} ({op_name(node, graph.gm)})"
            )
        if consumer is not None or node not in targets:
            problem = _escaping_reader(node, layouts, env, on_path, consumer, graph.gm)
            if problem is not None:
                return _Followed(problem)
    axis = None
    for target in targets:
        layout = layouts.get(target)
        axis = _marker_axis(layout)
        if axis is None or not is_layout(layout):
            return _Followed(f"the token axis does not reach {target.name}")
        if target_axis is not None and axis != len(layout) + target_axis:
            return _Followed(f"the token axis of {target.name} is dim {axis}, not -2")
    seed_axis = _marker_axis(seed)
    assert seed_axis is not None
    final = layouts[targets[0]]
    assert is_layout(final) and axis is not None
    return _Followed(
        None,
        token_dim=seed_axis,
        video_start=concrete(_marker_offset(final[axis])),
    )


def _escaping_reader(
    node: torch.fx.Node,
    layouts: Mapping[torch.fx.Node, LayoutValue],
    env: Mapping[torch.fx.Node, LayoutValue],
    on_path: set[torch.fx.Node],
    consumer: torch.fx.Node | None,
    gm: torch.fx.GraphModule,
) -> str | None:
    """A reader of the marked ``node`` off the path would see fewer tokens: refuse, unless it
    only takes text out (a text slice counted from the text side) or only asks for sizes."""
    if not _carries_marker(layouts.get(node)):
        return None
    for reader in node.users:
        if reader in on_path or reader is consumer:
            continue
        name = op_name(reader, gm)
        if name != "setitem" and not _returns_tensors(reader, gm):
            continue
        if name in ("getitem", "narrow") or name in op_kinds.SPLITS:
            out = layout_of(reader, lambda x: layouts.get(x, env.get(x)), gm)
            if not _carries_marker(out) and _node_problem(
                reader, {**layouts, reader: out}, on_path, gm
            ) is None:
                continue
        return f"{reader.name} ({name}) also reads {node.name}, whose tokens would be reduced"
    return None


def _lost_marker(
    node: torch.fx.Node,
    layouts: Mapping[torch.fx.Node, LayoutValue],
    on_path: set[torch.fx.Node],
    gm: torch.fx.GraphModule,
) -> bool:
    """Whether ``node`` reads the marker but drops it in a way that is not a text slice."""
    if _carries_marker(layouts.get(node)) or not _returns_tensors(node, gm):
        return False
    marked = [x for x in input_nodes(node) if x in on_path and _carries_marker(layouts.get(x))]
    if not marked:
        return False
    name = op_name(node, gm)
    # a slice or split piece holding only text is fine: text is never reduced
    return name not in ("getitem", "narrow") and name not in op_kinds.SPLITS


def _seeded(
    node: torch.fx.Node,
    env: Mapping[torch.fx.Node, LayoutValue],
    axes: TokenAxes,
    site_index: int,
    dims: Iterable[int],
) -> list[Layout]:
    """Layouts of ``node`` with the marker on each candidate token axis in ``dims``."""
    layout = env.get(node)
    if not is_layout(layout):
        return []
    seeds = []
    for d in dims:
        if not 0 <= d < len(layout):
            continue
        marked = _marked_dim(layout[d], axes, site_index)
        if marked is not None:
            seeds.append(layout[:d] + (marked,) + layout[d + 1 :])
    return seeds


def _candidate_dims(layout: LayoutValue, axes: TokenAxes) -> list[int]:
    """Axes of a tensor that may be its token axis: the one with the video segment, else any
    axis (but the first, the batch) whose size fits."""
    if not is_layout(layout):
        return []
    video = axes.video_segment
    if video is not None:
        for k, dim in enumerate(layout):
            if any(strip_units(seg) == strip_units(video) for seg in dim):
                return [k]
    return list(range(1, len(layout))) + [0]


def _has_video(layout: LayoutValue, axes: TokenAxes) -> bool:
    video = axes.video_segment
    if video is None or not is_layout(layout):
        return False
    return any(
        any(strip_units(seg) == strip_units(video) for seg in dim)
        for dim in layout  # type: ignore[union-attr]
    )


# ---------------------------------------------------------------------------------------------
# entry point


def share_projection_input(
    gm: torch.fx.GraphModule, query: torch.fx.Node, key: torch.fx.Node
) -> bool:
    """Whether ``query`` and ``key`` are projected from the same tensor (self-attention whose
    key token axis lost its labels, e.g. RoPE applied to q only)."""
    graph = _Graph(gm)
    q_inputs = {_linear_input(lin) for lin in _linears_above(graph, query)}
    k_inputs = {_linear_input(lin) for lin in _linears_above(graph, key)}
    return bool((q_inputs & k_inputs) - {None})


def find_projection_paths(
    gm: torch.fx.GraphModule,
    env: Mapping[torch.fx.Node, LayoutValue],
    sdpa: torch.fx.Node,
    qkv: Sequence[torch.fx.Node],
    axes: TokenAxes,
    site_index: int,
) -> ProjectionPaths:
    """Find ``hidden_states`` and ``output_projection`` of a site and check h-reduction.

    Args:
        gm: the graph (read only).
        env: token layouts of all nodes (:func:`.propagate_token_layouts`).
        sdpa: the SDPA node.
        qkv: the SDPA's query, key and value nodes (query only for a cross site).
        axes: the site's token axes (:func:`.read_token_axes`).
        site_index: index of the site (names its marker).
    """
    graph = _Graph(gm)
    hidden = _find_hidden_states(graph, env, sdpa, qkv, axes, site_index)
    output = _find_output_projection(graph, env, sdpa, axes, site_index)
    problem = hidden.problem or output.problem
    return ProjectionPaths(
        hidden_states=hidden.node,
        hidden_states_token_dim=hidden.token_dim,
        hidden_states_video_start=hidden.video_start,
        output_projection=output.node,
        output_video_start=output.video_start,
        h_problem=problem,
    )


@dataclass(frozen=True)
class _Found:
    node: torch.fx.Node | None
    problem: str | None
    token_dim: int | None = None
    video_start: int | None = None


def _find_hidden_states(
    graph: _Graph,
    env: Mapping[torch.fx.Node, LayoutValue],
    sdpa: torch.fx.Node,
    qkv: Sequence[torch.fx.Node],
    axes: TokenAxes,
    site_index: int,
) -> _Found:
    per_target = []
    for x in qkv:
        inputs = [_linear_input(lin) for lin in _linears_above(graph, x)]
        per_target.append({i for i in inputs if i is not None})
    common = set.intersection(*per_target) if per_target else set()
    if not common:
        return _Found(None, "no common input of linear q/k/v projections found")
    candidates = sorted(
        common,
        key=lambda n: (not _has_video(env.get(n), axes), -graph.position[n]),
    )
    problems: list[str] = []
    for candidate in candidates:
        for seed in _seeded(
            candidate, env, axes, site_index, _candidate_dims(env.get(candidate), axes)
        ):
            followed = _follow(
                graph, env, candidate, seed, list(qkv), SDPA_TOKEN_AXIS, consumer=sdpa
            )
            if followed.problem is None:
                start = _start_on(seed, followed.token_dim)
                return _Found(candidate, None, followed.token_dim, start)
            problems.append(followed.problem)
    problem = problems[0] if problems else UNFOLLOWED
    chosen = _unambiguous(candidates, env, axes)
    if chosen is None:
        return _Found(None, problem)
    seeds = _seeded(chosen, env, axes, site_index, _candidate_dims(env.get(chosen), axes))
    if len(seeds) != 1:
        return _Found(chosen, problem)
    # the token axis is known (video factors) or the only one whose size fits
    token_dim = _marker_axis(seeds[0])
    return _Found(chosen, problem, token_dim, _start_on(seeds[0], token_dim))


def _start_on(seed: Layout, token_dim: int | None) -> int | None:
    if token_dim is None:
        return None
    return concrete(_marker_offset(seed[token_dim]))


def _unambiguous(
    candidates: Sequence[torch.fx.Node],
    env: Mapping[torch.fx.Node, LayoutValue],
    axes: TokenAxes,
) -> torch.fx.Node | None:
    with_video = [c for c in candidates if _has_video(env.get(c), axes)]
    if len(with_video) == 1:
        return with_video[0]
    if len(candidates) == 1:
        return candidates[0]
    return None


def _find_output_projection(
    graph: _Graph,
    env: Mapping[torch.fx.Node, LayoutValue],
    sdpa: torch.fx.Node,
    axes: TokenAxes,
    site_index: int,
) -> _Found:
    linears = _linears_below(graph, sdpa)
    if not linears:
        return _Found(None, "no linear output projection found after the attention")
    token_axis = len(_as_layout(env.get(sdpa))) + SDPA_TOKEN_AXIS
    problems: list[str] = []
    for linear in sorted(linears, key=graph.position.__getitem__):
        for seed in _seeded(sdpa, env, axes, site_index, [token_axis]):
            followed = _follow(graph, env, sdpa, seed, [linear], None, consumer=None)
            if followed.problem is None:
                return _Found(linear, None, followed.token_dim, followed.video_start)
            problems.append(followed.problem)
    problem = problems[0] if problems else UNFOLLOWED
    return _Found(_likely_output_projection(linears, env, axes), problem)


def _likely_output_projection(
    linears: Sequence[torch.fx.Node],
    env: Mapping[torch.fx.Node, LayoutValue],
    axes: TokenAxes,
) -> torch.fx.Node | None:
    """The linear after attention that reads the video tokens, when that is unambiguous (by
    grid labels, else by the video length)."""
    inputs = {lin: _linear_input(lin) for lin in linears}
    with_video = [lin for lin, x in inputs.items() if _has_video(env.get(x), axes)]
    if len(with_video) == 1:
        return with_video[0]
    if len(linears) == 1:
        return linears[0]
    if axes.video_tokens is None:
        return None
    sized = [lin for lin, x in inputs.items() if _has_size(env.get(x), axes.video_tokens)]
    return sized[0] if len(sized) == 1 else None


def _as_layout(value: LayoutValue) -> tuple[Any, ...]:
    return value if is_layout(value) else ()  # type: ignore[return-value]


def _has_size(layout: LayoutValue, size: int) -> bool:
    if not is_layout(layout):
        return False
    return any(size_eq(dim_size(dim), size) for dim in layout[1:])  # type: ignore[index]


__all__ = [
    "MAX_WALK_NODES",
    "ProjectionPaths",
    "find_projection_paths",
    "mutated_input",
    "share_projection_input",
]
