"""ReferenceDiTConfig validation, derived properties and presets."""

from __future__ import annotations

import dataclasses
import math

import pytest

from asymrnr_lab.models import (
    PRESETS,
    ReferenceDiTConfig,
    build_reference_model,
    reference_inputs,
)


def test_defaults_are_the_attention_preset():
    assert ReferenceDiTConfig() == PRESETS["attention"]


@pytest.mark.parametrize(
    ("name", "hidden", "heads", "blocks", "grid", "text_tokens"),
    [
        ("tiny", 64, 2, 2, (2, 4, 4), 8),
        ("small", 128, 4, 2, (4, 12, 12), 16),
        ("attention", 256, 4, 4, (4, 24, 24), 32),
        ("attention-4096", 256, 4, 4, (4, 32, 32), 32),
        ("attention-16384", 256, 4, 4, (4, 64, 64), 32),
    ],
)
def test_presets(name, hidden, heads, blocks, grid, text_tokens):
    cfg = PRESETS[name]
    assert (cfg.hidden_size, cfg.num_heads, cfg.num_blocks) == (hidden, heads, blocks)
    assert cfg.grid == grid
    assert cfg.video_tokens == math.prod(grid)
    assert cfg.text_tokens == text_tokens
    assert cfg.batch_size == 2
    assert cfg.patch_size == (1, 2, 2)
    assert cfg.head_dim == hidden // heads


def test_tiny_and_attention_specifics():
    assert PRESETS["tiny"].video_tokens == 32
    assert PRESETS["tiny"].text_dim == 32
    assert PRESETS["small"].video_tokens == 576
    assert PRESETS["attention"].video_tokens == 2304
    assert PRESETS["attention"].head_dim == 64
    assert PRESETS["attention"].mlp_ratio == 4.0


def test_derived_properties():
    cfg = ReferenceDiTConfig(in_channels=3, hidden_size=64, num_heads=2, latent_frames=2,
                             latent_height=8, latent_width=6)
    assert cfg.output_channels == 3
    assert dataclasses.replace(cfg, out_channels=5).output_channels == 5
    assert cfg.latent_shape == (2, 3, 2, 8, 6)
    assert cfg.grid == (2, 4, 3)
    assert cfg.mlp_hidden_size == 256


def test_patch_size_list_becomes_tuple_and_config_is_hashable():
    cfg = ReferenceDiTConfig(patch_size=[1, 2, 2])
    assert cfg.patch_size == (1, 2, 2)
    assert hash(cfg) == hash(ReferenceDiTConfig())


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRESETS["tiny"].hidden_size = 8  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"in_channels": 0}, "in_channels"),
        ({"in_channels": True}, "in_channels"),
        ({"out_channels": 0}, "out_channels"),
        ({"patch_size": (1, 2)}, "patch_size"),
        ({"patch_size": (1, 0, 2)}, "patch_size"),
        ({"patch_size": (1, 2.0, 2)}, "patch_size"),
        ({"hidden_size": -4}, "hidden_size"),
        ({"num_heads": 0}, "num_heads"),
        ({"hidden_size": 250, "num_heads": 4}, "hidden_size"),
        ({"hidden_size": 12, "num_heads": 2}, "head dim"),  # head dim 6 < 8
        ({"hidden_size": 36, "num_heads": 4}, "head dim"),  # head dim 9, odd
        ({"num_blocks": 0}, "num_blocks"),
        ({"mlp_ratio": 0.0}, "mlp_ratio"),
        ({"mlp_ratio": float("nan")}, "mlp_ratio"),
        ({"mlp_ratio": float("inf")}, "mlp_ratio"),
        ({"mlp_ratio": 1e-6}, "mlp_ratio"),
        ({"text_dim": 0}, "text_dim"),
        ({"text_tokens": 0}, "text_tokens"),
        ({"latent_frames": 0}, "latent_frames"),
        ({"latent_height": 47}, "latent_height"),
        ({"latent_width": 3}, "latent_width"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.0}, "batch_size"),
        ({"rope_theta": 0.0}, "rope_theta"),
        ({"rope_theta": float("nan")}, "rope_theta"),
        ({"qk_norm": 1}, "qk_norm"),
        ({"absolute_positions": 1}, "absolute_positions"),
    ],
)
def test_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ReferenceDiTConfig(**kwargs)


def test_unknown_preset_lists_presets():
    with pytest.raises(ValueError, match="attention.*small.*tiny"):
        build_reference_model("huge")
    with pytest.raises(ValueError, match="tiny"):
        reference_inputs("huge")
    with pytest.raises(ValueError, match="ReferenceDiTConfig"):
        build_reference_model(3)  # type: ignore[arg-type]


def test_gpu_benchmark_preset_has_cogvideox_2b_width_and_token_count():
    cfg = PRESETS["cogvideox-2b-shape"]
    assert (cfg.hidden_size, cfg.num_heads, cfg.head_dim) == (1920, 30, 64)
    assert cfg.grid == (13, 30, 45) and cfg.video_tokens == 17550
    assert (cfg.text_tokens, cfg.text_dim, cfg.in_channels) == (226, 4096, 16)


def test_fine_synthetic_preset_has_four_times_the_tokens():
    coarse, fine = PRESETS["synthetic"], PRESETS["synthetic-fine"]
    assert fine.video_tokens == 4 * coarse.video_tokens == 1024
    assert fine.latent_size == coarse.latent_size and fine.hidden_size == coarse.hidden_size
