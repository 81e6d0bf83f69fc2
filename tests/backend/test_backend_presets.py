"""``preset="published"`` is the published method; the defaults differ.

What the published method computes, call by call and matching by matching, is checked against
an independent eager implementation in ``test_backend_oracle.py``. Here: the preset equals the
settings spelled out, and it draws its destination splits the way the published code does
(``arnr/cogvideox/apply.py``, ``_get_timestep_config``): a new split for every window of
``cache_steps`` steps counted from the first step, per block and per feature, drawn once, so that
every video gets the same splits.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from asymrnr_compile import AsymRnRBackend, AsymRnRConfig
from asymrnr_compile.config import CONFIG_PRESETS, DEFAULT_MATCH_DIMS, PUBLISHED_SETTINGS
from asymrnr_lab.models import build_reference_model, reference_inputs
from asymrnr_lab.models.inputs import synthetic_latents
from asymrnr_lab.sampling import SamplerConfig, sample

STEPS = 11  # windows of 5 steps: 0-4, 5-9, 10
PRESET = "small"  # reference DiT: 576 video tokens, 2 blocks


def _run(config_options: dict, videos: int = 1) -> tuple[list, torch.Tensor]:
    """Every matching (``MatchingRecord``) of ``videos`` batched-CFG loops of ``STEPS`` steps of
    the small reference DiT, and the last video's final latent."""
    torch._dynamo.reset()
    model = build_reference_model(PRESET, seed=0).eval()
    inputs = reference_inputs(PRESET, seed=0, batch_size=1)
    null_text = reference_inputs(PRESET, seed=17, batch_size=1)["encoder_hidden_states"]
    noise = synthetic_latents(tuple(inputs["hidden_states"].shape), seed=1)
    records: list = []
    backend = AsymRnRBackend(on_matching=records.append, **config_options)
    compiled = torch.compile(model, backend=backend, fullgraph=True, dynamic=False)
    with torch.no_grad():
        for _ in range(videos):
            latent = sample(compiled, noise, inputs["encoder_hidden_states"], null_text,
                            SamplerConfig(steps=STEPS, cfg_mode="batched"))
            backend.reset()
    torch._dynamo.reset()
    return records, latent


def test_published_preset_draws_a_split_per_window_block_and_feature_the_same_in_every_video():
    records, _ = _run({"preset": "published"}, videos=2)
    cache_steps = PUBLISHED_SETTINGS["cache_steps"]
    windows = -(-STEPS // cache_steps)
    per_video = len(records) // 2
    assert per_video == windows * 2 * 2  # windows x 2 blocks x (q, kv): one matching per window
    first, second = records[:per_video], records[per_video:]
    # matchings on each window's first step, counted from step 0
    assert sorted({r.step for r in first}) == [window * cache_steps for window in range(windows)]
    splits = {(r.step // cache_steps, r.site.index, r.feature): tuple(r.split.dst.tolist()) for r in first}
    assert len(splits) == per_video
    # a new split for every window, block and feature: no two alike
    assert len(set(splits.values())) == len(splits)
    # drawn once: the second video gets the same splits
    assert {(r.step // cache_steps, r.site.index, r.feature): tuple(r.split.dst.tolist()) for r in second} == splits


def test_published_preset_equals_the_spelled_out_published_config():
    spelled_out = AsymRnRConfig(**PUBLISHED_SETTINGS)
    published = AsymRnRConfig(preset="published")
    assert dataclasses.replace(spelled_out, preset="published") == published
    records, latent = _run({"preset": "published"})
    records_spelled, latent_spelled = _run(dict(PUBLISHED_SETTINGS))
    assert len(records) == len(records_spelled) > 0
    for record, spelled in zip(records, records_spelled):
        assert (record.step, record.site.index, record.feature) == (spelled.step, spelled.site.index, spelled.feature)
        assert torch.equal(record.indices.keep, spelled.indices.keep)
    assert torch.equal(latent, latent_spelled)


def test_defaults_are_not_the_published_method():
    default, published = AsymRnRConfig(), AsymRnRConfig(preset="published")
    assert default.preset == "default" and published.preset == "published"
    differing = {name for name in PUBLISHED_SETTINGS if getattr(default, name) != getattr(published, name)}
    assert differing == {"cache_steps", "match_on", "proportional_attention", "min_video_tokens", "match_dims"}
    assert (default.match_on, default.redraw_split, default.proportional_attention) == ("hidden_states", True, True)
    assert published.redraw_split  # as the published code draws its splits
    assert (default.match_dims, published.match_dims) == (DEFAULT_MATCH_DIMS, None)
    assert (default.cache_steps, default.min_video_tokens) == (2, 1024)


@pytest.mark.parametrize("preset", sorted(CONFIG_PRESETS))
def test_explicit_fields_override_a_preset(preset):
    config = AsymRnRConfig(preset=preset, cache_steps=3, match_on="features")
    assert (config.cache_steps, config.match_on, config.preset) == (3, "features", preset)
    # positional fields count as given: q_ratio is the first field
    assert AsymRnRConfig(0.25, preset=preset).q_ratio == 0.25
    assert AsymRnRConfig.from_options({"preset": preset, "kv_ratio": 0.1}).kv_ratio == 0.1


def test_replace_keeps_the_preset_and_the_fields():
    published = AsymRnRConfig(preset="published")
    changed = dataclasses.replace(published, q_ratio=0.4)
    assert changed.preset == "published" and changed.q_ratio == 0.4 and changed.cache_steps == 5


@pytest.mark.parametrize("bad", ["paper", "Published", "", None, 1])
def test_unknown_preset_is_rejected_naming_the_setting(bad):
    with pytest.raises(ValueError, match=r"preset must be one of \('default', 'published'\)"):
        AsymRnRConfig(preset=bad)


def test_preset_reaches_the_backend_through_torch_compile_options(model, inputs):
    import asymrnr_compile

    options = {"preset": "published", "min_video_tokens": 16}
    with torch.no_grad():
        torch.compile(model, backend="asymrnr", options=options, fullgraph=True, dynamic=False)(**inputs)
    backend = asymrnr_compile.last_backend()
    assert backend.config == AsymRnRConfig(preset="published", min_video_tokens=16)
    report = backend.report().to_dict()
    assert report["config"]["preset"] == "published" and report["config"]["match_on"] == "features"
    assert report["cache_misses"] == 4  # 2 sites x (q, kv), matched on features
