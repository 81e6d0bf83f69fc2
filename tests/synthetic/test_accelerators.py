"""Accelerators of the speed/quality table: diffusers' cache hooks on the CogVideoX text-to-video
model fire (fewer FLOPs, different but close videos), keep the sampler's [cond, uncond] order,
reset between batches, refuse a model of no diffusers class, and run through compare_variants."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers]); CI installs it")

from accelerator_helpers import SAMPLER, STEPS, TWO_BLOCKS, sample_counting_flops  # noqa: E402

from asymrnr_lab.sampling import SamplerConfig  # noqa: E402
from asymrnr_lab.synthetic import accelerators  # noqa: E402
from asymrnr_lab.synthetic.accelerators import (  # noqa: E402
    AcceleratedTransformer,
    DiffusersCache,
    Eager,
    faster_cache,
    first_block_cache,
    pyramid_attention_broadcast,
    taylorseer,
)
from asymrnr_lab.synthetic.cogvideox import build_cogvideox_model  # noqa: E402
from asymrnr_lab.synthetic.compare import compare_variants  # noqa: E402
from asymrnr_lab.synthetic.config import SyntheticTaskConfig, all_captions  # noqa: E402
from asymrnr_lab.synthetic.generate import generate_videos  # noqa: E402
from asymrnr_lab.synthetic.model import build_text_to_video_model  # noqa: E402

#: A first-block-cache threshold no step's change stays under, and one every step's does.
NEVER, ALWAYS = 1e-9, 1e9

#: Each hook at a setting that skips work within :data:`STEPS` steps.
HOOKS = {
    "first-block cache": first_block_cache(ALWAYS),
    "pyramid attention broadcast": pyramid_attention_broadcast(2, timestep_range=(-1, 1001)),
    "FasterCache": faster_cache(2),
    "TaylorSeer": taylorseer(2, disable_before_step=1),
}


@pytest.fixture(scope="module")
def tiny():
    return build_cogvideox_model(0, preset=TWO_BLOCKS).eval(), SyntheticTaskConfig()


def _loop(tiny, transformer, captions=2):
    return sample_counting_flops(*tiny, transformer, captions)


@pytest.fixture(scope="module")
def unhooked(tiny):
    return _loop(tiny, Eager().build(tiny[0]))


@pytest.mark.parametrize("name", list(HOOKS))
def test_hook_skips_work_and_stays_close(tiny, unhooked, name):
    base_videos, base_flops = unhooked
    hooked = HOOKS[name].build(tiny[0], compile=False)
    hooked.reset()
    videos, flops = _loop(tiny, hooked)
    assert flops < 0.95 * base_flops, f"{name} did not skip any work ({flops} of {base_flops} FLOPs)"
    assert not torch.equal(videos, base_videos)
    assert (videos - base_videos).abs().mean() < 0.5  # pixels in [-1, 1]: changed, not destroyed


def test_first_block_cache_under_its_threshold_changes_nothing(tiny, unhooked):
    hooked = first_block_cache(NEVER).build(tiny[0], compile=False)
    hooked.reset()
    videos, flops = _loop(tiny, hooked)
    assert torch.allclose(videos, unhooked[0], atol=1e-5)
    assert flops >= unhooked[1]  # every block ran (plus the cache's own comparisons)


def test_hooks_leave_the_model_itself_unhooked(tiny, unhooked):
    HOOKS["first-block cache"].build(tiny[0], compile=False)
    videos, _ = _loop(tiny, Eager().build(tiny[0]))
    assert torch.equal(videos, unhooked[0])


def test_reset_starts_every_batch_afresh(tiny):
    hooked = HOOKS["TaylorSeer"].build(tiny[0], compile=False)
    hooked.reset()
    first, _ = _loop(tiny, hooked)
    hooked.reset()
    again, _ = _loop(tiny, hooked)
    assert torch.equal(first, again)


def test_faster_cache_sees_uncond_first_and_the_sampler_gets_cond_first(tiny):
    """On its first step FasterCache computes everything: the output equals the unhooked one, so
    the halves were swapped in and back out."""
    model, task = tiny
    hooked = faster_cache(2).build(model, compile=False)
    hooked.reset()
    generator = torch.Generator().manual_seed(0)
    inputs = {"hidden_states": torch.randn(2, *task.video_shape, generator=generator).repeat(2, 1, 1, 1, 1),
              "encoder_hidden_states": torch.randn(4, TWO_BLOCKS.text_tokens, TWO_BLOCKS.text_dim,
                                                   generator=generator),
              "timestep": torch.full((4,), 999.0)}
    with torch.no_grad():
        expected = model.transformer(**inputs)
        got = hooked(**inputs)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_swap_halves_swaps_the_two_halves():
    batch = torch.arange(6).reshape(6, 1)
    assert accelerators._swap_halves(batch).flatten().tolist() == [3, 4, 5, 0, 1, 2]
    assert torch.equal(accelerators._swap_halves(accelerators._swap_halves(batch)), batch)


def test_hooks_refuse_a_model_of_no_diffusers_class():
    reference = build_text_to_video_model(0)
    with pytest.raises(TypeError, match="arch='cogvideox'.*ReferenceDiT"):
        first_block_cache(0.05).build(reference)


def test_a_stack_with_asymrnr_cannot_run_eagerly(tiny):
    from asymrnr_compile import AsymRnRConfig

    stack = DiffusersCache(first_block_cache(0.05).make_config, asymrnr=AsymRnRConfig())
    with pytest.raises(ValueError, match="asymrnr runs only compiled"):
        stack.build(tiny[0], compile=False)


class _CountingEager:
    """An eager accelerator that counts its resets."""

    def __init__(self) -> None:
        self.resets = 0

    def build(self, model):
        def reset() -> None:
            self.resets += 1
        return AcceleratedTransformer(model.transformer, reset)


def test_compare_variants_takes_accelerators_and_resets_them_per_batch(tiny):
    model, task = tiny
    counting = _CountingEager()
    captions = all_captions(task)[:4]
    result = compare_variants(model, task, captions, [0, 1, 2, 3],
                              {"eager again": counting, "TaylorSeer": HOOKS["TaylorSeer"]},
                              SamplerConfig(steps=2), batch_size=2, compile_reference=False, log=lambda _: None)
    assert counting.resets == 3  # before the first batch and after each of the two
    assert result.variants["eager again"].report.psnr == float("inf")
    assert result.variants["TaylorSeer"].backend_report is None


def _compiled_regions(tiny, transformer) -> list[str]:
    """The names of the compiled regions one sampling loop of ``transformer`` entered (not under
    :func:`_loop`'s FLOP counter: compiled code does not run under a dispatch mode)."""
    model, task = tiny
    with torch.profiler.profile() as profiler:
        generate_videos(model, all_captions(task)[:2], [0, 1], task, SAMPLER, transformer=transformer, batch_size=2)
    return [event.name for event in profiler.events() if event.name.startswith("Torch-Compiled Region")]


def test_plain_inductor_runs_its_own_graph_after_a_hooked_copy_compiled(tiny):
    """Every ``torch.compile(backend="inductor")`` of the same class shares Dynamo's cache per code
    object, and under ``inline_inbuilt_nn_modules`` a graph-broken entry compiled for a hooked
    copy passes the guards of the unhooked model: without ``isolate_recompiles`` the baseline then
    ran the hook row's graph-broken code (measured: 12-18% slower, every speedup of the table
    inflated). Each accelerator keeps its own entries: one region per model call, the same one."""
    plain = accelerators.PlainInductor().build(tiny[0])
    own = _compiled_regions(tiny, plain)
    assert len(own) == STEPS and len(set(own)) == 1  # fullgraph: one region per call (batched CFG)
    hooked = first_block_cache(NEVER).build(tiny[0])
    hooked.reset()
    assert len(set(_compiled_regions(tiny, hooked))) > 1  # the hooks break the graph
    assert _compiled_regions(tiny, plain) == own
