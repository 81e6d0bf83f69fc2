"""Rendering: determinism, value range, objects inside the frame, training batches."""

from __future__ import annotations

import pytest
import torch

from asymrnr_lab.synthetic import (
    PALETTE,
    Vocabulary,
    all_captions,
    layout,
    render_video,
    sample_batch,
)
from asymrnr_lab.synthetic.config import DIRECTIONS, EDGE_MARGIN_PX, OBJECT_GAP_PX, SPEEDS

SEEDS = (0, 1, 2, 3)


def test_render_is_deterministic_and_seeded(config):
    caption = all_captions(config)[17]
    a = render_video(caption, config, 3)
    state = torch.get_rng_state()
    b = render_video(caption, config, 3)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert torch.equal(a, b)
    assert not torch.equal(a, render_video(caption, config, 4))
    assert a.shape == config.video_shape and a.dtype == torch.float32


@pytest.mark.parametrize("which", ["default", "wide"])
def test_every_caption_stays_in_frame(which, config, wide_config):
    """For every caption and a few seeds: values in [-1, 1], pure background on the frame
    border, the object box inside the margins in every frame, the motion the caption says, and
    two objects (count 2) separated by the gap."""
    cfg = config if which == "default" else wide_config
    seeds = SEEDS if which == "default" else SEEDS[:1]
    half = cfg.object_size / 2
    for caption in all_captions(cfg):
        bg = torch.tensor(PALETTE[caption.background])[:, None, None]
        for seed in seeds:
            centres = layout(caption, cfg, seed)
            assert centres.shape == (caption.count, cfg.frames, 2)
            lo = EDGE_MARGIN_PX + half - 1e-9
            assert (centres[..., 0] >= lo).all() and (centres[..., 0] <= cfg.height - lo).all()
            assert (centres[..., 1] >= lo).all() and (centres[..., 1] <= cfg.width - lo).all()
            step = centres[:, 1:] - centres[:, :-1]
            dy, dx = DIRECTIONS[caption.direction]
            expected = torch.tensor([dy, dx], dtype=step.dtype) * cfg.speed_of(caption)
            assert torch.allclose(step, expected.expand_as(step))
            if caption.count == 2:
                across = 1 if dy else 0
                gap = (centres[1, 0, across] - centres[0, 0, across]).abs()
                assert gap >= cfg.object_size + OBJECT_GAP_PX - 1e-9

            video = render_video(caption, cfg, seed)
            assert video.min() >= -1 and video.max() <= 1
            for f in range(cfg.frames):
                frame = video[:, f]
                border = torch.cat([frame[:, 0], frame[:, -1], frame[:, :, 0], frame[:, :, -1]], 1)
                assert torch.equal(border, bg[:, :, 0].expand_as(border)), (caption, seed, f)
                assert (frame != bg).any(dim=0).any(), (caption, seed, f)  # object visible


def test_object_area_matches_shape(config):
    """Anti-aliasing preserves area: the coverage sum is the shape's exact area."""
    from asymrnr_lab.synthetic.geometry import FILL_RATIO

    for shape in config.shapes:
        caption = next(c for c in all_captions(config) if c.shape == shape)
        video = render_video(caption, config, 0)
        fg = torch.tensor(PALETTE[caption.colour])
        bg = torch.tensor(PALETTE[caption.background])
        alpha = ((video - bg[:, None, None, None]) / (fg - bg)[:, None, None, None]).nanmean(0)
        area = alpha.sum((-2, -1))
        expected = FILL_RATIO[shape] * config.object_size**2
        assert torch.allclose(area, torch.full_like(area, expected), rtol=0.02), shape


def test_speeds_differ(wide_config):
    slow, fast = (
        next(c for c in all_captions(wide_config) if c.speed == s) for s in ("slowly", "quickly")
    )
    for caption, speed in ((slow, SPEEDS["slowly"]), (fast, SPEEDS["quickly"])):
        centres = layout(caption, wide_config, 0)
        moved = (centres[0, -1] - centres[0, 0]).abs().sum()
        assert moved == pytest.approx((wide_config.frames - 1) * speed)


def test_batched_rendering_equals_one_by_one(wide_config):
    from asymrnr_lab.synthetic.render import composite, object_alpha, render_videos

    captions = all_captions(wide_config)[::37]
    seeds = list(range(len(captions)))
    batch = render_videos(captions, wide_config, seeds)
    for caption, seed, video in zip(captions, seeds, batch):
        alpha = object_alpha(caption.shape, layout(caption, wide_config, seed),
                             wide_config.object_size, wide_config.height, wide_config.width)
        assert torch.equal(video, composite(alpha, caption.colour, caption.background))
        assert torch.equal(video, render_video(caption, wide_config, seed))


def test_sample_batch(config):
    gen = torch.Generator().manual_seed(0)
    videos, ids, captions = sample_batch(6, config, gen)
    assert videos.shape == (6, *config.video_shape) and ids.shape == (6, 10)
    assert Vocabulary().decode_batch(ids) == [c.text for c in captions]
    again = sample_batch(6, config, torch.Generator().manual_seed(0))
    assert torch.equal(videos, again[0]) and again[2] == captions
    other = sample_batch(6, config, gen)
    assert not torch.equal(videos, other[0])
    with pytest.raises(ValueError, match="batch"):
        sample_batch(0, config)


def test_seed_must_be_a_non_negative_int(config):
    caption = all_captions(config)[0]
    for seed in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            render_video(caption, config, seed)  # type: ignore[arg-type]
