"""The flow-matching CFG sampler and its step-interleaved timing driver."""

from __future__ import annotations

import pytest
import torch

from asymrnr_lab.sampling import SamplerConfig, sample, sample_lockstep


def _velocity_model(scale: float):
    def model(hidden_states, encoder_hidden_states, timestep):
        return scale * hidden_states * (timestep[:, None, None, None, None] / 1000.0) + encoder_hidden_states.mean()
    return model


@pytest.mark.parametrize("cfg_mode", ["batched", "split"])
def test_lockstep_equals_separate_sampling_and_times_every_step(cfg_mode):
    config = SamplerConfig(steps=4, cfg_mode=cfg_mode)
    noise = torch.randn(1, 2, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    text, null_text = torch.ones(1, 3, 5), torch.zeros(1, 3, 5)
    models = {"a": _velocity_model(0.5), "b": _velocity_model(-1.0)}
    latents, seconds = sample_lockstep(models, noise, text, null_text, config)
    for name, model in models.items():
        torch.testing.assert_close(latents[name], sample(model, noise, text, null_text, config), rtol=0, atol=0)
        assert len(seconds[name]) == 4 and all(s >= 0 for s in seconds[name])


def test_split_cfg_calls_twice_per_step_with_the_same_timestep():
    calls = []

    def model(hidden_states, encoder_hidden_states, timestep):
        calls.append(float(timestep[0]))
        return torch.zeros_like(hidden_states)

    sample(model, torch.ones(1, 1, 1, 2, 2), torch.ones(1, 1, 1), torch.zeros(1, 1, 1),
           SamplerConfig(steps=3, cfg_mode="split"))
    assert calls == [1000.0, 1000.0, pytest.approx(666.6666), pytest.approx(666.6666),
                     pytest.approx(333.3333), pytest.approx(333.3333)]


def test_sampler_settings_are_validated():
    with pytest.raises(ValueError, match="steps must be an int >= 1"):
        SamplerConfig(steps=0)
    with pytest.raises(ValueError, match="cfg_mode must be"):
        SamplerConfig(cfg_mode="both")
