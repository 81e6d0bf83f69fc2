"""asymrnr stacked with a step cache (diffusers' first-block cache and TaylorSeer, cache-dit's
DBCache) on the blocks compiled regionally.

What is guaranteed, on a tiny CogVideoX (3 blocks: the first decides, the other two can be
skipped), with ``cache_steps=2`` and no warm-up (windows: steps 0-1, 2-3, 4-5):

- the steps a cache skips keep their place: a block skipped at the first step of a window
  computes its matching at the next step it runs in that window (a cache miss), and the next
  window starts at the pipeline's step (``step // cache_steps``), not at the count of the block's
  calls: in a video scope (``set_step``, counted from timesteps, and through a pipeline with
  ``enable_asymrnr(..., step_cache=...)``) and without one (the layout hook's step count);
- a cache that reuses a block's residual sees asymrnr's restored full-length output: at threshold
  0 (never skips) the stack equals asymrnr alone, and asymrnr at ratio 0 equals the cache alone;
- a second identical video gives the same output (the cache and the matchings start clean);
- by default the cache's probe block (the first, whose output change decides) is left unreduced,
  and the cache then skips exactly the steps it skips alone.

The cache's decision is forced per step (a monkeypatched decision) so that the skipped steps are
known; the variants run eagerly (``eager_compiler``: the same analysis, plans and rewrites without
Inductor's compile time).
"""

from __future__ import annotations

import contextlib
import os

import pytest
import torch
import torch._dynamo

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from helpers import eager_compiler  # noqa: E402
from reduction_checks import assert_reduced  # noqa: E402

import asymrnr_compile.backend  # noqa: E402
from asymrnr_compile import (  # noqa: E402
    AsymRnRBackend,
    AsymRnRConfig,
    CacheDiTConfig,
    compile_repeated_blocks,
    disable_asymrnr,
    enable_asymrnr,
    video,
)
from asymrnr_compile.runtime.video_scope import current_video  # noqa: E402
from asymrnr_lab.models.diffusers_pipelines import SMALL_GRID, tiny_pipeline  # noqa: E402

STEPS = 6
LAYERS = 3
#: Steps at which the forced cache skips the blocks after the first: step 2 starts the window 2-3.
SKIPPED = frozenset({2, 5})
#: The tail blocks run at steps 0, 1, 3, 4: their matchings at 0 (window 0-1), 3 (window 2-3, whose
#: first step was skipped: a miss) and 4 (window 4-5); the first block's at 0, 2 and 4.
HEAD_MATCHING_STEPS = [0, 2, 4]
TAIL_MATCHING_STEPS = [0, 3, 4]
OPTIONS = {**SMALL_GRID, "q_ratio": 0.5, "kv_ratio": 0.3, "cache_steps": 2, "warmup_steps": 0}
#: A threshold no step's change reaches (the first-block cache then skips every step after the first).
ALWAYS = 1e9
TIMESTEPS = [999, 800, 600, 400, 200, 50]


@pytest.fixture(autouse=True)
def _eager_and_fresh(monkeypatch):
    monkeypatch.setattr(asymrnr_compile.backend, "inductor_compiler", eager_compiler)
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.fixture
def forced_first_block_cache(monkeypatch):
    """diffusers' first-block cache skips the remaining blocks exactly at the steps in
    ``state["skip"]``; the step is the video scope's, else ``state["step"]`` (set by the loop)."""
    from diffusers.hooks.first_block_cache import FBCHeadBlockHook

    state = {"skip": SKIPPED, "step": 0}

    @torch.compiler.disable
    def should_compute(self, residual):
        scope = current_video()
        step = scope.step if scope is not None and scope.explicit else state["step"]
        return step not in state["skip"]

    monkeypatch.setattr(FBCHeadBlockHook, "_should_compute_remaining_blocks", should_compute)
    return state


def _transformer():
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(0)
    return CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, time_embed_dim=2,
        text_embed_dim=8, num_layers=LAYERS, sample_width=8, sample_height=8, sample_frames=8, patch_size=2,
        temporal_compression_ratio=4, max_text_seq_length=8).eval()


def _matching_steps(records) -> dict[int, list[int]]:
    """Per block (its attention's global index) the steps at which a q matching was computed."""
    steps: dict[int, list[int]] = {}
    for record in records:
        if record.feature == "q":
            steps.setdefault(record.site.index, []).append(record.step)
    return steps


def _assert_windows_kept(records, backend) -> None:
    assert _matching_steps(records) == {0: HEAD_MATCHING_STEPS, 1: TAIL_MATCHING_STEPS, 2: TAIL_MATCHING_STEPS}
    report = assert_reduced(backend)
    features = 2  # q and kv
    runs = {0: STEPS, 1: STEPS - len(SKIPPED), 2: STEPS - len(SKIPPED)}
    misses = features * (len(HEAD_MATCHING_STEPS) + 2 * len(TAIL_MATCHING_STEPS))
    assert report["cache_misses"] == misses
    assert report["cache_hits"] == features * sum(runs.values()) - misses


@pytest.mark.parametrize("mode", ["no scope", "scope with set_step", "scope counting timesteps"])
def test_skipped_steps_keep_the_matching_windows(mode, forced_first_block_cache):
    """A loop over the transformer, compiled with ``compile_repeated_blocks`` (no scope: the
    layout hook's step count; in a scope: the scope's step)."""
    from diffusers.hooks import FirstBlockCacheConfig

    transformer = _transformer()
    transformer.enable_cache(FirstBlockCacheConfig(threshold=0.0))
    records = []
    backend = AsymRnRBackend(AsymRnRConfig(**OPTIONS), on_matching=records.append)
    compile_repeated_blocks(transformer, backend=backend)
    generator = torch.Generator().manual_seed(0)
    latents, text = torch.randn(1, 3, 4, 8, 8, generator=generator), torch.randn(1, 8, 8, generator=generator)
    scope = video(num_steps=STEPS) if mode != "no scope" else contextlib.nullcontext()
    with torch.no_grad(), scope as open_scope:
        for step, t in enumerate(TIMESTEPS):
            forced_first_block_cache["step"] = step
            if mode == "scope with set_step":
                open_scope.set_step(step)
            with transformer.cache_context("cond_uncond"):
                transformer(hidden_states=latents, encoder_hidden_states=text, timestep=torch.tensor([t]))
    _assert_windows_kept(records, backend)


def _pipeline(step_cache, options=None, records=None, exact_probe_blocks=False):
    """A tiny CogVideoX pipeline with asymrnr and ``step_cache``; the cache's probe block reduced
    too unless ``exact_probe_blocks`` (these tests follow every block's matching windows)."""
    tiny = tiny_pipeline("cogvideox", steps=STEPS, num_layers=LAYERS)
    backend = AsymRnRBackend(AsymRnRConfig(**(options or OPTIONS)),
                             on_matching=None if records is None else records.append)
    enable_asymrnr(tiny.pipe, backend=backend, regional=True, step_cache=step_cache,
                   exact_probe_blocks=exact_probe_blocks)
    return tiny, backend


def test_a_pipeline_with_the_first_block_cache_keeps_the_matching_windows(forced_first_block_cache):
    from diffusers.hooks import FirstBlockCacheConfig

    records = []
    tiny, backend = _pipeline(FirstBlockCacheConfig(threshold=0.0), records=records)
    frames = tiny(seed=0)
    assert torch.isfinite(frames).all()
    _assert_windows_kept(records, backend)
    records.clear()  # a second video: the same matching steps, the same frames
    again = tiny(seed=0)
    assert _matching_steps(records) == {0: HEAD_MATCHING_STEPS, 1: TAIL_MATCHING_STEPS, 2: TAIL_MATCHING_STEPS}
    torch.testing.assert_close(again, frames, rtol=0, atol=0)


def test_a_pipeline_with_the_first_block_cache_skips_steps_and_reduces():
    """Unforced: at a threshold no change reaches, the cache skips every step after the first
    (the tail blocks run once), and every block is reduced."""
    from diffusers.hooks import FirstBlockCacheConfig

    records = []
    tiny, backend = _pipeline(FirstBlockCacheConfig(threshold=ALWAYS), records=records)
    tail_calls = []
    for block in tiny.pipe.transformer.transformer_blocks[1:]:
        block.register_forward_pre_hook(lambda *_: tail_calls.append(1))
    frames = tiny(seed=0)
    assert torch.isfinite(frames).all()
    assert_reduced(backend)
    # the cache's own effect: the two tail blocks' hooks ran every step, their blocks only at step 0
    assert _matching_steps(records) == {0: HEAD_MATCHING_STEPS, 1: [0], 2: [0]}
    assert len(tail_calls) == (LAYERS - 1) * STEPS


@pytest.mark.parametrize("cache", ["first-block cache", "DBCache"])
def test_the_stack_equals_each_part_alone_where_the_other_does_nothing(cache):
    """Threshold 0 (the cache never skips): the stack equals asymrnr alone; asymrnr at ratio 0:
    the stack equals the cache alone. Both with the cache skipping at a threshold that always
    skips, so the reused residual is asymrnr's restored full-length output."""
    step_cache = _step_cache(cache, 0.0)
    stacked, backend = _pipeline(step_cache)
    stacked_frames = stacked(seed=0)
    assert_reduced(backend)
    alone, alone_backend = _pipeline(None)
    torch.testing.assert_close(stacked_frames, alone(seed=0), rtol=0, atol=1e-6)
    assert_reduced(alone_backend)

    torch._dynamo.reset()
    cache_only, _ = _pipeline(_step_cache(cache, ALWAYS), {**OPTIONS, "q_ratio": 0.0, "kv_ratio": 0.0})
    stacked_zero = cache_only(seed=0)
    plain = tiny_pipeline("cogvideox", steps=STEPS, num_layers=LAYERS)
    _enable_plain(plain.pipe, _step_cache(cache, ALWAYS))
    torch.testing.assert_close(stacked_zero, plain(seed=0), rtol=0, atol=1e-6)


def _step_cache(cache: str, threshold: float):
    if cache == "first-block cache":
        from diffusers.hooks import FirstBlockCacheConfig

        return FirstBlockCacheConfig(threshold=threshold)
    cache_dit = _cache_dit()
    return cache_dit.DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=threshold,
                                   max_warmup_steps=2, max_cached_steps=-1, max_continuous_cached_steps=-1)


def _enable_plain(pipe, step_cache) -> None:
    """The cache alone, eager, as enable_asymrnr applies it (cleared at each call)."""
    if type(step_cache).__module__.startswith("cache_dit"):
        cache_dit = _cache_dit()
        cache_dit.enable_cache(pipe.transformer, cache_config=step_cache)
        cache_dit.refresh_context(pipe.transformer)
    else:
        pipe.transformer.enable_cache(step_cache)


def _cache_dit():
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "warning")
    return pytest.importorskip("cache_dit", reason="cache-dit is not installed (pip install -e './lab[cachedit]')")


def test_a_pipeline_with_cache_dit_keeps_the_windows_and_skips_steps():
    """cache-dit's DBCache F1B0 with 2 full warm-up steps, a threshold every change stays under and
    at most 1 skipped step in a row: the tail blocks run at steps 0, 1, 3, 5 (skipped 2 and 4):
    their matchings at 0, 3 (window 2-3 started at a skipped step) and 5 (likewise)."""
    cache_dit = _cache_dit()
    cache = cache_dit.DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=ALWAYS,
                                    max_warmup_steps=2, max_cached_steps=-1, max_continuous_cached_steps=1)
    records = []
    tiny, backend = _pipeline(CacheDiTConfig(cache), records=records)
    frames = tiny(seed=0)
    assert torch.isfinite(frames).all()
    assert_reduced(backend)
    assert _matching_steps(records) == {0: HEAD_MATCHING_STEPS, 1: [0, 3, 5], 2: [0, 3, 5]}
    context = _cache_dit_context(tiny.pipe.transformer)
    assert sorted(context.get_cached_steps()) == [2, 4]
    records.clear()
    again = tiny(seed=0)  # a second video: the cache and the matchings start clean
    torch.testing.assert_close(again, frames, rtol=0, atol=0)
    assert _matching_steps(records) == {0: HEAD_MATCHING_STEPS, 1: [0, 3, 5], 2: [0, 3, 5]}
    assert disable_asymrnr(tiny.pipe)


def _cache_dit_context(transformer):
    (name,) = transformer._context_names
    return transformer._context_manager.get_context(name)


def test_a_taylorseer_calibrator_runs_stacked():
    cache_dit = _cache_dit()
    cache = cache_dit.DBCacheConfig(Fn_compute_blocks=1, Bn_compute_blocks=0, residual_diff_threshold=ALWAYS,
                                    max_warmup_steps=4, max_cached_steps=-1, max_continuous_cached_steps=-1)
    tiny, backend = _pipeline(CacheDiTConfig(cache, cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=1)))
    assert torch.isfinite(tiny(seed=0)).all()
    assert_reduced(backend)
    assert sorted(_cache_dit_context(tiny.pipe.transformer).get_cached_steps()) == [4, 5]


def _taylorseer():
    """diffusers' TaylorSeer hook as the speed/quality table configures it (lite mode: the blocks
    skipped on its cached steps), computing the blocks at step 0 and then every 2 steps: steps 0, 2
    and 4 of :data:`STEPS`."""
    from asymrnr_lab.synthetic.accelerators import taylorseer

    return taylorseer(2, disable_before_step=1).make_config(lambda: float("nan"))


#: Steps at which :func:`_taylorseer` computes the blocks: each the first of its matching window.
TAYLORSEER_COMPUTED_STEPS = [0, 2, 4]


def test_diffusers_taylorseer_runs_stacked_and_its_skipped_steps_run_no_block():
    """A cache on a fixed schedule: the blocks run (reduced) only on the steps TaylorSeer computes,
    as many block calls as TaylorSeer alone computes, each opening its window's matching; with
    asymrnr at ratio 0 the stack equals TaylorSeer alone (the predicted output is built from
    full-length block outputs)."""
    records = []
    tiny, backend = _pipeline(_taylorseer(), records=records)
    assert torch.isfinite(tiny(seed=0)).all()
    report = assert_reduced(backend)
    assert _matching_steps(records) == {block: TAYLORSEER_COMPUTED_STEPS for block in range(LAYERS)}
    block_calls = sum(graph["calls"] for graph in report["graphs"])
    assert block_calls == LAYERS * len(TAYLORSEER_COMPUTED_STEPS)
    features = 2  # q and kv
    assert report["cache_misses"] == features * block_calls and report["cache_hits"] == 0

    alone = tiny_pipeline("cogvideox", steps=STEPS, num_layers=LAYERS)
    alone.pipe.transformer.enable_cache(_taylorseer())
    computed = []
    for block in alone.pipe.transformer.transformer_blocks:  # a block's norm runs only when it computes
        block.norm1.register_forward_pre_hook(lambda *_: computed.append(1))
    alone_frames = alone(seed=0)
    assert len(computed) == block_calls

    torch._dynamo.reset()
    unreduced, _ = _pipeline(_taylorseer(), {**OPTIONS, "q_ratio": 0.0, "kv_ratio": 0.0})
    torch.testing.assert_close(unreduced(seed=0), alone_frames, rtol=0, atol=1e-6)


def test_step_cache_arguments_are_checked_naming_them():
    from diffusers.hooks import FirstBlockCacheConfig

    tiny = tiny_pipeline("cogvideox", steps=2)
    with pytest.raises(ValueError, match="step_cache needs regional=True"):
        enable_asymrnr(tiny.pipe, step_cache=FirstBlockCacheConfig(threshold=0.1))
    with pytest.raises(TypeError, match="step_cache must be None, a diffusers cache config"):
        enable_asymrnr(tiny.pipe, regional=True, step_cache=("DBCacheConfig", None))
    with pytest.raises(TypeError, match="CacheDiTConfig.cache must be a cache-dit DBCacheConfig"):
        CacheDiTConfig(FirstBlockCacheConfig(threshold=0.1))
    assert not hasattr(tiny.pipe, "_asymrnr_integration")
    assert tiny.pipe.transformer._compiled_call_impl is None


def test_disable_removes_the_step_cache():
    from diffusers.hooks import FirstBlockCacheConfig

    tiny, _ = _pipeline(FirstBlockCacheConfig(threshold=0.1))
    assert tiny.pipe.transformer.is_cache_enabled
    assert disable_asymrnr(tiny.pipe)
    assert not tiny.pipe.transformer.is_cache_enabled


@pytest.mark.parametrize("cache", ["first-block cache", "DBCache"])
def test_the_cache_probe_block_is_left_exact_and_the_cache_skips_as_alone(cache, first_block_cache_decisions):
    """By default (``exact_probe_blocks=True``) the probe block joins ``skip_blocks``: its calls run
    unreduced, the two tail blocks are reduced, and the cache, comparing exact first-block outputs,
    skips exactly the steps it skips without asymrnr (a threshold some steps stay under)."""
    threshold = 0.2
    records = []
    tiny, backend = _pipeline(_step_cache(cache, threshold), records=records, exact_probe_blocks=True)
    frames = tiny(seed=0)
    assert torch.isfinite(frames).all()
    probe = "transformer_blocks.0"
    assert backend.config.skip_blocks == (probe,)
    assert tiny.pipe._asymrnr_integration.probe_blocks == {"transformer": (probe,)}
    # (the first-block cache's hooks break the probe block into graphs of its own: those only
    # ever run unreduced, so assert_reduced, which wants every graph reduced, does not apply)
    graphs = backend.report().to_dict()["graphs"]
    assert graphs and all(graph.get("regional") and graph["fallback_reason"] is None for graph in graphs)
    assert any(graph["cache_misses"] > 0 for graph in graphs)
    unreduced: dict[str, int] = {}
    for graph in graphs:
        for reason, calls in graph["unreduced_calls"].items():
            unreduced[reason] = unreduced.get(reason, 0) + calls
    reason = f"block {probe!r} is in skip_blocks"
    assert set(unreduced) == {reason} and unreduced[reason] >= STEPS
    assert set(_matching_steps(records)) == {1, 2}  # no matching in the probe block
    skipped = _skipped_steps(tiny.pipe.transformer, cache, first_block_cache_decisions)
    first_block_cache_decisions.clear()

    torch._dynamo.reset()
    plain = tiny_pipeline("cogvideox", steps=STEPS, num_layers=LAYERS)
    _enable_plain(plain.pipe, _step_cache(cache, threshold))
    plain(seed=0)
    alone = _skipped_steps(plain.pipe.transformer, cache, first_block_cache_decisions)
    assert 0 < len(alone) < STEPS - 1 and skipped == alone  # some steps skipped, some not, the same ones
    assert disable_asymrnr(tiny.pipe) and backend.config.skip_blocks == ()


def _skipped_steps(transformer, cache: str, decisions: list[bool]) -> list[int]:
    """The steps at which the cache skipped the tail blocks in the last video: cache-dit's own
    record, or for the first-block cache the indices of its decisions to skip (``decisions``, one
    per model call after the first, in order)."""
    if cache == "DBCache":
        return sorted(_cache_dit_context(transformer).get_cached_steps())
    return [index for index, computed in enumerate(decisions) if not computed]


@pytest.fixture
def first_block_cache_decisions(monkeypatch):
    """Record the first-block cache's decisions (whether it computed the other blocks), in order."""
    from diffusers.hooks.first_block_cache import FBCHeadBlockHook

    decisions: list[bool] = []
    original = FBCHeadBlockHook._should_compute_remaining_blocks

    @torch.compiler.disable
    def should_compute(self, residual):
        computed = original(self, residual)
        decisions.append(bool(computed))
        return computed

    monkeypatch.setattr(FBCHeadBlockHook, "_should_compute_remaining_blocks", should_compute)
    return decisions


def test_probe_blocks_are_found_per_cache_and_a_used_backend_is_not_changed():
    from diffusers.hooks import FirstBlockCacheConfig, TaylorSeerCacheConfig

    from asymrnr_compile.pipelines import step_cache_probe_blocks

    transformer = _transformer()
    transformer.enable_cache(TaylorSeerCacheConfig(cache_interval=2))
    assert step_cache_probe_blocks(transformer, TaylorSeerCacheConfig(cache_interval=2), "diffusers") == ()
    transformer.disable_cache()
    transformer.enable_cache(FirstBlockCacheConfig(threshold=0.1))
    assert step_cache_probe_blocks(transformer, FirstBlockCacheConfig(threshold=0.1), "diffusers") == \
        ("transformer_blocks.0",)
    tiny, backend = _pipeline(None)
    tiny(seed=0)
    other = tiny_pipeline("cogvideox", steps=STEPS, num_layers=LAYERS)
    with pytest.raises(ValueError, match="exact_probe_blocks: the step cache's probe blocks"):
        enable_asymrnr(other.pipe, backend=backend, regional=True, step_cache=FirstBlockCacheConfig(threshold=0.1))
    assert not other.pipe.transformer.is_cache_enabled and not hasattr(other.pipe, "_asymrnr_integration")
    with pytest.raises(TypeError, match="exact_probe_blocks must be a bool"):
        enable_asymrnr(other.pipe, regional=True, exact_probe_blocks="yes")
