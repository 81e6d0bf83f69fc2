"""Small seeded random-weight diffusers video transformers (DESIGN.md appendix), shared by tests.

Each builder returns ``(model, inputs)``: the model in eval mode and keyword inputs for one
forward call (pass ``return_dict=False`` and take element 0). Callers seed the global RNG
(``torch.manual_seed``) first; :func:`build` does.

Import this module only after ``pytest.importorskip("diffusers")``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

Built = tuple[torch.nn.Module, dict[str, Any]]


def cogvideox(frames: int = 1) -> Built:
    """``frames`` latent frames of 4x4 tokens (text first, 8 text tokens)."""
    import diffusers

    model = diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        time_embed_dim=2, text_embed_dim=8, num_layers=1, sample_width=8, sample_height=8,
        sample_frames=8, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=8,
    )
    inputs = {
        "hidden_states": torch.randn(2, frames, 4, 8, 8),
        "encoder_hidden_states": torch.randn(2, 8, 8),
        "timestep": torch.randint(0, 1000, (2,)),
    }
    return model.eval(), inputs


def hunyuan(frames: int = 1, size: int = 16) -> Built:
    """``frames`` latent frames of ``size`` x ``size`` tokens (text last, 12 text tokens)."""
    import diffusers

    model = diffusers.HunyuanVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=10,
        num_layers=1, num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1,
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


def ltx() -> Built:
    import diffusers

    model = diffusers.LTXVideoTransformer3DModel(
        in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=1, qk_norm="rms_norm_across_heads", caption_channels=16,
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


BUILDERS: dict[str, Callable[[], Built]] = {
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
