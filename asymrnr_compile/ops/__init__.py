"""Pure tensor ops of AsymRnR: split, match (chunked), reduce, restore (docs/method.md).

These functions know tensors, not graphs (docs/architecture.md): every size comes from Python
ints or tensor shapes, never from tensor values, so they run eagerly and inside
``torch.compile(fullgraph=True)`` alike.

Typical use for one site and feature::

    split = split_tokens(N, grid, seed=0)
    matching = match_tokens(v, split, start=text_len)            # v: (B, H, L, d)
    k = num_kept_tokens(N, len(split.dst), ratio)
    idx = reduction_indices(split, matching, k)
    v_small = reduce_tokens(v, idx, start=text_len)              # (B, H, L - N + k, d)
    out = restore_tokens(out_small, idx, start=text_len)         # (B, H, L, d)
"""

from __future__ import annotations

from .flops import (
    FLOPS_PER_MAC,
    attention_flops,
    linear_flops,
    matching_flops,
    matmul_flops,
    projected_matching_flops,
    projection_saves_flops,
)
from .layout import dim_order, with_dim_order
from .match import (
    DEFAULT_MATCH_CHUNK_BYTES,
    MATCH_KERNELS,
    SIMILARITIES,
    Matching,
    match_chunk_size,
    match_tokens,
    random_projection,
)
from .reduce import (
    MASK_DIMS,
    REDUCE_MODES,
    ReductionIndices,
    gather_tokens,
    indices_over_heads,
    key_multiplicity,
    proportional_attention_mask,
    reduce_mask,
    reduce_tokens,
    reduction_indices,
    restore_tokens,
)
from .select import TOKEN_SELECTIONS, random_matching
from .split import (
    DEFAULT_DST_STRIDE,
    TokenSplit,
    count_dst_tokens,
    max_reduction_ratio,
    num_kept_tokens,
    split_tokens,
)

__all__ = [
    "dim_order",
    "with_dim_order",
    "DEFAULT_DST_STRIDE",
    "DEFAULT_MATCH_CHUNK_BYTES",
    "FLOPS_PER_MAC",
    "MASK_DIMS",
    "MATCH_KERNELS",
    "REDUCE_MODES",
    "SIMILARITIES",
    "TOKEN_SELECTIONS",
    "Matching",
    "ReductionIndices",
    "TokenSplit",
    "attention_flops",
    "count_dst_tokens",
    "gather_tokens",
    "indices_over_heads",
    "key_multiplicity",
    "linear_flops",
    "match_chunk_size",
    "match_tokens",
    "matching_flops",
    "matmul_flops",
    "max_reduction_ratio",
    "num_kept_tokens",
    "proportional_attention_mask",
    "random_matching",
    "projected_matching_flops",
    "projection_saves_flops",
    "random_projection",
    "reduce_mask",
    "reduce_tokens",
    "reduction_indices",
    "restore_tokens",
    "split_tokens",
]
