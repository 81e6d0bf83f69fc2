"""Hypothesis strategies and reference implementations shared by the ops tests.

Tensors are not drawn element by element (slow); hypothesis draws shapes, options and a data
seed, and the data come from a seeded ``torch.Generator``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from asymrnr_compile.ops import (
    REDUCE_MODES,
    SIMILARITIES,
    count_dst_tokens,
    max_reduction_ratio,
)

DTYPES = (torch.float32, torch.bfloat16, torch.float16)
MAX_GRID_SIDE = 6
MAX_STRIDE = 4
MAX_BATCH = 4
MAX_HEADS = 8
MAX_CHANNELS = 8
MAX_TEXT = 5
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Case:
    """One drawn configuration of a reduction site."""

    grid: tuple[int, int, int]
    use_grid: bool
    stride: tuple[int, int, int]
    batch: int
    heads: int
    channels: int
    dtype: torch.dtype
    similarity: str
    mode: str
    ratio: float
    text_before: int
    text_after: int
    seed: int
    data_seed: int

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    @property
    def grid_arg(self) -> tuple[int, int, int] | None:
        return self.grid if self.use_grid else None

    @property
    def num_dst(self) -> int:
        return count_dst_tokens(self.num_tokens, self.grid_arg, self.stride)

    @property
    def length(self) -> int:
        return self.text_before + self.num_tokens + self.text_after

    def features(self) -> torch.Tensor:
        """``(B, H, L, c)`` features in ``dtype``."""
        return random_features((self.batch, self.heads, self.length, self.channels), self)


def random_features(shape: tuple[int, ...], case: Case) -> torch.Tensor:
    generator = torch.Generator().manual_seed(case.data_seed)
    return torch.randn(shape, generator=generator).to(case.dtype)


triples = st.tuples(*(st.integers(1, MAX_GRID_SIDE),) * 3)
strides = st.tuples(*(st.integers(1, MAX_STRIDE),) * 3)


@st.composite
def cases(
    draw, *, dtypes=DTYPES, ratio_zero: bool = False, min_channels: int = 1, need_dst: bool = False
) -> Case:
    grid = draw(triples)
    stride = draw(strides)
    if need_dst:
        # Shrink the stride to fit the grid, so that at least one full chunk exists.
        stride = tuple(min(step, size) for step, size in zip(stride, grid))
    use_grid = draw(st.booleans())
    num_tokens = math.prod(grid)
    largest = max_reduction_ratio(num_tokens, grid if use_grid else None, stride)
    if ratio_zero or largest == 0.0:
        ratio = 0.0
    else:
        ratio = draw(
            st.one_of(
                st.just(0.0),
                st.just(largest),
                st.floats(0.0, largest, allow_nan=False, exclude_max=False),
            )
        )
    return Case(
        grid=grid,
        use_grid=use_grid,
        stride=stride,
        batch=draw(st.integers(1, MAX_BATCH)),
        heads=draw(st.integers(1, MAX_HEADS)),
        channels=draw(st.integers(min_channels, MAX_CHANNELS)),
        dtype=draw(st.sampled_from(dtypes)),
        similarity=draw(st.sampled_from(SIMILARITIES)),
        mode=draw(st.sampled_from(REDUCE_MODES)),
        ratio=ratio,
        text_before=draw(st.integers(0, MAX_TEXT)),
        text_after=draw(st.integers(0, MAX_TEXT)),
        seed=draw(st.integers(0, MAX_SEED)),
        data_seed=draw(st.integers(0, MAX_SEED)),
    )


def reference_distances(
    dst_feat: torch.Tensor, src_feat: torch.Tensor, similarity: str
) -> torch.Tensor:
    """Full ``(*, N_src, N_dst)`` distance matrix in float64, directly from the definitions."""
    d = dst_feat.double().unsqueeze(-3)  # (*, 1, N_dst, c)
    s = src_feat.double().unsqueeze(-2)  # (*, N_src, 1, c)
    if similarity == "euclidean":
        return (s - d).square().sum(-1)
    if similarity == "cosine":
        return 1.0 - torch.nn.functional.cosine_similarity(s, d, dim=-1, eps=1e-12)
    return -(s * d).sum(-1)
