"""``match_tokens(project_dims=k)``: matching on a fixed random projection of the features.

Properties: the projected matching is, by definition, the exact matching of the projected
features (the projection is the only difference); where a projection would not save FLOPs
(``k >= c``, or few dst tokens) it is the exact matching, bit for bit;
the matrix is a pure function of ``(c, k, seed)`` with the variance that keeps distances in
expectation; where every src token is much nearer one dst token than any other, a projection
onto few dimensions still finds that dst; the compiled op equals the eager one.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from ops_strategies import DTYPES

from asymrnr_compile.ops import SIMILARITIES, match_tokens, projection_saves_flops, random_projection, split_tokens

# Clustered features: each src token is its dst's feature plus noise this much smaller than the
# spread between dst tokens, so a k-dim JL projection keeps the nearest dst with overwhelming
# probability (distortion ~ sqrt(8 / k) of distances; the gap here is ~1 / NOISE_SCALE).
NOISE_SCALE = 0.01
PROJECTED_DIMS = 8
CLUSTER_CHANNELS = 64
# Variance check: entries are N(0, 1 / k); with c * k draws the sample variance is within a few
# standard errors (sqrt(2 / (c k)) relative).
VARIANCE_TOLERANCE = 0.1


def _split(case):
    return split_tokens(case.num_tokens, case.grid_arg, case.stride, seed=case.seed)


@st.composite
def projected_cases(draw):
    """Sizes where a projection saves FLOPs (and so is made) or, now and then, does not."""
    grid = (draw(st.integers(1, 4)), draw(st.integers(2, 8)), draw(st.integers(2, 8)))
    stride = draw(st.sampled_from(((1, 2, 2), (1, 1, 2), (2, 2, 2))))
    return {
        "grid": grid, "stride": stride, "batch": draw(st.integers(1, 2)), "channels": draw(st.integers(8, 64)),
        "dims": draw(st.integers(1, 8)), "dtype": draw(st.sampled_from(DTYPES)),
        "similarity": draw(st.sampled_from(SIMILARITIES)), "text_before": draw(st.integers(0, 3)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@given(case=projected_cases())
def test_projected_matching_is_the_matching_of_the_projected_features(case):
    num_tokens = math.prod(case["grid"])
    split = split_tokens(num_tokens, case["grid"], case["stride"], seed=case["seed"])
    assume(len(split.dst) > 0 and len(split.src) > 0)
    start, channels, dims = case["text_before"], case["channels"], case["dims"]
    generator = torch.Generator().manual_seed(case["seed"])
    x = torch.randn(case["batch"], start + num_tokens + 1, channels, generator=generator).to(case["dtype"])
    got = match_tokens(x, split, case["similarity"], start=start, project_dims=dims, projection_seed=case["seed"])
    if not projection_saves_flops(num_tokens, len(split.dst), channels, dims):  # the exact matching
        want = match_tokens(x, split, case["similarity"], start=start)
    else:  # the video span, projected as the op does it (other tokens are never read)
        span = x[..., start : start + num_tokens, :]
        projected = torch.matmul(span.to(torch.float32), random_projection(channels, dims, case["seed"], x.device))
        want = match_tokens(projected, split, case["similarity"])
    for field, got_value, want_value in zip(got._fields, got, want):
        assert torch.equal(got_value, want_value), field


def test_projection_is_made_only_where_it_saves_flops():
    assert projection_saves_flops(num_tokens=2304, num_dst=288, channels=256, dims=64)
    assert not projection_saves_flops(num_tokens=2304, num_dst=288, channels=64, dims=64)  # k = c
    assert not projection_saves_flops(num_tokens=32, num_dst=4, channels=64, dims=8)  # projecting costs more
    # CogVideoX-2B hidden states: about 14x fewer multiply-adds with k = 64
    num_tokens, num_dst, channels, dims = 17550, 1980, 1920, 64
    exact = (num_tokens - num_dst) * num_dst * channels
    projected = num_tokens * channels * dims + (num_tokens - num_dst) * num_dst * dims
    assert projection_saves_flops(num_tokens, num_dst, channels, dims) and exact / projected > 10


@given(channels=st.integers(2, 64), dims=st.integers(1, 32), seed=st.integers(0, 2**31 - 1))
def test_projection_matrix_is_seeded_and_scaled(channels, dims, seed):
    matrix = random_projection(channels, dims, seed, torch.device("cpu"))
    assert matrix.shape == (channels, dims) and matrix.dtype == torch.float32
    generator = torch.Generator().manual_seed(seed)
    expected = torch.randn(channels, dims, generator=generator) / math.sqrt(dims)
    assert torch.equal(matrix, expected)
    assert not torch.equal(matrix, random_projection(channels, dims, seed + 1, torch.device("cpu")))


def test_projection_keeps_squared_norms_in_expectation():
    channels, dims = 256, 512
    matrix = random_projection(channels, dims, 0, torch.device("cpu"))
    variance = float(matrix.double().square().mean()) * dims
    assert abs(variance - 1.0) < VARIANCE_TOLERANCE
    x = torch.randn(1000, channels, generator=torch.Generator().manual_seed(1))
    ratio = (x @ matrix).square().sum(-1) / x.square().sum(-1)
    assert abs(float(ratio.mean()) - 1.0) < VARIANCE_TOLERANCE


@given(seed=st.integers(0, 2**31 - 1), dtype=st.sampled_from(DTYPES), strided=st.booleans(),
       similarity=st.sampled_from(("euclidean", "cosine")))
def test_clustered_tokens_keep_their_nearest_dst_under_projection(seed, dtype, strided, similarity):
    """Every src token is a slightly perturbed copy of one dst token: the projection onto
    PROJECTED_DIMS of CLUSTER_CHANNELS channels finds that dst, in any dtype and layout."""
    grid, stride = (4, 8, 8), (1, 2, 2)
    split = split_tokens(math.prod(grid), grid, stride, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    batch = 2
    centres = torch.randn(batch, len(split.dst), CLUSTER_CHANNELS, generator=generator)
    owner = torch.randint(len(split.dst), (batch, len(split.src)), generator=generator)
    video = torch.empty(batch, math.prod(grid), CLUSTER_CHANNELS)
    video[:, split.dst] = centres
    noise = NOISE_SCALE * torch.randn(batch, len(split.src), CLUSTER_CHANNELS, generator=generator)
    video[:, split.src] = centres.gather(1, owner.unsqueeze(-1).expand(-1, -1, CLUSTER_CHANNELS)) + noise
    video = video.to(dtype)
    if strided:  # a (B, C, L) tensor seen as (B, L, C), as a transposed projection gives it
        video = video.transpose(1, 2).contiguous().transpose(1, 2)
    got = match_tokens(video, split, similarity, project_dims=PROJECTED_DIMS, projection_seed=seed)
    assert torch.equal(got.nearest, owner)


def test_compiled_projected_matching_equals_eager():
    split = split_tokens(256, (4, 8, 8), (1, 2, 2), seed=3)
    x = torch.randn(2, 262, 48, generator=torch.Generator().manual_seed(0))
    assert projection_saves_flops(256, len(split.dst), 48, 16)

    def run(features):
        return match_tokens(features, split, start=3, project_dims=16, projection_seed=5)

    compiled = torch.compile(run, fullgraph=True, backend="inductor")(x)
    eager = run(x)
    for got, want in zip(compiled, eager):
        assert torch.equal(got, want)


def test_bad_projection_arguments_are_rejected():
    split = split_tokens(8, (2, 2, 2), (1, 2, 2), seed=0)
    x = torch.randn(8, 4)
    with pytest.raises(ValueError, match="project_dims"):
        match_tokens(x, split, project_dims=0)
    with pytest.raises(TypeError, match="project_dims"):
        match_tokens(x, split, project_dims=2.5)
    with pytest.raises(ValueError, match="projection_seed"):
        match_tokens(x, split, project_dims=2, projection_seed=-1)
