"""Procedural rendering of the synthetic videos, and training batches.

Every draw uses a private ``torch.Generator`` seeded by the caller, so a video is a pure function
of ``(caption, config, seed)`` and the global RNG is left alone.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from asymrnr_lab.synthetic.config import (
    DIRECTIONS,
    EDGE_MARGIN_PX,
    OBJECT_GAP_PX,
    PALETTE,
    Caption,
    SyntheticTaskConfig,
    all_captions,
)
from asymrnr_lab.synthetic.geometry import coverage
from asymrnr_lab.synthetic.vocab import Vocabulary


def seeded_generator(seed: int) -> torch.Generator:
    """A private CPU generator seeded with ``seed`` (an int >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return torch.Generator().manual_seed(seed)


def layout(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
    """Box centres ``(count, frames, 2)`` as ``(y, x)`` pixels of every object in every frame.

    The start position is uniform over all positions that keep every object's box at least
    :data:`EDGE_MARGIN_PX` inside the frame for the whole clip; with two objects, they are
    separated across the direction of motion by at least :data:`OBJECT_GAP_PX`.
    """
    config.check_caption(caption)
    gen = seeded_generator(seed)
    size, m = config.object_size, EDGE_MARGIN_PX
    dy, dx = DIRECTIONS[caption.direction]
    speed = config.speed_of(caption)
    travel = (config.frames - 1) * speed
    vertical = dy != 0
    along_len, across_len = (config.height, config.width) if vertical else (
        config.width, config.height
    )
    sign = dy if vertical else dx
    count = caption.count

    # Along the motion: the smallest coordinate the box centre reaches, uniform in its range.
    lo = m + size / 2
    along_free = along_len - 2 * lo - travel
    low_end = lo + along_free * torch.rand(count, generator=gen, dtype=torch.float64)
    t = torch.arange(config.frames, dtype=torch.float64) * speed
    along = low_end[:, None] + (t if sign > 0 else travel - t)[None, :]

    # Across the motion: count positions, box gaps >= OBJECT_GAP_PX.
    span = size + OBJECT_GAP_PX
    across_free = across_len - 2 * lo - (count - 1) * span
    u = (across_free * torch.rand(count, generator=gen, dtype=torch.float64)).sort().values
    across = lo + u + span * torch.arange(count, dtype=torch.float64)
    across = across[:, None].expand(count, config.frames)

    y, x = (along, across) if vertical else (across, along)
    return torch.stack([y, x], dim=-1)


def composite(
    alpha: torch.Tensor, colour: str | torch.Tensor, background: str | torch.Tensor
) -> torch.Tensor:
    """Video ``(3, F, H, W)`` float32 from object coverage ``alpha`` ``(F, H, W)``."""
    fg = torch.as_tensor(PALETTE[colour] if isinstance(colour, str) else colour)
    bg = torch.as_tensor(PALETTE[background] if isinstance(background, str) else background)
    fg, bg, alpha = fg.to(torch.float32), bg.to(torch.float32), alpha.to(torch.float32)
    return bg[:, None, None, None] + alpha[None] * (fg - bg)[:, None, None, None]


def object_alpha(shape: str, centres: torch.Tensor, size: float, height: int, width: int):
    """Coverage ``(F, H, W)`` (float32) of objects with box centres ``centres``
    ``(count, F, 2)``."""
    cov = coverage(shape, centres[..., 0], centres[..., 1], size, height, width, torch.float32)
    return cov.amax(dim=0)


def render_videos(
    captions: Sequence[Caption], config: SyntheticTaskConfig, seeds: Sequence[int]
) -> torch.Tensor:
    """Videos ``(B, 3, frames, height, width)``, float32 in [-1, 1]; ``[i]`` equals
    ``render_video(captions[i], config, seeds[i])``. Draws every shape of the batch at once
    (one coverage call per shape), so a training batch costs a few dozen tensor ops.
    Positions are float64; coverage and colours are computed in float32."""
    if len(captions) != len(seeds):
        raise ValueError(f"got {len(captions)} captions but {len(seeds)} seeds")
    batch = len(captions)
    shape_of = [c.shape for c in captions]
    centres = [layout(c, config, s) for c, s in zip(captions, seeds)]
    alpha = torch.zeros(batch, config.frames, config.height, config.width)
    for shape in dict.fromkeys(shape_of):
        members = [i for i in range(batch) if shape_of[i] == shape]
        owner = torch.tensor([i for i in members for _ in range(captions[i].count)])
        objs = torch.cat([centres[i] for i in members])  # (objects, F, 2)
        cov = coverage(shape, objs[..., 0], objs[..., 1], config.object_size, config.height,
                       config.width, dtype=torch.float32)
        # Objects of one video are >= OBJECT_GAP_PX apart: their coverages never overlap, so
        # the sum is their union, exactly.
        alpha.index_add_(0, owner, cov)
    fg = torch.tensor([PALETTE[c.colour] for c in captions])
    bg = torch.tensor([PALETTE[c.background] for c in captions])
    return bg[:, :, None, None, None] + alpha[:, None] * (fg - bg)[:, :, None, None, None]


def render_video(caption: Caption, config: SyntheticTaskConfig, seed: int) -> torch.Tensor:
    """The video ``(3, frames, height, width)`` of ``caption``, float32 in [-1, 1]."""
    return render_videos([caption], config, [seed])[0]


def sample_batch(
    batch: int,
    config: SyntheticTaskConfig | None = None,
    generator: torch.Generator | None = None,
    vocab: Vocabulary | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[Caption]]:
    """A training batch: ``(videos (B, 3, F, H, W), token ids (B, T), captions)``.

    Captions are drawn uniformly from :func:`all_captions`, each video from its own seed; both
    from ``generator`` (a fresh unseeded one when None).
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    config = config if config is not None else SyntheticTaskConfig()
    vocab = vocab if vocab is not None else Vocabulary()
    generator = generator if generator is not None else torch.Generator()
    captions_all = all_captions(config)
    index = torch.randint(len(captions_all), (batch,), generator=generator).tolist()
    seeds = torch.randint(0, 2**62, (batch,), generator=generator).tolist()
    captions = [captions_all[i] for i in index]
    videos = render_videos(captions, config, seeds)
    return videos, vocab.encode_batch(captions), captions
