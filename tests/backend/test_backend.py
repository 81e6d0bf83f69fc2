"""The asymrnr backend end to end on the reference DiT: steps, matching cache, variants, safety.

Every test that reduces asserts that it did (``assert_reduced``: no fallback, matchings computed,
the expected sites rewritten): a rewrite that fails falls back to plain Inductor and still runs.
"""

from __future__ import annotations

import logging

import pytest
import torch
import torch._dynamo
from helpers import max_relative_error
from reduction_checks import assert_reduced
from torch._dynamo.utils import counters

import asymrnr_compile
from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_lab.sampling import SamplerConfig, sample

PRESET = "tiny"
# The tiny preset has 32 video tokens per site; the default minimum would skip them.
TINY = {"min_video_tokens": 16}


def _loop(compiled, inputs, steps: int, cfg_mode: str = "batched") -> torch.Tensor:
    text = inputs["encoder_hidden_states"][:1]
    null_text = inputs["encoder_hidden_states"][1:]
    with torch.no_grad():
        return sample(compiled, inputs["hidden_states"][:1], text, null_text,
                      SamplerConfig(steps=steps, cfg_mode=cfg_mode))


def _compile(model, backend):
    return torch.compile(model, backend=backend, fullgraph=True, dynamic=False)


def test_all_ratios_zero_compiles_unchanged_and_matches_inductor(model, inputs):
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.0, kv_ratio=0.0, **TINY))
    with torch.no_grad():
        out = _compile(model, backend)(**inputs)
        torch._dynamo.reset()
        plain = _compile(model, "inductor")(**inputs)
    assert max_relative_error(out, plain) <= 1e-5
    report = backend.report().to_dict()
    assert report["graphs"][0]["fallback_reason"].startswith("no attention site to reduce")
    assert report["num_variants"] == 0


def test_cached_matching_is_computed_on_window_starts_only(model, inputs):
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=5, **TINY))
    counters.clear()
    latent = _loop(_compile(model, backend), inputs, steps=12)
    assert torch.isfinite(latent).all()
    report = assert_reduced(backend, sites={0, 1}, features={0: {"q", "kv"}, 1: {"q", "kv"}})
    (runtime,) = backend.graphs
    assert runtime.matching_steps == [0, 5, 10]
    sites_features = 2 * 2  # two blocks, q and kv
    assert report["cache_misses"] == 3 * sites_features
    assert report["cache_hits"] == 9 * sites_features
    assert report["steps"] == 12 and report["calls"] == 12
    assert report["num_variants"] == 2  # compute-matching and reuse-matching
    applied = report["graphs"][0]["sites"][0]["applied"]
    assert applied["q"]["kept_tokens"] == 16 and applied["kv"]["kept_tokens"] == 22
    assert counters["stats"]["unique_graphs"] == 1  # one Dynamo graph, no recompiles


def test_two_calls_per_step_keep_separate_caches(model, inputs):
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.0, cache_steps=5, **TINY))
    _loop(_compile(model, backend), inputs, steps=6, cfg_mode="split")
    assert_reduced(backend, sites={0, 1}, features={0: {"q"}, 1: {"q"}})
    (runtime,) = backend.graphs
    assert runtime.state.tracker.steps_seen == 6 and runtime.calls == 12
    # cond (call 0) and uncond (call 1) each compute at the window starts 0 and 5
    assert sorted(runtime.cache.entries) == [(0, 0, "q"), (0, 1, "q"), (1, 0, "q"), (1, 1, "q")]
    assert runtime.matching_steps == [0, 5]


def test_reset_starts_a_new_video(model, inputs):
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=5, **TINY))
    compiled = _compile(model, backend)
    first = _loop(compiled, inputs, steps=3)
    backend.reset()
    second = _loop(compiled, inputs, steps=3)
    assert_reduced(backend, sites={0, 1})
    (runtime,) = backend.graphs
    # each video computes its matchings at step 0 (2 sites x q and kv) and reuses them after
    assert runtime.matching_steps == [0] and runtime.cache_misses == 2 * 4 and runtime.cache_hits == 2 * 2 * 4
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_timestep_jumping_up_starts_a_new_video(model, inputs):
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.0, cache_steps=5, **TINY))
    compiled = _compile(model, backend)
    _loop(compiled, inputs, steps=3)
    _loop(compiled, inputs, steps=3)  # no reset: the timestep goes back up to 1000
    assert_reduced(backend, sites={0, 1})
    (runtime,) = backend.graphs
    assert runtime.matching_steps == [0] and runtime.cache_misses == 2 * 2  # step 0 of each video, 2 sites


def test_warmup_steps_run_unreduced(model, inputs):
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.0, cache_steps=2, warmup_steps=2, **TINY))
    _loop(_compile(model, backend), inputs, steps=5)
    assert_reduced(backend, sites={0, 1})
    (runtime,) = backend.graphs
    assert runtime.matching_steps == [2, 4]
    assert len(runtime.variants) == 3  # unreduced, compute, reuse


def test_skip_blocks_and_min_video_tokens_leave_sites_alone(model, inputs):
    records = []
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, skip_blocks=(0,), **TINY), on_matching=records.append)
    with torch.no_grad():
        out = _compile(model, backend)(**inputs)
        unreduced = model(**inputs)
    sites = backend.report().to_dict()["graphs"][0]["sites"]
    assert "applied" not in sites[0] and "applied" in sites[1]
    # block 1 was rewritten and matched, block 0 was not; the output changed
    assert_reduced(backend, sites={1}, features={1: {"q", "kv"}})
    assert sorted((r.site.index, r.feature) for r in records) == [(1, "kv"), (1, "q")]
    assert max_relative_error(out, unreduced) > 1e-4

    torch._dynamo.reset()
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5))  # default minimum: 256 video tokens
    with torch.no_grad():
        _compile(model, backend)(**inputs)
    assert "min_video_tokens" in backend.report().to_dict()["graphs"][0]["fallback_reason"]


def test_ratio_above_the_largest_usable_is_capped_and_reported(model, inputs):
    records = []
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.95, kv_ratio=0.0, **TINY), on_matching=records.append)
    with torch.no_grad():
        out = _compile(model, backend)(**inputs)
    assert torch.isfinite(out).all()
    applied = backend.report().to_dict()["graphs"][0]["sites"][0]["applied"]["q"]
    # grid 2x4x4 with stride (2, 2, 2): 4 destination tokens of 32
    assert applied["capped"] and applied["kept_tokens"] == 4
    # ... and the rewrite ran with them: every site kept exactly its 4 dst tokens
    assert_reduced(backend, sites={0, 1}, features={0: {"q"}, 1: {"q"}})
    assert sorted(r.site.index for r in records) == [0, 1]
    for record in records:
        keep = record.indices.keep
        assert keep.shape[-1] == 4 and torch.equal(keep.sort(-1).values, record.split.dst.expand_as(keep))


def test_string_backend_through_the_entry_point(model, inputs):
    options = {"q_ratio": 0.5, "kv_ratio": 0.3, **TINY}
    with torch.no_grad():
        out = torch.compile(model, backend="asymrnr", options=options, fullgraph=True, dynamic=False)(**inputs)
    assert torch.isfinite(out).all()
    report = assert_reduced(asymrnr_compile.last_backend(), sites={0, 1})
    assert report["config"]["q_ratio"] == 0.5 and report["cache_misses"] == 4


def test_bad_options_raise_naming_the_key(model, inputs):
    with pytest.raises(ValueError, match="did you mean 'kv_ratio'"):
        AsymRnRBackend(kv_ration=0.3)
    with pytest.raises(Exception, match="q_ratio must be in"):
        with torch.no_grad():
            torch.compile(model, backend="asymrnr", options={"q_ratio": 2.0})(**inputs)


def test_a_failing_rewrite_falls_back_to_the_unchanged_graph(model, inputs, monkeypatch, caplog):
    import asymrnr_compile.runtime.variants as variants_module

    def broken(*args, **kwargs):
        raise RuntimeError("simulated rewrite failure")

    monkeypatch.setattr(variants_module, "reduce_attention_tokens", broken)
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, **TINY))
    with torch.no_grad(), caplog.at_level(logging.WARNING, logger="asymrnr_compile"):
        out = _compile(model, backend)(**inputs)
        torch._dynamo.reset()
        plain = _compile(model, "inductor")(**inputs)
    assert max_relative_error(out, plain) <= 1e-5
    assert "simulated rewrite failure" in caplog.text
    assert "simulated rewrite failure" in backend.report().to_dict()["graphs"][0]["fallback_reason"]


def test_a_failing_variant_falls_back_once_and_stays_there_with_every_configured_field(model, inputs, monkeypatch):
    import asymrnr_compile.runtime.variants as variants_module
    from asymrnr_compile.plan.reduction_plan import ReductionPlan

    attempts = []

    def broken(*args, **kwargs):
        attempts.append(args)
        raise RuntimeError("simulated rewrite failure")

    monkeypatch.setattr(variants_module, "reduce_attention_tokens", broken)
    config = AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=2, similarity="cosine", reduce_mode="mean",
                           token_selection="random", seed=5, proportional_attention=True,
                           match_on="hidden_states", match_chunk_bytes=2**20, match_kernel="aten",
                           **TINY)
    backend = AsymRnRBackend(config)
    counters.clear()
    _loop(_compile(model, backend), inputs, steps=5)
    (runtime,) = backend.graphs
    assert len(attempts) == 1  # the rewrite is not retried at later steps or matching windows
    assert list(runtime.variants) == [ReductionPlan.for_config(config)]
    (plan,) = runtime.variants
    assert (plan.similarity, plan.reduce_mode, plan.match_chunk_bytes, plan.token_selection, plan.seed,
            plan.proportional_attention, plan.match_on, plan.match_kernel) == (
        "cosine", "mean", 2**20, "random", 5, True, "hidden_states", "aten")
    (variant,) = runtime.variants.values()
    assert variant.calls == 5 and variant.rewrite is None
    assert counters["stats"]["unique_graphs"] == 1  # no Dynamo recompile


def test_model_without_attention_runs_unchanged():
    mlp = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.GELU(), torch.nn.Linear(8, 8))
    x = torch.randn(3, 8)
    backend = AsymRnRBackend()
    with torch.no_grad():
        out = _compile(mlp, backend)(x)
        expected = mlp(x)
    assert max_relative_error(out, expected) <= 1e-5
    assert backend.report().to_dict()["graphs"][0]["fallback_reason"] == "no attention site to reduce"


def test_a_grid_smaller_than_the_stride_is_reported_as_such(model, inputs):
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, dst_stride=(4, 2, 2), **TINY))  # tiny grid: 2x4x4
    with torch.no_grad():
        _compile(model, backend)(**inputs)
    reason = backend.report().to_dict()["graphs"][0]["fallback_reason"]
    assert "smaller than dst_stride (4, 2, 2)" in reason


def test_on_matching_reports_every_computed_matching_and_only_those(model, inputs):
    records = []
    backend = AsymRnRBackend(AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=2, **TINY),
                             on_matching=records.append)
    _loop(_compile(model, backend), inputs, steps=5)
    assert_reduced(backend, sites={0, 1})
    (runtime,) = backend.graphs
    assert [(r.step, r.site.block_index, r.feature) for r in records] == [
        (step, block, feature) for step in (0, 2, 4) for block in (0, 1) for feature in ("q", "kv")]
    assert runtime.matching_steps == [0, 2, 4] and backend.report().to_dict()["cache_hits"] == 2 * 4
    for record in records:
        keep, restore = record.indices
        assert keep.shape[-1] == (16 if record.feature == "q" else 22) and restore.shape[-1] == 32
        # a kept token stands for itself; a dropped one for a kept dst token
        assert torch.equal(torch.gather(restore, -1, keep), torch.arange(keep.shape[-1]).expand_as(keep))
        standing = torch.gather(keep, -1, restore)
        dropped = standing != torch.arange(32)
        assert dropped.sum(-1).eq(32 - keep.shape[-1]).all()
        assert torch.isin(standing[dropped], record.split.dst).all()


def test_on_matching_must_be_callable():
    with pytest.raises(TypeError, match="on_matching must be callable"):
        AsymRnRBackend(AsymRnRConfig(), on_matching="print")
