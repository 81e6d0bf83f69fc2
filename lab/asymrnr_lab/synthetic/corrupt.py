"""Corrupted videos, to check that each detector catches the failure it is meant to.

Every function returns a video ``(3, F, H, W)`` that should be scored against the *original*
caption. They mimic a generator's typical failures: wrong attribute, shapeless blob, reversed or
missing motion, noise, blur, an extra object, a vanishing object, shuffled frames.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from asymrnr_lab.synthetic.config import DIRECTIONS, PALETTE, Caption, SyntheticTaskConfig
from asymrnr_lab.synthetic.geometry import FILL_RATIO, blob_coverage
from asymrnr_lab.synthetic.render import (
    composite,
    layout,
    object_alpha,
    render_video,
    seeded_generator,
)

#: Relative amplitudes of the blob's radius harmonics k = 2, 3, 4: a lumpy potato (radius
#: +-38% at most), clearly no shape of the task; each frame gets its own phases, so the blob
#: also wobbles. Soft shape IoU 0.75-0.77 (half these amplitudes: 0.91, still shape-like).
BLOB_AMPLITUDES = (0.18, 0.12, 0.08)

#: Seed offset for the extra draws of a corruption (keeps them independent of the layout).
_SEED_OFFSET = 7919


def _other(values: tuple, current, step: int = 1):
    """The value ``step`` places after ``current`` in ``values`` (cyclic)."""
    if len(values) < 2:
        raise ValueError(f"needs at least two values to pick a wrong one, got {values!r}")
    return values[(values.index(current) + step) % len(values)]


def wrong_colour(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
    """The object in the next colour of ``config.colours``."""
    return render_video(replace(caption, colour=_other(config.colours, caption.colour)), config,
                        seed)


def wrong_background(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
    """The next background of ``config.backgrounds``."""
    bg = _other(config.backgrounds, caption.background)
    return render_video(replace(caption, background=bg), config, seed)


def wrong_shape(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
    """The next shape of ``config.shapes``."""
    return render_video(replace(caption, shape=_other(config.shapes, caption.shape)), config, seed)


def blob(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
    """A wobbling shapeless blob of about the caption shape's area, on the same trajectory."""
    centres = layout(caption, config, seed)
    gen = seeded_generator(seed + _SEED_OFFSET)
    amps = torch.tensor(BLOB_AMPLITUDES, dtype=torch.float64)
    phases = 2 * torch.pi * torch.rand(*centres.shape[:2], len(amps), generator=gen,
                                       dtype=torch.float64)
    radius = config.object_size * (FILL_RATIO[caption.shape] / torch.pi) ** 0.5
    alpha = blob_coverage(centres[..., 0], centres[..., 1], float(radius), amps, phases,
                          config.height, config.width).amax(0)
    return composite(alpha, caption.colour, caption.background)


def reversed_motion(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
    """The clip played backwards (the object moves the opposite way)."""
    return render_video(caption, config, seed).flip(1)


def static(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
    """The first frame repeated: no motion."""
    video = render_video(caption, config, seed)
    return video[:, :1].expand_as(video).clone()


def perpendicular_motion(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
    """Motion along the other axis (left/right <-> up/down), where the config has one."""
    dy, dx = DIRECTIONS[caption.direction]
    turned = [d for d in config.directions if DIRECTIONS[d] in ((dx, dy), (-dx, -dy))]
    if not turned:
        raise ValueError(f"config has no direction perpendicular to {caption.direction!r}")
    return render_video(replace(caption, direction=turned[0]), config, seed)


def noise(sigma: float) -> Callable[[Caption, SyntheticTaskConfig, int], torch.Tensor]:
    """Gaussian noise of std ``sigma`` (clamped to [-1, 1])."""

    def corrupt(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
        video = render_video(caption, config, seed)
        gen = seeded_generator(seed + _SEED_OFFSET)
        return (video + sigma * torch.randn(video.shape, generator=gen)).clamp(-1, 1)

    corrupt.__name__ = f"noise_{sigma:g}"
    return corrupt


def blur(sigma: float) -> Callable[[Caption, SyntheticTaskConfig, int], torch.Tensor]:
    """Spatial Gaussian blur of std ``sigma`` pixels (replicate padding)."""

    def corrupt(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
        video = render_video(caption, config, seed)
        radius = max(1, int(3 * sigma + 0.5))
        x = torch.arange(-radius, radius + 1, dtype=torch.float32)
        g = torch.exp(-(x**2) / (2 * sigma**2))
        g = g / g.sum()
        frames = video.permute(1, 0, 2, 3).reshape(-1, 1, config.height, config.width)
        frames = F.pad(frames, (radius,) * 4, mode="replicate")
        frames = F.conv2d(frames, g.view(1, 1, 1, -1))
        frames = F.conv2d(frames, g.view(1, 1, -1, 1))
        return frames.reshape(config.frames, 3, config.height, config.width).permute(1, 0, 2, 3)

    corrupt.__name__ = f"blur_{sigma:g}"
    return corrupt


def extra_object(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
    """One object more than the caption says (drawn with the geometry of count + 1, which must
    fit the frame)."""
    more = replace(caption, count=caption.count + 1)
    wide = replace(config, counts=tuple(sorted({*config.counts, more.count})))
    centres = layout(more, wide, seed)
    alpha = object_alpha(caption.shape, centres, config.object_size, config.height, config.width)
    return composite(alpha, caption.colour, caption.background)


def shrunk(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
    """Objects at half the config's size (a quarter of the area), on the same paths."""
    centres = layout(caption, config, seed)
    alpha = object_alpha(caption.shape, centres, config.object_size / 2, config.height,
                         config.width)
    return composite(alpha, caption.colour, caption.background)


def vanishing(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
    """The objects disappear in the second half of the clip."""
    video = render_video(caption, config, seed).clone()
    bg = torch.tensor(PALETTE[caption.background], dtype=video.dtype)
    video[:, config.frames // 2:] = bg[:, None, None, None]
    return video


def shuffled_frames(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
    """Frames in a random order (never the identity or the reversal)."""
    video = render_video(caption, config, seed)
    gen = seeded_generator(seed + _SEED_OFFSET)
    identity = list(range(config.frames))
    while True:
        perm = torch.randperm(config.frames, generator=gen).tolist()
        if perm not in (identity, identity[::-1]):
            return video[:, perm]


#: The corruptions of the validation table, with the attribute or metric each should hurt.
CORRUPTIONS: dict[str, tuple[Callable[[Caption, SyntheticTaskConfig, int], torch.Tensor], str]] = {
    "wrong_colour": (wrong_colour, "colour"),
    "wrong_background": (wrong_background, "background"),
    "wrong_shape": (wrong_shape, "shape"),
    "blob": (blob, "valid"),
    "reversed_motion": (reversed_motion, "direction"),
    "perpendicular_motion": (perpendicular_motion, "direction"),
    "static": (static, "direction"),
    "extra_object": (extra_object, "count"),
    "shrunk": (shrunk, "valid"),
    "vanishing": (vanishing, "valid"),
    "noise_0.1": (noise(0.1), "none (mild: should still pass)"),
    "noise_0.5": (noise(0.5), "valid"),
    "blur_0.5": (blur(0.5), "none (mild: should still pass)"),
    "blur_2": (blur(2.0), "valid"),
    "shuffled_frames": (shuffled_frames, "temporal"),
}
