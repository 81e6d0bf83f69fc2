"""Read an attention site's kind and token layout from the layouts of its query and key.

At the SDPA node the token axis of query and key is ``-2``. Its layout (see
:mod:`.token_layout`) is a concatenation of segments; exactly one of them may hold video grid
factors. From that:

- query and key axes equal, only video -> ``"self"``;
- query and key axes equal, other segments (text, audio, other video segments) before and/or
  after the video -> ``"joint"`` with ``text_position`` (``"first"``, ``"last"`` or ``"both"``),
  ``text_tokens`` (all of them) and ``tokens_before`` (the start of the video span);
- query axis only video, key axis different -> ``"cross"`` (only queries can be reduced);
- no video on the query axis -> ``"unknown"``, not reducible, with a reason.

Of several video segments on the query axis (history or clean-latent frames before the frames
being denoised) the largest with a recoverable grid is reduced; the others stay whole, like text.

The grid ``(F, H, W)`` is read from the video segment's factors: ``h`` and ``w`` of one source
last, and before them the frames (the source's ``f`` axis, or an opaque factor that was
folded into the batch of a per-frame Conv2d). A segment with frames but no spatial axis is a
temporal attention, which is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from asymrnr_compile.analysis.site import SiteKind, TextPosition
from asymrnr_compile.analysis.token_layout import (
    Dim,
    Layout,
    Segment,
    Size,
    concrete,
    dim_size,
    product,
    segment_is_video,
    segment_size,
    size_add,
    strip_units,
)
from asymrnr_compile.reasons import DYNAMIC_FALSE_FIX, Reason, ReasonKind

#: Token axis of query, key and value at an SDPA call.
SDPA_TOKEN_AXIS = -2
#: Start of the reason of a site whose query and key hold no video tokens.
TEXT_ONLY_REASON = "text-only attention"


@dataclass(frozen=True)
class TokenAxes:
    """What the query/key token axes of one site hold (see the module docstring)."""

    kind: SiteKind
    text_position: TextPosition | None = None
    text_tokens: int | None = None
    video_tokens: int | None = None
    grid: tuple[int, int, int] | None = None
    video_segment: Segment | None = None
    reason: Reason | None = None
    tokens_before: int = 0

    @property
    def reducible(self) -> bool:
        return self.reason is None


def read_grid(segment: Segment) -> tuple[tuple[int, int, int] | None, bool]:
    """``(grid, temporal)`` of a video segment.

    ``grid`` is ``(F, H, W)`` when the segment is ``[frames..., h, w]`` of one source (None
    otherwise); ``temporal`` is True when the segment has frames but no spatial axis.
    """
    factors = strip_units(segment)
    video = [f for f in factors if f.is_video]
    sources = {f.source for f in video}
    axes = {f.axis for f in video}
    if not ({"h", "w"} & axes):
        return None, bool(video)
    if len(sources) != 1 or len(factors) < 2:
        return None, False
    h, w = factors[-2], factors[-1]
    if (h.axis, w.axis) != ("h", "w"):
        return None, False
    frames = factors[:-2]
    if any(not (f.is_opaque or f.axis == "f") for f in frames):
        return None, False  # another grid axis, a patch interior or a marker among the frames
    sizes = (concrete(product(f.size for f in frames)), concrete(h.size), concrete(w.size))
    if any(s is None for s in sizes):
        return None, False
    return (int(sizes[0]), int(sizes[1]), int(sizes[2])), False  # type: ignore[arg-type]


def _token_dim(layout: Layout | None) -> Dim | None:
    if layout is None or len(layout) < 2:
        return None
    return layout[SDPA_TOKEN_AXIS]


def _video_elsewhere(layout: Layout | None) -> int | None:
    if layout is None:
        return None
    for k, dim in enumerate(layout):
        if k == len(layout) + SDPA_TOKEN_AXIS:
            continue
        if any(segment_is_video(seg) for seg in dim):
            return k
    return None


def _text_length(segments: tuple[Segment, ...]) -> int | None:
    """Number of tokens in ``segments``, or None when symbolic."""
    total: Size = 0
    for seg in segments:
        total = size_add(total, segment_size(seg))
    return concrete(total)


def read_token_axes(query: Layout | None, key: Layout | None) -> TokenAxes:
    """Classify a site from the layouts of its query and key (see the module docstring)."""
    q_dim, k_dim = _token_dim(query), _token_dim(key)
    if q_dim is None or k_dim is None:
        return TokenAxes("unknown", reason=Reason("could not find the token dimension (no shapes)"))
    video_at = [k for k, seg in enumerate(q_dim) if segment_is_video(seg)]
    if not video_at:
        other = _video_elsewhere(query)
        n_q = concrete(dim_size(q_dim))
        if other is not None:
            count = "a symbolic number of" if n_q is None else str(n_q)
            return TokenAxes(
                "unknown",
                reason=Reason(f"attention along another axis than the video grid's: the grid's tokens are on query "
                              f"axis {other}, the attention axis holds {count} tokens (e.g. temporal attention over "
                              "each position's frames); not reduced", ReasonKind.NOT_APPLICABLE),
            )
        if not any(segment_is_video(seg) for seg in k_dim):
            count = "a symbolic number of" if n_q is None else str(n_q)
            plural = "" if n_q == 1 else "s"
            return TokenAxes(
                "unknown",
                reason=Reason(f"{TEXT_ONLY_REASON} (no video tokens; {count} query token{plural})",
                              ReasonKind.NO_VIDEO_TOKENS),
            )
        return TokenAxes("unknown", reason=Reason("queries are not video tokens (keys are): other tokens attending "
                                                  "to the video, whose keys and values this backend does not reduce",
                                                  ReasonKind.NOT_APPLICABLE))
    if len(video_at) > 1:
        primary = _primary_video_segment(q_dim, video_at)
        if primary is None:
            return TokenAxes("unknown", reason=Reason("several separate video segments on the query axis, and no "
                                                      "single largest one with a recoverable grid"))
        m = primary
    else:
        m = video_at[0]
    segment = q_dim[m]
    before, after = q_dim[:m], q_dim[m + 1 :]
    n_video = concrete(segment_size(segment))
    grid, temporal = read_grid(segment)
    tokens_before = _text_length(before)
    if before and tokens_before is None:
        return TokenAxes("unknown", video_tokens=n_video, grid=grid, video_segment=segment,
                         reason=Reason("a symbolic number of tokens precedes the video tokens",
                                       fix=DYNAMIC_FALSE_FIX))
    if _same_axis(q_dim, k_dim):
        if before or after:
            kind: SiteKind = "joint"
            position: TextPosition | None = "both" if before and after else "first" if before else "last"
            text_tokens = _text_length(before + after)
        else:
            kind, position, text_tokens = "self", None, None
    elif before or after:
        return TokenAxes(
            "unknown",
            video_tokens=n_video,
            grid=grid,
            video_segment=segment,
            reason=Reason("queries mix text and video but the keys are a different sequence"),
        )
    else:
        kind, position, text_tokens = "cross", None, None
    result = TokenAxes(kind, position, text_tokens, n_video, grid, segment, tokens_before=tokens_before or 0)
    if temporal:
        return _unreducible(result, Reason(f"only {n_video} tokens on the attention axis (temporal attention)",
                                           ReasonKind.NOT_APPLICABLE))
    if n_video is None:
        return _unreducible(result, Reason("the number of video tokens is symbolic", fix=DYNAMIC_FALSE_FIX))
    return result


def _unreducible(axes: TokenAxes, reason: Reason) -> TokenAxes:
    return replace(axes, reason=reason)


def _primary_video_segment(dim: Dim, video_at: list[int]) -> int | None:
    """Of several video segments on one token axis (Helios' history frames before the current
    ones, Framepack's clean latents), the one to reduce: the largest with a recoverable
    spatial grid; None when there is no such segment or two tie. The others stay whole, like
    text."""
    sizes: dict[int, int] = {}
    for k in video_at:
        grid, temporal = read_grid(dim[k])
        size = concrete(segment_size(dim[k]))
        if grid is not None and not temporal and size is not None:
            sizes[k] = size
    if not sizes:
        return None
    largest = max(sizes.values())
    best = [k for k, size in sizes.items() if size == largest]
    return best[0] if len(best) == 1 else None


def _same_axis(a: Dim, b: Dim) -> bool:
    """Whether two token axes are the same sequence (segment by segment)."""
    if len(a) != len(b):
        return False
    for sa, sb in zip(a, b):
        if segment_is_video(sa) or segment_is_video(sb):
            if strip_units(sa) != strip_units(sb):
                return False
        elif concrete(segment_size(sa)) != concrete(segment_size(sb)) or (
            concrete(segment_size(sa)) is None and segment_size(sa) != segment_size(sb)
        ):
            return False
    return True


__all__ = ["SDPA_TOKEN_AXIS", "TEXT_ONLY_REASON", "TokenAxes", "read_grid", "read_token_axes"]
