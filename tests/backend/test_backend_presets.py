"""``preset="published"`` reproduces the published method bit for bit; the defaults differ.

The golden file (``tests/data/published_golden/``) holds every matching and the final latent of
a 6-step loop computed with the backend's defaults before they changed, when they were the
published method. ``preset="published"`` must select the same tokens, and the same final latent.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from asymrnr_compile import AsymRnRConfig
from asymrnr_compile.config import CONFIG_PRESETS, DEFAULT_MATCH_DIMS, PUBLISHED_SETTINGS

GOLDEN_DIR = Path(__file__).resolve().parents[1] / "data" / "published_golden"


def _golden_module():
    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN_DIR / "make_golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_published_preset_reproduces_the_published_matchings_and_latent():
    golden = load_file(str(GOLDEN_DIR / "published_golden.safetensors"))
    records, latent = _golden_module().run({"preset": "published"})
    golden_records = {name: value for name, value in golden.items() if name != "final_latent"}
    assert sorted(records) == sorted(golden_records)
    assert len(records) == 16  # 2 blocks x (q, kv) x 2 matching windows x (keep, restore)
    for name, value in golden_records.items():
        assert torch.equal(records[name], value), name
    # The latent is pinned to rounding: Inductor's CPU kernels may differ across instruction sets.
    torch.testing.assert_close(latent, golden["final_latent"], rtol=1e-5, atol=1e-5)


def test_published_preset_equals_the_spelled_out_published_config():
    spelled_out = AsymRnRConfig(**PUBLISHED_SETTINGS)
    published = AsymRnRConfig(preset="published")
    assert dataclasses.replace(spelled_out, preset="published") == published
    records, latent = _golden_module().run({"preset": "published"})
    records_spelled, latent_spelled = _golden_module().run(dict(PUBLISHED_SETTINGS))
    assert records.keys() == records_spelled.keys()
    assert all(torch.equal(records[name], records_spelled[name]) for name in records)
    assert torch.equal(latent, latent_spelled)


def test_defaults_are_not_the_published_method():
    default, published = AsymRnRConfig(), AsymRnRConfig(preset="published")
    assert default.preset == "default" and published.preset == "published"
    differing = {name for name in PUBLISHED_SETTINGS if getattr(default, name) != getattr(published, name)}
    assert differing == {"cache_steps", "match_on", "redraw_split", "proportional_attention", "min_video_tokens",
                         "match_dims"}
    assert (default.match_on, default.redraw_split, default.proportional_attention) == ("hidden_states", True, True)
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
