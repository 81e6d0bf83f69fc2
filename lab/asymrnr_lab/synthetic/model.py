"""The trained text-to-video model of the synthetic task, and the checkpoint shipped with it.

:class:`TextToVideoDiT` is a learned caption-token embedding table (the "text encoder") in
front of the bundled :class:`~asymrnr_lab.models.ReferenceDiT` (preset ``"synthetic"``:
RGB pixels 8 x 32 x 32, patch (2, 4, 4) -> 256 video tokens, hidden 128, 4 heads, 4 blocks,
adaLN on timestep + pooled caption). The transformer is the part a user compiles; the table runs
once per prompt, like a text encoder in a diffusers pipeline.

The shipped checkpoint (:data:`CHECKPOINT_PATH`, safetensors with JSON metadata: model config,
task config, training step) loads with :func:`load_trained_model`, no network needed.

The same task can be trained in a diffusers class (``arch="cogvideox"``, :data:`ARCHS`):
:class:`~asymrnr_lab.synthetic.cogvideox.TextToVideoCogVideoX`, the same interface around a
small ``CogVideoXTransformer3DModel``, exported as a folder in diffusers' format that
:func:`load_trained_model` also reads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from asymrnr_compile._validate import check_choice
from asymrnr_lab.models import ReferenceDiT, ReferenceDiTConfig
from asymrnr_lab.models.config import PRESETS
from asymrnr_lab.sampling import TIMESTEP_SCALE
from asymrnr_lab.synthetic.cogvideox import (
    COGVIDEOX_ARCH,
    COGVIDEOX_PRESETS,
    TextToVideoCogVideoX,
    build_cogvideox_model,
    is_cogvideox_folder,
    load_cogvideox_model,
    save_cogvideox_model,
)
from asymrnr_lab.synthetic.config import SyntheticTaskConfig
from asymrnr_lab.synthetic.text_to_video import PREDICTIONS, CaptionedVideoModel
from asymrnr_lab.synthetic.vocab import Vocabulary

#: Name of the transformer preset the synthetic task trains by default (256 video tokens).
SYNTHETIC_PRESET = "synthetic"

#: The presets a text-to-video model of the synthetic task can be built from: ``"synthetic"``
#: (patch (2, 4, 4), 256 video tokens) and ``"synthetic-fine"`` (patch (2, 2, 2), 1024 tokens).
SYNTHETIC_PRESETS = (SYNTHETIC_PRESET, "synthetic-fine")

#: The default architecture: :class:`TextToVideoDiT` (the bundled ReferenceDiT).
REFERENCE_ARCH = "reference"

#: Architectures a text-to-video model of the synthetic task can be built in: ``"reference"``
#: (:class:`TextToVideoDiT`) and ``"cogvideox"`` (a diffusers ``CogVideoXTransformer3DModel``,
#: :mod:`asymrnr_lab.synthetic.cogvideox`).
ARCHS = (REFERENCE_ARCH, COGVIDEOX_ARCH)

#: The presets of each architecture; the first is its default.
ARCH_PRESETS: dict[str, tuple[str, ...]] = {
    REFERENCE_ARCH: SYNTHETIC_PRESETS,
    COGVIDEOX_ARCH: tuple(COGVIDEOX_PRESETS),  # "cogvideox" (256 video tokens) first
}

#: Every preset a text-to-video model of the synthetic task can be built from, all architectures.
TEXT_TO_VIDEO_PRESETS = tuple(name for presets in ARCH_PRESETS.values() for name in presets)


def arch_of_preset(preset: str) -> str:
    """The architecture whose preset ``preset`` is (ValueError listing them all otherwise)."""
    check_choice("preset", preset, TEXT_TO_VIDEO_PRESETS)
    return next(arch for arch, presets in ARCH_PRESETS.items() if preset in presets)


#: The checkpoint shipped in the package (EMA weights of the best training run), preset
#: ``"synthetic"``: the default model of the demo and the CPU benchmarks.
CHECKPOINT_PATH = Path(__file__).resolve().parent.parent / "assets" / "synthetic_dit.safetensors"

#: The shipped checkpoint of preset ``"synthetic-fine"`` (1024 video tokens; trained on a GPU by
#: ``benchmarks/gpu_checks.sh``). On a CPU a forward takes about 5x as long as that of
#: :data:`CHECKPOINT_PATH` (batch 2, eager, one thread: 0.35 s vs 0.064 s).
FINE_CHECKPOINT_PATH = CHECKPOINT_PATH.with_name("synthetic_dit_fine.safetensors")

#: The shipped model of the CogVideoX preset ``"cogvideox"`` (256 video tokens; a diffusers
#: ``CogVideoXTransformer3DModel`` trained on 2 CPU cores by ``asymrnr-compile train --arch
#: cogvideox``): a folder in diffusers' format that :func:`load_trained_model` reads and whose
#: ``transformer/`` subfolder ``CogVideoXTransformer3DModel.from_pretrained`` loads offline.
COGVIDEOX_MODEL_PATH = CHECKPOINT_PATH.with_name("synthetic_cogvideox")

#: The shipped model of the CogVideoX preset ``"cogvideox-fine"`` (1024 video tokens), in the same
#: format: trained on 2 CPU cores from :data:`COGVIDEOX_MODEL_PATH`'s weights (``asymrnr-compile
#: train --arch cogvideox --preset cogvideox-fine --init-from ...``; docs/trained_models.md).
COGVIDEOX_FINE_MODEL_PATH = CHECKPOINT_PATH.with_name("synthetic_cogvideox_fine")

#: The shipped checkpoint of each preset of :data:`SYNTHETIC_PRESETS`.
SHIPPED_CHECKPOINTS: dict[str, Path] = {SYNTHETIC_PRESET: CHECKPOINT_PATH, "synthetic-fine": FINE_CHECKPOINT_PATH}

#: Smallest sigma :func:`velocity_from_sample` divides by (the same clip as Li & He 2025): keeps
#: the velocity, and the training loss weight ``1 / sigma**2`` it implies, bounded near sigma 0.
SIGMA_FLOOR = 0.05


def velocity_from_sample(
    noisy: torch.Tensor, predicted_sample: torch.Tensor, timestep: torch.Tensor
) -> torch.Tensor:
    """Velocity ``(x_sigma - x_0_hat) / max(sigma, SIGMA_FLOOR)`` of the flow
    ``x_sigma = (1 - sigma) x_0 + sigma * noise`` (whose exact velocity is ``noise - x_0``).

    ``noisy`` and ``predicted_sample`` are ``(B, ...)``; ``timestep`` is ``(B,)`` or a scalar,
    ``sigma * TIMESTEP_SCALE``.
    """
    sigma = (timestep.to(torch.float32) / TIMESTEP_SCALE).clamp_min(SIGMA_FLOOR)
    sigma = sigma.reshape(-1, *([1] * (noisy.dim() - 1))).to(noisy.dtype)
    return (noisy - predicted_sample) / sigma


def as_velocity_model(
    transformer: Callable[..., torch.Tensor], prediction: str
) -> Callable[..., torch.Tensor]:
    """``transformer`` itself for ``"velocity"``; for ``"sample"``, a callable with the same
    keyword signature that returns :func:`velocity_from_sample` of its output (what the
    samplers of :mod:`asymrnr_lab.sampling` expect)."""
    check_choice("prediction", prediction, PREDICTIONS)
    if prediction == "velocity":
        return transformer

    def velocity(
        hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, timestep: torch.Tensor
    ) -> torch.Tensor:
        predicted = transformer(
            hidden_states=hidden_states,
            encoder_hidden_states=encoder_hidden_states,
            timestep=timestep,
        )
        return velocity_from_sample(hidden_states, predicted, timestep)

    return velocity


class TextToVideoDiT(CaptionedVideoModel):
    """Caption ids ``(B, T)`` -> embeddings ``(B, T, text_dim)`` -> :class:`ReferenceDiT` (see
    :class:`~asymrnr_lab.synthetic.text_to_video.CaptionedVideoModel` for the interface)."""

    transformer: ReferenceDiT

    def __init__(
        self, config: ReferenceDiTConfig, vocab_size: int, prediction: str = "velocity"
    ) -> None:
        super().__init__(vocab_size, config.text_dim, prediction)
        self.transformer = ReferenceDiT(config)


#: A text-to-video model of the synthetic task, of either architecture.
TextToVideoModel = TextToVideoDiT | TextToVideoCogVideoX


def build_text_to_video_model(
    seed: int = 0, prediction: str = "velocity", preset: str = SYNTHETIC_PRESET
) -> TextToVideoModel:
    """A text-to-video model of ``preset`` (one of :data:`TEXT_TO_VIDEO_PRESETS`, default
    ``"synthetic"``) with seeded initial weights, its transformer trained for ``prediction``
    (see :data:`PREDICTIONS`).

    Presets of :data:`SYNTHETIC_PRESETS` give a :class:`TextToVideoDiT`: the transformer starts
    from :func:`~asymrnr_lab.models.build_reference_model`'s seeded init; the embedding
    table from ``N(0, 1)`` drawn from the same seed. Presets of
    :data:`~asymrnr_lab.synthetic.cogvideox.COGVIDEOX_PRESETS` give a
    :class:`~asymrnr_lab.synthetic.cogvideox.TextToVideoCogVideoX`
    (:func:`~asymrnr_lab.synthetic.cogvideox.build_cogvideox_model`).
    """
    from asymrnr_lab.models import build_reference_model

    if arch_of_preset(preset) == COGVIDEOX_ARCH:
        return build_cogvideox_model(seed, prediction, preset, len(Vocabulary()))
    config = PRESETS[preset]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TextToVideoDiT(config, len(Vocabulary()), prediction)
    model.transformer.load_state_dict(build_reference_model(config, seed=seed).state_dict())
    return model


def save_checkpoint(
    model: TextToVideoDiT,
    path: str | Path,
    task: SyntheticTaskConfig,
    extra: dict | None = None,
) -> None:
    """Write ``model``'s weights (float32) and its configs as safetensors metadata."""
    metadata = {
        "model_config": json.dumps(asdict(model.config)),
        "task_config": json.dumps(asdict(task)),
        "vocab_size": str(model.token_embed.num_embeddings),
        "prediction": json.dumps(model.prediction),
    }
    for key, value in (extra or {}).items():
        metadata[key] = json.dumps(value)
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)


def save_trained_model(
    model: TextToVideoModel,
    path: str | Path,
    task: SyntheticTaskConfig,
    extra: dict | None = None,
) -> Path:
    """Export ``model`` to ``path``: :func:`save_checkpoint` (one safetensors file) for a
    :class:`TextToVideoDiT`, :func:`~asymrnr_lab.synthetic.cogvideox.save_cogvideox_model`
    (a folder in diffusers' format) for a CogVideoX one. Returns ``path``."""
    if isinstance(model, TextToVideoCogVideoX):
        return save_cogvideox_model(model, path, task, extra)
    save_checkpoint(model, path, task, extra)
    return Path(path)


def _config_from_json(cls, text: str):
    data = json.loads(text)
    names = {f.name for f in fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"checkpoint has unknown {cls.__name__} fields {sorted(unknown)}")
    for key, value in data.items():
        if isinstance(value, list):
            data[key] = tuple(value)
    return cls(**data)


def read_checkpoint_metadata(path: str | Path = CHECKPOINT_PATH) -> dict[str, object]:
    """The JSON metadata of a checkpoint, decoded (``model_config`` and ``task_config`` as
    dicts, training facts such as ``step`` as written). For an exported CogVideoX folder, that
    of its :data:`~asymrnr_lab.synthetic.cogvideox.SIDECAR_NAME` file (``cogvideox_config``
    instead of ``model_config``)."""
    from safetensors import safe_open

    from asymrnr_lab.synthetic.cogvideox import SIDECAR_NAME

    if Path(path).is_dir():
        path = Path(path) / SIDECAR_NAME
    with safe_open(str(path), framework="pt") as handle:
        raw = handle.metadata() or {}
    return {key: json.loads(value) for key, value in raw.items()}


def load_trained_model(
    path: str | Path | None = None,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> tuple[TextToVideoModel, SyntheticTaskConfig]:
    """Load a checkpoint (default: the shipped one) -> ``(model in eval mode, task config)``.

    ``path`` is a safetensors file of a :class:`TextToVideoDiT` or a folder exported by
    ``train`` with ``arch="cogvideox"`` (diffusers format, see
    :mod:`asymrnr_lab.synthetic.cogvideox`); either model has ``.transformer``,
    ``.embed_text``, ``.prediction`` and the same forward.

    Raises:
        FileNotFoundError: no checkpoint at ``path`` (the message says how to train one).
    """
    path = Path(path) if path is not None else CHECKPOINT_PATH
    if path.is_dir() and is_cogvideox_folder(path):
        model, meta = load_cogvideox_model(path)
        task = _config_from_json(SyntheticTaskConfig, json.dumps(meta["task_config"]))
        return model.to(device=device, dtype=dtype).eval(), task
    if not path.is_file():
        folder = " (a folder, but not one exported by `train --arch cogvideox`)" if path.is_dir() else ""
        raise FileNotFoundError(
            f"no trained checkpoint at {path}{folder}; train one with "
            "`asymrnr-compile train --out runs/synthetic` (see the README)"
        )
    meta = read_checkpoint_metadata(path)
    model_config = _config_from_json(ReferenceDiTConfig, json.dumps(meta["model_config"]))
    task = _config_from_json(SyntheticTaskConfig, json.dumps(meta["task_config"]))
    # Checkpoints from before x-prediction carry no "prediction": they predict velocities.
    prediction = meta.get("prediction", "velocity")
    model = TextToVideoDiT(model_config, int(meta["vocab_size"]), prediction)
    model.load_state_dict(load_file(str(path)))
    return model.to(device=device, dtype=dtype).eval(), task
