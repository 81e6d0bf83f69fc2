"""The content diagnosis of the matching: token classes from pixels, drops by class."""

import pytest
import torch

from asymrnr_compile.config import AsymRnRConfig
from asymrnr_compile.ops import num_kept_tokens, split_tokens
from asymrnr_lab.sampling import SamplerConfig
from asymrnr_lab.synthetic.config import PALETTE, all_captions
from asymrnr_lab.synthetic.diagnose import (
    BACKGROUND,
    CONTENT_CLASSES,
    EDGE,
    INTERIOR,
    format_table,
    matching_by_content,
    token_content,
)
from asymrnr_lab.synthetic.model import load_trained_model


def test_token_content_classifies_patches_by_their_object_pixels():
    video = torch.full((3, 2, 8, 8), -1.0)  # black background
    video[:, :, 2:6, 2:5] = 1.0  # a white 4 x 3 block in both frames
    classes = token_content(video, PALETTE["black"], (2, 2, 2)).view(4, 4)
    expected = torch.full((4, 4), BACKGROUND)
    expected[1:3, 1] = INTERIOR  # columns 2-3 are fully covered
    expected[1:3, 2] = EDGE  # columns 4-5: only column 4 is object
    assert torch.equal(classes, expected)
    with pytest.raises(ValueError, match="video must be"):
        token_content(video[0], PALETTE["black"], (2, 2, 2))


# features: 22 s on 2 cores (per-head matchings of every block), slow; hidden_states runs by default
@pytest.mark.parametrize("match_on", [pytest.param("features", marks=pytest.mark.slow), "hidden_states"])
def test_drops_by_content_add_up_to_the_kept_counts(match_on):
    model, task = load_trained_model()
    captions = all_captions(task)[:2]
    # matching recomputed every step: one compiled variant, two matchings
    config = AsymRnRConfig(q_ratio=0.5, kv_ratio=0.3, cache_steps=1, min_video_tokens=1, match_on=match_on)
    sampler = SamplerConfig(steps=2, guidance_scale=2.0, cfg_mode="batched")
    rows = matching_by_content(model, task, captions, [5, 5], config, sampler)
    blocks = model.config.num_blocks
    assert [(r.block, r.feature, r.content) for r in rows] == [
        (b, f, c) for b in range(blocks) for f in ("kv", "q") for c in CONTENT_CLASSES]
    # one matching per head, or one shared by every head
    heads = model.config.num_heads if match_on == "features" else 1
    n, matchings = model.config.video_tokens, 2
    num_dst = len(split_tokens(n, model.config.grid, config.dst_stride).dst)
    for block in range(blocks):
        for feature, ratio in (("q", config.q_ratio), ("kv", config.kv_ratio)):
            kept = num_kept_tokens(n, num_dst, ratio)
            group = [r for r in rows if r.block == block and r.feature == feature]
            assert sum(r.tokens for r in group) == n * heads * len(captions) * matchings
            dropped = sum(r.tokens * r.dropped for r in group)
            assert dropped == pytest.approx((n - kept) * heads * len(captions) * matchings)
            assert all(0.0 <= r.crossed <= 1.0 for r in group if r.dropped > 0)
    assert "interior" in format_table(rows)
    with pytest.raises(ValueError, match="cfg_mode"):
        matching_by_content(model, task, captions, [5, 5], config, SamplerConfig(steps=1, cfg_mode="split"))
