"""Token layouts declared from outside a graph: the video grid of a transformer block compiled alone.

Under regional compilation (each repeated transformer block compiled on its own, as diffusers'
``compile_repeated_blocks`` does) a block's Dynamo graph has no patch embedding and no
positional grid: nothing in it gives birth to video grid axes (:mod:`.propagate_layout`), so every
attention looks text-only. The grid is known outside the graph, from the whole model's input
(:mod:`asymrnr_compile.regional`). :func:`declared_layout_seeds` turns such a
:class:`DeclaredLayout` into starting layouts for the graph's inputs, which
:func:`~asymrnr_compile.analysis.find_sites.find_attention_sites` propagates as usual:

- an input (not a lifted parameter or buffer) with exactly one axis of ``F * H * W`` elements,
  not counting its last axis (the features), holds the video tokens on that axis, in row-major
  ``(f, h, w)`` order (``(B, N, C)`` hidden states, ``(N, d)`` or ``(B, N, 1, d)`` rotary
  tables), also when the model's width happens to equal ``N``; an input whose only such axis is
  the last one holds them there;
- every other input stays opaque (text hidden states, the time embedding, masks).

Nothing is seeded (with a reason) when the text has as many tokens as the video, since an input
of that length could then be either, or when no input has the video's length. Never mutates the
graph.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.fx

from asymrnr_compile.analysis.fx_nodes import node_value
from asymrnr_compile.analysis.token_layout import Factor, Layout, opaque_dim, shape_of

Grid = tuple[int, int, int]

#: Source id of declared grid factors (graph-born sources use node positions, which are >= 0).
DECLARED_SOURCE = -2

#: Prefix (lower-cased) of the placeholders Dynamo lifts for the module's own parameters and
#: buffers (``L_self_modules_attn1_modules_to_q_parameters_weight_``): never token inputs.
LIFTED_PREFIX = "l_self_"


@dataclass(frozen=True)
class DeclaredLayout:
    """Where the video tokens are, as seen from outside the graph.

    Attributes:
        grid: the video token grid ``(F, H, W)`` after patching (positive ints).
        text_tokens: how many text tokens the model was given, or None when it has no text
            input; only used to refuse ambiguous lengths.
    """

    grid: Grid
    text_tokens: int | None = None

    def __post_init__(self) -> None:
        if (not isinstance(self.grid, tuple) or len(self.grid) != 3
                or any(isinstance(g, bool) or not isinstance(g, int) or g < 1 for g in self.grid)):
            raise ValueError(f"grid must be a tuple of three positive ints (F, H, W), got {self.grid!r}")
        if self.text_tokens is not None and (isinstance(self.text_tokens, bool) or not isinstance(self.text_tokens, int)
                                             or self.text_tokens < 0):
            raise ValueError(f"text_tokens must be a non-negative int or None, got {self.text_tokens!r}")

    @property
    def video_tokens(self) -> int:
        frames, height, width = self.grid
        return frames * height * width


@dataclass(frozen=True)
class LayoutSeeds:
    """The starting layouts of a graph's inputs, or why there are none.

    Attributes:
        seeds: ``{placeholder: layout}`` for the inputs that hold the video tokens.
        reason: None when something was seeded, else why not (for the report and the log).
    """

    seeds: dict[torch.fx.Node, Layout] = field(default_factory=dict)
    reason: str | None = None


def video_layout(shape: tuple[int, ...], axis: int, grid: Grid) -> Layout:
    """The layout of a tensor of ``shape`` whose ``axis`` holds the ``grid``'s tokens in
    row-major ``(f, h, w)`` order (every other axis opaque)."""
    frames, height, width = grid
    tokens = (Factor(frames, "f", DECLARED_SOURCE), Factor(height, "h", DECLARED_SOURCE),
              Factor(width, "w", DECLARED_SOURCE))
    return tuple((tokens,) if k == axis else opaque_dim(size) for k, size in enumerate(shape))


def declared_layout_seeds(gm: torch.fx.GraphModule, declared: DeclaredLayout) -> LayoutSeeds:
    """Starting layouts of ``gm``'s inputs under ``declared`` (see the module docstring)."""
    n = declared.video_tokens
    if declared.text_tokens == n:
        return LayoutSeeds(reason=f"the text has as many tokens as the video ({n}): the graph's inputs "
                                  "cannot be told apart")
    seeds: dict[torch.fx.Node, Layout] = {}
    for node in gm.graph.nodes:
        if node.op != "placeholder" or str(node.target).lower().startswith(LIFTED_PREFIX):
            continue
        value = node_value(node, gm)
        shape = shape_of(value) if isinstance(value, torch.Tensor) else None
        if shape is None or not all(isinstance(size, int) for size in shape):
            continue
        axes = [k for k, size in enumerate(shape) if size == n]
        if len(axes) > 1:
            # the last axis is the features' ((B, N, C), (N, d), (B, N, 1, d)): a width equal to the
            # video's token count must not hide the token axis
            axes = axes[:-1] if axes[-1] == len(shape) - 1 else axes
        if len(axes) == 1:
            seeds[node] = video_layout(shape, axes[0], declared.grid)  # type: ignore[arg-type]
    if not seeds:
        return LayoutSeeds(reason=f"no input of the graph has the {n} video tokens of grid {declared.grid}")
    return LayoutSeeds(seeds)


__all__ = ["DECLARED_SOURCE", "DeclaredLayout", "LayoutSeeds", "declared_layout_seeds", "video_layout"]
