"""Structured seeded inputs: synthetic latents, text embeddings, reference_inputs."""

from __future__ import annotations

import pytest
import torch

from asymrnr_lab.models import PRESETS, reference_inputs, synthetic_latents
from asymrnr_lab.models.inputs import TEXT_TOKEN_CORRELATION, synthetic_text_embeddings

#: Lag-1 correlation the latents must reach along H and W (smooth, redundant tokens).
MIN_SPATIAL_CORRELATION = {"tiny": 0.7, "small": 0.9, "attention": 0.95}


def neighbour_correlation(x: torch.Tensor, dim: int) -> float:
    """Pearson correlation between x and x shifted by one along ``dim``."""
    n = x.shape[dim] - 1
    a = x.narrow(dim, 0, n).flatten().double()
    b = x.narrow(dim, 1, n).flatten().double()
    return torch.corrcoef(torch.stack([a, b]))[0, 1].item()


@pytest.mark.parametrize("preset", ["tiny", "small", "attention"])
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_latents_are_structured(preset, seed):
    cfg = PRESETS[preset]
    x = synthetic_latents(cfg.latent_shape, seed=seed)
    assert x.shape == cfg.latent_shape and x.dtype == torch.float32
    assert torch.isfinite(x).all()
    # Roughly unit variance, zero mean, and so per (b, c) map: never zeros or constant.
    assert 0.9 < x.std().item() < 1.1
    assert abs(x.mean().item()) < 0.1
    per_map = x.std(dim=(2, 3, 4))
    assert per_map.min() > 0.9
    # Smooth in space.
    assert neighbour_correlation(x, 3) > MIN_SPATIAL_CORRELATION[preset]
    assert neighbour_correlation(x, 4) > MIN_SPATIAL_CORRELATION[preset]
    # Moves over frames, but coherently.
    frame_change = (x[:, :, 1:] - x[:, :, :-1]).std() / x.std()
    assert 0.1 < frame_change.item() < 1.0
    assert neighbour_correlation(x, 2) > 0.5
    # Distinct per batch element and per channel.
    assert (x[0] - x[1]).std() > 0.5
    assert (x[:, 0] - x[:, 1]).std() > 0.5


def test_latents_not_pure_noise():
    """White noise of the same size has ~0 neighbour correlation; ours is high."""
    x = synthetic_latents((2, 4, 4, 24, 24))
    noise = torch.randn(2, 4, 4, 24, 24, generator=torch.Generator().manual_seed(0))
    assert abs(neighbour_correlation(noise, 4)) < 0.1
    assert neighbour_correlation(x, 4) > 0.9


def test_latents_seeded():
    shape = (2, 4, 2, 8, 8)
    a = synthetic_latents(shape, seed=3)
    assert torch.equal(a, synthetic_latents(shape, seed=3))
    assert not torch.allclose(a, synthetic_latents(shape, seed=4))


def test_latents_noise_and_dtype():
    shape = (1, 2, 3, 12, 16)
    clean = synthetic_latents(shape, noise=0.0, dtype=torch.float64)
    noisy = synthetic_latents(shape, noise=0.5, dtype=torch.float64)
    assert clean.dtype == torch.float64
    assert (noisy - clean).std() > 0.2
    assert synthetic_latents(shape, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_latents_leave_global_rng_alone():
    state = torch.get_rng_state()
    synthetic_latents((2, 4, 2, 8, 8))
    synthetic_text_embeddings((2, 8, 32))
    assert torch.equal(state, torch.get_rng_state())


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"shape": (2, 4, 8, 8)}, "shape"),
        ({"shape": (2, 4, 0, 8, 8)}, "shape"),
        ({"shape": (2, 4, 2.0, 8, 8)}, "shape"),
        ({"shape": (2, 4, 2, 8, 8), "noise": -0.1}, "noise"),
        ({"shape": (2, 4, 2, 8, 8), "noise": float("nan")}, "noise"),
    ],
)
def test_latents_validation(kwargs, field):
    with pytest.raises(ValueError, match=field):
        synthetic_latents(**kwargs)


def test_text_embeddings():
    e = synthetic_text_embeddings((2, 64, 32), seed=5)
    assert e.shape == (2, 64, 32)
    assert 0.8 < e.std().item() < 1.2
    assert abs(neighbour_correlation(e, 1) - TEXT_TOKEN_CORRELATION) < 0.1
    assert (e[0] - e[1]).std() > 0.5
    assert torch.equal(e, synthetic_text_embeddings((2, 64, 32), seed=5))
    with pytest.raises(ValueError, match="shape"):
        synthetic_text_embeddings((2, 0, 32))


def test_reference_inputs():
    cfg = PRESETS["tiny"]
    inp = reference_inputs("tiny", seed=2, timestep=250.0)
    assert set(inp) == {"hidden_states", "encoder_hidden_states", "timestep"}
    assert inp["hidden_states"].shape == cfg.latent_shape
    assert inp["encoder_hidden_states"].shape == (2, cfg.text_tokens, cfg.text_dim)
    assert inp["timestep"].dtype == torch.float32
    assert torch.equal(inp["timestep"], torch.full((2,), 250.0))
    assert torch.equal(inp["hidden_states"], synthetic_latents(cfg.latent_shape, seed=2))
    again = reference_inputs(cfg, seed=2, timestep=250.0)
    assert all(torch.equal(inp[k], again[k]) for k in inp)


def test_reference_inputs_batch_and_dtype():
    inp = reference_inputs("tiny", batch_size=3, dtype=torch.float64)
    assert inp["hidden_states"].shape[0] == 3
    assert inp["encoder_hidden_states"].shape[0] == 3
    assert inp["timestep"].shape == (3,)
    assert inp["hidden_states"].dtype == torch.float64
    assert inp["encoder_hidden_states"].dtype == torch.float64
    assert inp["timestep"].dtype == torch.float32
    with pytest.raises(ValueError, match="batch_size"):
        reference_inputs("tiny", batch_size=0)
