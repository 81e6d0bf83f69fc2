"""Real diffusers pipelines, built offline with tiny seeded random-weight components.

For the benchmarks and tests that drive a whole pipeline call (warm starts, composition with
diffusers' cache hooks, quantisation, offloading) and for the README's pipeline example run
offline. The construction is the one of ``tests/pipelines/test_pipelines.py``: no tokenizer or
text encoder (``tokenizer=None, text_encoder=None``; the prompts come as ``prompt_embeds`` /
``negative_prompt_embeds``), the family's tiny test transformer, a tiny VAE of the family (as in
diffusers' own pipeline tests) and its default scheduler. No weights are downloaded; the pipeline
classes import ``transformers``.

Families: ``"cogvideox"`` (``CogVideoXPipeline``: int64 timesteps, batched CFG, one transformer
call per step) and ``"wan"`` (``WanPipeline``: float timesteps, cond and uncond as two calls per
step inside ``transformer.cache_context``), and ``"wan22"`` (``WanPipeline`` as Wan 2.2 builds it: two
experts of one class, ``transformer`` for the high-noise steps and ``transformer_2``, other
weights, for the steps below ``boundary_ratio``). At the defaults (64 x 64 px, 9 frames) the latent token
grid is 3 x 4 x 4 (48 video tokens): pass ``AsymRnRConfig(min_video_tokens=8, dst_stride=(1, 2,
2))`` or :data:`SMALL_GRID` to reduce it.

Requires ``pip install -e .[diffusers]``; diffusers is imported lazily.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

Family = Literal["cogvideox", "wan", "wan22"]

SMALL_GRID: dict[str, Any] = {"min_video_tokens": 8, "dst_stride": (1, 2, 2)}
"""Options that let asymrnr reduce the tiny token grids (48 video tokens at the defaults)."""


@dataclass(frozen=True)
class TinyPipeline:
    """A built pipeline and how to call it.

    Attributes:
        pipe: the diffusers pipeline (progress bar off).
        family: ``"cogvideox"`` or ``"wan"``.
        calls_per_step: transformer calls per denoising step (1: batched CFG; 2: split CFG).
        call_kwargs: the arguments of one call besides the prompt embeddings and generator
            (height, width, num_frames, num_inference_steps, ``output_type="pt"``).
        text_shape: (tokens, channels) of the prompt embeddings.
    """

    pipe: Any
    family: Family
    calls_per_step: int
    call_kwargs: dict[str, Any]
    text_shape: tuple[int, int]

    def inputs(self, seed: int = 0) -> dict[str, Any]:
        """Prompt embeddings (cond and uncond) drawn from ``seed``, and the call's generator."""
        generator = torch.Generator().manual_seed(1000 + seed)
        tokens, channels = self.text_shape
        return {"prompt_embeds": torch.randn(1, tokens, channels, generator=generator),
                "negative_prompt_embeds": torch.randn(1, tokens, channels, generator=generator),
                "generator": torch.Generator().manual_seed(seed)}

    def __call__(self, seed: int = 0, **overrides: Any) -> torch.Tensor:
        """One video (seeded by ``seed``) as (F, C, H, W) frames in [0, 1]."""
        with torch.no_grad():
            output = self.pipe(**self.inputs(seed), **{**self.call_kwargs, **overrides})
        return output.frames[0]


def _cogvideox(num_layers: int) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    import diffusers

    torch.manual_seed(0)
    transformer = diffusers.CogVideoXTransformer3DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4,
        time_embed_dim=2, text_embed_dim=8, num_layers=num_layers, sample_width=8, sample_height=8,
        sample_frames=8, patch_size=2, temporal_compression_ratio=4, max_text_seq_length=8,
    ).eval()
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4, block_out_channels=(8, 8, 8, 8), latent_channels=4,
        layers_per_block=1, norm_num_groups=2, temporal_compression_ratio=4,
    ).eval()
    return transformer, vae, diffusers.CogVideoXDDIMScheduler()


def _wan(num_layers: int) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
    import diffusers

    torch.manual_seed(0)
    transformer = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
        out_channels=4, text_dim=16, freq_dim=256, ffn_dim=32, num_layers=num_layers,
        cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
    ).eval()
    torch.manual_seed(0)
    vae = diffusers.AutoencoderKLWan(  # z_dim 4 to match the transformer; one latent statistic per channel
        base_dim=3, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    ).eval()
    return transformer, vae, diffusers.FlowMatchEulerDiscreteScheduler(shift=7.0)


def tiny_pipeline(family: Family = "cogvideox", *, size: int = 64, num_frames: int = 9, steps: int = 3,
                  num_layers: int | None = None, boundary_ratio: float = 0.9) -> TinyPipeline:
    """A real diffusers text-to-video pipeline of ``family`` with tiny seeded components.

    Args:
        family: ``"cogvideox"`` or ``"wan"``.
        size: height = width in pixels (the VAE compresses 8x, the transformer patches 2x2: 64 px
            gives 4 x 4 tokens per latent frame, 128 px 8 x 8).
        num_frames: frames (the VAE compresses 4x in time: 9 frames are 3 latent frames).
        steps: ``num_inference_steps``.
        num_layers: transformer blocks (default: 1 for CogVideoX, 2 for Wan, as the unit tests).
        boundary_ratio: ``"wan22"`` only: ``transformer_2`` runs the steps whose timestep is below
            ``boundary_ratio * 1000`` (default 0.9: with 6 steps and the scheduler's shift of 7,
            the last 3).
    """
    import diffusers

    if family == "cogvideox":
        transformer, vae, scheduler = _cogvideox(num_layers or 1)
        pipe = diffusers.CogVideoXPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=vae,
                                           scheduler=scheduler)
        calls_per_step, text_shape = 1, (8, 8)
    elif family == "wan":
        transformer, vae, scheduler = _wan(num_layers or 2)
        pipe = diffusers.WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=vae,
                                     scheduler=scheduler)
        calls_per_step, text_shape = 2, (12, 16)
    elif family == "wan22":
        transformer, vae, scheduler = _wan(num_layers or 2)
        torch.manual_seed(1)
        transformer_2 = type(transformer)(**transformer.config).eval()  # the low-noise expert: other weights
        pipe = diffusers.WanPipeline(tokenizer=None, text_encoder=None, transformer=transformer, vae=vae,
                                     scheduler=scheduler, transformer_2=transformer_2,
                                     boundary_ratio=boundary_ratio)
        calls_per_step, text_shape = 2, (12, 16)
    else:
        raise ValueError(f"family must be 'cogvideox', 'wan' or 'wan22', got {family!r}")
    pipe.set_progress_bar_config(disable=True)
    call_kwargs = {"height": size, "width": size, "num_frames": num_frames, "num_inference_steps": steps,
                   "output_type": "pt"}
    return TinyPipeline(pipe, family, calls_per_step, call_kwargs, text_shape)
