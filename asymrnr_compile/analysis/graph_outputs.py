"""Video layouts that cross a graph break: from one graph's outputs to the next graph's inputs.

Dynamo cuts a model into several graphs where it cannot trace (data-dependent Python control flow,
``nonzero``, ``.item()``): HunyuanVideo 1.5 packs its valid text tokens with boolean indexing,
Framepack trims its text with ``.item()``. The patch embedding (where the video grid is born) then
sits in the first graph and the transformer blocks in a later one, which on its own sees only
``(B, N, C)`` hidden states: its attention looks text-only.

The graphs run in order, and on the first call Dynamo compiles a later graph only after the
earlier one has run, handing the backend the real input tensors. So the layouts can travel with
the tensors:

- :func:`video_output_layouts`: which outputs of a graph carry video grid factors, and their
  layouts (grid sources renumbered below :data:`HANDED_OFF_SOURCE`, so they cannot collide with
  the next graph's own node positions);
- the runtime records each such output tensor with its layout
  (:class:`~asymrnr_compile.runtime.layout_handoff.LayoutHandoff`);
- :func:`handed_off_seeds`: a later graph's inputs that are recorded tensors of the same shape are
  seeded with their layouts, and the analysis propagates them as usual.

Never mutates a graph.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.fx

from asymrnr_compile.analysis.declared_layout import LayoutSeeds
from asymrnr_compile.analysis.propagate_layout import LayoutValue, is_layout
from asymrnr_compile.analysis.token_layout import Factor, Layout, layout_matches, shape_of, video_factors

#: Grid sources of handed-off layouts are ``HANDED_OFF_SOURCE - source`` (graph-born sources are
#: node positions >= 0; declared ones are -2).
HANDED_OFF_SOURCE = -1000


def _renumbered(layout: Layout) -> Layout:
    def factor(f: Factor) -> Factor:
        if f.is_video and f.source is not None and f.source > HANDED_OFF_SOURCE:
            return Factor(f.size, f.axis, HANDED_OFF_SOURCE - abs(f.source))
        return f

    return tuple(tuple(tuple(factor(f) for f in segment) for segment in dim) for dim in layout)


def video_output_layouts(gm: torch.fx.GraphModule, layouts: Mapping[torch.fx.Node, LayoutValue]) -> dict[int, Layout]:
    """``{output index: layout}`` for the outputs of ``gm`` (a flat tuple, as Dynamo's graphs
    return) whose layout holds video grid factors; ``layouts`` is the analysis' layout of every node."""
    output = next((node for node in gm.graph.nodes if node.op == "output"), None)
    if output is None:
        return {}
    values = output.args[0] if output.args else ()
    if not isinstance(values, (tuple, list)):
        values = (values,)
    found: dict[int, Layout] = {}
    for k, value in enumerate(values):
        layout = layouts.get(value) if isinstance(value, torch.fx.Node) else None
        if is_layout(layout) and video_factors(layout):  # type: ignore[arg-type]
            found[k] = _renumbered(layout)  # type: ignore[arg-type]
    return found


def handed_off_seeds(gm: torch.fx.GraphModule, example_inputs: Sequence[Any],
                     layout_of: Callable[[torch.Tensor], Layout | None]) -> LayoutSeeds:
    """Seeds for the placeholders of ``gm`` whose example input (the real tensor Dynamo passes) is
    an earlier graph's output with a recorded layout of the same shape (``layout_of``)."""
    placeholders = [node for node in gm.graph.nodes if node.op == "placeholder"]
    seeds: dict[torch.fx.Node, Layout] = {}
    for node, value in zip(placeholders, example_inputs):
        if not isinstance(value, torch.Tensor):
            continue
        layout = layout_of(value)
        shape = shape_of(value)
        if layout is not None and shape is not None and layout_matches(layout, shape):
            seeds[node] = layout
    if not seeds:
        return LayoutSeeds(reason="no input of this graph is the video output of an earlier graph")
    return LayoutSeeds(seeds)


__all__ = ["HANDED_OFF_SOURCE", "handed_off_seeds", "video_output_layouts"]
