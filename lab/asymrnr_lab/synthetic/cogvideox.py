"""The synthetic task's text-to-video model as a *diffusers* class: a small
``diffusers.CogVideoXTransformer3DModel``.

:class:`TextToVideoCogVideoX` has the interface of
:class:`~asymrnr_lab.synthetic.model.TextToVideoDiT` (``.transformer``, ``.embed_text``,
``.prediction``, ``.config``, ``forward(hidden_states, token_ids, timestep)``): the same
caption-token embedding table in front (the "text encoder", outside the transformer), and as
``.transformer`` a :class:`CogVideoXVideoTransformer`, which takes the task's videos
``(B, 3, F, H, W)`` (the reference model's input), hands them to the diffusers model in its
``(B, F, C, H, W)`` layout, computes the 3-D RoPE tables as ``CogVideoXPipeline`` does, and
turns the output back. The trainer, the sampler, the quality benchmark and the asymrnr backend
(``torch.compile(model.transformer, backend="asymrnr")``) use it unchanged.

Presets (:data:`COGVIDEOX_PRESETS`), sized like the reference presets ``"synthetic"`` /
``"synthetic-fine"`` (width 128 = 4 heads x 32, 4 blocks, 64-wide text embeddings of 10 caption
tokens, 4x MLP, timestep embedding 128), on the task's 8 x 32 x 32 RGB pixels:

- ``"cogvideox"``: 2 frames x 4 x 4 pixels per token -> 4 x 8 x 8 = 256 video tokens (CPU);
- ``"cogvideox-fine"``: 2 x 2 x 2 pixels per token -> 4 x 16 x 16 = 1024 video tokens (GPU).

**Temporal patching.** CogVideoX 1.5 patches time itself (``patch_size_t``), but its patch
embedding is a reshape plus a Linear layer, in which the asymrnr analysis finds no video grid
(grid axes are born at convolutions): every attention site reads as text-only and the backend
runs the model unreduced. Its absolute position tables are also sized from the unpatched frame
count, so they break with ``patch_size_t`` 2. CogVideoX 1.0 (``patch_size_t=None``) patches each
latent frame with a Conv2d, which the backend understands; so the wrapper folds each pair of
frames into the channels, ``(B, 3, 8, H, W) -> (B, 4, 6, H, W)``, the way a video VAE folds
time into latent channels (no VAE here: pixels in, pixels out), and the diffusers model is a
CogVideoX 1.0 transformer with ``in_channels`` 6 over 4 latent frames. Each token sees the
same 2 x p x p pixels as with ``patch_size_t`` 2.

**Positions.** RoPE (``use_rotary_positional_embeddings=True``, computed outside the
transformer like the pipeline's CogVideoX 1.0 branch, integer positions) with base 100, as the
reference presets' :data:`~asymrnr_lab.models.config.SYNTHETIC_POSITION_BASE`, not diffusers'
10000: with 4-6 frequencies per axis over 4-16 positions, base 10000 leaves all but two of them
near zero. Plus CogVideoX's absolute 3-D sin-cos table (``use_learned_positional_embeddings=True``,
which in diffusers is a *fixed* table saved with the weights, not a trained parameter;
``spatial_interpolation_scale`` 1), so that tokens know the frame edges, as the reference's
``absolute_positions``. The sin-cos table alone (CogVideoX-2B's choice) would also work; RoPE
alone knows no edges. RoPE needs ``attention_head_dim`` a multiple of 16 (diffusers gives
t / h / w ``d/4``, ``3d/8``, ``3d/8`` channels, each must be even), and the table needs exactly
``max_text_seq_length`` text tokens (the captions are always padded to 10).

Other differences from the reference model, all CogVideoX's own design: no pooled caption in
the adaLN (the caption reaches the video through the joint attention only, and text tokens get
their own adaLN modulation), LayerNorm instead of RMSNorm on q / k. RoPE is applied in place to
the video slice of the queries and keys; the backend's default ``match_on="hidden_states"``
matches the block's hidden states before the projections, so it works at these sites (only
h-reduction, which would shorten the projections' input, is refused: the in-place RoPE write
reads the full-length queries).

The exported model (:func:`save_cogvideox_model`) is a folder in diffusers' own format::

    FOLDER/transformer/config.json                        # save_pretrained
    FOLDER/transformer/diffusion_pytorch_model.safetensors
    FOLDER/text_to_video.safetensors                      # token table + task/prediction metadata

``CogVideoXTransformer3DModel.from_pretrained(FOLDER / "transformer")`` loads the transformer
offline; :func:`~asymrnr_lab.synthetic.model.load_trained_model` loads all of it.

Requires ``diffusers`` (``pip install -e .[diffusers]``), imported lazily.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from asymrnr_compile._validate import check_choice
from asymrnr_lab.models.config import SYNTHETIC_POSITION_BASE
from asymrnr_lab.synthetic.config import SyntheticTaskConfig
from asymrnr_lab.synthetic.text_to_video import CaptionedVideoModel

#: Value of ``TrainConfig.arch`` (and of the exported metadata's ``"arch"``) for this model.
COGVIDEOX_ARCH = "cogvideox"

#: The cheaper preset (256 video tokens, trainable on a CPU) and the default of ``arch="cogvideox"``.
COGVIDEOX_PRESET = "cogvideox"
#: The 1024-token preset (the reference ``"synthetic-fine"``'s token grid; train it on a GPU).
COGVIDEOX_FINE_PRESET = "cogvideox-fine"

#: Sub-folder of an exported model holding the diffusers transformer (``save_pretrained``).
TRANSFORMER_FOLDER = "transformer"
#: File of an exported model holding the token embedding table and the metadata.
SIDECAR_NAME = "text_to_video.safetensors"

#: Multiple ``head_dim`` must be of: diffusers' 3-D RoPE gives t / h / w ``d/4``, ``3d/8``,
#: ``3d/8`` channels, each of which must be even.
ROPE_HEAD_DIM_MULTIPLE = 16


def _check_positive(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


@dataclass(frozen=True)
class CogVideoXTaskConfig:
    """Size and token grid of a :class:`CogVideoXVideoTransformer` (one of
    :data:`COGVIDEOX_PRESETS`, or a tiny one for tests).

    Attributes:
        frames, height, width: video size the model is built for (the task's; default 8 x 32 x 32).
        in_channels: channels of the video (RGB: 3).
        temporal_patch: frames per token, folded into the channels by the wrapper (see the module
            docstring); the diffusers model sees ``frames / temporal_patch`` latent frames of
            ``in_channels * temporal_patch`` channels. Default 2.
        patch_size: spatial patch (CogVideoX's ``patch_size``). Default 4.
        num_heads, head_dim: attention heads and channels per head (``head_dim`` a multiple of
            :data:`ROPE_HEAD_DIM_MULTIPLE`). Default 4 x 32 (width 128).
        num_blocks: transformer blocks (``num_layers``). Default 4.
        time_embed_dim: width of the timestep embedding the adaLN layers read. Default 128.
        text_dim: width of the text embeddings (the token table's). Default 64.
        text_tokens: caption tokens (``max_text_seq_length``; the sin-cos table needs exactly
            this many). Default 10.
        rope_theta: base of the 3-D RoPE frequencies. Default 100 (see the module docstring).
    """

    frames: int = 8
    height: int = 32
    width: int = 32
    in_channels: int = 3
    temporal_patch: int = 2
    patch_size: int = 4
    num_heads: int = 4
    head_dim: int = 32
    num_blocks: int = 4
    time_embed_dim: int = 128
    text_dim: int = 64
    text_tokens: int = 10
    rope_theta: float = SYNTHETIC_POSITION_BASE

    def __post_init__(self) -> None:
        for f in fields(self):
            if f.name != "rope_theta":
                _check_positive(f.name, getattr(self, f.name))
        theta = self.rope_theta
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not (
            math.isfinite(theta) and theta > 0
        ):
            raise ValueError(f"rope_theta must be a finite number > 0, got {theta!r}")
        object.__setattr__(self, "rope_theta", float(theta))
        if self.head_dim % ROPE_HEAD_DIM_MULTIPLE:
            raise ValueError(
                f"head_dim must be a multiple of {ROPE_HEAD_DIM_MULTIPLE} for CogVideoX's 3-D RoPE, "
                f"got {self.head_dim}"
            )
        for name, size, patch in (("frames", self.frames, self.temporal_patch),
                                  ("height", self.height, self.patch_size),
                                  ("width", self.width, self.patch_size)):
            if size % patch:
                raise ValueError(f"{name} must be a multiple of its patch size {patch}, got {size}")

    @property
    def hidden_size(self) -> int:
        """Model width ``num_heads * head_dim``."""
        return self.num_heads * self.head_dim

    @property
    def latent_frames(self) -> int:
        """Frames the diffusers model sees, ``frames // temporal_patch``."""
        return self.frames // self.temporal_patch

    @property
    def latent_channels(self) -> int:
        """Channels the diffusers model sees, ``in_channels * temporal_patch``."""
        return self.in_channels * self.temporal_patch

    @property
    def patch(self) -> tuple[int, int, int]:
        """Pixels per video token ``(t, h, w)``."""
        return (self.temporal_patch, self.patch_size, self.patch_size)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Video token grid ``(F', H', W')``."""
        return (self.latent_frames, self.height // self.patch_size, self.width // self.patch_size)

    @property
    def video_tokens(self) -> int:
        """Video tokens ``F' * H' * W'``."""
        return math.prod(self.grid)

    def diffusers_config(self) -> dict[str, Any]:
        """Keyword arguments of ``CogVideoXTransformer3DModel`` for this size: a CogVideoX 1.0
        transformer (``patch_size_t`` None) over :attr:`latent_frames` frames of
        :attr:`latent_channels` channels. No VAE compresses time here:
        ``temporal_compression_ratio`` 1, so ``sample_frames`` is the latent frame count
        (diffusers' formula ``(K - 1) * ratio + 1`` for K latent frames)."""
        return {
            "num_attention_heads": self.num_heads,
            "attention_head_dim": self.head_dim,
            "in_channels": self.latent_channels,
            "out_channels": self.latent_channels,
            "time_embed_dim": self.time_embed_dim,
            "text_embed_dim": self.text_dim,
            "num_layers": self.num_blocks,
            "sample_width": self.width,
            "sample_height": self.height,
            "sample_frames": self.latent_frames,
            "patch_size": self.patch_size,
            "patch_size_t": None,
            "temporal_compression_ratio": 1,
            "max_text_seq_length": self.text_tokens,
            "spatial_interpolation_scale": 1.0,
            "temporal_interpolation_scale": 1.0,
            "use_rotary_positional_embeddings": True,
            "use_learned_positional_embeddings": True,
        }


#: The presets of ``arch="cogvideox"``: 256 and 1024 video tokens (see the module docstring).
COGVIDEOX_PRESETS: dict[str, CogVideoXTaskConfig] = {
    COGVIDEOX_PRESET: CogVideoXTaskConfig(temporal_patch=2, patch_size=4),
    COGVIDEOX_FINE_PRESET: CogVideoXTaskConfig(temporal_patch=2, patch_size=2),
}


def rotary_tables(grid: tuple[int, int, int], head_dim: int, theta: float = SYNTHETIC_POSITION_BASE,
                  device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE ``(cos, sin)``, each ``(F' * H' * W', head_dim)`` float32, for the token grid
    ``(F', H', W')``: what ``CogVideoXPipeline`` computes for a CogVideoX 1.0 transformer whose
    ``sample_height / width`` give that grid (integer positions), with base ``theta``."""
    from diffusers.models.embeddings import get_3d_rotary_pos_embed

    frames, height, width = grid
    return get_3d_rotary_pos_embed(
        embed_dim=head_dim, crops_coords=((0, 0), (height, width)), grid_size=(height, width),
        temporal_size=frames, theta=theta, device=device,
    )


#: The tensors of a :class:`TextToVideoCogVideoX` state dict that depend on the patch size.
PATCH_EMBEDDING_WEIGHT = "transformer.model.patch_embed.proj.weight"
OUTPUT_PROJECTION = ("transformer.model.proj_out.weight", "transformer.model.proj_out.bias")
#: CogVideoX's fixed sin-cos position table (a buffer saved with the weights, not trained): sized by
#: the token grid, so a model of another patch size keeps its own.
POSITION_TABLE = "transformer.model.patch_embed.pos_embedding"


def transplant_patch_size(source: dict[str, torch.Tensor], target: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights of a :class:`TextToVideoCogVideoX` of patch size ``p`` (``source``, a state
    dict) for one of patch size ``p / r`` (``target``'s shapes; same width, blocks and text), so
    that a model trained on coarse tokens starts a finer-token run where it left off.

    Every tensor whose shape matches is copied. The patch embedding, a ``Conv2d`` of kernel
    ``p``, ``(D, C, p, p)``, becomes kernel ``p / r`` by summing each ``r x r`` block of its
    kernel: a fine token sees the pixels of its quarter of the coarse patch through the coarse
    kernel's matching quarter, and on a video constant over each coarse patch every fine token
    embeds exactly like the coarse token around it. The output projection ``(C * p * p, D)``
    (rows ordered channel, row, column, as diffusers' unpatchify reads them) and its bias become
    ``(C * (p / r)^2, D)`` by averaging each ``r x r`` block of output pixels, so a fine token
    predicts the mean of what the coarse one predicted for its area. The position table stays
    ``target``'s. ValueError when other tensors differ or the patch sizes do not divide.
    """
    weights = {}
    for name, wanted in target.items():
        have = source.get(name)
        if have is None:
            raise ValueError(f"transplant_patch_size: the source model has no {name!r}")
        if have.shape == wanted.shape or name == POSITION_TABLE:
            weights[name] = have if have.shape == wanted.shape else wanted
            continue
        if name == PATCH_EMBEDDING_WEIGHT:
            width, channels, coarse, _ = have.shape
            fine = wanted.shape[-1]
            ratio = _patch_ratio(coarse, fine)
            weights[name] = have.reshape(width, channels, fine, ratio, fine, ratio).sum(dim=(3, 5))
        elif name in OUTPUT_PROJECTION:
            rows = have.shape[0]
            fine_rows = wanted.shape[0]
            channels = target[PATCH_EMBEDDING_WEIGHT].shape[1]
            coarse = math.isqrt(rows // channels)
            fine = math.isqrt(fine_rows // channels)
            ratio = _patch_ratio(coarse, fine)
            grid = have.reshape(channels, fine, ratio, fine, ratio, *have.shape[1:])
            weights[name] = grid.mean(dim=(2, 4)).reshape(wanted.shape)
        else:
            raise ValueError(f"transplant_patch_size: {name!r} is {tuple(have.shape)} in the source and "
                             f"{tuple(wanted.shape)} in the target; only the patch embedding and the output "
                             "projection may differ")
    return weights


def _patch_ratio(coarse: int, fine: int) -> int:
    if fine <= 0 or coarse % fine:
        raise ValueError(f"transplant_patch_size: patch size {coarse} is not a multiple of {fine}")
    return coarse // fine


def fold_frames(video: torch.Tensor, temporal_patch: int) -> torch.Tensor:
    """``(B, C, F, H, W) -> (B, F / t, C * t, H, W)``: every ``t`` frames into the channels
    (channel ``c * t + k`` holds frame ``k`` of colour ``c``)."""
    batch, channels, frames, height, width = video.shape
    video = video.reshape(batch, channels, frames // temporal_patch, temporal_patch, height, width)
    return video.permute(0, 2, 1, 3, 4, 5).reshape(
        batch, frames // temporal_patch, channels * temporal_patch, height, width)


def unfold_frames(latent: torch.Tensor, temporal_patch: int) -> torch.Tensor:
    """The inverse of :func:`fold_frames`: ``(B, F / t, C * t, H, W) -> (B, C, F, H, W)``."""
    batch, frames, channels, height, width = latent.shape
    latent = latent.reshape(batch, frames, channels // temporal_patch, temporal_patch, height, width)
    return latent.permute(0, 2, 1, 3, 4, 5).reshape(
        batch, channels // temporal_patch, frames * temporal_patch, height, width)


class CogVideoXVideoTransformer(nn.Module):
    """``diffusers.CogVideoXTransformer3DModel`` (:attr:`model`) behind the task's layout.

    ``forward(hidden_states (B, C, F, H, W), encoder_hidden_states (B, T, text_dim), timestep (B,))
    -> (B, C, F, H, W)``: the keyword signature of
    :class:`~asymrnr_lab.models.ReferenceDiT`, so the samplers, the trainer and
    ``torch.compile(..., backend="asymrnr")`` take either. The video goes in as
    :func:`fold_frames` of it (``(B, F / t, C * t, H, W)``, CogVideoX's frames-first layout) and
    comes back through :func:`unfold_frames`. ``timestep`` is ``sigma * 1000``
    (:data:`~asymrnr_lab.sampling.TIMESTEP_SCALE`), the scale CogVideoX's sinusoidal timestep
    embedding was made for (its pipelines pass scheduler timesteps in [0, 1000)). The RoPE tables
    are computed from the input's token grid on every call (cheap; Dynamo folds them into the
    graph), in float32 as the pipeline does.
    """

    def __init__(self, config: CogVideoXTaskConfig, model: nn.Module | None = None) -> None:
        super().__init__()
        if not isinstance(config, CogVideoXTaskConfig):
            raise ValueError(f"config must be a CogVideoXTaskConfig, got {type(config).__name__}")
        if model is None:
            import diffusers

            model = diffusers.CogVideoXTransformer3DModel(**config.diffusers_config())
        else:
            _check_model_matches(model, config)
        self.config = config
        self.model = model

    @property
    def proj_out(self) -> nn.Linear:
        """The model's output projection (its weight gives the model's dtype and device)."""
        return self.model.proj_out

    def forward(
        self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor, timestep: torch.Tensor
    ) -> torch.Tensor:
        cfg = self.config
        latent = fold_frames(hidden_states, cfg.temporal_patch)
        _, frames, _, height, width = latent.shape
        grid = (frames, height // cfg.patch_size, width // cfg.patch_size)
        out = self.model(
            hidden_states=latent,
            encoder_hidden_states=encoder_hidden_states,
            timestep=timestep,
            image_rotary_emb=rotary_tables(grid, cfg.head_dim, cfg.rope_theta, device=latent.device),
            return_dict=False,
        )[0]
        return unfold_frames(out, cfg.temporal_patch)


def _check_model_matches(model: nn.Module, config: CogVideoXTaskConfig) -> None:
    expected = config.diffusers_config()
    saved = dict(getattr(model, "config", {}))
    differing = sorted(k for k, v in expected.items() if saved.get(k) != v)
    if differing:
        raise ValueError(
            f"the CogVideoX transformer's config differs from {config} in {differing} "
            f"(model: { {k: saved.get(k) for k in differing} }, expected: { {k: expected[k] for k in differing} })"
        )


class TextToVideoCogVideoX(CaptionedVideoModel):
    """Caption ids ``(B, T)`` -> embeddings ``(B, T, text_dim)`` -> :class:`CogVideoXVideoTransformer`.

    Same interface and math as :class:`~asymrnr_lab.synthetic.model.TextToVideoDiT` (see
    :class:`~asymrnr_lab.synthetic.text_to_video.CaptionedVideoModel`); ``model`` is the
    diffusers transformer to wrap (None: a new one of ``config``).
    """

    transformer: CogVideoXVideoTransformer

    def __init__(self, config: CogVideoXTaskConfig, vocab_size: int, prediction: str = "velocity",
                 model: nn.Module | None = None) -> None:
        super().__init__(vocab_size, config.text_dim, prediction)
        self.transformer = CogVideoXVideoTransformer(config, model)


@torch.no_grad()
def _init_weights(model: nn.Module, generator: torch.Generator) -> None:
    """The reference DiT's init recipe on CogVideoX's modules: Xavier-uniform projections with
    zero biases; adaLN modulation weights normal with std ``ADALN_INIT_GAIN / sqrt(time_embed_dim)``
    (small but not zero); norm weights ones, biases zeros."""
    from diffusers.models.normalization import AdaLayerNorm, CogVideoXLayerNormZero

    from asymrnr_lab.models.reference_dit import ADALN_INIT_GAIN

    modulation = {id(m.linear) for m in model.modules() if isinstance(m, (CogVideoXLayerNormZero, AdaLayerNorm))}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            if id(module) in modulation:
                nn.init.normal_(module.weight, std=ADALN_INIT_GAIN / math.sqrt(module.in_features),
                                generator=generator)
            else:
                nn.init.xavier_uniform_(module.weight, generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm) and module.weight is not None:
            nn.init.ones_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)


def build_cogvideox_model(seed: int = 0, prediction: str = "velocity",
                          preset: str | CogVideoXTaskConfig = COGVIDEOX_PRESET,
                          vocab_size: int | None = None) -> TextToVideoCogVideoX:
    """A :class:`TextToVideoCogVideoX` of ``preset`` (a name of :data:`COGVIDEOX_PRESETS` or a
    config) with seeded initial weights (:func:`_init_weights` from a generator seeded with
    ``seed``; the embedding table ``N(0, 1)`` from the same seed), the caller's RNG untouched."""
    from asymrnr_lab.synthetic.vocab import Vocabulary

    if not isinstance(preset, CogVideoXTaskConfig):
        preset = COGVIDEOX_PRESETS[check_choice("preset", preset, tuple(COGVIDEOX_PRESETS))]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = TextToVideoCogVideoX(preset, vocab_size or len(Vocabulary()), prediction)
    _init_weights(model.transformer.model, torch.Generator().manual_seed(seed))
    return model


def _atomic_folder(path: Path) -> tuple[Path, Path]:
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp, path.with_name(path.name + ".old")


def save_cogvideox_model(model: TextToVideoCogVideoX, path: str | Path, task: SyntheticTaskConfig,
                         extra: dict | None = None) -> Path:
    """Write ``model`` (float32) as the folder ``path`` (see the module docstring): the
    transformer by ``save_pretrained``, the token table and JSON metadata (``arch``,
    ``cogvideox_config``, ``task_config``, ``vocab_size``, ``prediction``, and ``extra``) in
    :data:`SIDECAR_NAME`. Written into a temporary folder, then swapped in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, old = _atomic_folder(path)
    transformer = model.transformer.model
    if any(p.dtype != torch.float32 for p in transformer.parameters()):
        # (the sin-cos position table is a float64 buffer in diffusers: saved as it is)
        transformer = copy.deepcopy(transformer).float()
    transformer.save_pretrained(tmp / TRANSFORMER_FOLDER, safe_serialization=True)
    metadata = {
        "arch": json.dumps(COGVIDEOX_ARCH),
        "cogvideox_config": json.dumps(asdict(model.config)),
        "task_config": json.dumps(asdict(task)),
        "vocab_size": str(model.token_embed.num_embeddings),
        "prediction": json.dumps(model.prediction),
    }
    for key, value in (extra or {}).items():
        metadata[key] = json.dumps(value)
    table = {"token_embed.weight": model.token_embed.weight.detach().float().contiguous().cpu()}
    save_file(table, str(tmp / SIDECAR_NAME), metadata=metadata)
    if path.exists():
        if old.exists():
            shutil.rmtree(old)
        path.rename(old)
    tmp.rename(path)
    if old.exists():
        shutil.rmtree(old)
    return path


def is_cogvideox_folder(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by :func:`save_cogvideox_model`."""
    path = Path(path)
    return (path / SIDECAR_NAME).is_file() and (path / TRANSFORMER_FOLDER / "config.json").is_file()


def load_cogvideox_model(path: str | Path) -> tuple[TextToVideoCogVideoX, dict[str, object]]:
    """The float32 model of a folder written by :func:`save_cogvideox_model` and its decoded
    metadata. The transformer comes from ``CogVideoXTransformer3DModel.from_pretrained`` (local
    files only, no network)."""
    import diffusers

    from asymrnr_lab.synthetic.model import read_checkpoint_metadata

    path = Path(path)
    meta = read_checkpoint_metadata(path / SIDECAR_NAME)
    data = dict(meta["cogvideox_config"])  # type: ignore[arg-type]
    unknown = set(data) - {f.name for f in fields(CogVideoXTaskConfig)}
    if unknown:
        raise ValueError(f"{path / SIDECAR_NAME} has unknown CogVideoXTaskConfig fields {sorted(unknown)}")
    config = CogVideoXTaskConfig(**data)
    transformer = diffusers.CogVideoXTransformer3DModel.from_pretrained(
        path / TRANSFORMER_FOLDER, local_files_only=True, torch_dtype=torch.float32, low_cpu_mem_usage=False)
    with torch.random.fork_rng(devices=[]):
        model = TextToVideoCogVideoX(config, int(meta["vocab_size"]), str(meta.get("prediction", "velocity")),
                                     model=transformer)
    model.token_embed.load_state_dict({"weight": load_file(str(path / SIDECAR_NAME))["token_embed.weight"]})
    return model, meta
