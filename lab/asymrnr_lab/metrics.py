"""How far an accelerated run is from the reference, and how much faster it is: the one home of
the project's quality and speed figures.

- :func:`relative_l2` and :func:`psnr_db`: distance of an output from the reference output (a
  latent, a video), in float64. The synthetic task's pixel PSNR
  (:func:`asymrnr_lab.synthetic.quality.psnr`) is :func:`psnr_db` with the pixels' fixed range.
- :func:`whole_loop_speedup`: the headline speed figure, the median over timed rounds of the
  baseline's whole-loop time over the variant's (matching steps included).
- :func:`loop_speedup` (:class:`LoopSpeedup`): the same from per-step times of interleaved loops,
  with the median-step ratio (a second column) and what a matching step costs.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch.utils import flop_counter

#: Floor of a norm in a denominator: a zero reference gives a finite, huge error, not a division by zero.
NORM_FLOOR = 1e-30


def relative_l2(value: torch.Tensor, reference: torch.Tensor) -> float:
    """``||value - reference|| / ||reference||``, in float64."""
    reference = reference.double()
    return float((value.double() - reference).norm() / reference.norm().clamp_min(NORM_FLOOR))


def psnr_db(value: torch.Tensor, reference: torch.Tensor, *, peak: float | None = None,
            per_sample: bool = False) -> float | torch.Tensor:
    """Peak signal-to-noise ratio of ``value`` against ``reference`` in dB, in float64;
    ``inf`` where they are equal.

    Args:
        value, reference: tensors of one shape.
        peak: the signal's peak-to-peak range; default the reference's own (max - min), for
            outputs of no fixed range such as latents. Videos of a known range pass it (pixels in
            [-1, 1]: 2).
        per_sample: a float over all elements (default), or a ``(B,)`` tensor, one PSNR per entry
            of the first dimension.
    """
    if value.shape != reference.shape:
        raise ValueError(f"psnr_db: value and reference must have one shape, got {tuple(value.shape)} and "
                         f"{tuple(reference.shape)}")
    reference = reference.detach().to("cpu", torch.float64)
    value = value.detach().to("cpu", torch.float64)
    peak = float(reference.max() - reference.min()) if peak is None else float(peak)
    squared = (value - reference).pow(2)
    mse = squared.flatten(1).mean(1) if per_sample else squared.mean()
    decibels = torch.where(mse == 0, torch.inf, 10.0 * torch.log10(peak * peak / mse))
    return decibels if per_sample else float(decibels)


def whole_loop_speedup(baseline_loop_seconds: Sequence[float], variant_loop_seconds: Sequence[float]) -> float:
    """The median over timed rounds of the baseline's whole-loop time over the variant's, round by
    round (the two lists are the same rounds, in order)."""
    if len(baseline_loop_seconds) != len(variant_loop_seconds) or not variant_loop_seconds:
        raise ValueError(f"whole_loop_speedup: need one loop time per round for each, got "
                         f"{len(baseline_loop_seconds)} and {len(variant_loop_seconds)}")
    return statistics.median(base / variant for base, variant in zip(baseline_loop_seconds, variant_loop_seconds))


@dataclass(frozen=True)
class LoopSpeedup:
    """A variant's speed against a baseline, from per-step times of interleaved loops.

    The headline is :attr:`loop`: the baseline's whole-loop time over the variant's, matching
    steps included (what a user waits for), the median over the timed rounds of the per-round
    ratio (:func:`whole_loop_speedup`). :attr:`median_step` is the ratio of median step times, a
    second column only: with a cache window of 5 steps it never contains a step that computes
    matchings.

    Attributes:
        loop: whole-loop speedup (median over rounds).
        median_step: median-step speedup.
        loop_seconds: the variant's loop time (median over rounds).
        matching_step_cost: median time of the variant's steps that computed matchings over the
            median time of its other steps (None when the steps are not given or one kind is
            missing): what a matching costs, as a fraction of a step.
    """

    loop: float
    median_step: float
    loop_seconds: float
    matching_step_cost: float | None = None


def loop_speedup(baseline_steps: list[float], variant_steps: list[float], steps_per_loop: int,
                 matching_steps: Iterable[int] = ()) -> LoopSpeedup:
    """Speed of a variant against a baseline from their step times (:class:`LoopSpeedup`).

    Args:
        baseline_steps, variant_steps: seconds of every timed step, round after round (as
            :func:`~asymrnr_lab.sampling.sample_lockstep` returns them, concatenated over
            rounds); same length, a multiple of ``steps_per_loop``.
        steps_per_loop: denoising steps in one loop.
        matching_steps: the steps (0-based within a loop) at which the variant computed
            matchings (e.g. ``AsymRnRRuntime.matching_steps``), for :attr:`LoopSpeedup.matching_step_cost`.
    """
    if len(baseline_steps) != len(variant_steps) or not variant_steps or len(variant_steps) % steps_per_loop:
        raise ValueError(f"need equal step lists, a multiple of steps_per_loop={steps_per_loop} long; got "
                         f"{len(baseline_steps)} and {len(variant_steps)}")
    rounds = len(variant_steps) // steps_per_loop
    loops = [slice(r * steps_per_loop, (r + 1) * steps_per_loop) for r in range(rounds)]
    baseline_loops = [sum(baseline_steps[part]) for part in loops]
    variant_loops = [sum(variant_steps[part]) for part in loops]
    median_step = statistics.median(baseline_steps) / statistics.median(variant_steps)
    matching = set(matching_steps)
    computing = [t for i, t in enumerate(variant_steps) if i % steps_per_loop in matching]
    reusing = [t for i, t in enumerate(variant_steps) if i % steps_per_loop not in matching]
    cost = statistics.median(computing) / statistics.median(reusing) if computing and reusing else None
    return LoopSpeedup(whole_loop_speedup(baseline_loops, variant_loops), median_step,
                       statistics.median(variant_loops), cost)


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


#: FLOP formulas ``FlopCounterMode`` lacks: torch 2.13 counts the CUDA SDPA kernels but not the CPU
#: one eager attention runs on a CPU, so a loop's attention would count 0 FLOPs.
EXTRA_FLOP_FORMULAS = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}


def flop_counter_mode() -> flop_counter.FlopCounterMode:
    """``FlopCounterMode(display=False)`` that also counts CPU attention (:data:`EXTRA_FLOP_FORMULAS`,
    the same formula as torch's for the CUDA kernels: 4 x batch x heads x query x key x head dim)."""
    return flop_counter.FlopCounterMode(display=False, custom_mapping=EXTRA_FLOP_FORMULAS)
