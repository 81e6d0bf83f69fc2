"""A token-dropping baseline: the src tokens to drop and their stand-ins drawn at random.

AsymRnR chooses *which* source tokens to drop by similarity (the most redundant ones) and
restores each dropped token from its most similar destination token (:func:`match_tokens`).
:func:`random_matching` makes the same kind of :class:`~asymrnr_compile.ops.match.Matching`
without looking at the features: per leading index (batch element, head) the order in which
src tokens are kept is a uniformly random permutation and each src token's stand-in
(``nearest``) is a uniformly random dst token. Fed to :func:`reduction_indices`, it gives a
plain token-dropping baseline with the same split, the same kept counts and the same restore
structure (hence the same attention FLOPs, and none spent on matching): what remains of the
quality gap is what the matching buys.

The draw uses a private CPU ``torch.Generator`` seeded with ``seed`` (never the global RNG), so
the result is a pure function of ``(leading shape, N_dst, N_src, seed)`` and the same on every
device. It runs in a custom op, ``torch.ops.asymrnr.random_matching``, so that
``torch.compile`` sees one node and never traces the generator.
"""

from __future__ import annotations

import math

import torch

from asymrnr_compile._validate import check_int, check_span, check_tensor

from .match import Matching
from .split import MAX_SEED, TokenSplit, check_split

__all__ = ["TOKEN_SELECTIONS", "random_matching"]

TOKEN_SELECTIONS: tuple[str, ...] = ("matched", "random")
"""``"matched"``: AsymRnR's similarity matching (:func:`match_tokens`); ``"random"``: the
token-dropping baseline of :func:`random_matching` (same split, same kept counts)."""

RANDOM_MATCHING_OP_NAME = "asymrnr::random_matching"
"""The custom op (``torch.ops.asymrnr.random_matching``) that draws the random matching."""


@torch.library.custom_op(RANDOM_MATCHING_OP_NAME, mutates_args=())
def _random_matching_op(
    leading: list[int], num_dst: int, num_src: int, seed: int, device: torch.device | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(src_order, nearest, distance)`` of shape ``(*leading, num_src)`` drawn on the CPU."""
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    shape = (*leading, num_src)
    # A uniformly random permutation per leading index: argsort of i.i.d. uniforms.
    src_order = torch.rand(shape, generator=generator).argsort(dim=-1)
    if num_dst > 0:
        nearest = torch.randint(num_dst, shape, generator=generator)
    else:
        nearest = torch.zeros(shape, dtype=torch.long)
    distance = torch.full(shape, math.nan, dtype=torch.float32)
    return src_order.to(device), nearest.to(device), distance.to(device)


@_random_matching_op.register_fake
def _random_matching_op_fake(
    leading: list[int], num_dst: int, num_src: int, seed: int, device: torch.device | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shape = (*leading, num_src)
    return (
        torch.empty(shape, dtype=torch.long, device=device),
        torch.empty(shape, dtype=torch.long, device=device),
        torch.empty(shape, dtype=torch.float32, device=device),
    )


def random_matching(
    x: torch.Tensor, split: TokenSplit, *, start: int = 0, seed: int = 0
) -> Matching:
    """A random stand-in for :func:`match_tokens`: no similarity is computed.

    Args:
        x: features ``(*, L, c)``. Only its *shape* and device are used: the leading dims ``*``
            (e.g. ``(B, H)``) get independent draws, and the video span
            ``[start, start + N)`` with ``N = len(split.dst) + len(split.src)`` must fit in
            ``L``. Its values are never read.
        split: the dst/src partition of the ``N`` video tokens (:func:`split_tokens`).
        start: index of the first video token on the token axis (``-2``); default 0.
        seed: seed of the private generator, an int in ``[0, 2**63 - 1]``; default 0.

    Returns:
        :class:`Matching` of shape ``(*, N_src)``: ``src_order`` a uniformly random permutation
        of ``0..N_src-1`` per leading index (so the kept src tokens are a uniform random
        subset), ``nearest`` uniform in ``0..N_dst-1`` (all zeros when ``N_dst == 0``), and
        ``distance`` all NaN (not measured).
    """
    x = check_tensor("x", x, min_dim=2)
    dst, src = check_split(split)
    num_dst, num_src = dst.shape[0], src.shape[0]
    check_span("start", start, num_dst + num_src, x.shape[-2], what="video tokens")
    seed = check_int("seed", seed, minimum=0)
    if seed > MAX_SEED:
        raise ValueError(f"seed must be in [0, {MAX_SEED}], got {seed}")
    src_order, nearest, distance = _random_matching_op(
        list(x.shape[:-2]), num_dst, num_src, seed, x.device
    )
    return Matching(src_order=src_order, nearest=nearest, distance=distance)

