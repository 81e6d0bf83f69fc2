"""cache-dit's rows of the speed/quality table (optional dependency ``asymrnr-lab[cachedit]``): its
DBCache and TaylorSeer attach to both model kinds (CogVideoX's diffusers transformer through
``enable_cache``, the ReferenceDiT through a ``BlockAdapter``), skip block work at a loose
setting (by cache-dit's own stats and by the FLOPs), change nothing when they cache nothing, and
start every batch afresh."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch._dynamo

pytest.importorskip("diffusers", reason="diffusers is not installed (pip install -e .[diffusers]); CI installs it")
pytest.importorskip("cache_dit", reason="cache-dit is not installed (pip install -e './lab[cachedit]'); CI installs it")

from accelerator_helpers import SAMPLER, STEPS, TWO_BLOCKS, sample_counting_flops  # noqa: E402

from asymrnr_lab.models import PRESETS  # noqa: E402
from asymrnr_lab.synthetic.accelerators import (  # noqa: E402
    CacheDiT,
    Eager,
    cache_dit_problem,
    cache_dit_taylorseer,
    dbcache,
)
from asymrnr_lab.synthetic.cogvideox import build_cogvideox_model  # noqa: E402
from asymrnr_lab.synthetic.config import SyntheticTaskConfig, all_captions  # noqa: E402
from asymrnr_lab.synthetic.generate import generate_videos  # noqa: E402
from asymrnr_lab.synthetic.model import TextToVideoDiT  # noqa: E402
from asymrnr_lab.synthetic.vocab import Vocabulary  # noqa: E402

#: A tiny ReferenceDiT of the task's layout with 2 blocks: 4 x 4 x 4 = 64 video tokens, width 32.
TWO_BLOCK_REFERENCE = replace(PRESETS["synthetic"], patch_size=(2, 8, 8), hidden_size=32, num_heads=2,
                              num_blocks=2, text_dim=16)
#: A threshold every step's change stays under.
ALWAYS = 1e9
#: Full steps before skipping in the loose settings (TaylorSeer of order 1 needs 4).
WARMUP = 4
#: Each cache-dit row at a setting that skips every step after the warm-up.
LOOSE = {
    "DBCache": dbcache(ALWAYS, warmup_steps=WARMUP),
    "TaylorSeer": cache_dit_taylorseer(1, ALWAYS, warmup_steps=WARMUP),
}
#: Each row at a threshold that caches nothing (0: cache-dit never compares).
NOTHING = {"DBCache": dbcache(0.0), "TaylorSeer": cache_dit_taylorseer(1, 0.0)}
KINDS = ("cogvideox", "reference")


def _reference_model() -> TextToVideoDiT:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return TextToVideoDiT(TWO_BLOCK_REFERENCE, len(Vocabulary()))


@pytest.fixture(scope="module")
def models():
    return {"cogvideox": build_cogvideox_model(0, preset=TWO_BLOCKS).eval(), "reference": _reference_model().eval()}


@pytest.fixture(scope="module")
def task():
    return SyntheticTaskConfig()


def _loop(model, task, transformer, captions=2):
    return sample_counting_flops(model, task, transformer, captions)


@pytest.fixture(scope="module")
def uncached(models, task):
    return {kind: _loop(model, task, Eager().build(model)) for kind, model in models.items()}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("row", list(LOOSE))
def test_row_skips_block_work_and_stays_close(models, task, uncached, kind, row):
    base_videos, base_flops = uncached[kind]
    cached = LOOSE[row].build(models[kind], compile=False)
    cached.reset()
    videos, flops = _loop(models[kind], task, cached)
    stats = cached.stats()
    assert stats["steps"] == STEPS
    assert stats["cached_steps"] == list(range(WARMUP, STEPS))
    # 2 blocks: a skipped step runs only the first; the FLOPs say the second really did not run
    assert flops < 0.9 * base_flops, f"{row} on {kind}: {flops} of {base_flops} FLOPs"
    assert not torch.equal(videos, base_videos)
    assert (videos - base_videos).abs().mean() < 0.5  # pixels in [-1, 1]: changed, not destroyed


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("row", list(NOTHING))
def test_caching_nothing_changes_nothing(models, task, uncached, kind, row):
    cached = NOTHING[row].build(models[kind], compile=False)
    cached.reset()
    videos, flops = _loop(models[kind], task, cached)
    assert cached.stats()["cached_steps"] == []
    torch.testing.assert_close(videos, uncached[kind][0], atol=1e-5, rtol=1e-5)
    assert flops >= uncached[kind][1]


@pytest.mark.parametrize("kind", KINDS)
def test_a_warmup_over_every_step_changes_nothing(models, task, uncached, kind):
    cached = dbcache(ALWAYS, warmup_steps=STEPS).build(models[kind], compile=False)
    cached.reset()
    videos, _ = _loop(models[kind], task, cached)
    assert cached.stats()["cached_steps"] == []
    torch.testing.assert_close(videos, uncached[kind][0], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("row", list(LOOSE))
def test_reset_starts_every_batch_afresh(models, task, kind, row):
    cached = LOOSE[row].build(models[kind], compile=False)
    cached.reset()
    first, _ = _loop(models[kind], task, cached)
    cached.reset()
    assert cached.stats() == {"steps": 0, "cached_steps": [], "residual_diffs": {}}
    again, _ = _loop(models[kind], task, cached)
    assert torch.equal(first, again)


@pytest.mark.parametrize("kind", KINDS)
def test_a_new_video_without_reset_starts_afresh_too(models, task, kind):
    """The timestep rising again (a new sampling loop) refreshes cache-dit's context, so its
    warm-up applies to every video even when nobody calls reset()."""
    cached = LOOSE["DBCache"].build(models[kind], compile=False)
    cached.reset()
    first, _ = _loop(models[kind], task, cached)
    again, _ = _loop(models[kind], task, cached)
    assert torch.equal(first, again)
    assert cached.stats()["cached_steps"] == list(range(WARMUP, STEPS))


def test_taylorseer_predicts_rather_than_reuses(models, task):
    """With its warm-up giving it a first difference, TaylorSeer's skipped steps differ from
    DBCache's reuse of the last residual on the same steps."""
    model = models["cogvideox"]
    videos = {}
    for row, cache in LOOSE.items():
        built = cache.build(model, compile=False)
        built.reset()
        videos[row], _ = _loop(model, task, built)
        assert built.stats()["cached_steps"] == list(range(WARMUP, STEPS))
    assert not torch.equal(videos["DBCache"], videos["TaylorSeer"])


def test_the_model_itself_stays_uncached(models, task, uncached):
    for kind, model in models.items():
        LOOSE["DBCache"].build(model, compile=False)
        videos, _ = _loop(model, task, Eager().build(model))
        assert torch.equal(videos, uncached[kind][0])


def test_settings_are_checked():
    with pytest.raises(ValueError, match="threshold must be >= 0"):
        dbcache(-0.1)
    with pytest.raises(TypeError, match="threshold must be a float"):
        dbcache("0.1")
    with pytest.raises(ValueError, match="compute_first must be >= 1"):
        dbcache(0.1, compute_first=0)
    with pytest.raises(ValueError, match="warmup_steps must be >= 1"):
        dbcache(0.1, warmup_steps=0)
    with pytest.raises(ValueError, match="max_continuous_cached_steps must be >= 1 or -1"):
        dbcache(0.1, max_continuous_cached_steps=0)
    with pytest.raises(TypeError, match="taylorseer_order must be an int"):
        cache_dit_taylorseer(1.5, 0.1)
    with pytest.raises(ValueError, match="TaylorSeer of order 2 needs warmup_steps >= 5"):
        cache_dit_taylorseer(2, 0.1, warmup_steps=4)
    assert cache_dit_taylorseer(2, 0.1).warmup_steps == 5 and cache_dit_taylorseer(1, 0.1).warmup_steps == 4


def test_more_compute_blocks_than_the_model_has_is_refused(models):
    with pytest.raises(ValueError, match=r"compute_first \+ compute_last \(2 \+ 1\) exceeds the model's 2 blocks"):
        CacheDiT(0.1, compute_first=2, compute_last=1).build(models["reference"], compile=False)


def test_a_transformer_of_no_known_kind_is_refused(models):
    class Other(torch.nn.Module):
        def __init__(self, transformer):
            super().__init__()
            self.transformer = transformer

    other = Other(torch.nn.Linear(2, 2))
    assert cache_dit_problem(models["cogvideox"]) == cache_dit_problem(models["reference"]) == ""
    assert "this model's transformer is Linear" in cache_dit_problem(other)
    with pytest.raises(TypeError, match="ReferenceDiT or to a diffusers transformer"):
        dbcache(0.1).build(other)


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_compiled_matches_eager(models, task, kind):
    """The row as the table runs it: Inductor over the whole cached copy (cache-dit's decisions
    run between graphs); the same steps skipped and the same videos as eagerly. Slow: Inductor
    compiles each graph piece (about 20-45 s on 2 CPU cores)."""
    model = models[kind]
    eager = LOOSE["DBCache"].build(model, compile=False)
    compiled = LOOSE["DBCache"].build(model)
    for built in (eager, compiled):
        built.reset()
    expected, _ = _loop(model, task, eager)
    got = generate_videos(model, all_captions(task)[:2], [0, 1], task, SAMPLER, transformer=compiled, batch_size=2)
    assert compiled.stats()["cached_steps"] == list(range(WARMUP, STEPS))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_a_stacked_row_reduces_and_skips(kind, models, task, monkeypatch):
    """``CacheDiT(asymrnr=...)``: the blocks compiled regionally under asymrnr (variants run eagerly
    here), every block reduced while cache-dit skips the steps after its warm-up (the probe block
    reduced too: ``exact_probe_blocks=False``); by default the probe block is left exact and the
    others are reduced."""
    from helpers import eager_compiler
    from reduction_checks import assert_reduced

    import asymrnr_compile.backend
    from asymrnr_compile import AsymRnRConfig

    monkeypatch.setattr(asymrnr_compile.backend, "inductor_compiler", eager_compiler)
    torch._dynamo.reset()
    config = AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, min_video_tokens=8, dst_stride=(1, 2, 2), cache_steps=2)
    stacked = replace(LOOSE["DBCache"], asymrnr=config, exact_probe_blocks=False).build(models[kind])
    stacked.reset()
    captions = all_captions(task)[:2]  # not under FlopCounterMode, which compiled code does not run in
    videos = generate_videos(models[kind], captions, [0, 1], task, SAMPLER, transformer=stacked, batch_size=2)
    assert torch.isfinite(videos).all()
    assert_reduced(stacked.backend)
    assert len(stacked.stats()["cached_steps"]) == STEPS - WARMUP
    torch._dynamo.reset()

    exact = replace(LOOSE["DBCache"], asymrnr=config).build(models[kind])
    exact.reset()
    generate_videos(models[kind], captions, [0, 1], task, SAMPLER, transformer=exact, batch_size=2)
    probe = exact.backend.config.skip_blocks
    assert len(probe) == 1 and probe[0].endswith("blocks.0")
    graphs = exact.backend.report().to_dict()["graphs"]
    assert any(graph["cache_misses"] > 0 for graph in graphs)
    assert any(f"block {probe[0]!r} is in skip_blocks" in graph["unreduced_calls"] for graph in graphs)
    assert len(exact.stats()["cached_steps"]) == STEPS - WARMUP
    torch._dynamo.reset()


def test_the_probe_blocks_of_a_block_adapter_are_named_from_its_block_list():
    """cache-dit's ``get_adapter`` knows no model attached through a ``BlockAdapter``: given the
    list the adapter was built over, the first ``Fn_compute_blocks`` are named by their paths."""
    import cache_dit

    from asymrnr_compile.pipelines import step_cache_probe_blocks
    from asymrnr_lab.models import build_reference_model

    model = build_reference_model("tiny")
    two_first = cache_dit.DBCacheConfig(Fn_compute_blocks=2, Bn_compute_blocks=0)
    assert step_cache_probe_blocks(model, two_first, "cache-dit", blocks=model.blocks) == ("blocks.0", "blocks.1")
    one_first = cache_dit.DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0)
    assert step_cache_probe_blocks(model, one_first, "cache-dit", blocks=model.blocks) == ("blocks.0",)
    assert step_cache_probe_blocks(model, one_first, "cache-dit", blocks=torch.nn.ModuleList()) == ()
