"""Video grids of inputs patchified without a convolution: which input axes become the token grid.

A convolution patch embedding gives birth to the grid axes (:mod:`.propagate_layout`). Many video
transformers cut patches by hand instead: CogVideoX 1.5, Cosmos and Kandinsky 5 reshape the
latent into ``(..., F', p_t, H', p_h, W', p_w, ...)``, permute the patch interiors next to the
channels, flatten them and apply an ``nn.Linear``. Nothing in the graph says which axes of the
latent are frames, height and width (``(B, C, F, H, W)``, ``(B, F, C, H, W)`` and
``(B, F, H, W, C)`` all occur), but the graph says which of them end up on the attention's token
axis, in which order. :func:`input_grid_seeds` finds out in one probing pass:

1. every floating-point input of 4 or 5 axes that is not a lifted parameter (a candidate latent)
   gets a *probe* layout: axis ``k`` (``k >= 1``) is one factor labelled ``"in{k}"``;
2. layouts are propagated as usual; a reshape that cuts a probe factor keeps its label on the
   outer part (the patch grid) and labels the inner part a patch interior, so after the patch
   embedding the token axis of a probed latent reads, e.g., ``[in1 in3 in4]`` (CogVideoX 1.5);
3. an attention whose query token axis holds a segment made of probe factors of one input, in
   increasing axis order (after any opaque factors, frames folded into the batch), one for each
   axis but the batch and the channels (3 for a video latent, 2 for a batch of frames), names
   that input's frame, height and width axes (height and width only, for frames). A grid axis
   of one patch (a reshape cannot tell that from an unsqueeze) leaves the segment a factor
   short: no grid, rather than a wrong one;
4. the input is then seeded with a layout whose named axes are the grid axes ``f``, ``h``, ``w``
   (source: the input's position), and :func:`~.find_sites.find_attention_sites` analyses the
   graph again from those seeds.

Before: ``hidden_states (B, C, F, H, W)`` opaque, every attention "text-only". After:
``([B], [C], [f F], [h H], [w W])``, and the token axis ``[f F/p_t h H/p_h w W/p_w]`` carries the
patch grid. Never mutates the graph; only run where the ordinary pass finds no video tokens.
"""

from __future__ import annotations

import torch
import torch.fx

from asymrnr_compile.analysis.classify_site import SDPA_TOKEN_AXIS
from asymrnr_compile.analysis.declared_layout import LIFTED_PREFIX, LayoutSeeds
from asymrnr_compile.analysis.fx_nodes import node_value
from asymrnr_compile.analysis.propagate_layout import LayoutValue, is_layout, propagate_token_layouts
from asymrnr_compile.analysis.sdpa import is_sdpa, sdpa_arguments
from asymrnr_compile.analysis.token_layout import (
    GRID_AXES,
    PROBE_PREFIX,
    Factor,
    Layout,
    Segment,
    opaque_dim,
    shape_of,
    strip_units,
)

#: Ranks of the inputs probed: a batch of videos, ``(B, C, F, H, W)`` and its permutations, or of
#: frames ``(B, C, H, W)``.
PROBED_RANKS = (4, 5)


def probe_layout(shape: tuple[int, ...], source: int) -> Layout:
    """The probe layout of an input of ``shape``: the batch axis opaque, axis ``k >= 1`` one factor
    labelled ``"in{k}"`` of ``source``."""
    return (opaque_dim(shape[0]),) + tuple(((Factor(size, f"{PROBE_PREFIX}{k}", source),),)
                                           for k, size in enumerate(shape) if k > 0)


def _candidates(gm: torch.fx.GraphModule) -> dict[torch.fx.Node, tuple[int, ...]]:
    found: dict[torch.fx.Node, tuple[int, ...]] = {}
    for node in gm.graph.nodes:
        if node.op != "placeholder" or str(node.target).lower().startswith(LIFTED_PREFIX):
            continue
        value = node_value(node, gm)
        if not isinstance(value, torch.Tensor) or not value.is_floating_point() or value.dim() not in PROBED_RANKS:
            continue
        shape = shape_of(value)
        if shape is not None and all(isinstance(size, int) for size in shape):
            found[node] = shape  # type: ignore[assignment]
    return found


def grid_axes_of(segment: Segment) -> tuple[int, tuple[int, ...]] | None:
    """``(source, input axes)`` when ``segment`` is 2 or 3 probe factors of one input in increasing
    axis order, optionally after opaque factors; else None."""
    factors = strip_units(segment)
    probes = [f for f in factors if f.is_probe]
    if len(probes) not in (2, 3) or factors[-len(probes):] != tuple(probes):
        return None
    if any(not f.is_opaque for f in factors[: -len(probes)]):
        return None
    if len({f.source for f in probes}) != 1:
        return None
    axes = tuple(int(f.axis[len(PROBE_PREFIX):]) for f in probes)  # type: ignore[index]
    if list(axes) != sorted(set(axes)):
        return None
    return probes[0].source, axes  # type: ignore[return-value]


def seeded_layout(shape: tuple[int, ...], axes: tuple[int, ...], source: int) -> Layout:
    """The layout of an input whose ``axes`` are its grid's (frames, height, width), or (height,
    width) for two; every other axis opaque."""
    labels = dict(zip(axes, GRID_AXES[3 - len(axes):]))
    return tuple(((Factor(size, labels[k], source),),) if k in labels else opaque_dim(size)
                 for k, size in enumerate(shape))


def input_grid_seeds(gm: torch.fx.GraphModule) -> LayoutSeeds:
    """Seeds naming the grid axes of the inputs that a hand-written patch embedding turns into an
    attention's video tokens (see the module docstring); ``reason`` says why there are none."""
    candidates = _candidates(gm)
    if not candidates:
        return LayoutSeeds(reason="no input of 4 or 5 axes that could be a video latent")
    positions = {node: k for k, node in enumerate(gm.graph.nodes)}
    by_source = {positions[node]: node for node in candidates}
    env = propagate_token_layouts(gm, {node: probe_layout(shape, positions[node])
                                       for node, shape in candidates.items()})
    named: dict[torch.fx.Node, tuple[int, ...]] = {}
    for node in gm.graph.nodes:
        if not is_sdpa(node):
            continue
        query = sdpa_arguments(node)["query"]
        layout: LayoutValue = env.get(query) if isinstance(query, torch.fx.Node) else None
        if not is_layout(layout) or len(layout) < 2:  # type: ignore[arg-type]
            continue
        for segment in layout[SDPA_TOKEN_AXIS]:  # type: ignore[index]
            found = grid_axes_of(segment)
            if found is None:
                continue
            source, axes = found
            # every axis but the batch and the channels: 3 for a video (B, C, F, H, W) in any order,
            # 2 for frames (B, C, H, W). Fewer is ambiguous: with a one-patch-high latent the
            # remaining (f, w) would read as (h, w), so no grid rather than a wrong one.
            if len(axes) == len(candidates[by_source[source]]) - 2:
                named[by_source[source]] = axes
    if not named:
        return LayoutSeeds(reason="no attention's token axis is made of an input's axes")
    return LayoutSeeds({node: seeded_layout(candidates[node], axes, positions[node]) for node, axes in named.items()})


__all__ = ["PROBED_RANKS", "grid_axes_of", "input_grid_seeds", "probe_layout", "seeded_layout"]
