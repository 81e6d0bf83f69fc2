"""Resumable rectified-flow training of the text-to-video model on the synthetic task.

``asymrnr-compile train --out DIR [--steps N]`` (or :func:`train`) trains
:class:`~asymrnr_lab.synthetic.model.TextToVideoDiT` with flow matching: for a clean video
``x_0``, noise ``n`` and ``sigma ~ sigmoid(N(0.8, 1))`` (logit-normal as in SD3, shifted towards
noise), the model sees ``x_sigma = (1 - sigma) x_0 + sigma n`` at timestep ``1000 sigma`` and
regresses the velocity ``n - x_0``. The transformer predicts the clean video ``x_0`` and the
velocity is derived from it ("x-prediction", Li & He 2025): trained to predict the velocity
directly for 1,700 steps, the same model's samples were still patchy blobs of the right colour
(shape 41%, direction 9%, valid 0%), because each 96-value output patch must reproduce the noise
through a 128-wide trunk. Captions are dropped (replaced by padding) with probability
``cond_dropout`` so that classifier-free guidance works. AdamW with linear warm-up then cosine decay, an EMA of the
weights (the EMA is what gets exported), optional bf16 autocast.

Everything lives in ``DIR``: ``checkpoint.pt`` (model, EMA, optimiser, data RNG, step; written
atomically every ``checkpoint_every`` steps), ``log.jsonl`` (loss per logged step, adherence per
evaluation), ``loss.png``, and ``model.safetensors`` (EMA weights + configs, the shippable
file). Running the same command again continues from the checkpoint; the data stream, the
schedule and the result are the same as one uninterrupted run (given the same thread count).

``arch="cogvideox"`` (``asymrnr-compile train --arch cogvideox``) trains the same task, loss and
schedule in a small ``diffusers.CogVideoXTransformer3DModel``
(:mod:`asymrnr_lab.synthetic.cogvideox`, presets ``"cogvideox"``: 256 video tokens and
``"cogvideox-fine"``: 1024) and exports ``DIR/model/`` instead of ``model.safetensors``: a folder in
diffusers' format (``transformer/`` by ``save_pretrained``, EMA weights, plus the token table and
metadata in ``text_to_video.safetensors``). Measured at batch 32 on the 2-core CI CPU (float32,
2 threads, idle machine): 0.66 s/step for ``"cogvideox"`` (6000 steps: ~1.1 h; the reference
``"synthetic"`` took 0.69 s/step alongside) and 4.8 s/step for ``"cogvideox-fine"`` (6000 steps:
~8 h; train that one on a GPU: ``--device cuda --bf16``). See docs/trained_models.md.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from asymrnr_compile._validate import check_choice, check_int
from asymrnr_lab.sampling import TIMESTEP_SCALE
from asymrnr_lab.synthetic.config import SyntheticTaskConfig
from asymrnr_lab.synthetic.generate import EVAL_SAMPLER, evaluate
from asymrnr_lab.synthetic.model import (
    ARCH_PRESETS,
    ARCHS,
    COGVIDEOX_ARCH,
    PREDICTIONS,
    REFERENCE_ARCH,
    SYNTHETIC_PRESET,
    TextToVideoModel,
    build_text_to_video_model,
    load_trained_model,
    save_trained_model,
)
from asymrnr_lab.synthetic.render import sample_batch
from asymrnr_lab.synthetic.vocab import Vocabulary

CHECKPOINT_NAME = "checkpoint.pt"
EXPORT_NAME = "model.safetensors"
#: What an ``arch="cogvideox"`` run exports instead of :data:`EXPORT_NAME`: a folder in diffusers'
#: format (see :func:`~asymrnr_lab.synthetic.cogvideox.save_cogvideox_model`).
EXPORT_FOLDER_NAME = "model"
LOG_NAME = "log.jsonl"
LOSS_PLOT_NAME = "loss.png"

#: Settings a checkpoint written before they existed was trained with: it predicted velocities
#: with SD3's logit-normal noise levels. Filled in on resume so that such a run is refused
#: under today's defaults instead of silently switching its objective.
SETTINGS_BEFORE_X_PREDICTION = {"prediction": "velocity", "sigma_logit_mean": 0.0}

#: Settings that only say how often to log, checkpoint and evaluate: a resumed run may change
#: them (they touch neither the weights nor the random streams).
CADENCE_SETTINGS = ("log_every", "checkpoint_every", "eval_every", "eval_seeds")


@dataclass(frozen=True)
class TrainConfig:
    """Settings of :func:`train` (defaults: the run that produced the shipped checkpoint).

    Attributes:
        prediction: what the transformer learns to output, ``"sample"`` (the clean video; the
            loss is still the velocity error, via
            :func:`~asymrnr_lab.synthetic.model.velocity_from_sample`) or ``"velocity"``.
            Default ``"sample"``: at the same step count the velocity-predicting model's
            samples were patchy blobs (see the module docstring).
        sigma_logit_mean: mean of the logit-normal noise-level distribution,
            ``sigma = sigmoid(N(mean, 1))``. Default 0.8: noisier than SD3's 0, as Li & He 2025
            found best for x-prediction, whose velocity loss weighs low noise by
            ``1 / sigma**2``.
        steps: total optimiser steps (the cosine schedule spans them). Default 4000.
        batch_size: videos per step. Default 32.
        lr: peak AdamW learning rate. Default 1e-3.
        warmup_steps: linear warm-up steps. Default 200.
        weight_decay: AdamW weight decay. Default 0.01.
        ema_decay: decay of the exported weight average. Default 0.999.
        cond_dropout: probability of training a sample on the empty caption. Default 0.1.
        grad_clip: gradient-norm clip. Default 1.0.
        seed: seeds the weights and the data stream. Default 0.
        bf16: bf16 autocast. Default False: it pays on GPUs and on CPUs with AVX512-BF16/AMX,
            but on an AVX2-only CPU (the 2-core CI machine) bf16 matmuls are ~10x slower than
            float32 (measured: 24 s vs 3.4 s per step at 512 tokens).
        log_every, checkpoint_every, eval_every: in steps (eval 0 = never). Defaults 10, 100,
            1000.
        eval_seeds: noise seeds per caption in the periodic evaluation. Default 1.
        preset: the transformer's size and token grid, one of the architecture's presets
            (:data:`~asymrnr_lab.synthetic.model.ARCH_PRESETS`). Default ``"synthetic"``
            (256 video tokens, the shipped checkpoint); ``"synthetic-fine"`` has 1024 (GPU). With
            ``arch="cogvideox"`` the default stands for that architecture's default,
            ``"cogvideox"`` (256 video tokens); ``"cogvideox-fine"`` has 1024.
        arch: the transformer class, one of :data:`~asymrnr_lab.synthetic.model.ARCHS`:
            ``"reference"`` (default: the bundled ReferenceDiT, exported as
            :data:`EXPORT_NAME`) or ``"cogvideox"`` (a diffusers
            ``CogVideoXTransformer3DModel``, exported as the folder :data:`EXPORT_FOLDER_NAME`).
            Recorded in checkpoints only when not ``"reference"``, so reference runs write the
            same files as before the setting existed.
    """

    prediction: str = "sample"
    sigma_logit_mean: float = 0.8
    steps: int = 4000
    batch_size: int = 32
    lr: float = 1e-3
    warmup_steps: int = 200
    weight_decay: float = 0.01
    ema_decay: float = 0.999
    cond_dropout: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    bf16: bool = False
    log_every: int = 10
    checkpoint_every: int = 100
    eval_every: int = 1000
    eval_seeds: int = 1
    preset: str = SYNTHETIC_PRESET
    arch: str = REFERENCE_ARCH

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "log_every", "checkpoint_every", "eval_seeds"):
            check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup_steps", "seed", "eval_every"):
            check_int(name, getattr(self, name), minimum=0)
        for name, low, high in (("lr", 0.0, 1.0), ("ema_decay", 0.0, 1.0),
                                ("cond_dropout", 0.0, 1.0), ("weight_decay", 0.0, 1.0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value < high:
                raise ValueError(f"{name} must be a number in [{low}, {high}), got {value!r}")
        check_choice("prediction", self.prediction, PREDICTIONS)
        check_choice("arch", self.arch, ARCHS)
        presets = ARCH_PRESETS[self.arch]
        if self.arch != REFERENCE_ARCH and self.preset == SYNTHETIC_PRESET:
            object.__setattr__(self, "preset", presets[0])  # the default preset: the arch's own
        if self.preset not in presets:
            check_choice("preset", self.preset, [p for names in ARCH_PRESETS.values() for p in names])
            raise ValueError(f"preset {self.preset!r} is not one of arch {self.arch!r}'s presets {presets!r}")
        if isinstance(self.sigma_logit_mean, bool) or not isinstance(
            self.sigma_logit_mean, (int, float)
        ) or not math.isfinite(self.sigma_logit_mean):
            raise ValueError(
                f"sigma_logit_mean must be a finite number, got {self.sigma_logit_mean!r}"
            )
        if not isinstance(self.bf16, bool):
            raise TypeError(f"bf16 must be True or False, got {self.bf16!r}")


def settings_dict(config: TrainConfig) -> dict:
    """``asdict(config)`` as checkpoints record it: without ``arch`` when it is the default
    ``"reference"`` (so that reference runs write what they wrote before ``arch`` existed)."""
    settings = asdict(config)
    if settings["arch"] == REFERENCE_ARCH:
        del settings["arch"]
    return settings


def export_path(out_dir: str | Path, config: TrainConfig) -> Path:
    """Where :func:`train` exports the EMA model: :data:`EXPORT_NAME` (reference) or the folder
    :data:`EXPORT_FOLDER_NAME` (cogvideox)."""
    return Path(out_dir) / (EXPORT_NAME if config.arch == REFERENCE_ARCH else EXPORT_FOLDER_NAME)


def learning_rate(config: TrainConfig, step: int) -> float:
    """Linear warm-up to ``lr`` then cosine decay to 0 at ``steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return 0.5 * config.lr * (1.0 + math.cos(math.pi * min(1.0, progress)))


def flow_matching_loss(
    model: TextToVideoModel,
    videos: torch.Tensor,
    token_ids: torch.Tensor,
    generator: torch.Generator,
    cond_dropout: float,
    pad_id: int,
    sigma_logit_mean: float = 0.0,
) -> torch.Tensor:
    """Mean squared velocity error on one batch (see the module docstring)."""
    batch = videos.shape[0]
    sigma = torch.sigmoid(torch.randn(batch, generator=generator) + sigma_logit_mean)
    noise = torch.randn(videos.shape, generator=generator)
    drop = torch.rand(batch, generator=generator) < cond_dropout
    token_ids = torch.where(drop[:, None], torch.full_like(token_ids, pad_id), token_ids)
    s = sigma.view(batch, 1, 1, 1, 1)
    noisy = (1 - s) * videos + s * noise
    device = next(model.parameters()).device
    velocity = model(noisy.to(device), token_ids.to(device), (sigma * TIMESTEP_SCALE).to(device))
    return F.mse_loss(velocity.float(), (noise - videos).to(device))


def _save_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _truncate_log(path: Path, step: int) -> None:
    """Drop log rows after ``step`` (written after the last checkpoint of a stopped run)."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if line]
        path.write_text("".join(f"{r}\n" for r in rows if json.loads(r)["step"] <= step))


def _plot_loss(out_dir: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the `report` extra is optional
        return
    rows = [json.loads(line) for line in (out_dir / LOG_NAME).read_text().splitlines() if line]
    losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    evals = [(r["step"], r["all_correct"]) for r in rows if "all_correct" in r]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(*zip(*losses), lw=0.8, label="training loss (mean over log window)")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("flow-matching loss")
    if evals:
        ax2 = ax.twinx()
        ax2.plot(*zip(*evals), "o-", color="tab:red", label="valid and all attributes right (%)")
        ax2.set_ylabel("adherence (%)")
        ax2.set_ylim(0, 100)
        ax2.legend(loc="center right")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(out_dir / LOSS_PLOT_NAME, dpi=100)
    plt.close(fig)


def _init_weights_from(path: str | Path, model: torch.nn.Module, ema: torch.nn.Module, config: TrainConfig,
                       task: SyntheticTaskConfig) -> dict:
    """Load the weights of the trained model at ``path`` into ``model`` and ``ema``; returns what
    the run history records about it. ValueError when it is of another preset, prediction or task."""
    from asymrnr_lab.synthetic.model import read_checkpoint_metadata

    loaded, loaded_task = load_trained_model(path)
    metadata = read_checkpoint_metadata(path)
    trained = metadata.get("train_config", {})
    trained_preset = trained.get("preset", SYNTHETIC_PRESET)
    mismatches = {name: (mine, theirs) for name, mine, theirs in (
        ("preset", config.preset, trained_preset),
        ("arch", config.arch, trained.get("arch", REFERENCE_ARCH)),
        ("prediction", config.prediction, loaded.prediction),
        ("task", asdict(task), asdict(loaded_task)),
    ) if mine != theirs}
    # A CogVideoX model of another patch size (the 256-token preset for the 1024-token one) starts
    # the run through transplant_patch_size; everything else must match.
    other_patch_size = config.arch == COGVIDEOX_ARCH and set(mismatches) == {"preset"}
    if mismatches and not other_patch_size:
        raise ValueError(f"init_from {path} does not fit this run (this run, that model): {mismatches}")
    state = loaded.state_dict()
    if other_patch_size:
        from asymrnr_lab.synthetic.cogvideox import transplant_patch_size

        state = transplant_patch_size(state, model.state_dict())
    weights = {name: value.to(next(model.parameters()).device) for name, value in state.items()}
    model.load_state_dict(weights)
    ema.load_state_dict(weights)
    return {"init_from": str(path), "init_step": metadata.get("step"), "init_runs": metadata.get("runs")}


def train(
    out_dir: str | Path,
    config: TrainConfig | None = None,
    task: SyntheticTaskConfig | None = None,
    *,
    device: str = "cpu",
    log: Callable[[str], None] = print,
    max_steps_this_run: int | None = None,
    on_step: Callable[[int, int], None] | None = None,
    init_from: str | Path | None = None,
) -> Path:
    """Train (or continue training) in ``out_dir``; returns the exported model's path
    (:func:`export_path`: a safetensors file, or a diffusers-format folder for ``arch="cogvideox"``).

    ``max_steps_this_run`` stops early (after a checkpoint), e.g. to share the machine; the next
    call continues. A checkpoint written with other settings than ``config`` is refused, except
    for ``steps`` (may be raised to train longer; the change is recorded in the exported
    ``runs`` history) and the bookkeeping settings of :data:`CADENCE_SETTINGS`, which do not
    change what is trained. ``on_step(step, steps)`` is called after every optimiser step
    (progress display; ``step`` counts from 1 and includes resumed steps).

    ``init_from`` (a model :func:`~asymrnr_lab.synthetic.model.load_trained_model` reads,
    e.g. a shipped one) starts a new run from its weights instead of the seeded init: model and
    EMA both start from them, with a fresh optimiser, warm-up and cosine schedule over ``steps``
    (a warm restart: the exported weights are not the training state, which a machine without a
    persistent ``out_dir`` loses). Its architecture and preset must be ``config``'s; the history
    in the export's ``runs`` records the model it started from and that model's own history.
    Ignored when ``out_dir`` already has a checkpoint (the run resumes from it).
    """
    config = config if config is not None else TrainConfig()
    task = task if task is not None else SyntheticTaskConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = out_dir / CHECKPOINT_NAME
    vocab = Vocabulary()

    model = build_text_to_video_model(config.seed, config.prediction, config.preset).to(device).train()
    ema = build_text_to_video_model(config.seed, config.prediction, config.preset).to(device).eval()
    ema.load_state_dict(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay,
                                  betas=(0.9, 0.99))
    data_rng = torch.Generator().manual_seed(config.seed + 1)
    noise_rng = torch.Generator().manual_seed(config.seed + 2)
    step = 0
    # Every invocation that set a new total: [{"from_step", "steps"}]. Raising --steps to train
    # longer changes the cosine schedule from that step on; this history (exported with the
    # weights) is what reproduces such a run.
    runs = [{"from_step": 0, "steps": config.steps}]
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, weights_only=True)  # tensors and plain data only: a checkpoint cannot run code
        saved = TrainConfig(**{**SETTINGS_BEFORE_X_PREDICTION, **state["config"]})
        free = {"steps": config.steps, **{name: getattr(config, name) for name in CADENCE_SETTINGS}}
        if replace(saved, **free) != config or state["task"] != asdict(task):
            differing = [f.name for f in fields(TrainConfig)
                         if f.name not in free and getattr(saved, f.name) != getattr(config, f.name)]
            raise ValueError(
                f"{ckpt_path} was written with other settings (differing: {differing or 'task'}; "
                f"saved {saved}, task {state['task']}); use another --out directory or the same settings"
            )
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        data_rng.set_state(state["data_rng"])
        noise_rng.set_state(state["noise_rng"])
        step = state["step"]
        runs = state.get("runs", [{"from_step": 0, "steps": saved.steps}])
        if runs[-1]["steps"] != config.steps:
            runs.append({"from_step": step, "steps": config.steps})
        _truncate_log(out_dir / LOG_NAME, step)
        log(f"resuming {ckpt_path} at step {step}/{config.steps}")
    elif init_from is not None:
        runs[0].update(_init_weights_from(init_from, model, ema, config, task))
        log(f"training from {init_from} (its step {runs[0]['init_step']}): {config.steps} steps of "
            f"{config.batch_size} videos, a fresh optimiser and schedule")
    else:
        log(f"training from scratch: {sum(p.numel() for p in model.parameters()):,} parameters, "
            f"{config.steps} steps of {config.batch_size} videos, {task.num_captions} captions")

    def checkpoint() -> None:
        _save_state(ckpt_path, {
            "config": settings_dict(config), "task": asdict(task), "step": step,
            "model": model.state_dict(), "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "data_rng": data_rng.get_state(), "noise_rng": noise_rng.get_state(), "runs": runs,
        })
        save_trained_model(ema, export_path(out_dir, config), task,
                           {"step": step, "train_config": settings_dict(config), "runs": runs})
        _plot_loss(out_dir)

    log_file = (out_dir / LOG_NAME).open("a")
    window: list[float] = []
    start_step, start_time = step, time.perf_counter()
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                              enabled=config.bf16)
    while step < config.steps:
        videos, ids, _ = sample_batch(config.batch_size, task, data_rng, vocab)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(config, step)
        with autocast:
            loss = flow_matching_loss(model, videos, ids, noise_rng, config.cond_dropout,
                                      vocab.pad_id, config.sigma_logit_mean)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        with torch.no_grad():
            decay = min(config.ema_decay, (1 + step) / (10 + step))
            for p_ema, p in zip(ema.parameters(), model.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)
        step += 1
        window.append(loss.item())
        if on_step is not None:
            on_step(step, config.steps)

        if step % config.log_every == 0 or step == config.steps:
            rate = (time.perf_counter() - start_time) / (step - start_step)
            mean = sum(window) / len(window)
            log_file.write(json.dumps({"step": step, "loss": mean, "lr": learning_rate(config, step - 1),
                                       "seconds_per_step": rate}) + "\n")
            log_file.flush()
            eta = (config.steps - step) * rate / 60
            log(f"step {step}/{config.steps}  loss {mean:.4f}  {rate:.2f} s/step  eta {eta:.0f} min")
            window.clear()
        if config.eval_every and (step % config.eval_every == 0 or step == config.steps):
            report = evaluate(ema, task, seeds=range(config.eval_seeds), sampler=EVAL_SAMPLER)
            log_file.write(json.dumps({"step": step, "all_correct": report.all_correct,
                                       "valid": report.valid, **report.attribute_accuracy}) + "\n")
            log_file.flush()
            log(f"eval at step {step}: " + report.summary().replace("\n", "; "))
        stop_now = max_steps_this_run is not None and step - start_step >= max_steps_this_run
        if step % config.checkpoint_every == 0 or step == config.steps or stop_now:
            checkpoint()
        if stop_now:
            log(f"stopping after {max_steps_this_run} steps this run; run again to continue")
            break
    log_file.close()
    return export_path(out_dir, config)
