"""Seeded tiny random-weight models for every 3-D video transformer class of diffusers 0.42.1.

Each :class:`ZooEntry` of :data:`ZOO` builds one diffusers class with the constructor arguments
of diffusers' own model test for it (``tests/models/transformers/test_models_transformer_*.py``;
Kandinsky 5 from its pipeline test, Kandinsky 6 has no test and mirrors the Kandinsky 5 one),
adapted to what the installed 0.42.1 class accepts, and keyword inputs for one forward call from
the test's ``get_dummy_inputs``, with the spatial/temporal input enlarged so that the video token
grid after patching is about 128 tokens (at least 2 latent frames after temporal patching, both
spatial token sides >= 4). Everything else stays tiny (1-2 blocks, 2 heads, small widths, 8-16
text tokens). Weights come from the global RNG (``torch.manual_seed``); inputs are drawn after
the model with ``torch.randn``/``torch.randint``, float32, CPU; timesteps are float32 tensors.
Where a test passes a text mask, an all-valid mask of the same dtype is passed.

Video token grid ``(F, H, W)`` after the patch embedding, per entry::

    allegro                  (2, 8, 8)   PatchEmbed Conv2d 2x2 per frame, input 2 x 16 x 16
    anyflow                  (2, 8, 8)   Conv3d (1, 2, 2), input 2 x 16 x 16 (B, F, C, H, W)
    anyflow_far              (2, 8, 8)   Conv3d (1, 2, 2), two one-frame causal chunks
    chronoedit               (2, 8, 8)   Conv3d (1, 2, 2), input 2 x 16 x 16
    cogvideox                (2, 8, 8)   CogVideoXPatchEmbed Conv2d 2x2 per frame (B, F, C, H, W)
    cogvideox_1_5            (2, 8, 8)   CogVideoXPatchEmbed reshape + Linear, p_t = 2, input 4 x 16 x 16
    consisid                 (2, 8, 8)   CogVideoXPatchEmbed Conv2d 2x2 per frame
    cosmos                   (2, 8, 8)   CosmosPatchEmbed reshape + Linear (1, 2, 2)
    easyanimate              (2, 8, 8)   Conv2d 2x2 per frame
    helios                   (2, 8, 8)   Conv3d (1, 2, 2); 84 history tokens precede the grid
    hunyuan_video            (2, 8, 8)   Conv3d (1, 1, 1), input 2 x 8 x 8
    hunyuan_video_1_5        (2, 8, 8)   Conv3d (1, 1, 1), input 2 x 8 x 8
    hunyuan_video_framepack  (2, 8, 8)   Conv3d (1, 2, 2); 84 clean/history tokens precede the grid
    kandinsky5               (2, 8, 8)   reshape + Linear (1, 2, 2) on (B, F, H, W, C)
    kandinsky6               (2, 8, 8)   reshape + Linear (1, 2, 2) on (B, F, H, W, C)
    latte                    (2, 8, 8)   PatchEmbed Conv2d 2x2 per frame
    ltx                      (2, 8, 8)   pre-patchified tokens (patch 1), num_frames/height/width = 2/8/8
    ltx2                     (2, 8, 8)   pre-patchified tokens (patch 1), plus 9 audio tokens
    minimax_h3               (2, 8, 8)   pre-patchified rows; the grid is given by ``position_ids``
    mochi                    (2, 8, 8)   PatchEmbed Conv2d 2x2 per frame
    motif_video              (2, 8, 8)   Conv3d (1, 1, 1), input 2 x 8 x 8
    sana_video               (2, 8, 8)   Conv3d (1, 2, 2)
    skyreels_v2              (2, 8, 8)   Conv3d (1, 2, 2)
    wan                      (2, 8, 8)   Conv3d (1, 2, 2)
    wan_vace                 (2, 8, 8)   Conv3d (1, 2, 2) (control video through its own Conv3d)
    wan_animate              (2, 8, 8)   Conv3d (1, 2, 2); frame 0 is the reference frame

Requires ``diffusers`` (imported lazily inside each builder, so this module imports without it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

Built = tuple[torch.nn.Module, dict[str, Any]]

#: Timesteps are drawn as integers in ``[0, NUM_TRAIN_TIMESTEPS)`` (as the tests do) and cast to float32.
NUM_TRAIN_TIMESTEPS = 1000

#: The shared target: 2 latent frames of 8 x 8 tokens = 128 video tokens after patching.
GRID: tuple[int, int, int] = (2, 8, 8)
GRID_FRAMES, GRID_HEIGHT, GRID_WIDTH = GRID

#: Latent spatial size for models that patch 2 x 2 spatially (8 tokens x 2).
LATENT_SIZE_P2 = 16
#: Latent spatial size for models with spatial patch 1.
LATENT_SIZE_P1 = 8


@dataclass(frozen=True)
class ZooEntry:
    """One tiny diffusers video transformer and its inputs.

    Attributes:
        name: key in :data:`ZOO`.
        class_name: the diffusers class.
        build: returns ``(model.eval(), keyword inputs for one forward call)``; the inputs include
            ``return_dict=False``. Uses the global RNG (see :func:`build`).
        grid: the video token grid ``(F, H, W)`` after the patch embedding that the inputs produce.
        timestep_arg: name of the timestep input (a tensor).
        note: one line on the attention structure.
    """

    name: str
    class_name: str
    build: Callable[[], Built]
    grid: tuple[int, int, int]
    timestep_arg: str = "timestep"
    note: str = ""


def _timesteps(batch_size: int) -> torch.Tensor:
    """``batch_size`` integer-valued float32 timesteps in ``[0, NUM_TRAIN_TIMESTEPS)``."""
    return torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch_size,)).float()


# ---------------------------------------------------------------------------------------------
# Builders (one per entry). Constructor arguments are the test's unless a comment says otherwise.
# ---------------------------------------------------------------------------------------------


def _allegro() -> Built:
    """Test: 2 x 8 x 8 latent (grid 2 x 4 x 4); here 2 x 16 x 16 (grid 2 x 8 x 8)."""
    import diffusers

    batch, channels, text_len, caption_channels = 2, 4, 16, 8
    model = diffusers.AllegroTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=channels, out_channels=channels, num_layers=1,
        cross_attention_dim=16, sample_width=LATENT_SIZE_P2, sample_height=LATENT_SIZE_P2, sample_frames=8,
        caption_channels=caption_channels,
    )
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "encoder_hidden_states": torch.randn(batch, text_len, caption_channels),
        "timestep": _timesteps(batch),
        "return_dict": False,
    }
    return model.eval(), inputs


def _anyflow() -> Built:
    """Test inputs unchanged (2 frames of 16 x 16, layout (B, F, C, H, W)); per-frame t and r timesteps."""
    import diffusers

    batch, channels, text_len, text_dim = 1, 4, 12, 16
    t_value, r_value = 500.0, 250.0  # the test's flow-map source / target timesteps
    model = diffusers.AnyFlowTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=channels,
        out_channels=channels, text_dim=text_dim, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        rope_max_seq_len=32, gate_value=0.25, deltatime_type="r",
    )
    inputs = {
        "hidden_states": torch.randn(batch, GRID_FRAMES, channels, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "timestep": torch.full((batch, GRID_FRAMES), t_value),
        "r_timestep": torch.full((batch, GRID_FRAMES), r_value),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "return_dict": False,
    }
    return model.eval(), inputs


def _anyflow_far() -> Built:
    """Test: chunk_partition [2, 2] of 16 x 16 frames (4 full frames: the test's "2 compressed" comment is wrong,
    2 chunks <= full_chunk_limit 3 compress nothing), 256 tokens; here [1, 1] (2 causal one-frame chunks, 128 tokens).
    The causal flex_attention BlockMask is pre-built, as diffusers' compile test does, so that ``forward`` does not
    call ``create_block_mask`` (a graph break)."""
    import diffusers

    batch, channels, text_len, text_dim = 1, 4, 12, 16
    t_value, r_value = 500.0, 250.0  # the test's flow-map source / target timesteps
    chunk_partition = [1] * GRID_FRAMES
    model = diffusers.AnyFlowFARTransformer3DModel(
        patch_size=(1, 2, 2), compressed_patch_size=(1, 4, 4), full_chunk_limit=3, num_attention_heads=2,
        attention_head_dim=12, in_channels=channels, out_channels=channels, text_dim=text_dim, freq_dim=256,
        ffn_dim=32, num_layers=2, cross_attn_norm=True, rope_max_seq_len=32, gate_value=0.25, deltatime_type="r",
    )
    inputs = {
        "hidden_states": torch.randn(batch, GRID_FRAMES, channels, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "timestep": torch.full((batch, GRID_FRAMES), t_value),
        "r_timestep": torch.full((batch, GRID_FRAMES), r_value),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "chunk_partition": chunk_partition,
        "attention_mask": model.build_attention_mask(
            chunk_partition=chunk_partition, height=LATENT_SIZE_P2, width=LATENT_SIZE_P2, device="cpu", mode="train"
        ),
        "return_dict": False,
    }
    return model.eval(), inputs


def _chronoedit() -> Built:
    """Test: 2 x 8 x 8 latent (grid 2 x 4 x 4); here 2 x 16 x 16."""
    import diffusers

    batch, channels, text_len, text_dim = 1, 16, 12, 32
    model = diffusers.ChronoEditTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=8, in_channels=channels,
        out_channels=channels, text_dim=text_dim, freq_dim=16, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", eps=1e-06, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=64,
        pos_embed_seq_len=None, rope_temporal_skip_len=8,
    )
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "timestep": _timesteps(batch),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "return_dict": False,
    }
    return model.eval(), inputs


#: CogVideoX's VAE compresses time 4x: ``latent_frames = (pixel_frames - 1) / 4 + 1``.
COGVIDEOX_TEMPORAL_COMPRESSION = 4


def _cogvideox() -> Built:
    """Test: 1 frame of 8 x 8 (grid 1 x 4 x 4); here 2 frames of 16 x 16. ``sample_*`` set to the input size so the
    cached sincos position table is used instead of being recomputed in every forward."""
    import diffusers

    batch, channels, text_len, text_dim = 2, 4, 8, 8  # text_len must equal max_text_seq_length (position table)
    model = diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=channels, out_channels=channels, time_embed_dim=2,
        text_embed_dim=text_dim, num_layers=2, sample_width=LATENT_SIZE_P2, sample_height=LATENT_SIZE_P2,
        sample_frames=(GRID_FRAMES - 1) * COGVIDEOX_TEMPORAL_COMPRESSION + 1, patch_size=2, patch_size_t=None,
        temporal_compression_ratio=COGVIDEOX_TEMPORAL_COMPRESSION, max_text_seq_length=text_len,
    )
    inputs = {
        "hidden_states": torch.randn(batch, GRID_FRAMES, channels, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "timestep": _timesteps(batch),
        "return_dict": False,
    }
    return model.eval(), inputs


def _cogvideox_1_5() -> Built:
    """CogVideoX 1.5 style (the test's CogVideoX15 config): patch_size_t 2 (reshape + Linear patch embedding), rotary
    positions (``image_rotary_emb`` not passed, as in the test), no sincos table. Test: 2 frames of 8 x 8
    (grid 1 x 4 x 4); here 4 frames of 16 x 16."""
    import diffusers

    batch, channels, text_len, text_dim, patch_t = 2, 4, 8, 8, 2
    model = diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=channels, out_channels=channels, time_embed_dim=2,
        text_embed_dim=text_dim, num_layers=2, sample_width=8, sample_height=8, sample_frames=8, patch_size=2,
        patch_size_t=patch_t, temporal_compression_ratio=COGVIDEOX_TEMPORAL_COMPRESSION,
        max_text_seq_length=text_len, use_rotary_positional_embeddings=True,
    )
    inputs = {
        "hidden_states": torch.randn(batch, GRID_FRAMES * patch_t, channels, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "timestep": _timesteps(batch),
        "return_dict": False,
    }
    return model.eval(), inputs


def _consisid() -> Built:
    """Test: 1 frame of 8 x 8; here 2 frames of 16 x 16, ``sample_*`` matching the input (as for CogVideoX)."""
    import diffusers

    batch, channels, text_len, text_dim = 2, 4, 8, 8
    id_vit_tokens, id_dim = 2, 2  # face ViT hidden (B, 2, LFE_vit_dim) and id_cond (B, LFE_id_dim), as the test
    model = diffusers.ConsisIDTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=channels, out_channels=channels, time_embed_dim=2,
        text_embed_dim=text_dim, num_layers=1, sample_width=LATENT_SIZE_P2, sample_height=LATENT_SIZE_P2,
        sample_frames=(GRID_FRAMES - 1) * COGVIDEOX_TEMPORAL_COMPRESSION + 1, patch_size=2,
        temporal_compression_ratio=COGVIDEOX_TEMPORAL_COMPRESSION, max_text_seq_length=text_len,
        cross_attn_interval=1, is_kps=False, is_train_face=True, cross_attn_dim_head=1, cross_attn_num_heads=1,
        LFE_id_dim=id_dim, LFE_vit_dim=id_dim, LFE_depth=5, LFE_dim_head=8, LFE_num_heads=2, LFE_num_id_token=1,
        LFE_num_querie=1, LFE_output_dim=10, LFE_ff_mult=1, LFE_num_scale=1,
    )
    inputs = {
        "hidden_states": torch.randn(batch, GRID_FRAMES, channels, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "timestep": _timesteps(batch),
        "id_vit_hidden": [torch.ones(batch, id_vit_tokens, id_dim)],  # LFE_num_scale = 1 scale
        "id_cond": torch.ones(batch, id_dim),
        "return_dict": False,
    }
    return model.eval(), inputs


def _cosmos() -> Built:
    """Test: 1 frame of 16 x 16 (grid 1 x 8 x 8); here 2 frames. ``concat_padding_mask=False`` (test: True): that
    path resizes the padding mask with torchvision, which is not a dependency here; the test's all-zero padding mask
    only adds a zero input channel to a bias-free patch Linear, so nothing else changes."""
    import diffusers

    batch, channels, text_len, text_dim = 1, 4, 12, 16
    fps = 30  # the test's frame rate (scales the temporal RoPE)
    model = diffusers.CosmosTransformer3DModel(
        in_channels=channels, out_channels=channels, num_attention_heads=2, attention_head_dim=12, num_layers=2,
        mlp_ratio=2, text_embed_dim=text_dim, adaln_lora_dim=4, max_size=(4, 32, 32), patch_size=(1, 2, 2),
        rope_scale=(2.0, 1.0, 1.0), concat_padding_mask=False, extra_pos_embed_type="learnable",
    )
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "timestep": _timesteps(batch),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "attention_mask": torch.ones(batch, text_len),  # float ones, as the test
        "fps": fps,
        "return_dict": False,
    }
    return model.eval(), inputs


def _easyanimate() -> Built:
    """Test inputs unchanged (2 frames of 16 x 16, grid 2 x 8 x 8)."""
    import diffusers

    batch, channels, text_len, text_dim = 2, 4, 16, 16
    model = diffusers.EasyAnimateTransformer3DModel(
        attention_head_dim=16, num_attention_heads=2, in_channels=channels, mmdit_layers=2, num_layers=2,
        out_channels=channels, patch_size=2, sample_height=60, sample_width=90, text_embed_dim=text_dim,
        time_embed_dim=8, time_position_encoding_type="3d_rope", timestep_activation_fn="silu",
    )
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "timestep": _timesteps(batch),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "return_dict": False,
    }
    return model.eval(), inputs


#: Helios / FramePack long history: 4 latent frames per noisy frame minus one (the tests' ``(F - 1) * 4``).
HISTORY_LONG_FACTOR = 4


def _helios() -> Built:
    """Test inputs unchanged: 2 noisy frames of 16 x 16 plus short (1 frame, patch 1x2x2: 64 tokens), mid (1 frame
    padded to 2, patch 2x4x4: 16 tokens) and long (4 frames, patch 4x8x8: 4 tokens) history, prepended."""
    import diffusers

    batch, channels, text_len, text_dim = 1, 4, 12, 16
    history = GRID_FRAMES - 1
    size = LATENT_SIZE_P2
    model = diffusers.HeliosTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=channels,
        out_channels=channels, text_dim=text_dim, freq_dim=256, ffn_dim=32, num_layers=2, cross_attn_norm=True,
        qk_norm="rms_norm_across_heads", rope_dim=(4, 4, 4), has_multi_term_memory_patch=True,
        guidance_cross_attn=True, zero_history_timestep=True, is_amplify_history=False,
    )
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, size, size),
        "timestep": _timesteps(batch),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        # frame indices (float ones, as the test)
        "indices_hidden_states": torch.ones(batch, GRID_FRAMES),
        "indices_latents_history_short": torch.ones(batch, history),
        "indices_latents_history_mid": torch.ones(batch, history),
        "indices_latents_history_long": torch.ones(batch, history * HISTORY_LONG_FACTOR),
        "latents_history_short": torch.randn(batch, channels, history, size, size),
        "latents_history_mid": torch.randn(batch, channels, history, size, size),
        "latents_history_long": torch.randn(batch, channels, history * HISTORY_LONG_FACTOR, size, size),
        "return_dict": False,
    }
    return model.eval(), inputs


def _hunyuan_video() -> Built:
    """Test: 1 frame of 16 x 16 at patch 1 (grid 1 x 16 x 16); here 2 frames of 8 x 8."""
    import diffusers

    batch, channels, text_len, text_dim, pooled_dim = 1, 4, 12, 16, 8
    model = diffusers.HunyuanVideoTransformer3DModel(
        in_channels=channels, out_channels=channels, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=1, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=text_dim, pooled_projection_dim=pooled_dim, rope_axes_dim=(2, 4, 4), image_condition_type=None,
    )
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, LATENT_SIZE_P1, LATENT_SIZE_P1),
        "timestep": _timesteps(batch),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "pooled_projections": torch.randn(batch, pooled_dim),
        "encoder_attention_mask": torch.ones(batch, text_len),  # float ones, as the test
        "guidance": _timesteps(batch),
        "return_dict": False,
    }
    return model.eval(), inputs


def _hunyuan_video_1_5() -> Built:
    """Test: 1 frame of 8 x 8 at patch 1; here 2 frames. All-zero ``image_embeds`` select text-to-video. The class's
    ByT5 text mapper has a fixed width of 2048, so this tiny model still has 4.3 M parameters."""
    import diffusers

    batch, channels = 1, 4
    text_len, text_dim, text_2_len, text_2_dim = 6, 16, 4, 8  # the test's two text encoders (6 + 4 tokens)
    image_len, image_dim = 3, 12
    model = diffusers.HunyuanVideo15Transformer3DModel(
        in_channels=channels, out_channels=channels, num_attention_heads=2, attention_head_dim=8, num_layers=2,
        num_refiner_layers=1, mlp_ratio=2.0, patch_size=1, patch_size_t=1, text_embed_dim=text_dim,
        text_embed_2_dim=text_2_dim, image_embed_dim=image_dim, rope_axes_dim=(2, 2, 4), target_size=16,
        task_type="t2v",
    )
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, LATENT_SIZE_P1, LATENT_SIZE_P1),
        "timestep": torch.ones(batch),  # the test's timestep 1.0
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "encoder_hidden_states_2": torch.randn(batch, text_2_len, text_2_dim),
        "encoder_attention_mask": torch.ones(batch, text_len),  # float ones, as the test
        "encoder_attention_mask_2": torch.ones(batch, text_2_len),
        "image_embeds": torch.zeros(batch, image_len, image_dim),
        "return_dict": False,
    }
    return model.eval(), inputs


def _hunyuan_video_framepack() -> Built:
    """Test: 3 frames of 4 x 4 at patch 2 (grid 3 x 2 x 2); here 2 frames of 16 x 16. Clean latents (1 frame, patch
    1x2x2: 64 tokens), 2x history (1 frame padded to 2, 2x4x4: 16 tokens) and 4x history (4 frames, 4x8x8: 4 tokens)
    are prepended to the 128 grid tokens."""
    import diffusers

    batch, channels, text_len, text_dim, image_dim, pooled_dim = 1, 4, 12, 16, 16, 8
    history = GRID_FRAMES - 1
    size = LATENT_SIZE_P2
    model = diffusers.HunyuanVideoFramepackTransformer3DModel(
        in_channels=channels, out_channels=channels, num_attention_heads=2, attention_head_dim=10, num_layers=1,
        num_single_layers=1, num_refiner_layers=1, patch_size=2, patch_size_t=1, guidance_embeds=True,
        text_embed_dim=text_dim, pooled_projection_dim=pooled_dim, rope_axes_dim=(2, 4, 4), image_condition_type=None,
        has_image_proj=True, image_proj_dim=image_dim, has_clean_x_embedder=True,
    )
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, size, size),
        "timestep": _timesteps(batch),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "pooled_projections": torch.randn(batch, pooled_dim),
        "encoder_attention_mask": torch.ones(batch, text_len),  # float ones, as the test
        "guidance": _timesteps(batch),
        "image_embeds": torch.randn(batch, text_len, image_dim),
        "indices_latents": torch.ones(GRID_FRAMES),  # frame indices: float ones, as the test
        "latents_clean": torch.randn(batch, channels, history, size, size),
        "indices_latents_clean": torch.ones(history),
        "latents_history_2x": torch.randn(batch, channels, history, size, size),
        "indices_latents_history_2x": torch.ones(history),
        "latents_history_4x": torch.randn(batch, channels, history * HISTORY_LONG_FACTOR, size, size),
        "indices_latents_history_4x": torch.ones(history * HISTORY_LONG_FACTOR),
        "return_dict": False,
    }
    return model.eval(), inputs


def _kandinsky5() -> Built:
    """No model test: the transformer of diffusers' Kandinsky 5 pipeline test (tests/pipelines/kandinsky5), whose
    text widths are 16 (Qwen and CLIP). Latents are (B, F, H, W, C), 2 frames of 16 x 16. head_dim = sum(axes_dims)
    = 4, so model_dim 16 has 4 heads (the test's). Rope positions as the pipeline builds them. Note: with
    ``return_dict=False`` this class returns the bare tensor, not a tuple."""
    import diffusers

    batch, channels, text_len, text_dim, pooled_dim = 1, 16, 8, 16, 16
    model = diffusers.Kandinsky5Transformer3DModel(
        in_visual_dim=channels, in_text_dim=text_dim, in_text_dim2=pooled_dim, time_dim=16, out_visual_dim=channels,
        patch_size=(1, 2, 2), model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=2, axes_dims=(1, 1, 2),
        visual_cond=False, attention_type="regular",
    )
    inputs = {
        "hidden_states": torch.randn(batch, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2, channels),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "timestep": _timesteps(batch),
        "pooled_projections": torch.randn(batch, pooled_dim),
        "visual_rope_pos": [torch.arange(GRID_FRAMES), torch.arange(GRID_HEIGHT), torch.arange(GRID_WIDTH)],
        "text_rope_pos": torch.arange(text_len),
        "return_dict": False,
    }
    return model.eval(), inputs


def _kandinsky6() -> Built:
    """No test in diffusers: the Kandinsky 5 pipeline-test sizes, with ``axes_dims`` (2, 2, 4) (head_dim 8, 2 heads
    of model_dim 16). ``visual_cond=True`` (the class default) as the ti2va pipeline drives it: input channels are
    [latent | zero conditioning latent | zero mask]. 8 audio latent tokens of width 4 (the pipeline passes audio);
    no text mask (the pipeline passes ``None`` when no prompt token is padded)."""
    import diffusers

    batch, channels, text_len, text_dim, pooled_dim, audio_len, audio_dim = 1, 16, 8, 16, 16, 8, 4
    model = diffusers.Kandinsky6Transformer3DModel(
        in_visual_dim=channels, out_visual_dim=channels, in_text_dim=text_dim, in_text_dim2=pooled_dim, time_dim=16,
        patch_size=(1, 2, 2), model_dim=16, ff_dim=32, num_text_blocks=1, num_visual_blocks=2, axes_dims=(2, 2, 4),
        visual_cond=True, in_audio_dim=audio_dim, out_audio_dim=audio_dim,
    )
    latents = torch.randn(batch, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2, channels)
    cond_latents = torch.zeros_like(latents)
    cond_mask = torch.zeros(batch, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2, 1)
    inputs = {
        "hidden_states": torch.cat([latents, cond_latents, cond_mask], dim=-1),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "pooled_projections": torch.randn(batch, pooled_dim),
        "timestep": _timesteps(batch),
        "audio_hidden_states": torch.randn(batch, audio_len, audio_dim),
        "return_dict": False,
    }
    return model.eval(), inputs


def _latte() -> Built:
    """Test: 1 frame of 8 x 8 (so no temporal attention ran); here 2 frames of 16 x 16. ``sample_size`` 16 (test: 8)
    so the spatial position table matches the input; ``video_length`` 2 (default 16) because the temporal position
    table is added unsliced and must match the frame count."""
    import diffusers

    batch, channels, text_len, text_dim = 2, 4, 8, 8
    model = diffusers.LatteTransformer3DModel(
        sample_size=LATENT_SIZE_P2, num_layers=1, patch_size=2, attention_head_dim=4, num_attention_heads=2,
        caption_channels=text_dim, in_channels=channels, cross_attention_dim=8, out_channels=2 * channels,
        attention_bias=True, activation_fn="gelu-approximate", num_embeds_ada_norm=1000, norm_type="ada_norm_single",
        norm_elementwise_affine=False, norm_eps=1e-6, video_length=GRID_FRAMES,
    )
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "timestep": _timesteps(batch),
        "enable_temporal_attentions": True,
        "return_dict": False,
    }
    return model.eval(), inputs


def _ltx() -> Built:
    """Test: 2 x 16 x 16 = 512 pre-patchified tokens; here 2 x 8 x 8 = 128."""
    import diffusers

    batch, channels, text_len, text_dim = 2, 4, 16, 16
    model = diffusers.LTXVideoTransformer3DModel(
        in_channels=channels, out_channels=channels, num_attention_heads=2, attention_head_dim=8,
        cross_attention_dim=16, num_layers=1, qk_norm="rms_norm_across_heads", caption_channels=text_dim,
    )
    inputs = {
        "hidden_states": torch.randn(batch, GRID_FRAMES * GRID_HEIGHT * GRID_WIDTH, channels),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "timestep": _timesteps(batch),
        "encoder_attention_mask": torch.ones(batch, text_len, dtype=torch.bool),
        "num_frames": GRID_FRAMES,
        "height": GRID_HEIGHT,
        "width": GRID_WIDTH,
        "return_dict": False,
    }
    return model.eval(), inputs


def _ltx2() -> Built:
    """Test: 2 x 16 x 16 = 512 video tokens; here 2 x 8 x 8 = 128. Audio as the test (9 frames of 2 channels x 2 mel
    bins); timestep is the test's ``|randn| * 1000``."""
    import diffusers

    batch, channels, text_len, text_dim = 2, 4, 16, 16
    audio_frames, audio_channels, mel_bins = 9, 2, 2
    fps = 25.0  # the test's frame rate (audio / video RoPE alignment)
    model = diffusers.LTX2VideoTransformer3DModel(
        in_channels=channels, out_channels=channels, patch_size=1, patch_size_t=1, num_attention_heads=2,
        attention_head_dim=8, cross_attention_dim=16, audio_in_channels=audio_channels * mel_bins,
        audio_out_channels=audio_channels * mel_bins, audio_num_attention_heads=2, audio_attention_head_dim=4,
        audio_cross_attention_dim=8, num_layers=2, qk_norm="rms_norm_across_heads", caption_channels=text_dim,
        rope_double_precision=False,
    )
    inputs = {
        "hidden_states": torch.randn(batch, GRID_FRAMES * GRID_HEIGHT * GRID_WIDTH, channels),
        "audio_hidden_states": torch.randn(batch, audio_frames, audio_channels * mel_bins),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "audio_encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "timestep": torch.randn(batch).abs() * NUM_TRAIN_TIMESTEPS,
        "encoder_attention_mask": torch.ones(batch, text_len, dtype=torch.bool),
        "num_frames": GRID_FRAMES,
        "height": GRID_HEIGHT,
        "width": GRID_WIDTH,
        "audio_num_frames": audio_frames,
        "fps": fps,
        "return_dict": False,
    }
    return model.eval(), inputs


#: MiniMax-H3 token tags (the model's convention).
MINIMAX_TAG_VIDEO, MINIMAX_TAG_TEXT, MINIMAX_TAG_AUDIO = 0, 1, 2


def _minimax_h3() -> Built:
    """Test: 4 text + 6 audio + 8 video rows (video positions ``i % 4``, ``i % 2``); here 8 text + 6 audio + 128 video
    rows, the video rows carrying a real (t, h, w) grid: t continues after the text/audio rows, then h and w. Two
    distinct timesteps (video/text rows use 0.7, audio rows 0.3), as the test. One packed sequence: text, audio,
    video."""
    import diffusers

    batch, channels, audio_channels, text_len, text_dim, audio_len = 2, 4, 6, 8, 8, 6
    patch_size = (1, 2, 2)
    num_video = GRID_FRAMES * GRID_HEIGHT * GRID_WIDTH
    model = diffusers.MiniMaxH3Transformer3DModel(
        num_attention_heads=2, attention_head_dim=16, hidden_size=24, num_layers=2, num_refiner_layers=2, ffn_dim=32,
        in_channels=channels, audio_in_channels=audio_channels, patch_size=patch_size, text_dim=text_dim, freq_dim=8,
        time_embed_hidden_dim=24, time_embed_dim=16, rope_freq_dim=2,
    )
    seq_len = text_len + audio_len + num_video
    text_indices = torch.arange(text_len)
    audio_indices = torch.arange(text_len, text_len + audio_len)
    video_indices = torch.arange(text_len + audio_len, seq_len)
    token_tags = torch.empty(seq_len, dtype=torch.long)
    token_tags[text_indices] = MINIMAX_TAG_TEXT
    token_tags[audio_indices] = MINIMAX_TAG_AUDIO
    token_tags[video_indices] = MINIMAX_TAG_VIDEO
    timestep_indices = torch.zeros(seq_len, dtype=torch.long)
    timestep_indices[audio_indices] = 1  # audio rows use the second timestep
    position_ids = torch.zeros(seq_len, 3)
    position_ids[: text_len + audio_len, 0] = torch.arange(text_len + audio_len, dtype=torch.float32)
    t, h, w = torch.meshgrid(
        torch.arange(GRID_FRAMES), torch.arange(GRID_HEIGHT), torch.arange(GRID_WIDTH), indexing="ij"
    )
    position_ids[video_indices, 0] = (t.flatten() + text_len + audio_len).float()
    position_ids[video_indices, 1] = h.flatten().float()
    position_ids[video_indices, 2] = w.flatten().float()
    inputs = {
        "hidden_states": torch.randn(batch, num_video, channels * patch_size[0] * patch_size[1] * patch_size[2]),
        "audio_hidden_states": torch.randn(batch, audio_len, audio_channels),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "timestep": torch.tensor([0.7, 0.3]),  # the test's two distinct noise levels, in [0, 1]
        "timestep_indices": timestep_indices,
        "token_tags": token_tags,
        "position_ids": position_ids,
        "video_indices": video_indices,
        "audio_indices": audio_indices,
        "text_indices": text_indices,
        "return_dict": False,
    }
    return model.eval(), inputs


def _mochi() -> Built:
    """Test inputs unchanged (2 frames of 16 x 16, grid 2 x 8 x 8)."""
    import diffusers

    batch, channels, text_len, text_dim = 2, 4, 16, 16
    model = diffusers.MochiTransformer3DModel(
        patch_size=2, num_attention_heads=2, attention_head_dim=8, num_layers=2, pooled_projection_dim=16,
        in_channels=channels, out_channels=None, qk_norm="rms_norm", text_embed_dim=text_dim, time_embed_dim=4,
        activation_fn="swiglu", max_sequence_length=text_len,
    )
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "timestep": _timesteps(batch),
        "encoder_attention_mask": torch.ones(batch, text_len, dtype=torch.bool),
        "return_dict": False,
    }
    return model.eval(), inputs


def _motif_video() -> Built:
    """Test: 9 frames of 16 x 16 at patch 1 (2,304 tokens); here 2 frames of 8 x 8. 33 input channels
    (16 latent + 16 conditioning latent + 1 mask), 16 out."""
    import diffusers

    batch, channels, out_channels, text_len, text_dim = 1, 33, 16, 12, 32
    model = diffusers.MotifVideoTransformer3DModel(
        in_channels=channels, out_channels=out_channels, num_attention_heads=2, attention_head_dim=12, num_layers=1,
        num_single_layers=1, num_decoder_layers=0, mlp_ratio=4.0, patch_size=1, patch_size_t=1, qk_norm="rms_norm",
        norm_type="layer_norm", text_embed_dim=text_dim, image_embed_dim=4, rope_theta=256.0, rope_axes_dim=(4, 4, 4),
        enable_text_cross_attention_dual=False, enable_text_cross_attention_single=False,
    )
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, LATENT_SIZE_P1, LATENT_SIZE_P1),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "timestep": _timesteps(batch),
        "return_dict": False,
    }
    return model.eval(), inputs


def _sana_video() -> Built:
    """Test inputs unchanged (2 frames of 16 x 16, grid 2 x 8 x 8)."""
    import diffusers

    batch, channels, text_len, text_dim = 1, 16, 12, 16
    model = diffusers.SanaVideoTransformer3DModel(
        in_channels=channels, out_channels=channels, num_attention_heads=2, attention_head_dim=12, num_layers=2,
        num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=24, caption_channels=text_dim,
        mlp_ratio=2.5, dropout=0.0, attention_bias=False, sample_size=8, patch_size=(1, 2, 2),
        norm_elementwise_affine=False, norm_eps=1e-6, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    )
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "timestep": _timesteps(batch),
        "return_dict": False,
    }
    return model.eval(), inputs


def _wan_config(channels: int, text_dim: int) -> dict[str, Any]:
    """The Wan-family test constructor arguments (wan, skyreels_v2, wan_vace share them)."""
    return {
        "patch_size": (1, 2, 2), "num_attention_heads": 2, "attention_head_dim": 12, "in_channels": channels,
        "out_channels": channels, "text_dim": text_dim, "freq_dim": 256, "ffn_dim": 32, "num_layers": 2,
        "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 32,
    }


def _skyreels_v2() -> Built:
    """Test inputs unchanged (2 frames of 16 x 16, grid 2 x 8 x 8)."""
    import diffusers

    batch, channels, text_len, text_dim = 1, 4, 12, 16
    model = diffusers.SkyReelsV2Transformer3DModel(**_wan_config(channels, text_dim))
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "timestep": _timesteps(batch),
        "return_dict": False,
    }
    return model.eval(), inputs


def _wan() -> Built:
    """Test inputs unchanged (2 frames of 16 x 16, grid 2 x 8 x 8)."""
    import diffusers

    batch, channels, text_len, text_dim = 1, 4, 12, 16
    model = diffusers.WanTransformer3DModel(**_wan_config(channels, text_dim))
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "timestep": _timesteps(batch),
        "return_dict": False,
    }
    return model.eval(), inputs


def _wan_vace() -> Built:
    """Test: 4 blocks with VACE blocks at [0, 2]; here 2 blocks with a VACE block at [0] (block 1 has none).
    Inputs as the test (2 frames of 16 x 16; control video of 3 x 16 channels)."""
    import diffusers

    batch, channels, text_len, text_dim = 1, 16, 12, 32
    vace_channels = 3 * channels  # the test's vace_in_channels = 3 * in_channels
    model = diffusers.WanVACETransformer3DModel(
        **_wan_config(channels, text_dim), vace_layers=[0], vace_in_channels=vace_channels
    )
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "control_hidden_states": torch.randn(batch, vace_channels, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "timestep": _timesteps(batch),
        "return_dict": False,
    }
    return model.eval(), inputs


#: Wan Animate: pixel face frames per latent frame after the first (the test's 77 = 4 * 20 - 3 for 20 pose frames).
WAN_ANIMATE_FACE_FRAMES_PER_LATENT = 4
WAN_ANIMATE_FACE_FRAMES_OFFSET = 3


def _wan_animate() -> Built:
    """Test: 21 frames (reference + 20) of 16 x 16 (grid 21 x 8 x 8) and 77 face frames; here 2 frames (reference + 1
    pose frame) and 4 * 1 - 3 = 1 face frame, which the face encoder's two stride-2 convs map to 1 motion frame,
    plus the zero frame it prepends = 2, the latent frame count its temporally aligned face attention needs."""
    import diffusers

    batch, latent_channels, text_len, text_dim, clip_len, clip_dim = 1, 4, 12, 16, 12, 16
    channels = 2 * latent_channels + 4  # noisy latent + reference latent + 4 mask channels (the test's 12)
    face_size = 16  # square, equal to motion_encoder_size
    pose_frames = GRID_FRAMES - 1
    face_frames = WAN_ANIMATE_FACE_FRAMES_PER_LATENT * pose_frames - WAN_ANIMATE_FACE_FRAMES_OFFSET
    model = diffusers.WanAnimateTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=channels,
        latent_channels=latent_channels, out_channels=latent_channels, text_dim=text_dim, freq_dim=256, ffn_dim=32,
        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads", image_dim=clip_dim, rope_max_seq_len=32,
        motion_encoder_channel_sizes={"4": 16, "8": 16, "16": 16}, motion_encoder_size=face_size,
        motion_style_dim=8, motion_dim=4, motion_encoder_dim=16, face_encoder_hidden_dim=16, face_encoder_num_heads=2,
        inject_face_latents_blocks=2,
    )
    inputs = {
        "hidden_states": torch.randn(batch, channels, GRID_FRAMES, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "timestep": _timesteps(batch),
        "encoder_hidden_states": torch.randn(batch, text_len, text_dim),
        "encoder_hidden_states_image": torch.randn(batch, clip_len, clip_dim),
        "pose_hidden_states": torch.randn(batch, latent_channels, pose_frames, LATENT_SIZE_P2, LATENT_SIZE_P2),
        "face_pixel_values": torch.randn(batch, 3, face_frames, face_size, face_size),
        "return_dict": False,
    }
    return model.eval(), inputs


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------

_ENTRIES = [
    ZooEntry("allegro", "AllegroTransformer3DModel", _allegro, GRID,
             note="self + cross (PixArt-style blocks, joint 3-D self-attention over all frames)"),
    ZooEntry("anyflow", "AnyFlowTransformer3DModel", _anyflow, GRID,
             note="self + cross (Wan-style), per-frame t and r flow-map timesteps"),
    ZooEntry("anyflow_far", "AnyFlowFARTransformer3DModel", _anyflow_far, GRID,
             note="flex_attention block-causal self-attention (pre-built BlockMask) + SDPA cross"),
    ZooEntry("chronoedit", "ChronoEditTransformer3DModel", _chronoedit, GRID, note="self + cross (Wan-style)"),
    ZooEntry("cogvideox", "CogVideoXTransformer3DModel", _cogvideox, GRID, note="joint text-first"),
    ZooEntry("cogvideox_1_5", "CogVideoXTransformer3DModel", _cogvideox_1_5, GRID,
             note="joint text-first; patch_size_t 2 (reshape + Linear patch embedding)"),
    ZooEntry("consisid", "ConsisIDTransformer3DModel", _consisid, GRID,
             note="joint text-first; the face perceiver cross-attention uses matmul softmax, not SDPA"),
    ZooEntry("cosmos", "CosmosTransformer3DModel", _cosmos, GRID, note="self + cross (float text mask)"),
    ZooEntry("easyanimate", "EasyAnimateTransformer3DModel", _easyanimate, GRID, note="joint text-first (MMDiT)"),
    ZooEntry("helios", "HeliosTransformer3DModel", _helios, GRID,
             note="self + cross; self-attention over 84 history tokens + the 128 video tokens"),
    ZooEntry("hunyuan_video", "HunyuanVideoTransformer3DModel", _hunyuan_video, GRID,
             note="joint text-last (dual- then single-stream) + text refiner self-attention"),
    ZooEntry("hunyuan_video_1_5", "HunyuanVideo15Transformer3DModel", _hunyuan_video_1_5, GRID,
             note="joint text-last (image, ByT5, LLM tokens) + text refiner; t2v/mask branches break the graph"),
    ZooEntry("hunyuan_video_framepack", "HunyuanVideoFramepackTransformer3DModel", _hunyuan_video_framepack, GRID,
             note="joint text-last (image + text tokens); 84 clean/history tokens precede the video tokens"),
    ZooEntry("kandinsky5", "Kandinsky5Transformer3DModel", _kandinsky5, GRID,
             note="self + cross, text encoder self-attention; return_dict=False returns a bare tensor"),
    ZooEntry("kandinsky6", "Kandinsky6Transformer3DModel", _kandinsky6, GRID,
             note="self + cross, fused blocks with audio self/cross and video<->audio cross; text self-attention"),
    ZooEntry("latte", "LatteTransformer3DModel", _latte, GRID,
             note="factorised spatial (per frame, + cross) / temporal (per position) attention"),
    ZooEntry("ltx", "LTXVideoTransformer3DModel", _ltx, GRID, note="self + cross (bool text mask)"),
    ZooEntry("ltx2", "LTX2VideoTransformer3DModel", _ltx2, GRID,
             note="self + cross, plus audio self/cross and audio<->video cross-attention"),
    ZooEntry("minimax_h3", "MiniMaxH3Transformer3DModel", _minimax_h3, GRID,
             note="joint packed sequence text, audio, video (one attention document) + text refiners"),
    ZooEntry("mochi", "MochiTransformer3DModel", _mochi, GRID,
             note="joint text-last, per sample over its valid text (nonzero on the mask: runs outside the graphs)"),
    ZooEntry("motif_video", "MotifVideoTransformer3DModel", _motif_video, GRID,
             note="joint video-first text-last (dual- then single-stream)"),
    ZooEntry("sana_video", "SanaVideoTransformer3DModel", _sana_video, GRID,
             note="linear attention (self, ReLU kernel, no SDPA) + SDPA cross"),
    ZooEntry("skyreels_v2", "SkyReelsV2Transformer3DModel", _skyreels_v2, GRID, note="self + cross (Wan-style)"),
    ZooEntry("wan", "WanTransformer3DModel", _wan, GRID, note="self + cross"),
    ZooEntry("wan_vace", "WanVACETransformer3DModel", _wan_vace, GRID,
             note="self + cross, plus a VACE control block (self + cross) at block 0"),
    ZooEntry("wan_animate", "WanAnimateTransformer3DModel", _wan_animate, GRID,
             note="self + cross (image + text tokens), face adapter per-frame cross-attention (block 0)"),
]

#: Every entry, by name.
ZOO: dict[str, ZooEntry] = {entry.name: entry for entry in _ENTRIES}


def build(name: str, seed: int = 0) -> Built:
    """``ZOO[name].build()`` with the global RNG seeded first: weights and inputs are reproducible.

    Raises:
        KeyError: unknown ``name`` (the message lists the entries).
    """
    if name not in ZOO:
        raise KeyError(f"model must be one of {sorted(ZOO)}, got {name!r}")
    torch.manual_seed(seed)
    model, inputs = ZOO[name].build()
    randomise_zero_parameters(model, seed)
    return model, inputs


#: Standard deviation given to parameters a model initialises to zero (see :func:`randomise_zero_parameters`).
ZERO_PARAMETER_STD = 0.02


def randomise_zero_parameters(model: torch.nn.Module, seed: int = 0) -> int:
    """Give every all-zero floating parameter of ``model`` seeded normal values (std
    :data:`ZERO_PARAMETER_STD`); returns how many there were.

    Some classes zero-initialise gates or output layers (Kandinsky 5's modulation, for one), so
    that, untrained, their attention adds nothing to the output: a reduced attention would then
    change nothing and a comparison with the unreduced model could not fail. Trained weights are
    never all zero."""
    generator = torch.Generator().manual_seed(seed)
    count = 0
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.is_floating_point() and parameter.numel() > 1 and not parameter.any():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * ZERO_PARAMETER_STD)
                count += 1
    return count
