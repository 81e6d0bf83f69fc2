"""Video grids of latents patchified by hand (reshape + permute + flatten + ``nn.Linear``, no convolution).

Cosmos cuts ``(B, C, F, H, W)`` latents into patches this way, CogVideoX 1.5 ``(B, F, C, H, W)`` ones
(channels moved last first) and Kandinsky 5 ``(B, F, H, W, C)`` ones. Nothing in such a graph says which
latent axes are frames, height and width: :mod:`asymrnr_compile.analysis.input_grid` finds out which of
them end up on the attention's token axis, and :func:`find_attention_sites` must then report the patch
grid ``(F', H', W')``. Also: joint attention with text first, a graph whose 5-D input never becomes
tokens (no grid, and the reason says so), and unit tests of the probing helpers and of the reshape
rule that keeps a cut grid axis labelled.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import capture_graph
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from asymrnr_compile.analysis import find_attention_sites
from asymrnr_compile.analysis.classify_site import TEXT_ONLY_REASON
from asymrnr_compile.analysis.find_sites import analyse_graph
from asymrnr_compile.analysis.input_grid import grid_axes_of, input_grid_seeds, seeded_layout
from asymrnr_compile.analysis.propagate_layout import is_layout
from asymrnr_compile.analysis.token_layout import PATCH_AXIS, Factor, opaque_dim, reshape_layout, video_factors
from asymrnr_compile.reasons import NO_GRID_FIX, ReasonKind, fix_of, kind_of

B, CHANNELS, DIM, HEADS = 2, 4, 16, 2
HEAD_DIM = DIM // HEADS
TEXT = 5

#: The three latent layouts, and which of their axes are frames, height and width.
LAYOUTS = {
    "cosmos_bcfhw": (1, 2, 3, 4),  # (B, C, F, H, W): C at 1, F H W at 2 3 4
    "cogvideox15_bfchw": (2, 1, 3, 4),  # (B, F, C, H, W)
    "kandinsky5_bfhwc": (4, 1, 2, 3),  # (B, F, H, W, C)
}


def latent_shape(layout: str, grid: tuple[int, int, int], patch: tuple[int, int, int]) -> tuple[int, ...]:
    """Shape of a latent in ``layout`` whose patch grid is ``grid`` under ``patch``."""
    channel_axis, *grid_axes = LAYOUTS[layout]
    shape = [B, 0, 0, 0, 0]
    shape[channel_axis] = CHANNELS
    for axis, g, p in zip(grid_axes, grid, patch):
        shape[axis] = g * p
    return tuple(shape)


class HandPatchifiedDiT(nn.Module):
    """Patch embedding by reshape + permute + flatten + Linear, then one multi-head SDPA attention
    over ``(B, F'*H'*W', D)`` tokens (with ``text``, over ``[text, video]``)."""

    def __init__(self, layout: str, patch: tuple[int, int, int]) -> None:
        super().__init__()
        self.layout, self.patch = layout, patch
        self.patch_embed = nn.Linear(CHANNELS * patch[0] * patch[1] * patch[2], DIM)
        self.to_q = nn.Linear(DIM, DIM)
        self.to_k = nn.Linear(DIM, DIM)
        self.to_v = nn.Linear(DIM, DIM)
        self.to_out = nn.Linear(DIM, DIM)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, F', H', W', C * p_t * p_h * p_w)`` patches of the latent."""
        pt, ph, pw = self.patch
        if self.layout == "cosmos_bcfhw":
            b, c, f, h, w = x.shape
            x = x.reshape(b, c, f // pt, pt, h // ph, ph, w // pw, pw).permute(0, 2, 4, 6, 1, 3, 5, 7)
        elif self.layout == "cogvideox15_bfchw":
            b, f, c, h, w = x.shape
            x = x.permute(0, 1, 3, 4, 2)  # channels last first, as CogVideoX 1.5 does
            x = x.reshape(b, f // pt, pt, h // ph, ph, w // pw, pw, c).permute(0, 1, 3, 5, 7, 2, 4, 6)
        else:
            b, f, h, w, c = x.shape
            x = x.reshape(b, f // pt, pt, h // ph, ph, w // pw, pw, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
        return x.flatten(4)

    def forward(self, x: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        tokens = self.patch_embed(self.patchify(x)).flatten(1, 3)  # (B, F'*H'*W', D)
        if text is not None:
            tokens = torch.cat([text, tokens], dim=1)
        b = tokens.shape[0]
        q = self.to_q(tokens).view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)
        k = self.to_k(tokens).view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)
        v = self.to_v(tokens).view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(b, -1, DIM))


class AveragedLatent(nn.Module):
    """A 5-D latent only averaged into a conditioning vector; attention over the text alone."""

    def __init__(self) -> None:
        super().__init__()
        self.cond = nn.Linear(CHANNELS, DIM)
        self.to_q = nn.Linear(DIM, DIM)
        self.to_k = nn.Linear(DIM, DIM)
        self.to_v = nn.Linear(DIM, DIM)

    def forward(self, x: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        tokens = text + self.cond(x.mean(dim=(2, 3, 4)))[:, None]
        b = tokens.shape[0]
        q = self.to_q(tokens).view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)
        k = self.to_k(tokens).view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)
        v = self.to_v(tokens).view(b, -1, HEADS, HEAD_DIM).transpose(1, 2)
        return F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, -1, DIM)


def _capture(layout: str, grid: tuple[int, int, int], patch: tuple[int, int, int], *, text: bool = False):
    torch.manual_seed(0)
    inputs = {"x": torch.randn(latent_shape(layout, grid, patch))}
    if text:
        inputs["text"] = torch.randn(B, TEXT, DIM)
    gm, _ = capture_graph(HandPatchifiedDiT(layout, patch).eval(), inputs)
    return gm


def _placeholder(gm: torch.fx.GraphModule, name: str) -> torch.fx.Node:
    (node,) = [n for n in gm.graph.nodes if n.op == "placeholder" and name in str(n.target).lower()]
    return node


# ---------------------------------------------------------------------------------------------
# (a) the three layouts


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_hand_patchified_latent_gives_a_self_site_with_the_patch_grid(layout):
    grid, patch = (2, 3, 4), (1, 2, 2)
    gm = _capture(layout, grid, patch)

    (site,) = find_attention_sites(gm)

    assert (site.kind, site.video_tokens, site.grid) == ("self", 2 * 3 * 4, grid)
    assert site.reducible and site.reason is None
    assert site.features == ("q", "kv", "h")
    assert site.query_tokens == site.key_tokens == 24


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_probing_seeds_the_latent_axes_that_become_frames_height_and_width(layout):
    grid, patch = (3, 2, 4), (2, 2, 1)
    gm = _capture(layout, grid, patch)
    latent = _placeholder(gm, "x")
    position = list(gm.graph.nodes).index(latent)
    shape = latent_shape(layout, grid, patch)

    found = input_grid_seeds(gm)

    assert found.reason is None
    assert list(found.seeds) == [latent]
    frames_height_width = LAYOUTS[layout][1:]
    assert found.seeds[latent] == seeded_layout(shape, frames_height_width, position)


# ---------------------------------------------------------------------------------------------
# (b) property: any patch size, grid and layout

#: Each example captures a model with Dynamo (~0.15 s): fewer than the CI profile's default budget,
#: still every layout with many patch and grid sizes.
PROPERTY_EXAMPLES = 60


@settings(deadline=None, max_examples=PROPERTY_EXAMPLES)
@given(
    layout=st.sampled_from(list(LAYOUTS)),
    patch=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 3)),
    grid=st.tuples(st.integers(1, 3), st.integers(2, 4), st.integers(2, 4)),
)
def test_grid_is_recovered_for_every_patch_size_grid_and_layout(layout, patch, grid):
    gm = _capture(layout, grid, patch)  # capture_graph resets Dynamo before and after

    (site,) = find_attention_sites(gm)

    if grid[0] == 1 and patch[0] > 1:
        # one frame patch of several frames: the reshape (p_t) -> (1, p_t) reads like an
        # unsqueeze, so the frame axis cannot be told from the graph: no grid, never a wrong one
        assert site.grid is None and site.video_tokens is None, (site.grid, site.reason)
        return
    assert (site.kind, site.grid) == ("self", grid), (site.kind, site.grid, site.reason)
    assert site.video_tokens == grid[0] * grid[1] * grid[2]
    assert site.reducible


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_one_patch_high_latent_gives_no_grid_rather_than_a_wrong_one(layout):
    """H' = 1: the two remaining grid axes must not be read as (height, width)."""
    gm = _capture(layout, (2, 1, 4), (1, 2, 2))
    (site,) = find_attention_sites(gm)
    assert site.grid in (None, (2, 1, 4)), site.grid


# ---------------------------------------------------------------------------------------------
# (c) joint attention, text first


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_text_first_joint_attention_over_hand_patchified_video(layout):
    grid, patch = (2, 2, 3), (1, 2, 1)
    gm = _capture(layout, grid, patch, text=True)

    (site,) = find_attention_sites(gm)

    assert (site.kind, site.text_position, site.text_tokens) == ("joint", "first", TEXT)
    assert (site.video_tokens, site.grid) == (12, grid)
    assert site.tokens_before == TEXT and site.video_start == TEXT
    assert site.query_tokens == TEXT + 12
    assert site.reducible


# ---------------------------------------------------------------------------------------------
# (d) a 5-D input that is never patchified


def test_averaged_latent_and_text_only_attention_have_no_video_grid():
    torch.manual_seed(0)
    gm, _ = capture_graph(AveragedLatent().eval(), {"x": torch.randn(B, CHANNELS, 2, 4, 4),
                                                    "text": torch.randn(B, TEXT, DIM)})

    analysis = analyse_graph(gm)

    (site,) = analysis.sites
    assert site.video_tokens is None and site.grid is None
    assert (site.kind, site.reducible) == ("unknown", False)
    assert site.reason.startswith(TEXT_ONLY_REASON)
    assert "no video grid in this graph" in site.reason
    # typed: the kind says there is nothing to reduce here, and the fix says how the grid is found
    assert (kind_of(site.reason), fix_of(site.reason)) == (ReasonKind.NO_VIDEO_TOKENS, NO_GRID_FIX)
    assert type(site.to_dict()["reason"]) is str  # reports hold plain text
    assert input_grid_seeds(gm).reason == "no attention's token axis is made of an input's axes"
    assert not any(video_factors(layout) for layout in analysis.layouts.values() if is_layout(layout))
    assert analysis.other_attention == []


# ---------------------------------------------------------------------------------------------
# (e) the helpers


def _probe(axis: int, size: int = 4, source: int = 7) -> Factor:
    return Factor(size, f"in{axis}", source)


def test_grid_axes_of_names_two_or_three_probe_factors_of_one_input_in_axis_order():
    assert grid_axes_of((_probe(2, 3), _probe(3), _probe(4, 5))) == (7, (2, 3, 4))
    assert grid_axes_of((_probe(1), _probe(3), _probe(4))) == (7, (1, 3, 4))
    assert grid_axes_of((_probe(3), _probe(4))) == (7, (3, 4))
    # frames folded into the batch come first as an opaque factor; size-1 factors do not count
    assert grid_axes_of((Factor(2), _probe(3), _probe(4))) == (7, (3, 4))
    assert grid_axes_of((_probe(2), Factor(1), _probe(3), Factor(1, PATCH_AXIS, 7), _probe(4))) == (7, (2, 3, 4))


@pytest.mark.parametrize(
    "segment",
    [
        (_probe(3),),  # one probe factor: not a grid
        (_probe(1), _probe(2), _probe(3), _probe(4)),  # four
        (_probe(3), _probe(2), _probe(4)),  # not in axis order
        (_probe(2), _probe(2), _probe(4)),  # one axis twice
        (_probe(2), _probe(3, source=8), _probe(4)),  # two inputs
        (_probe(2), _probe(3), Factor(5)),  # an opaque factor after the probes
        (_probe(3), _probe(4), Factor(2, PATCH_AXIS, 7)),  # a patch interior after them
        (Factor(4, "f", 0), _probe(3), _probe(4)),  # a labelled factor before them
        (Factor(6), Factor(4, "h", 0), Factor(4, "w", 0)),  # no probe at all
    ],
)
def test_grid_axes_of_refuses_segments_that_are_not_one_inputs_grid(segment):
    assert grid_axes_of(segment) is None


def test_seeded_layout_labels_the_grid_axes_and_leaves_the_others_opaque():
    shape = (2, 16, 3, 8, 6)
    assert seeded_layout(shape, (2, 3, 4), 5) == (
        opaque_dim(2), opaque_dim(16), ((Factor(3, "f", 5),),), ((Factor(8, "h", 5),),), ((Factor(6, "w", 5),),))
    # two axes are height and width; the frames axis stays opaque
    assert seeded_layout(shape, (3, 4), 1) == (
        opaque_dim(2), opaque_dim(16), opaque_dim(3), ((Factor(8, "h", 1),),), ((Factor(6, "w", 1),),))
    # (B, F, H, W, C): frames at 1, channels last
    assert seeded_layout((2, 3, 8, 6, 16), (1, 2, 3), 0) == (
        opaque_dim(2), ((Factor(3, "f", 0),),), ((Factor(8, "h", 0),),), ((Factor(6, "w", 0),),), opaque_dim(16))


def test_reshape_cutting_a_labelled_factor_keeps_the_label_outside_and_marks_the_patch_inside():
    layout = (opaque_dim(2), ((Factor(16, "h", 3),),))

    cut = reshape_layout(layout, (2, 8, 2))

    assert cut == (opaque_dim(2), ((Factor(8, "h", 3),),), ((Factor(2, PATCH_AXIS, 3),),))
    (inner,) = cut[2][0]
    assert not inner.is_video and inner.axis == "p" and inner.source == 3


def test_reshape_cutting_a_probe_factor_keeps_the_probe_label_outside():
    cut = reshape_layout((opaque_dim(2), ((Factor(12, "in3", 0),),)), (2, 4, 3))
    assert cut == (opaque_dim(2), ((Factor(4, "in3", 0),),), ((Factor(3, PATCH_AXIS, 0),),))


def test_reshape_cutting_an_opaque_factor_gives_opaque_parts():
    cut = reshape_layout((opaque_dim(2), opaque_dim(16)), (2, 8, 2))
    assert cut == (opaque_dim(2), opaque_dim(8), opaque_dim(2))
    assert all(f.is_opaque for dim in cut for seg in dim for f in seg)


def test_reshape_on_factor_boundaries_moves_labels_whole():
    tokens = (opaque_dim(2), ((Factor(2, "f", 0), Factor(4, "h", 0), Factor(3, "w", 0)),))
    assert reshape_layout(tokens, (2, 2, 4, 3)) == (
        opaque_dim(2), ((Factor(2, "f", 0),),), ((Factor(4, "h", 0),),), ((Factor(3, "w", 0),),))
