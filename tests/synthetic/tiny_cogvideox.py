"""The tiny CogVideoX text-to-video preset the accelerator tests share (needs diffusers)."""

from __future__ import annotations

from asymrnr_lab.synthetic.cogvideox import CogVideoXTaskConfig

#: A tiny CogVideoX with 2 blocks (a first-block cache or DBCache needs a block after the one
#: that decides): 4 x 4 x 4 = 64 video tokens, 2 heads of 16.
TWO_BLOCKS = CogVideoXTaskConfig(patch_size=8, num_heads=2, head_dim=16, num_blocks=2, time_embed_dim=32,
                                 text_dim=16)
