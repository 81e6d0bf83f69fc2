"""The token-layout algebra and the site classification, on hand-made layouts."""

from __future__ import annotations

import sympy

from asymrnr_compile.analysis.classify_site import read_grid, read_token_axes
from asymrnr_compile.analysis.token_layout import (
    Factor,
    broadcast_layout,
    dim_size,
    opaque_dim,
    opaque_layout,
    reshape_layout,
    size_eq,
    slice_dim,
)

SRC = 7
F2, H4, W4 = Factor(2, "f", SRC), Factor(4, "h", SRC), Factor(4, "w", SRC)
VIDEO = (F2, H4, W4)


def conv3d_output(batch: int = 2, channels: int = 16):
    """Layout of a Conv3d patch embedding output (B, C, 2, 4, 4)."""
    return (opaque_dim(batch), opaque_dim(channels), ((F2,),), ((H4,),), ((W4,),))


def test_flatten_conv3d_output_gives_one_video_token_axis():
    tokens = reshape_layout(conv3d_output(), (2, 16, 32))
    assert tokens is not None
    assert tokens[2] == (VIDEO,)


def test_frames_folded_into_batch_come_back_in_front_of_h_w():
    # (B * F, C, h, w) with dim 0 = [B, F] -> (B, F, C, h, w) -> tokens (B, F * h * w, C)
    b, f = Factor(2), Factor(3)
    conv2d = (((b, f),), opaque_dim(16), ((H4,),), ((W4,),))
    unfolded = reshape_layout(conv2d, (2, 3, 16, 4, 4))
    assert unfolded is not None and unfolded[0] == ((b,),) and unfolded[1] == ((f,),)
    permuted = (unfolded[0], unfolded[1], unfolded[3], unfolded[4], unfolded[2])
    tokens = reshape_layout(permuted, (2, 48, 16))
    assert tokens is not None and tokens[1] == ((f, H4, W4),)
    assert read_grid(tokens[1][0]) == ((3, 4, 4), False)


def test_unit_frame_factor_stays_with_the_token_axis():
    f1 = Factor(1, "f", SRC)
    layout = (opaque_dim(1), opaque_dim(20), ((f1,),), ((H4,),), ((W4,),))
    tokens = reshape_layout(layout, (1, 20, 16))
    assert tokens is not None and tokens[2] == ((f1, H4, W4),)
    assert read_grid(tokens[2][0]) == ((1, 4, 4), False)


def test_head_split_splits_the_channel_factor_only():
    layout = (opaque_dim(2), (VIDEO,), opaque_dim(16))
    heads = reshape_layout(layout, (2, 32, 2, 8))
    assert heads is not None and heads[1] == (VIDEO,)
    assert [dim_size(d) for d in heads] == [2, 32, 2, 8]


def test_concatenated_axis_moves_whole_and_cannot_be_split():
    joint = (opaque_dim(2), ((Factor(8),), VIDEO), opaque_dim(16))
    moved = reshape_layout(joint, (2, 40, 2, 8))
    assert moved is not None and moved[1] == joint[1]
    assert reshape_layout(joint, (2, 5, 8, 16)) is None


def test_symbolic_text_length():
    u0 = sympy.Symbol("u0", integer=True, positive=True)
    joint = (opaque_dim(1), opaque_dim(2), (VIDEO, (Factor(u0),)), opaque_dim(8))
    assert size_eq(dim_size(joint[2]), u0 + 32)
    moved = reshape_layout(joint, (1, 2, u0 + 32, 8))
    assert moved == joint
    axes = read_token_axes(joint, joint)
    assert (axes.kind, axes.text_position, axes.text_tokens, axes.video_tokens) == (
        "joint", "last", None, 32,
    )


def test_slices_select_whole_segments_only():
    joint = ((Factor(8),), VIDEO)
    assert slice_dim(joint, 8, 40) == (VIDEO,)
    assert slice_dim(joint, 0, 8) == ((Factor(8),),)
    assert slice_dim(joint, 4, 40) is None
    assert slice_dim((VIDEO,), 0, 16) is None


def test_broadcast_prefers_video_then_the_full_shape_input():
    data = (opaque_dim(2), opaque_dim(32), opaque_dim(8))
    table = ((VIDEO,), opaque_dim(8))  # a (N, d) positional table
    out = broadcast_layout((2, 32, 8), [(data, (2, 32, 8)), (table, (32, 8))])
    assert out[1] == (VIDEO,)
    joint = (opaque_dim(2), ((Factor(8),), (Factor(24),)), opaque_dim(8))
    pos_embed = opaque_layout((1, 32, 8))
    out = broadcast_layout((2, 32, 8), [(pos_embed, (1, 32, 8)), (joint, (2, 32, 8))])
    assert out[1] == joint[1]


def test_read_grid():
    assert read_grid(VIDEO) == ((2, 4, 4), False)
    assert read_grid((H4, W4)) == ((1, 4, 4), False)  # per-frame spatial attention
    assert read_grid((Factor(4, "f", SRC),)) == (None, True)  # temporal attention
    assert read_grid((W4, H4)) == (None, False)  # not row-major (f, h, w)
    assert read_grid((F2, H4, Factor(4, "w", SRC + 1))) == (None, False)  # two sources


def _qk(token_dim):
    return (opaque_dim(2), opaque_dim(2), token_dim, opaque_dim(8))


def test_classification():
    video = _qk((VIDEO,))
    text = _qk(((Factor(6),),))
    first = _qk(((Factor(6),), VIDEO))
    last = _qk((VIDEO, (Factor(6),)))

    assert read_token_axes(video, video).kind == "self"
    axes = read_token_axes(first, first)
    assert (axes.kind, axes.text_position, axes.text_tokens, axes.video_tokens) == (
        "joint", "first", 6, 32,
    )
    assert read_token_axes(last, last).text_position == "last"
    assert read_token_axes(video, text).kind == "cross"
    unknown = read_token_axes(text, text)
    assert unknown.kind == "unknown" and unknown.reason.startswith("text-only attention")
    both_sides = _qk(((Factor(3),), VIDEO, (Factor(3),)))
    # other tokens on both sides (Framepack: clean latents before, text after): the middle span is reduced
    middle = read_token_axes(both_sides, both_sides)
    assert (middle.kind, middle.text_position, middle.tokens_before, middle.text_tokens) == ("joint", "both", 3, 6)
    assert middle.reducible
    temporal = _qk(((Factor(4, "f", SRC),),))
    axes = read_token_axes(temporal, temporal)
    assert axes.reason == "only 4 tokens on the attention axis (temporal attention)"
    # video on another dim than -2: the token dimension is not where SDPA attends
    wrong = (opaque_dim(2), (VIDEO,), opaque_dim(6), opaque_dim(8))
    assert read_token_axes(wrong, wrong).reason.startswith("attention along another axis than the video grid's")
    assert "token dimension" in read_token_axes(None, None).reason


def test_a_zero_length_piece_of_a_concatenation_leaves_no_segment():
    """Wan VACE pads its control tokens with a zero-length tensor: the token axis stays one video segment."""
    from asymrnr_compile.analysis.token_layout import concat_dims

    video = ((Factor(2, "f", SRC), Factor(8, "h", SRC), Factor(8, "w", SRC)),)
    assert concat_dims([video, opaque_dim(0)]) == video
    assert concat_dims([opaque_dim(3), video]) == ((Factor(3),),) + video
    assert concat_dims([opaque_dim(0), opaque_dim(0)]) == opaque_dim(0)
