"""Token layouts under sequence (context) parallelism: a rank's shard, and the Ulysses all-to-all.

diffusers' context parallelism (``ContextParallelConfig(ulysses_degree=P)``) splits the token
sequence into ``P`` equal contiguous pieces with ``tensor.chunk(P, dim)[rank]`` and, at every
attention call, exchanges query, key and value with ``all_to_all_single`` so that each rank
holds the *whole* sequence for ``heads / P`` heads; a second all-to-all after the attention
returns each rank its own tokens for every head. Two facts make this readable to the layout
algebra of :mod:`.token_layout`:

- **A shard is a slab of frames.** The video tokens are in row-major ``(f, h, w)`` order, so
  piece ``r`` of ``P`` is frames ``[r F/P, (r+1) F/P)`` when ``P`` divides ``F``: the same
  segment with the leading factor shrunk (``[f4 h8 w8]`` -> ``[f2 h8 w8]``). :func:`slab_dim`
  gives that layout for any piece that starts and ends on a boundary of the leading factor (a
  cut through the middle of a frame stays opaque: the grid of such a piece is not a grid).
- **The all-to-all is the identity on layouts when its scatter index leads.** diffusers
  reshapes ``(B, S/P, H, D)`` to ``(P, S/P, B, H/P, D)`` (head group first), flattens and calls
  ``all_to_all_single`` with ``P`` equal splits. Output block ``i`` is rank ``i``'s block for
  this rank's head group: the leading factor now counts *ranks*, i.e. shards, and the rest is
  rank ``i``'s shard, laid out like this rank's (every rank runs the same graph). Flattened with
  the shard axis (``flatten(0, 1)``) that is ``[P f(F/P) h w]``, which
  :func:`~.classify_site.read_grid` reads as the grid ``(F, H, W)`` (opaque frame factors in
  front of the ``f`` factor multiply into the frame count). So the layout passes through
  unchanged, **provided** the leading factor of the scattered axis is an opaque factor of
  exactly ``P`` (the head group); anything else is not the Ulysses exchange and
  :func:`all_to_all_layout` returns None (opaque).

The all-to-all after the attention is the same exchange the other way round: the leading
factor (now the shard index) becomes the head group again and every rank gets back its own
shard.

Assumption, as diffusers makes it: rank ``r`` of the process group holds piece ``r`` of the
sequence (``chunk(P)[group rank]``) and the all-to-all orders blocks by group rank. A tensor
that reached the all-to-all unsharded (full on every rank) would be described wrongly; that
only happens in a model whose plan does not split what its attention exchanges, whose output
would already be wrong without this package.

Pure functions on layouts, like :mod:`.token_layout`.
"""

from __future__ import annotations

from collections.abc import Sequence

from asymrnr_compile.analysis.token_layout import (
    Dim,
    Factor,
    Layout,
    Size,
    concrete,
    segment_size,
    size_eq,
    size_ratio,
    strip_units,
)


def slab_dim(dim: Dim, start: Size, stop: Size) -> Dim | None:
    """The part ``[start, stop)`` of a one-segment axis, when it is a slab of its leading factor.

    ``dim`` must be a single segment whose first non-unit factor ``L`` (size ``n``) is followed
    by factors of product ``m``; the part is a slab when ``start`` and ``stop`` are multiples
    of ``m``. The slab has ``L`` shrunk to ``(stop - start) / m`` (same axis and source) and
    the other factors unchanged, e.g. ``[f4 h8 w8]``, ``[128, 256)`` -> ``[f2 h8 w8]``.

    Returns None for anything else (several segments, a cut inside a frame, symbolic sizes
    that cannot be proven aligned).
    """
    if len(dim) != 1:
        return None
    factors = strip_units(dim[0])
    if not factors or not any(f.is_video for f in factors):
        return None
    lead, rest = factors[0], factors[1:]
    inner = segment_size(rest) if rest else 1
    first = size_ratio(start, inner) if not size_eq(start, 0) else 0
    last = size_ratio(stop, inner)
    if first is None or last is None:
        return None
    first_i, last_i, lead_n = concrete(first), concrete(last), concrete(lead.size)
    if first_i is None or last_i is None or lead_n is None or not 0 <= first_i < last_i <= lead_n:
        return None
    return ((Factor(last_i - first_i, lead.axis, lead.source), *rest),)


def all_to_all_layout(layout: Layout, output_splits: Sequence[int] | None,
                      input_splits: Sequence[int] | None) -> Layout | None:
    """Layout of ``all_to_all_single(x, output_splits, input_splits, group)`` (see the module
    docstring): ``layout`` itself when the splits are ``P`` equal blocks of axis 0 and axis 0's
    leading factor is an opaque factor of size ``P``; None otherwise.

    Args:
        layout: layout of ``x``.
        output_splits, input_splits: the op's split sizes (None: equal splits over a group size
            that the graph does not show; not understood).
    """
    if not layout or output_splits is None or input_splits is None:
        return None
    outs, ins = list(output_splits), list(input_splits)
    if len(outs) < 2 or outs != ins or any(not isinstance(s, int) or s != outs[0] for s in outs):
        return None
    parts = len(outs)
    axis0 = layout[0]
    if len(axis0) != 1:
        return None
    factors = strip_units(axis0[0])
    if not factors or factors[0].axis is not None or not size_eq(factors[0].size, parts):
        return None
    return layout


__all__ = ["all_to_all_layout", "slab_dim"]
