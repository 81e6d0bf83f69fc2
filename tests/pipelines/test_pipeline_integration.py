"""``enable_asymrnr(pipe)``: every pipeline call is one video scope, with the pipeline's steps.

On the tiny offline Wan 2.2-style pipeline (``tiny_pipeline("wan22")``: two experts of one class,
``transformer_2`` with other weights taking the steps below the boundary):

- both experts see the pipeline's global step: ``warmup_steps`` and a schedule are read at the
  step where ``transformer_2`` takes over, not at 0 (the run equals the same steps run without
  the second expert's restart, bit for bit);
- each expert keeps its own matchings (a switch in the middle of a matching window computes a
  matching for the second expert instead of reusing the first one's);
- a warm-up call before the video leaves the video bit-for-bit equal to a clean run.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch._dynamo

pytest.importorskip("diffusers")

from reduction_checks import assert_reduced  # noqa: E402

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig, Schedule, disable_asymrnr, enable_asymrnr  # noqa: E402
from asymrnr_lab.models.diffusers_pipelines import SMALL_GRID, tiny_pipeline  # noqa: E402

STEPS = 6
#: 128 px, 5 frames: a 2 x 8 x 8 latent token grid (128 video tokens).
CALL = {"height": 128, "width": 128, "num_frames": 5}
#: With 6 steps (timesteps 1000, 966, 914, 826, 644, 47): transformer_2 from step 3 (below 900),
#: or from step 2 (below 950).
SWITCH_AT_WINDOW_START = (0.9, 3)  # cache 2, warm-up 1: windows 1-2, 3-4, 5
SWITCH_MID_WINDOW = (0.95, 2)
OPTIONS = {**SMALL_GRID, "q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2, "warmup_steps": 1}


def _schedule() -> Schedule:
    """q 0.5 then 0.25 from step 3, kv 0.3 throughout, on the tiny Wan's 2 blocks."""
    q = torch.full((2, STEPS), 0.5, dtype=torch.float64)
    q[:, 3:] = 0.25
    return Schedule({"q": q, "kv": torch.full((2, STEPS), 0.3, dtype=torch.float64)})


def _pipeline(boundary_ratio: float, same_expert_weights: bool = False, share_expert: bool = False):
    tiny = tiny_pipeline("wan22", steps=STEPS, boundary_ratio=boundary_ratio)
    pipe = tiny.pipe
    if same_expert_weights:  # transformer_2: the first expert's weights, another module
        pipe.register_modules(transformer_2=copy.deepcopy(pipe.transformer))
    if share_expert:  # no second expert: the first one runs every step
        pipe.register_modules(transformer_2=pipe.transformer)
    return tiny


def _run(tiny, config: AsymRnRConfig, *, warm_up: bool = False, seed: int = 0):
    torch._dynamo.reset()
    records = []
    backend = AsymRnRBackend(config, on_matching=records.append)
    enable_asymrnr(tiny.pipe, backend=backend, fullgraph=True)
    if warm_up:
        tiny(seed=seed + 1, **CALL, num_inference_steps=1)
        records.clear()
    frames = tiny(seed=seed, **CALL)
    return frames, backend, records


@pytest.mark.parametrize("with_schedule", [False, True], ids=["fixed", "schedule"])
def test_the_second_expert_continues_at_the_pipelines_step(with_schedule):
    """transformer_2 takes over at step 3, the start of a matching window. Its steps are the
    pipeline's: the run equals, bit for bit, the same pipeline whose second expert is the first
    module itself (no switch, no restart). Had it restarted at step 0, warm-up would skip its
    first step and the schedule would give it q 0.5 instead of 0.25."""
    boundary, switch = SWITCH_AT_WINDOW_START
    options = {**OPTIONS, **({"schedule": _schedule()} if with_schedule else {})}
    config = AsymRnRConfig(**options)
    two, backend, records = _run(_pipeline(boundary, same_expert_weights=True), config)
    assert_reduced(backend)
    one, _, one_records = _run(_pipeline(boundary, share_expert=True), config)
    torch.testing.assert_close(two, one, rtol=0, atol=0)
    # matchings at the windows' first steps after the warm-up step: 1, 3 (transformer_2's first), 5
    assert sorted({r.step for r in records}) == [1, switch, 5]
    assert sorted({r.step for r in one_records}) == [1, switch, 5]
    if with_schedule:  # q read at the global step: 0.25 from step 3 on (the schedule's second half)
        kept_q = {r.step: r.indices.keep.shape[-1] for r in records if r.feature == "q"}
        assert (kept_q[1], kept_q[switch]) == (64, 96)  # of 128 video tokens


def test_each_expert_keeps_its_own_matchings():
    """transformer_2 takes over at step 2, in the middle of the window of steps 1-2: it computes
    a matching of its own at step 2 instead of reusing transformer's from step 1."""
    boundary, switch = SWITCH_MID_WINDOW
    _, backend, records = _run(_pipeline(boundary), AsymRnRConfig(**OPTIONS))
    assert_reduced(backend)
    computed = sorted({r.step for r in records})
    assert computed == [1, switch, 3, 5]
    # both experts ran one compiled graph (same class and options), with a state each
    report = backend.report().to_dict()
    assert report["steps"] == STEPS


def test_a_warm_up_call_leaves_the_video_equal_to_a_clean_run():
    boundary, _ = SWITCH_MID_WINDOW
    config = AsymRnRConfig(**OPTIONS)
    clean, backend, records = _run(_pipeline(boundary), config)
    assert_reduced(backend)
    warmed, _, warmed_records = _run(_pipeline(boundary), config, warm_up=True)
    torch.testing.assert_close(warmed, clean, rtol=0, atol=0)
    assert [(r.step, r.call_index, r.site.index, r.feature) for r in warmed_records] == \
        [(r.step, r.call_index, r.site.index, r.feature) for r in records]


def test_enable_and_disable_restore_the_pipeline():
    tiny = tiny_pipeline("wan", steps=2)
    original = type(tiny.pipe)
    torch._dynamo.reset()
    backend = enable_asymrnr(tiny.pipe, {"q_ratio": 0.4})
    assert isinstance(tiny.pipe, original) and type(tiny.pipe).__name__ == original.__name__
    assert backend.config.q_ratio == 0.4
    with pytest.raises(ValueError, match="already enabled"):
        enable_asymrnr(tiny.pipe)
    assert disable_asymrnr(tiny.pipe)
    assert type(tiny.pipe) is original
    assert tiny.pipe.transformer._compiled_call_impl is None
    assert not disable_asymrnr(tiny.pipe)
    torch._dynamo.reset()


def test_enable_rejects_bad_arguments_naming_them():
    tiny = tiny_pipeline("wan", steps=2)
    with pytest.raises(ValueError, match="unknown asymrnr option 'q_raito'"):
        enable_asymrnr(tiny.pipe, {"q_raito": 0.5})
    with pytest.raises(ValueError, match="not both"):
        enable_asymrnr(tiny.pipe, {"q_ratio": 0.5}, backend=AsymRnRBackend())
    with pytest.raises(TypeError, match="backend must be an AsymRnRBackend"):
        enable_asymrnr(tiny.pipe, backend="asymrnr")
    with pytest.raises(TypeError, match="regional must be a bool"):
        enable_asymrnr(tiny.pipe, regional="yes")
    with pytest.raises(TypeError, match="diffusers pipeline"):
        enable_asymrnr(object())
    assert not hasattr(tiny.pipe, "_asymrnr_integration")  # nothing was changed
    assert tiny.pipe.transformer._compiled_call_impl is None
