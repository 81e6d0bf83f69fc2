"""Configuration and presets of the bundled reference video DiT.

:class:`ReferenceDiTConfig` is one frozen, validated dataclass; :data:`PRESETS` names the sizes
the tests, the demo and the benchmarks use. The default field values are those of the
``"attention"`` preset, so ``ReferenceDiTConfig() == PRESETS["attention"]``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

#: Smallest head dimension: RoPE gives each of the three axes (t, h, w) at least one
#: rotation pair, i.e. at least 2 channels each, rounded to even shares of ``head_dim``.
MIN_HEAD_DIM = 8

#: Name of the preset used when none is given (the demo's default model).
DEFAULT_PRESET = "attention"

#: RoPE (and sin-cos) base of the ``"synthetic"`` preset, whose token grid is only 4 x 8 x 8.
SYNTHETIC_POSITION_BASE = 100.0


@dataclass(frozen=True)
class ReferenceDiTConfig:
    """Size and layout of a :class:`~asymrnr_lab.models.ReferenceDiT`.

    Latent video tensors are ``(B, C, F, H, W)``. The patch embedding turns them into a token
    grid ``(F', H', W') = (F // pt, H // ph, W // pw)`` of ``N = F' * H' * W'`` video tokens,
    in row-major ``(f, h, w)`` order. Text tokens come first in the joint attention sequence.

    Attributes:
        in_channels: latent channels ``C`` of ``hidden_states``; >= 1. Default 4.
        out_channels: channels of the output; None (default) means ``in_channels``. Use
            :attr:`output_channels` for the resolved value.
        patch_size: ``(pt, ph, pw)`` patch (kernel and stride of the 3-D patch embedding);
            each >= 1. Default ``(1, 2, 2)``.
        hidden_size: model width ``D``; a multiple of ``num_heads``. Default 256.
        num_heads: attention heads ``H``; >= 1. Default 4.
        num_blocks: transformer blocks; >= 1. Default 4.
        mlp_ratio: MLP hidden width over ``hidden_size``; > 0. Default 4.0.
        text_dim: width of the input text embeddings ``encoder_hidden_states``; >= 1.
            Default 64.
        text_tokens: default number of text tokens ``T`` (used by ``reference_inputs``);
            >= 1. Default 32.
        latent_frames, latent_height, latent_width: default latent size ``(F, H, W)`` (used by
            ``reference_inputs`` and :attr:`grid`); each a positive multiple of the matching
            patch size. Default ``4 x 48 x 48``.
        batch_size: default batch ``B`` (2: classifier-free guidance); >= 1. Default 2.
        rope_theta: base of the 3-D rotary position embedding; > 0. Default 10000.0.
        qk_norm: RMSNorm over the head dimension on queries and keys. Default True.
        pooled_text: also condition adaLN on the mean of the projected text tokens (added to
            the timestep embedding), as text-to-video DiTs with a pooled caption embedding do.
            Default False.
        absolute_positions: also add a fixed 3-D sin-cos position embedding to the video
            tokens after the patch embedding (frequencies from ``rope_theta``), so every token
            knows where it is in the frame, not only how far it is from the others. Default
            False (the diffusers video transformers this preset mimics use RoPE alone).
    """

    in_channels: int = 4
    out_channels: int | None = None
    patch_size: tuple[int, int, int] = (1, 2, 2)
    hidden_size: int = 256
    num_heads: int = 4
    num_blocks: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 64
    text_tokens: int = 32
    latent_frames: int = 4
    latent_height: int = 48
    latent_width: int = 48
    batch_size: int = 2
    rope_theta: float = 10000.0
    qk_norm: bool = True
    pooled_text: bool = False
    absolute_positions: bool = False

    def __post_init__(self) -> None:
        patch = self.patch_size
        if (
            not isinstance(patch, (tuple, list))
            or len(patch) != 3
            or not all(_is_int(p) and p >= 1 for p in patch)
        ):
            raise ValueError(
                f"patch_size must be three integers >= 1 (t, h, w), got {patch!r}"
            )
        object.__setattr__(self, "patch_size", tuple(int(p) for p in patch))

        for name in (
            "in_channels",
            "hidden_size",
            "num_heads",
            "num_blocks",
            "text_dim",
            "text_tokens",
            "latent_frames",
            "latent_height",
            "latent_width",
            "batch_size",
        ):
            _check_positive_int(name, getattr(self, name))
        if self.out_channels is not None:
            _check_positive_int("out_channels", self.out_channels)

        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size must be a multiple of num_heads={self.num_heads}, "
                f"got {self.hidden_size}"
            )
        head_dim = self.hidden_size // self.num_heads
        if head_dim < MIN_HEAD_DIM or head_dim % 2:
            raise ValueError(
                f"hidden_size / num_heads (head dim) must be even and >= {MIN_HEAD_DIM} for the "
                f"3-D RoPE, got hidden_size={self.hidden_size}, num_heads={self.num_heads} "
                f"(head dim {head_dim})"
            )
        if not _is_real(self.mlp_ratio) or not (self.mlp_ratio > 0) or math.isinf(self.mlp_ratio):
            raise ValueError(f"mlp_ratio must be a finite number > 0, got {self.mlp_ratio!r}")
        if int(self.hidden_size * self.mlp_ratio) < 1:
            raise ValueError(
                f"mlp_ratio must give an MLP width >= 1 (hidden_size * mlp_ratio), "
                f"got {self.mlp_ratio!r}"
            )
        if not _is_real(self.rope_theta) or not (self.rope_theta > 0) or math.isinf(
            self.rope_theta
        ):
            raise ValueError(f"rope_theta must be a finite number > 0, got {self.rope_theta!r}")
        if not isinstance(self.qk_norm, bool):
            raise ValueError(f"qk_norm must be True or False, got {self.qk_norm!r}")
        if not isinstance(self.pooled_text, bool):
            raise ValueError(f"pooled_text must be True or False, got {self.pooled_text!r}")
        if not isinstance(self.absolute_positions, bool):
            raise ValueError(
                f"absolute_positions must be True or False, got {self.absolute_positions!r}"
            )

        for name, size, p in zip(
            ("latent_frames", "latent_height", "latent_width"), self.latent_size, self.patch_size
        ):
            if size % p:
                raise ValueError(
                    f"{name} must be a positive multiple of the patch size {p}, got {size}"
                )

    @property
    def head_dim(self) -> int:
        """Per-head channels ``d = hidden_size // num_heads``."""
        return self.hidden_size // self.num_heads

    @property
    def output_channels(self) -> int:
        """Channels of the model output: ``out_channels``, or ``in_channels`` when None."""
        return self.in_channels if self.out_channels is None else self.out_channels

    @property
    def mlp_hidden_size(self) -> int:
        """Hidden width of the block MLP, ``int(hidden_size * mlp_ratio)``."""
        return int(self.hidden_size * self.mlp_ratio)

    @property
    def latent_size(self) -> tuple[int, int, int]:
        """Default latent size ``(F, H, W)``."""
        return (self.latent_frames, self.latent_height, self.latent_width)

    @property
    def latent_shape(self) -> tuple[int, int, int, int, int]:
        """Default ``hidden_states`` shape ``(B, C, F, H, W)``."""
        return (self.batch_size, self.in_channels, *self.latent_size)

    @property
    def grid(self) -> tuple[int, int, int]:
        """Video token grid ``(F', H', W')`` for the default latent size."""
        f, h, w = (s // p for s, p in zip(self.latent_size, self.patch_size))
        return (f, h, w)

    @property
    def video_tokens(self) -> int:
        """Video tokens ``N = F' * H' * W'`` for the default latent size."""
        return math.prod(self.grid)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_positive_int(name: str, value: object) -> None:
    if not _is_int(value) or value < 1:  # type: ignore[operator]
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


#: Named model sizes. ``"tiny"``: unit tests (32 video tokens). ``"small"``: backend tests that
#: need real reduction but compile and run in seconds (576 video tokens). ``"attention"``:
#: attention-dominated like real video DiTs (2304 video tokens, head dim 64; attention matmuls
#: are about 60% of the forward FLOPs). ``"cogvideox-2b-shape"``: GPU benchmarks at a real
#: model's width and token count (17,550 video tokens). ``"synthetic"`` and
#: ``"synthetic-fine"``: the trained text-to-video model of :mod:`asymrnr_lab.synthetic`.
#: ``"attention-4096"`` and ``"attention-16384"``: the ``"attention"`` model at 4096 and 16,384
#: video tokens.
PRESETS: dict[str, ReferenceDiTConfig] = {
    "tiny": ReferenceDiTConfig(
        hidden_size=64,
        num_heads=2,
        num_blocks=2,
        text_dim=32,
        text_tokens=8,
        latent_frames=2,
        latent_height=8,
        latent_width=8,
    ),
    "small": ReferenceDiTConfig(
        hidden_size=128,
        num_heads=4,
        num_blocks=2,
        text_dim=64,
        text_tokens=16,
        latent_frames=4,
        latent_height=24,
        latent_width=24,
    ),
    "attention": ReferenceDiTConfig(
        hidden_size=256,
        num_heads=4,
        num_blocks=4,
        mlp_ratio=4.0,
        text_dim=64,
        text_tokens=32,
        latent_frames=4,
        latent_height=48,
        latent_width=48,
    ),
    # GPU benchmarks: CogVideoX-2B's width (30 heads x 64), its 226 text tokens and 4096-wide T5
    # embeddings, and its 49-frame 480 x 720 latent (13 x 60 x 90, 16 channels, patch 2 ->
    # 17,550 video tokens), with 4 of its 30 blocks so that compiling takes a minute, not ten.
    # Attention matmuls are ~60% of a block's FLOPs here, as in the real model.
    "cogvideox-2b-shape": ReferenceDiTConfig(
        in_channels=16,
        hidden_size=1920,
        num_heads=30,
        num_blocks=4,
        text_dim=4096,
        text_tokens=226,
        latent_frames=13,
        latent_height=60,
        latent_width=90,
    ),
    # The trained text-to-video model (asymrnr_lab.synthetic.model): RGB pixels of the
    # synthetic task, 8 x 32 x 32 -> 4 x 8 x 8 = 256 video tokens, 1.3M parameters. RoPE base
    # 100, not 10000: with 4-6 frequencies per axis over 4-8 positions, base 10000 leaves all but
    # two of them near zero; plus absolute sin-cos positions so tokens know the frame edges.
    "synthetic": ReferenceDiTConfig(
        in_channels=3,
        patch_size=(2, 4, 4),
        hidden_size=128,
        num_heads=4,
        num_blocks=4,
        text_dim=64,
        text_tokens=10,
        latent_frames=8,
        latent_height=32,
        latent_width=32,
        rope_theta=SYNTHETIC_POSITION_BASE,
        pooled_text=True,
        absolute_positions=True,
    ),
}
# The same model on a 4x finer token grid: patch (2, 2, 2) -> 4 x 16 x 16 = 1024 video tokens, so
# a 6-8 px object covers 3-4 tokens across instead of 2 and the background has many near-identical
# tokens (the redundancy AsymRnR removes). About 16x the attention FLOPs of "synthetic": trained on
# a GPU (benchmarks/gpu_checks.sh).
PRESETS["synthetic-fine"] = replace(PRESETS["synthetic"], patch_size=(2, 2, 2))
# The "attention" model on larger videos, for the trend toward real model sizes: 4 x 32 x 32 =
# 4096 and 4 x 64 x 64 = 16,384 video tokens (CogVideoX-2B has 17,550). The attention matmuls'
# share of the FLOPs grows with the token count (about 73% and 91% of a forward, against 60%).
PRESETS["attention-4096"] = replace(PRESETS["attention"], latent_height=64, latent_width=64)
PRESETS["attention-16384"] = replace(PRESETS["attention"], latent_height=128, latent_width=128)


def resolve_config(preset: str | ReferenceDiTConfig) -> ReferenceDiTConfig:
    """Return ``preset`` itself if it is a config, else ``PRESETS[preset]``.

    Raises:
        ValueError: unknown preset name (the message lists the presets), or a value that is
            neither a name nor a :class:`ReferenceDiTConfig`.
    """
    if isinstance(preset, ReferenceDiTConfig):
        return preset
    if isinstance(preset, str):
        if preset in PRESETS:
            return PRESETS[preset]
        raise ValueError(
            f"preset must be one of {sorted(PRESETS)} or a ReferenceDiTConfig, got {preset!r}"
        )
    raise ValueError(
        f"preset must be one of {sorted(PRESETS)} or a ReferenceDiTConfig, "
        f"got {type(preset).__name__}"
    )
