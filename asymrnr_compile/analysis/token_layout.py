"""Token layouts: what each axis of a tensor is made of, and how layout ops transform it.

A :data:`Layout` describes a tensor of ``ndim`` axes as a tuple of :data:`Dim`. Each axis is a
concatenation of :data:`Segment` (usually one; several after ``torch.cat`` on that axis), and
each segment is a row-major product of :class:`Factor`. A factor is either *opaque* (batch,
channels, text tokens, anything we do not track) or one axis (``"f"``, ``"h"``, ``"w"``) of a
video token grid produced by one *source* (a patch-embedding convolution or a coordinate
meshgrid).

Examples, for the video tokens of a Conv3d patch embedding with grid ``(2, 4, 4)``::

    conv3d output (B, C, 2, 4, 4)   ->  ([B], [C], [f2], [h4], [w4])
    .flatten(2).transpose(1, 2)     ->  ([B], [f2 h4 w4], [C])           (B, 32, C)
    torch.cat([text, video], 1)     ->  ([B], [T8] ++ [f2 h4 w4], [C])   (B, 40, C)

Frames folded into the batch of a per-frame Conv2d come back as an opaque factor in front of
``h`` and ``w`` (``[F2 h4 w4]``), which is how the grid of CogVideoX and Mochi is recovered.

Sizes are ``int`` or, for symbolic shapes, ``sympy.Expr`` (see :func:`as_size`). Everything here
is pure: layouts are immutable tuples, and functions return ``None`` when a transformation is
not understood (the caller then falls back to an opaque layout).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sympy
import torch

Size = int | sympy.Expr

#: Labels of the three axes of a video token grid, in row-major token order.
GRID_AXES = ("f", "h", "w")
#: Label of the marker factor used to follow one token axis through a sub-graph
#: (see :mod:`asymrnr_compile.analysis.projection_paths`).
MARKER_AXIS = "T"
#: Label of the inner part of a labelled factor that a reshape splits in two (a patch's interior:
#: ``h16 -> (h4, p4)`` when 4 x 4 patches are cut); never a grid axis, never frames.
PATCH_AXIS = "p"
#: Prefix of the labels of a probed input's axes (``"in2"``: axis 2 of the probed input), used to
#: find which axes of a video input become the token grid (:mod:`.input_grid`).
PROBE_PREFIX = "in"


@dataclass(frozen=True)
class Factor:
    """One factor of an axis.

    Attributes:
        size: number of elements (``int`` or ``sympy.Expr``).
        axis: ``"f"``, ``"h"``, ``"w"`` for an axis of a video grid, :data:`MARKER_AXIS` for a
            followed token axis, or None for an opaque factor.
        source: id of the video source (or marker) the axis belongs to; None when opaque.
    """

    size: Size
    axis: str | None = None
    source: int | None = None

    @property
    def is_video(self) -> bool:
        return self.axis in GRID_AXES

    @property
    def is_marker(self) -> bool:
        return self.axis == MARKER_AXIS

    @property
    def is_opaque(self) -> bool:
        return self.axis is None

    @property
    def is_probe(self) -> bool:
        return self.axis is not None and self.axis.startswith(PROBE_PREFIX)


Segment = tuple[Factor, ...]
Dim = tuple[Segment, ...]
Layout = tuple[Dim, ...]


# ---------------------------------------------------------------------------------------------
# sizes


def as_size(value: object) -> Size | None:
    """A shape entry (``int``, ``torch.SymInt``, sympy) as ``int`` or ``sympy.Expr``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, torch.SymInt):
        node = value.node
        maybe_int = getattr(node, "maybe_as_int", None)
        concrete = maybe_int() if maybe_int is not None else None
        if concrete is not None:
            return int(concrete)
        expr = getattr(node, "expr", None)
        return expr if isinstance(expr, sympy.Expr) else None
    if isinstance(value, sympy.Expr):
        return int(value) if value.is_Integer else value
    return None


def shape_of(value: object) -> tuple[Size, ...] | None:
    """Shape of a (fake) tensor as sizes, or None when not a tensor or not understood."""
    if not isinstance(value, torch.Tensor):
        return None
    sizes = tuple(as_size(s) for s in value.shape)
    if any(s is None for s in sizes):
        return None
    return sizes  # type: ignore[return-value]


def size_eq(a: Size, b: Size) -> bool:
    """Whether two sizes are provably equal."""
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    try:
        return sympy.expand(sympy.sympify(a) - sympy.sympify(b)) == 0
    except Exception:  # noqa: BLE001 - sympy may fail on odd expressions: "not provably equal"
        return False


def size_mul(a: Size, b: Size) -> Size:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    return sympy.expand(sympy.sympify(a) * sympy.sympify(b))


def size_add(a: Size, b: Size) -> Size:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    return sympy.expand(sympy.sympify(a) + sympy.sympify(b))


def size_ratio(whole: Size, part: Size) -> Size | None:
    """``whole / part`` when it is provably a positive integer (an ``int``, or an integer-valued
    expression for symbolic sizes such as ``(s0//2)**2``), else None."""
    if isinstance(whole, int) and isinstance(part, int):
        if part > 0 and whole % part == 0:
            return whole // part
        return None
    try:
        ratio = sympy.simplify(sympy.sympify(whole) / sympy.sympify(part))
    except Exception:  # noqa: BLE001
        return None
    if ratio.is_Integer:
        return int(ratio) if int(ratio) > 0 else None
    if ratio.is_integer and ratio.is_negative is not True:
        return ratio  # shape sizes are never negative; FloorDiv(s0, 2) is "maybe zero" to sympy
    return None


def product(sizes: Iterable[Size]) -> Size:
    total: Size = 1
    for s in sizes:
        total = size_mul(total, s)
    return total


def concrete(size: Size | None) -> int | None:
    """``size`` as an ``int``, or None when symbolic."""
    if isinstance(size, int):
        return size
    if isinstance(size, sympy.Expr) and size.is_Integer:
        return int(size)
    return None


# ---------------------------------------------------------------------------------------------
# constructors and queries


def opaque_dim(size: Size) -> Dim:
    return ((Factor(size),),)


def opaque_layout(shape: Sequence[Size]) -> Layout:
    return tuple(opaque_dim(s) for s in shape)


def segment_size(segment: Segment) -> Size:
    return product(f.size for f in segment)


def dim_size(dim: Dim) -> Size:
    total: Size = 0
    for segment in dim:
        total = size_add(total, segment_size(segment))
    return total


def dim_rank(dim: Dim) -> int:
    """How much a dim tells: 3 marker, 2 video factors, 1 several segments, 0 opaque."""
    factors = [f for segment in dim for f in segment]
    if any(f.is_marker for f in factors):
        return 3
    if any(f.is_video for f in factors):
        return 2
    if len(dim) > 1:
        return 1
    return 0


def segment_is_video(segment: Segment) -> bool:
    return any(f.is_video for f in segment)


def segment_has_marker(segment: Segment) -> bool:
    return any(f.is_marker for f in segment)


def layout_matches(layout: Layout, shape: Sequence[Size]) -> bool:
    """Whether ``layout`` describes a tensor of ``shape``."""
    return len(layout) == len(shape) and all(
        size_eq(dim_size(d), s) for d, s in zip(layout, shape)
    )


def strip_units(segment: Segment) -> Segment:
    """The segment without its size-1 opaque or patch-interior factors (they do not change the
    token order)."""
    kept = tuple(f for f in segment if not (f.axis in (None, PATCH_AXIS) and size_eq(f.size, 1)))
    return kept


# ---------------------------------------------------------------------------------------------
# transformations


def permute_layout(layout: Layout, dims: Sequence[int]) -> Layout | None:
    ndim = len(layout)
    try:
        order = [d % ndim for d in dims]
    except (TypeError, ZeroDivisionError):
        return None
    if sorted(order) != list(range(ndim)):
        return None
    return tuple(layout[d] for d in order)


def reshape_layout(layout: Layout, new_shape: Sequence[Size]) -> Layout | None:
    """Layout after ``view``/``reshape``/``flatten``/``unflatten``/``(un)squeeze`` to ``new_shape``.

    All factors are laid out in row-major order and regrouped greedily into the new axes (a
    size-1 factor goes with the axis after it, so ``f1`` stays in front of ``h, w``). A
    factor is split when an axis boundary falls inside it: an opaque factor's parts are opaque;
    a labelled factor's outer part keeps its label and its inner part is a patch interior
    (:data:`PATCH_AXIS`), so cutting ``(H, W)`` into patches (``h16 -> (h8, p2)``) leaves the
    patch grid labelled, as a patch-embedding convolution would. An axis
    made of several segments (a concatenation) moves only as a whole, unless it holds no video
    factor, in which case it may be regrouped as one opaque factor. Returns None when the
    regrouping is not understood (e.g. symbolic sizes that cannot be matched).
    """
    result = _regroup(layout, new_shape)
    if result is not None:
        return result
    flattened = tuple(
        opaque_dim(dim_size(dim)) if len(dim) > 1 and dim_rank(dim) < 2 else dim
        for dim in layout
    )
    return _regroup(flattened, new_shape) if flattened != layout else None


def _regroup(layout: Layout, new_shape: Sequence[Size]) -> Layout | None:
    items: list[Factor | Dim] = []
    for dim in layout:
        if len(dim) == 1:
            items.extend(dim[0])
        else:
            items.append(dim)

    def item_size(item: Factor | Dim) -> Size:
        return item.size if isinstance(item, Factor) else dim_size(item)

    out: list[Dim] = []
    i = 0
    for target in new_shape:
        if size_eq(target, 1):
            if i < len(items) and isinstance(items[i], Factor) and size_eq(item_size(items[i]), 1):
                out.append(((items[i],),))  # type: ignore[arg-type]
                i += 1
            else:
                out.append(opaque_dim(1))
            continue
        acc: list[Factor] = []
        whole: Dim | None = None
        prod: Size = 1
        while not size_eq(prod, target):
            if i >= len(items):
                return None
            item = items[i]
            if not isinstance(item, Factor):
                if any(not size_eq(f.size, 1) for f in acc) or not size_eq(item_size(item), target):
                    return None
                whole = item
                prod = target
                i += 1
                break
            grown = size_mul(prod, item.size)
            if size_ratio(target, grown) is not None:
                acc.append(item)
                prod = grown
                i += 1
                continue
            need = size_ratio(target, prod)
            rest = size_ratio(item.size, need) if need is not None else None
            if need is None or rest is None:
                return None
            labelled = item.axis is not None and not item.is_marker
            acc.append(Factor(need, item.axis, item.source) if labelled else Factor(need))
            items[i] = Factor(rest, PATCH_AXIS, item.source) if labelled else Factor(rest)
            prod = target
        out.append(whole if whole is not None else (tuple(acc),))
    while i < len(items):
        if not size_eq(item_size(items[i]), 1):
            return None
        i += 1
    return tuple(out)


def slice_dim(dim: Dim, start: Size, stop: Size) -> Dim | None:
    """The part ``[start, stop)`` of an axis when it is a run of whole segments, else None.

    ``start``/``stop`` are already normalised (non-negative, clamped).
    """
    if size_eq(start, 0) and size_eq(stop, dim_size(dim)):
        return dim
    offsets: list[Size] = [0]
    for segment in dim:
        offsets.append(size_add(offsets[-1], segment_size(segment)))
    first = next((k for k, o in enumerate(offsets) if size_eq(o, start)), None)
    last = next((k for k, o in enumerate(offsets) if size_eq(o, stop)), None)
    if first is None or last is None or last <= first:
        return None
    return dim[first:last]


def concat_dims(dims: Sequence[Dim]) -> Dim:
    """The axis of a ``torch.cat`` of tensors along it; empty segments (a zero-length pad, as Wan
    VACE appends to its control tokens) are dropped."""
    segments = tuple(segment for dim in dims for segment in dim)
    kept = tuple(segment for segment in segments if not size_eq(segment_size(segment), 0))
    return kept if kept else segments[:1]


def merge_dims(candidates: Sequence[tuple[Dim, bool]]) -> Dim | None:
    """Pick the most informative of several descriptions of one output axis.

    ``candidates`` are ``(dim, from_full_shape_input)``. Markers beat video factors, which beat
    everything else; then an input that has the output's full shape (the data, not a broadcast
    side input) wins, then a concatenation over an opaque axis, then the first.
    """
    if not candidates:
        return None
    def preference(k: int) -> tuple[int, bool, int, int]:
        dim, full = candidates[k]
        rank = dim_rank(dim)
        return (rank if rank >= 2 else 0, full, rank, -k)

    best = max(range(len(candidates)), key=preference)
    return candidates[best][0]


def broadcast_layout(
    out_shape: Sequence[Size], inputs: Sequence[tuple[Layout, Sequence[Size]]]
) -> Layout:
    """Layout of a broadcasting elementwise op from its tensor inputs (right-aligned)."""
    ndim = len(out_shape)
    result: list[Dim] = []
    for j, size in enumerate(out_shape):
        candidates: list[tuple[Dim, bool]] = []
        for layout, shape in inputs:
            k = j - (ndim - len(shape))
            if k < 0 or k >= len(layout):
                continue
            if size_eq(shape[k], size):
                full = len(shape) == ndim and all(size_eq(a, b) for a, b in zip(shape, out_shape))
                candidates.append((layout[k], full))
        merged = merge_dims(candidates)
        result.append(merged if merged is not None else opaque_dim(size))
    return tuple(result)


def video_factors(layout: Layout) -> set[Factor]:
    return {f for dim in layout for segment in dim for f in segment if f.is_video}


def describe_dim(dim: Dim) -> str:
    """Short text of an axis, e.g. ``"[8] ++ [f2 h4 w4]"`` (for logs)."""
    parts = []
    for segment in dim:
        parts.append(" ".join(f"{f.axis or ''}{f.size}" for f in segment))
    return " ++ ".join(f"[{p}]" for p in parts)
