"""Training of the synthetic text-to-video model: learning signal, resumption, export."""

import json

import pytest
import torch

from asymrnr_lab.sampling import TIMESTEP_SCALE
from asymrnr_lab.synthetic.config import SyntheticTaskConfig
from asymrnr_lab.synthetic.model import (
    SIGMA_FLOOR,
    as_velocity_model,
    build_text_to_video_model,
    load_trained_model,
    read_checkpoint_metadata,
    save_checkpoint,
    velocity_from_sample,
)
from asymrnr_lab.synthetic.train import (
    CHECKPOINT_NAME,
    EXPORT_NAME,
    LOG_NAME,
    TrainConfig,
    learning_rate,
    train,
)

QUICK = {"batch_size": 2, "warmup_steps": 2, "log_every": 1, "checkpoint_every": 2, "eval_every": 0}


def _weights(path):
    model, _ = load_trained_model(path)
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_resumed_run_equals_uninterrupted_run(tmp_path):
    config = TrainConfig(steps=4, **QUICK)
    straight = train(tmp_path / "straight", config, log=lambda _: None)
    first = train(tmp_path / "resumed", config, log=lambda _: None, max_steps_this_run=2)
    with (tmp_path / "resumed" / LOG_NAME).open("a") as log_file:  # a row written after the
        log_file.write(json.dumps({"step": 3, "loss": -1.0}) + "\n")  # checkpoint, then a crash
    assert torch.load(tmp_path / "resumed" / CHECKPOINT_NAME, weights_only=False)["step"] == 2
    messages = []
    resumed = train(tmp_path / "resumed", config, log=messages.append)
    assert first == resumed
    assert any("resuming" in m and "step 2/4" in m for m in messages)
    a, b = _weights(straight), _weights(resumed)
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert read_checkpoint_metadata(resumed)["step"] == 4
    logged = [json.loads(line)["step"] for line in (tmp_path / "resumed" / LOG_NAME).read_text().splitlines()]
    assert logged == [1, 2, 3, 4]
    assert -1.0 not in [json.loads(line)["loss"] for line in (tmp_path / "resumed" / LOG_NAME).read_text().splitlines()]


def test_training_lowers_the_loss_and_logs_it(tmp_path):
    config = TrainConfig(steps=12, lr=3e-3, **QUICK)
    train(tmp_path, config, log=lambda _: None)
    rows = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()]
    losses = [r["loss"] for r in rows if "loss" in r]
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert (tmp_path / EXPORT_NAME).is_file()


def test_resume_with_other_settings_is_refused(tmp_path):
    train(tmp_path, TrainConfig(steps=2, **QUICK), log=lambda _: None)
    with pytest.raises(ValueError, match=r"other settings \(differing: \['batch_size'\]"):
        train(tmp_path, TrainConfig(steps=2, **{**QUICK, "batch_size": 3}), log=lambda _: None)


def test_resume_may_change_the_cadence_and_raise_steps_and_records_the_history(tmp_path):
    """Raising ``steps`` after a run finished re-opens the cosine schedule (the shipped fine model
    was trained so: 1400 steps, then raised to 6400); the exported ``runs`` say so."""
    first = train(tmp_path, TrainConfig(steps=2, **QUICK), log=lambda _: None)
    assert read_checkpoint_metadata(first)["runs"] == [{"from_step": 0, "steps": 2}]
    longer = TrainConfig(steps=4, **{**QUICK, "log_every": 2, "checkpoint_every": 4})
    messages = []
    resumed = train(tmp_path, longer, log=messages.append)
    assert any("resuming" in m and "step 2/4" in m for m in messages)
    metadata = read_checkpoint_metadata(resumed)
    assert metadata["step"] == 4
    assert metadata["runs"] == [{"from_step": 0, "steps": 2}, {"from_step": 2, "steps": 4}]
    rows = [json.loads(line) for line in (tmp_path / LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 4]  # logged every step, then every 2nd


def test_resuming_a_checkpoint_from_before_x_prediction_is_refused(tmp_path):
    train(tmp_path, TrainConfig(steps=2, **QUICK), log=lambda _: None)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    for key in ("prediction", "sigma_logit_mean"):  # what an older checkpoint lacks
        del state["config"][key]
    torch.save(state, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(ValueError, match="other settings"):
        train(tmp_path, TrainConfig(steps=4, **QUICK), log=lambda _: None)
    resumed = train(tmp_path, TrainConfig(steps=4, prediction="velocity", sigma_logit_mean=0.0,
                                          **QUICK), log=lambda _: None)
    assert read_checkpoint_metadata(resumed)["step"] == 4


def test_learning_rate_warms_up_then_decays_to_zero():
    config = TrainConfig(steps=100, warmup_steps=10, lr=1e-3)
    assert learning_rate(config, 0) == pytest.approx(1e-4)
    assert learning_rate(config, 9) == pytest.approx(1e-3)
    assert learning_rate(config, 55) == pytest.approx(0.5e-3)
    assert learning_rate(config, 100) == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("steps", 0, "steps"), ("lr", 2.0, "lr"), ("cond_dropout", 1.0, "cond_dropout"),
     ("batch_size", 1.5, "batch_size"), ("prediction", "epsilon", "prediction"),
     ("sigma_logit_mean", float("nan"), "sigma_logit_mean"), ("preset", "attention", "preset")],
)
def test_bad_settings_raise(field, value, message):
    with pytest.raises((ValueError, TypeError), match=message):
        TrainConfig(**{field: value})


def test_velocity_from_the_true_sample_is_the_true_velocity():
    gen = torch.Generator().manual_seed(0)
    clean, noise = torch.randn(3, 2, 4, 4, generator=gen), torch.randn(3, 2, 4, 4, generator=gen)
    sigma = torch.tensor([1.0, 0.5, SIGMA_FLOOR])
    noisy = (1 - sigma.view(-1, 1, 1, 1)) * clean + sigma.view(-1, 1, 1, 1) * noise
    velocity = velocity_from_sample(noisy, clean, sigma * TIMESTEP_SCALE)
    torch.testing.assert_close(velocity, noise - clean)
    # below the floor the division is clipped: the velocity shrinks by sigma / SIGMA_FLOOR
    tiny = torch.tensor([SIGMA_FLOOR / 10])
    noisy = (1 - tiny) * clean[:1] + tiny * noise[:1]
    clipped = velocity_from_sample(noisy, clean[:1], tiny * TIMESTEP_SCALE)
    torch.testing.assert_close(clipped, (noise[:1] - clean[:1]) / 10)


def test_sample_predicting_model_returns_velocities_through_the_wrapper():
    calls = []

    def transformer(hidden_states, encoder_hidden_states, timestep):
        calls.append(timestep)
        return torch.zeros_like(hidden_states)  # "the clean video is black"

    x = torch.full((2, 3, 1, 2, 2), 0.5)
    t = torch.tensor([500.0, 250.0])
    assert as_velocity_model(transformer, "velocity") is transformer
    velocity = as_velocity_model(transformer, "sample")(
        hidden_states=x, encoder_hidden_states=torch.zeros(2, 1, 4), timestep=t
    )
    torch.testing.assert_close(velocity[:, 0, 0, 0, 0], torch.tensor([1.0, 2.0]))  # x / sigma
    assert len(calls) == 1
    with pytest.raises(ValueError, match="prediction"):
        as_velocity_model(transformer, "eps")


def test_checkpoint_keeps_the_prediction_and_old_ones_read_as_velocity(tmp_path):
    task = SyntheticTaskConfig()
    save_checkpoint(build_text_to_video_model(0, "sample"), tmp_path / "x.safetensors", task)
    model, _ = load_trained_model(tmp_path / "x.safetensors")
    assert model.prediction == "sample"
    from safetensors.torch import load_file, save_file

    path = tmp_path / "old.safetensors"
    metadata = {k: v for k, v in _raw_metadata(tmp_path / "x.safetensors").items()
                if k != "prediction"}
    save_file(load_file(str(tmp_path / "x.safetensors")), str(path), metadata=metadata)
    assert load_trained_model(path)[0].prediction == "velocity"


def _raw_metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


def test_fine_preset_builds_a_four_times_finer_token_grid():
    coarse = build_text_to_video_model(0, "sample")
    fine = build_text_to_video_model(0, "sample", "synthetic-fine")
    assert fine.config.patch_size == (2, 2, 2)
    assert fine.config.video_tokens == 4 * coarse.config.video_tokens == 1024
    x = torch.randn(1, *SyntheticTaskConfig().video_shape)
    ids = torch.zeros(1, 10, dtype=torch.long)
    with torch.no_grad():
        assert fine(x, ids, torch.tensor([500.0])).shape == x.shape


class _RunsCodeWhenUnpickled:
    """What a tampered checkpoint could carry: unpickling it calls ``print`` (any callable)."""

    def __reduce__(self):
        return (print, ("unpickled: code ran",))


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    """The resume checkpoint is loaded with ``weights_only=True``: tensors and plain data only."""
    train(tmp_path, TrainConfig(steps=2, **QUICK), log=lambda _: None)
    state = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    state["runs"].append(_RunsCodeWhenUnpickled())
    torch.save(state, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(Exception, match="Weights only load failed"):
        train(tmp_path, TrainConfig(steps=4, **QUICK), log=lambda _: None)
    assert "code ran" not in capsys.readouterr().out
