"""The fused Triton matching kernel against the ATen one (docs/method.md, "Matching kernels").

On a GPU the kernel is compiled and run there; without one it runs under Triton's CPU interpreter
(``TRITON_INTERPRET=1``, set by tests/conftest.py before Triton is imported). On integer-valued features every
score is exact in float32 whatever the summation order, so the two kernels must agree exactly,
ties included (the first dst at the maximum wins); on real-valued features the kernel's distance
must be the true nearest distance to float32 rounding.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from helpers import load_benchmark
from hypothesis import given, settings
from ops_strategies import cases, reference_distances

from asymrnr_compile import AsymRnRConfig
from asymrnr_compile.ops import match_tokens, num_kept_tokens, reduction_indices, split_tokens
from asymrnr_compile.ops.match import resolve_match_kernel
from asymrnr_compile.ops.match_triton import (
    BLOCK_CHANNELS,
    BLOCK_DST,
    BLOCK_SRC,
    INTERPRET_ENV,
    multiplies_unwidened,
    triton_runs_on,
)

pytest.importorskip("triton")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
pytestmark = pytest.mark.skipif(not triton_runs_on(DEVICE), reason=f"Triton cannot run on {DEVICE}")


# Integer features in [-INT_RANGE, INT_RANGE]: dot products of c <= 8 channels stay far below
# 2^24 (exact in float32) and the values are exact in bfloat16 and float16.
INT_RANGE = 4
# The interpreter runs a program per 64 src tokens and (batch, head) in numpy: fewer examples
# than the ATen properties, so the module stays within a few seconds.
INTERPRETED_EXAMPLES_DIVISOR = 5
DISTANCE_RTOL = 1e-5
NEAR_TIE_SHARE = 0.01  # src tokens whose two nearest dst may swap between summation orders
MAX_OPERATORS = 12  # issue budget: operators of one matching, keep/restore indices included


def _integer_features(case) -> torch.Tensor:
    generator = torch.Generator().manual_seed(case.data_seed)
    shape = (case.batch, case.heads, case.length, case.channels)
    return torch.randint(-INT_RANGE, INT_RANGE + 1, shape, generator=generator).to(DEVICE, case.dtype)


def _split(case):
    return split_tokens(case.num_tokens, case.grid_arg, case.stride, seed=case.seed)


def _both(x, split, similarity, start):
    return (match_tokens(x, split, similarity, start=start, kernel="aten"),
            match_tokens(x, split, similarity, start=start, kernel="triton"))


@settings(max_examples=max(1, settings().max_examples // INTERPRETED_EXAMPLES_DIVISOR))
@given(case=cases(need_dst=True))
def test_exact_scores_give_the_aten_matching(case):
    """Euclidean and dot on integer features: identical src order, nearest and distance."""
    if case.similarity == "cosine":  # normalised features are not integers
        case = dataclasses.replace(case, similarity="euclidean")
    x = _integer_features(case)
    split = _split(case)
    aten, triton = _both(x, split, case.similarity, case.text_before)
    torch.testing.assert_close(triton.distance, aten.distance, rtol=0, atol=0)
    assert torch.equal(triton.nearest, aten.nearest)
    assert torch.equal(triton.src_order, aten.src_order)


@settings(max_examples=max(1, settings().max_examples // INTERPRETED_EXAMPLES_DIVISOR))
@given(case=cases(need_dst=True, dtypes=(torch.float32, torch.bfloat16, torch.float16)))
def test_real_features_find_the_nearest_dst(case):
    """Every similarity on real features: the distance is the float64 minimum to rounding, and
    the chosen dst is at that minimum (ties may break differently from ATen's order)."""
    x = case.features().to(DEVICE)
    split = _split(case)
    matching = match_tokens(x, split, case.similarity, start=case.text_before, kernel="triton")
    if len(split.src) == 0:  # nothing to match: no kernel launch, empty results
        assert matching.distance.shape == (case.batch, case.heads, 0)
        return
    video = x[..., case.text_before: case.text_before + case.num_tokens, :].float()
    if case.similarity == "cosine":
        video = torch.nn.functional.normalize(video, dim=-1, eps=1e-12)
    reference = reference_distances(video[..., split.dst, :], video[..., split.src, :], case.similarity)
    best = reference.min(dim=-1).values
    scale = 1.0 + video.double().square().sum(-1).amax()
    tolerance = DISTANCE_RTOL * scale
    assert (matching.distance.double() - best).abs().max() <= tolerance
    chosen = reference.gather(-1, matching.nearest.unsqueeze(-1)).squeeze(-1)
    assert (chosen - best).max() <= tolerance


def test_half_precision_features_are_multiplied_unwidened():
    """float16 tiles go to ``tl.dot`` as they are (exact products, float32 accumulation) and give
    the matching of the same features widened to float32: real values, every similarity."""
    assert multiplies_unwidened(torch.float16) and not multiplies_unwidened(torch.float32)
    assert multiplies_unwidened(torch.bfloat16) == (DEVICE.type == "cuda")  # the interpreter widens bf16
    generator = torch.Generator().manual_seed(0)
    grid = (2, 8, 8)
    split = split_tokens(math.prod(grid), grid, (1, 2, 2), seed=0)
    half = torch.randn(2, 3, math.prod(grid), 40, generator=generator).to(DEVICE, torch.float16)
    for similarity in ("euclidean", "dot"):
        unwidened = match_tokens(half, split, similarity, kernel="triton")
        widened = match_tokens(half.float(), split, similarity, kernel="triton")
        torch.testing.assert_close(unwidened.distance, widened.distance, rtol=1e-5, atol=1e-5)
        # the same nearest dst, but where two dst are within float32 rounding (tensor cores sum
        # in another order than the float32 units: a near tie may break the other way on a GPU)
        differs = unwidened.nearest != widened.nearest
        assert differs.float().mean() <= NEAR_TIE_SHARE, f"{int(differs.sum())} of {differs.numel()} differ"


@pytest.mark.parametrize("channels", [BLOCK_CHANNELS, 2 * BLOCK_CHANNELS + 3])
def test_many_tiles_and_channel_slices(channels):
    """More than one src program, dst tile and (for hidden-state widths) channel slice; a dst
    duplicated in a later tile never wins over its first copy."""
    num_tokens = 3 * BLOCK_SRC + 5 + 2 * BLOCK_DST
    generator = torch.Generator().manual_seed(0)
    shape = (2, 3, num_tokens + 7, channels)
    x = torch.randint(-INT_RANGE, INT_RANGE + 1, shape, generator=generator).to(DEVICE, torch.float32)
    split = split_tokens(num_tokens, (1, 1, num_tokens), (1, 1, 4), seed=1)
    assert len(split.dst) > BLOCK_DST and len(split.src) > BLOCK_SRC
    first, later = split.dst[1].item(), split.dst[BLOCK_DST + 2].item()
    x[..., 7 + later, :] = x[..., 7 + first, :]  # the same vector in two dst tiles
    aten, triton = _both(x, split, "euclidean", 7)
    assert torch.equal(triton.nearest, aten.nearest)
    assert torch.equal(triton.src_order, aten.src_order)
    torch.testing.assert_close(triton.distance, aten.distance, rtol=0, atol=0)
    assert not (triton.nearest == BLOCK_DST + 2).any()


def test_compiled_matching_is_the_eager_one():
    """Under torch.compile the matcher stays one opaque custom op running the same kernel."""
    x = torch.randn(2, 2, 70, 16, device=DEVICE)
    split = split_tokens(64, (4, 4, 4), (1, 2, 2), seed=0)

    def match(features):
        return match_tokens(features, split, start=6, kernel="triton")

    eager = match(x)
    compiled = torch.compile(match, backend="inductor", fullgraph=True)(x)
    for got, want in zip(compiled, eager):
        assert torch.equal(got, want)


def _count_operators():
    return load_benchmark("ops").count_operators


@pytest.mark.parametrize("similarity", ["euclidean", "cosine", "dot"])
def test_operator_count_does_not_grow_with_tokens(similarity):
    """The GPU launch proxy: one matching plus its keep/restore indices runs at most
    MAX_OPERATORS kernel-launching operators, the same number at 4x the tokens."""
    count_operators = _count_operators()
    counts = []
    for grid in ((2, 8, 8), (2, 16, 16)):
        num_tokens = math.prod(grid)
        x = torch.randn(2, 2, num_tokens + 3, 16, device=DEVICE)
        split = split_tokens(num_tokens, grid, (1, 2, 2), seed=0)
        keep = num_kept_tokens(num_tokens, len(split.dst), 0.5)
        counts.append(count_operators(lambda x=x, split=split, keep=keep: reduction_indices(
            split, match_tokens(x, split, similarity, start=3, kernel="triton"), keep)))
    assert counts[0]["kernel_ops"]["asymrnr::nearest_dst_kernel"] == 1
    assert counts[0]["kernels"] == counts[1]["kernels"] <= MAX_OPERATORS


def test_triton_kernel_needs_a_device_it_can_run_on(monkeypatch):
    monkeypatch.delenv(INTERPRET_ENV, raising=False)
    with pytest.raises(ValueError, match="match kernel 'triton' cannot run here"):
        resolve_match_kernel("triton", torch.device("cpu"))
    assert resolve_match_kernel("auto", torch.device("cpu")) == "aten"
    assert resolve_match_kernel("auto", torch.device("cuda")) == "triton"
    with pytest.raises(ValueError, match="kernel"):
        resolve_match_kernel("cuda", torch.device("cpu"))


def test_config_names_the_setting():
    with pytest.raises(ValueError, match="match_kernel"):
        AsymRnRConfig(match_kernel="fused")
    assert AsymRnRConfig().match_kernel == "auto"


def test_backend_option_reaches_the_kernel():
    """``match_kernel="triton"`` through the whole rewrite: every computed matching is one launch
    of the kernel (counted by the profiler), none on reuse steps. That the kernel's matchings are
    the ATen kernel's is the properties above."""
    from torch.profiler import ProfilerActivity, profile

    from asymrnr_compile import AsymRnRBackend
    from asymrnr_compile.ops.match_triton import KERNEL_RANGE
    from asymrnr_lab.models import build_reference_model, reference_inputs
    from asymrnr_lab.sampling import SamplerConfig, sample

    model = build_reference_model("tiny").to(DEVICE)
    inputs = {name: value.to(DEVICE) for name, value in reference_inputs("tiny").items()}
    text = inputs["encoder_hidden_states"]
    torch._dynamo.reset()
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=2, min_video_tokens=16,
                                           match_kernel="triton"))
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        video = sample(compiled, inputs["hidden_states"][:1], text[:1], text[1:], SamplerConfig(steps=4))
    torch._dynamo.reset()
    assert torch.isfinite(video).all()
    report = backend.report().to_dict()
    assert report["cache_misses"] == 2 * 2 * 2  # matching steps 0 and 2, two sites, q and kv
    assert sum(event.name == KERNEL_RANGE for event in prof.events()) == report["cache_misses"]
