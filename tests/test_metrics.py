"""The quality and speed figures (asymrnr_lab.metrics): one PSNR, one relative error, one
whole-loop speedup, used by the sampler's users, the synthetic task and the benchmarks."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from asymrnr_lab.metrics import loop_speedup, psnr_db, relative_l2, whole_loop_speedup
from asymrnr_lab.synthetic.quality import DATA_RANGE, psnr


def test_relative_l2_and_psnr_of_latents():
    reference = torch.linspace(-1, 1, 100)
    assert relative_l2(reference, reference) == 0.0 and psnr_db(reference, reference) == math.inf
    assert psnr_db(reference + 0.01, reference) > psnr_db(reference + 0.1, reference)
    # the peak is the reference's range (2 here): an error of 0.1 everywhere is 10 log10(4 / 0.01)
    assert psnr_db(reference + 0.1, reference) == pytest.approx(10 * math.log10(4 / 0.01))
    assert psnr_db(torch.zeros(3), torch.zeros(3)) == math.inf
    with pytest.raises(ValueError, match="one shape"):
        psnr_db(reference[:5], reference)


@given(batch=st.integers(1, 3), noise=st.floats(1e-3, 1.0), seed=st.integers(0, 2**16))
def test_pixel_psnr_is_psnr_db_at_the_pixels_range(batch, noise, seed):
    generator = torch.Generator().manual_seed(seed)
    reference = torch.rand(batch, 3, 2, 8, 8, generator=generator) * 2 - 1
    video = reference + noise * torch.randn(reference.shape, generator=generator)
    per_video = psnr(video, reference)
    assert torch.equal(per_video, psnr_db(video, reference, peak=DATA_RANGE, per_sample=True))
    for i in range(batch):
        assert psnr(video[i], reference[i]) == pytest.approx(float(per_video[i]))
        assert psnr(video[i], reference[i]) == pytest.approx(psnr_db(video[i], reference[i], peak=DATA_RANGE))


def test_whole_loop_speedup_is_the_median_of_per_round_ratios():
    assert whole_loop_speedup([2.0, 2.0, 3.0], [1.0, 2.0, 1.0]) == 2.0
    with pytest.raises(ValueError, match="one loop time per round"):
        whole_loop_speedup([1.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="one loop time per round"):
        whole_loop_speedup([], [])


def test_loop_speedup_is_the_whole_loop_and_the_median_step_a_second_figure():

    baseline = [1.0] * 5 + [1.2] * 5  # two rounds of 5 steps
    # steps 0 and 3 compute matchings (2.0 s), the others reuse them (0.5 s); round 2 the same
    variant = [2.0, 0.5, 0.5, 2.0, 0.5] * 2
    figures = loop_speedup(baseline, variant, steps_per_loop=5, matching_steps=[0, 3])
    assert figures.loop == pytest.approx(((5.0 / 5.5) + (6.0 / 5.5)) / 2)  # median of the two rounds
    assert figures.median_step == pytest.approx(1.1 / 0.5)
    assert figures.loop_seconds == pytest.approx(5.5)
    assert figures.matching_step_cost == pytest.approx(4.0)
    assert loop_speedup(baseline, variant, 5).matching_step_cost is None
    with pytest.raises(ValueError, match="multiple of steps_per_loop=5"):
        loop_speedup(baseline[:7], variant[:7], 5)


def test_the_flop_counter_counts_attention_on_a_cpu_as_torch_counts_it_on_cuda():
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    from asymrnr_lab.metrics import flop_counter_mode

    query, key = torch.randn(2, 3, 16, 8), torch.randn(2, 3, 24, 8)
    with FlopCounterMode(display=False) as plain:
        torch.nn.functional.scaled_dot_product_attention(query, key, key)
    with flop_counter_mode() as counter:
        torch.nn.functional.scaled_dot_product_attention(query, key, key)
        torch.matmul(query, key.transpose(-1, -2))
    assert plain.get_total_flops() == 0  # what torch alone counts for the CPU kernel
    matmul = 2 * 2 * 3 * 16 * 24 * 8
    assert counter.get_total_flops() == sdpa_flop_count(query.shape, key.shape, key.shape) + matmul
