"""What the accelerator and cache-dit tests share: a tiny 2-block CogVideoX preset, the sampler
of their loops, and a loop that also counts its FLOPs (needs diffusers)."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from asymrnr_lab.sampling import SamplerConfig
from asymrnr_lab.synthetic.cogvideox import CogVideoXTaskConfig
from asymrnr_lab.synthetic.config import all_captions
from asymrnr_lab.synthetic.generate import generate_videos

#: A tiny CogVideoX with 2 blocks (a first-block cache or DBCache needs a block after the one
#: that decides): 4 x 4 x 4 = 64 video tokens, 2 heads of 16.
TWO_BLOCKS = CogVideoXTaskConfig(patch_size=8, num_heads=2, head_dim=16, num_blocks=2, time_embed_dim=32,
                                 text_dim=16)
#: Steps of the test loops: enough for every cache's warm-up and a few cached steps.
STEPS = 8
SAMPLER = SamplerConfig(steps=STEPS, guidance_scale=2.0)


def sample_counting_flops(model, task, transformer, captions: int = 2) -> tuple[torch.Tensor, int]:
    """The first ``captions`` captions of ``task`` sampled (one noise seed each, one batch) through
    ``transformer``: ``(videos, FLOPs of the whole loop)``."""
    chosen = all_captions(task)[:captions]
    with FlopCounterMode(display=False) as counter:
        videos = generate_videos(model, chosen, list(range(captions)), task, SAMPLER, transformer=transformer,
                                 batch_size=captions)
    return videos, counter.get_total_flops()
