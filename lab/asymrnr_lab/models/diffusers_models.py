"""Seeded random-weight diffusers video transformers: tiny test configs and benchmark shapes.

Two sets of builders, each returning ``(model, inputs)`` (the model in eval mode, keyword inputs
for one forward call; pass ``return_dict=False`` and take element 0 of the output):

- :data:`BUILDERS` / :func:`build`: the tiny configs (taken from
  diffusers' own model tests), for unit tests. Inputs are ``torch.randn``; callers seed the
  global RNG first (:func:`build` does).
- :data:`E2E_SPECS` / :func:`build_e2e`: the five families at attention-dominated shapes for
  ``benchmarks/e2e.py``: hidden 256 = 4 heads x 64, 4 transformer blocks, a 4 x 24 x 24 video
  token grid (2,304 tokens, nine times the hidden size, so attention is most of the FLOPs, as
  in the real models) and 32 text tokens. The CogVideoX one is the shape the published
  AsymRnR implementation was compared against (benchmarks/RESULTS.md, the e2e section). Weights
  come from ``torch.manual_seed``.

Requires ``diffusers`` (``pip install -e .[diffusers]``); diffusers is imported lazily, so this
module imports without it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch

Built = tuple[torch.nn.Module, dict[str, Any]]

# ---------------------------------------------------------------------------------------------
# Tiny test configs
# ---------------------------------------------------------------------------------------------


def cogvideox(frames: int = 1, num_layers: int = 1) -> Built:
    """``frames`` latent frames of 4x4 tokens (text first, 8 text tokens); ``num_layers`` blocks."""
    import diffusers

    model = diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        time_embed_dim=2, text_embed_dim=8, num_layers=num_layers, sample_width=8, sample_height=8,
        sample_frames=8, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=8,
    )
    inputs = {
        "hidden_states": torch.randn(2, frames, 4, 8, 8),
        "encoder_hidden_states": torch.randn(2, 8, 8),
        "timestep": torch.randint(0, 1000, (2,)),
    }
    return model.eval(), inputs


def hunyuan(frames: int = 1, size: int = 16, num_layers: int = 1, num_single_layers: int = 1) -> Built:
    """``frames`` latent frames of ``size`` x ``size`` tokens (text last, 12 text tokens);
    ``num_layers`` dual-stream and ``num_single_layers`` single-stream blocks."""
    import diffusers

    model = diffusers.HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10,
        num_layers=num_layers, num_single_layers=num_single_layers, num_refiner_layers=1, patch_size=1,
        patch_size_t=1,
        guidance_embeds=True, text_embed_dim=16, pooled_projection_dim=8, rope_axes_dim=(2, 4, 4),
        image_condition_type=None,
    )
    inputs = {
        "hidden_states": torch.randn(1, 4, frames, size, size),
        "timestep": torch.rand(1),
        "encoder_hidden_states": torch.randn(1, 12, 16),
        "pooled_projections": torch.randn(1, 8),
        "encoder_attention_mask": torch.ones(1, 12),
        "guidance": torch.rand(1),
    }
    return model.eval(), inputs


def mochi(num_layers: int = 2) -> Built:
    """Two latent frames of 8x8 tokens (text last, 16 text tokens)."""
    import diffusers

    model = diffusers.MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=num_layers,
        pooled_projection_dim=16, in_channels=4, out_channels=None, qk_norm="rms_norm",
        text_embed_dim=16, time_embed_dim=4, activation_fn="swiglu", max_sequence_length=16,
    )
    inputs = {
        "hidden_states": torch.randn(2, 4, 2, 16, 16),
        "encoder_hidden_states": torch.randn(2, 16, 16),
        "timestep": torch.rand(2),
        "encoder_attention_mask": torch.ones(2, 16, dtype=torch.bool),
    }
    return model.eval(), inputs


def wan(num_layers: int = 2) -> Built:
    """Two latent frames of 8x8 tokens; self-attention plus cross-attention to 12 text tokens."""
    import diffusers

    model = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
        out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32, num_layers=num_layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    inputs = {
        "hidden_states": torch.randn(1, 4, 2, 16, 16),
        "encoder_hidden_states": torch.randn(1, 12, 16),
        "timestep": torch.rand(1),
    }
    return model.eval(), inputs


def ltx(num_layers: int = 1) -> Built:
    """512 already-patchified tokens (2 x 16 x 16); masked cross-attention to 16 text tokens;
    ``num_layers`` blocks."""
    import diffusers

    model = diffusers.LTXVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=num_layers, qk_norm="rms_norm_across_heads", caption_channels=16,
    )
    inputs = {
        "hidden_states": torch.randn(2, 512, 4),
        "encoder_hidden_states": torch.randn(2, 16, 16),
        "timestep": torch.rand(2),
        "encoder_attention_mask": torch.ones(2, 16, dtype=torch.bool),
        "num_frames": 2,
        "height": 16,
        "width": 16,
    }
    return model.eval(), inputs


BUILDERS: dict[str, Callable[..., Built]] = {
    "cogvideox": cogvideox,
    "hunyuan": hunyuan,
    "mochi": mochi,
    "wan": wan,
    "ltx": ltx,
}


def build(name: str, seed: int = 0, **options: Any) -> Built:
    """``BUILDERS[name](**options)`` with the global RNG seeded first (weights and inputs
    reproducible)."""
    torch.manual_seed(seed)
    return BUILDERS[name](**options)


# ---------------------------------------------------------------------------------------------
# Attention-dominated benchmark shapes (benchmarks/e2e.py)
# ---------------------------------------------------------------------------------------------

#: Shared size of the benchmark shapes: token grid (F, H, W) after patching, heads x head dim,
#: transformer blocks, text tokens, text embedding width.
E2E_GRID = (4, 24, 24)
E2E_HEADS = 4
E2E_HEAD_DIM = 64
E2E_BLOCKS = 4
E2E_TEXT_TOKENS = 32
E2E_TEXT_DIM = 64

LatentLayout = Literal["bcfhw", "bfchw", "tokens"]


@dataclass(frozen=True)
class E2ESpec:
    """How one family is built and driven at its benchmark shape.

    Attributes:
        name: family key (``"cogvideox"``, ...).
        cls_name: the diffusers class.
        latent_channels: channels ``C`` of the latent.
        latent_size: latent ``(F, H, W)`` (before patching).
        layout: the model's ``hidden_states`` layout: ``"bcfhw"`` (B, C, F, H, W), ``"bfchw"``
            (CogVideoX: B, F, C, H, W) or ``"tokens"`` (LTX: B, F*H*W, C, already patchified).
        cfg_mode: how its diffusers pipeline runs classifier-free guidance: ``"batched"``
            (cond and uncond in one call of batch 2) or ``"split"`` (two calls per step, cond
            then uncond, same timestep), as :class:`asymrnr_lab.sampling.SamplerConfig`.
        text_mask: the model takes ``encoder_attention_mask``.
        timesteps_count_up: the pipeline passes ``1000 - t`` (Mochi) and negates the output.
        description: one line for reports.
    """

    name: str
    cls_name: str
    latent_channels: int
    latent_size: tuple[int, int, int]
    layout: LatentLayout
    cfg_mode: Literal["batched", "split"]
    text_mask: bool
    timesteps_count_up: bool
    description: str


E2E_SPECS: dict[str, E2ESpec] = {
    "cogvideox": E2ESpec(
        "cogvideox", "CogVideoXTransformer3DModel", 16, (4, 48, 48), "bfchw", "batched", False, False,
        "joint attention, 32 text tokens first; patch 2x2; batched CFG"),
    "hunyuan": E2ESpec(
        "hunyuan", "HunyuanVideoTransformer3DModel", 16, (4, 48, 48), "bcfhw", "split", True, False,
        "2 dual-stream + 2 single-stream blocks, text last with a mask; patch 1x2x2; two calls per step"),
    "mochi": E2ESpec(
        "mochi", "MochiTransformer3DModel", 12, (4, 48, 48), "bcfhw", "batched", True, True,
        "joint attention per batch element, text last (data-dependent length); patch 2x2; batched CFG"),
    "wan": E2ESpec(
        "wan", "WanTransformer3DModel", 16, (4, 48, 48), "bcfhw", "split", False, False,
        "self-attention + cross-attention to 32 text tokens; patch 1x2x2; two calls per step"),
    "ltx": E2ESpec(
        "ltx", "LTXVideoTransformer3DModel", 128, (4, 24, 24), "tokens", "batched", True, False,
        "self-attention + masked cross-attention; tokens in, patch 1; batched CFG"),
}


def _e2e_model(name: str, quick: bool) -> torch.nn.Module:
    import diffusers

    heads, head_dim, text_dim = E2E_HEADS, E2E_HEAD_DIM, E2E_TEXT_DIM
    blocks = 2 if quick else E2E_BLOCKS
    hidden = heads * head_dim
    spec = E2E_SPECS[name]
    frames, height, width = e2e_latent_size(name, quick)
    channels = spec.latent_channels
    if name == "cogvideox":
        temporal_compression = 4
        return diffusers.CogVideoXTransformer3DModel(
            num_attention_heads=heads, attention_head_dim=head_dim, in_channels=channels,
            out_channels=channels, time_embed_dim=hidden, text_embed_dim=text_dim, num_layers=blocks,
            sample_width=width, sample_height=height,
            sample_frames=(frames - 1) * temporal_compression + 1, patch_size=2,
            temporal_compression_ratio=temporal_compression, max_text_seq_length=E2E_TEXT_TOKENS,
        )
    if name == "hunyuan":
        return diffusers.HunyuanVideoTransformer3DModel(
            in_channels=channels, out_channels=channels, num_attention_heads=heads,
            attention_head_dim=head_dim, num_layers=blocks // 2, num_single_layers=blocks - blocks // 2,
            num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
            text_embed_dim=text_dim, pooled_projection_dim=text_dim, rope_axes_dim=(16, 24, 24),
            image_condition_type=None,
        )
    if name == "mochi":
        return diffusers.MochiTransformer3DModel(
            patch_size=2, num_attention_heads=heads, attention_head_dim=head_dim, num_layers=blocks,
            pooled_projection_dim=hidden // 2, in_channels=channels, out_channels=None,
            qk_norm="rms_norm", text_embed_dim=text_dim, time_embed_dim=hidden // 2,
            activation_fn="swiglu", max_sequence_length=E2E_TEXT_TOKENS,
        )
    if name == "wan":
        return diffusers.WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim,
            in_channels=channels, out_channels=channels, text_dim=text_dim, freq_dim=256,
            ffn_dim=4 * hidden, num_layers=blocks, cross_attn_norm=True,
            qk_norm="rms_norm_across_heads", rope_max_seq_len=1024,
        )
    if name == "ltx":
        return diffusers.LTXVideoTransformer3DModel(
            in_channels=channels, out_channels=channels, num_attention_heads=heads,
            attention_head_dim=head_dim, cross_attention_dim=hidden, num_layers=blocks,
            qk_norm="rms_norm_across_heads", caption_channels=text_dim,
        )
    raise ValueError(f"model must be one of {sorted(E2E_SPECS)}, got {name!r}")


def e2e_latent_size(name: str, quick: bool = False) -> tuple[int, int, int]:
    """Latent ``(F, H, W)`` of family ``name``: :attr:`E2ESpec.latent_size`, or with
    ``quick`` a 2 x 8 x 8 token grid (a smoke test of the benchmark machinery)."""
    spec = E2E_SPECS[name]
    if not quick:
        return spec.latent_size
    return (2, 8, 8) if spec.layout == "tokens" else (2, 16, 16)


def build_e2e(name: str, seed: int = 0, *, quick: bool = False, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> torch.nn.Module:
    """The family ``name`` (a key of :data:`E2E_SPECS`) at its benchmark shape, random weights
    from ``torch.manual_seed(seed)``, in eval mode, cast to ``dtype`` and moved to ``device``.
    ``quick``: 2 blocks and the latent of :func:`e2e_latent_size` with ``quick=True``.

    Raises:
        ValueError: unknown ``name`` (the message lists the families).
    """
    if name not in E2E_SPECS:
        raise ValueError(f"model must be one of {sorted(E2E_SPECS)}, got {name!r}")
    torch.manual_seed(seed)
    model = _e2e_model(name, quick)
    if dtype != torch.float32:
        model = model.to(dtype=dtype)
    return model.to(device=device).eval()
