"""Analytic quality metrics of synthetic-task videos, computed exactly from the pixels.

In the spirit of VBench's dimensions, but exact because the task is procedural:

- **validity** (:func:`validity`): every frame shows the task's number of compact objects of
  plausible size on a clean background. Without it, shapeless blobs would be scored as circles.
- **prompt adherence** per attribute (:func:`detect_attributes`, :func:`adherence`): background
  and object colour (nearest palette entry), shape (best-fitting shape template: soft IoU of the
  object's coverage with each shape of the same area and centroid; the fill ratio of the
  bounding box is reported too), count (connected components), direction and speed (least-squares
  slope of the centre-of-mass trajectory).
- **temporal consistency** (:func:`temporal_consistency`): mean frame-to-frame change, flicker
  (second temporal difference: high-frequency temporal energy), trajectory jitter.
- **fidelity** to the unaccelerated sample from the same noise: :func:`psnr`, :func:`ssim`.

:func:`score_samples` aggregates all of them over a batch into a :class:`QualityReport`.
Videos are ``(3, F, H, W)`` (or batches ``(B, 3, F, H, W)``) in [-1, 1]. Every threshold is a
named constant below, with how it was chosen; :class:`DetectorThresholds` bundles them so that a
caller can tighten or loosen one without editing the module.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F

from asymrnr_lab.metrics import psnr_db
from asymrnr_lab.synthetic.config import (
    DIRECTIONS,
    PALETTE,
    SPEEDS,
    Caption,
    SyntheticTaskConfig,
)
from asymrnr_lab.synthetic.geometry import CENTROID_OFFSET, FILL_RATIO, coverage

# ---------------------------------------------------------------------------------------------
# Thresholds. Calibrated with `python -m asymrnr_lab.synthetic.validate` (ground truth of
# every caption x 4 seeds, and each corruption); the numbers quoted are from that run.
# ---------------------------------------------------------------------------------------------

#: A pixel belongs to an object mask when its RGB distance from the background exceeds this
#: fraction of the config's smallest object/background contrast (2.0 by default): 0.5 puts the
#: mask edge at 50% coverage, so mask area equals shape area on anti-aliased ground truth.
MASK_CONTRAST_FRACTION = 0.5

#: Connected components smaller than this fraction of the smallest expected object area
#: (triangle 72 px at size 12) are "specks" (noise), not objects: 0.1 -> 7 px. A real object
#: never falls below half its area without failing the area check anyway.
SPECK_AREA_FRACTION = 0.1

#: At most this fraction of a frame's pixels may be speck pixels (clutter away from the
#: objects). Ground truth has none; Gaussian noise of std 0.3 gives ~0.2%, std 0.5 ~10%.
MAX_CLUTTER_FRACTION = 0.02

#: Plausible object area (soft coverage sum) relative to the config's expected areas: from
#: AREA_RANGE[0] x the smallest shape's area to AREA_RANGE[1] x the largest. Ground truth lies
#: within 2% of the expected areas; a half-size or double-size object falls outside.
AREA_RANGE = (0.6, 1.5)

#: Pixels around an object's mask that still count towards its soft coverage (its anti-aliased
#: or slightly blurred rim): 2 captures a 1 px blur; more adds background noise to the area.
RIM_PX = 2

#: Before the shape IoU, coverage and templates are sharpened about 0.5 by this factor,
#: ``clamp((a - 0.5) * k + 0.5, 0, 1)``: judges the contour more than the edge width (k = 1 is
#: the plain soft IoU and penalises blur almost as much as lumps; a hard 50% threshold, k -> inf,
#: is pixel-quantised and ignores blur altogether).
EDGE_SHARPENING = 2.0

#: An object is "compact and shaped" when its (sharpened) soft coverage has soft IoU (sum of
#: minima over sum of maxima) >= this with its best shape template of the same area and
#: centroid. Measured at k = 2, min over captions (circle / square / triangle): ground truth
#: 0.997 / 0.995 / 0.991; Gaussian blur of std 0.5 px 0.98 / 0.97 / 0.96, 1 px 0.93 / 0.93 /
#: 0.89, 1.5 px 0.90 / 0.88 / 0.83, 2 px 0.87 / 0.87 / 0.79; noise of std 0.2: >= 0.95; lumpy
#: blobs with radius +-19%: 0.87, +-28%: 0.82, +-38%: 0.77 (any shape caption). So 0.85 accepts
#: every shape with edges blurred up to 1 px and rejects blobs lumpier than about +-25%, which a
#: fill-ratio detector would call circles.
MIN_SHAPE_IOU = 0.85

#: Colours match a palette entry when within this fraction of the config's smallest distance
#: between two palette colours (2.0): 0.5 -> 1.0, so at most one entry can match.
COLOUR_TOLERANCE_FRACTION = 0.5

#: Motion counts as a direction when the centre of mass moves at least this fraction of the
#: slowest speed of the config per frame (1.5 px/frame by default -> 0.75 px/frame).
MIN_SPEED_FRACTION = 0.5

#: ... and its across-axis velocity is at most this fraction of its along-axis velocity
#: (within ~27 degrees of the axis). Ground truth has exactly zero.
MAX_OFF_AXIS_RATIO = 0.5


@dataclass(frozen=True)
class DetectorThresholds:
    """All detector thresholds (defaults: the module constants of the same meaning)."""

    mask_contrast_fraction: float = MASK_CONTRAST_FRACTION
    speck_area_fraction: float = SPECK_AREA_FRACTION
    max_clutter_fraction: float = MAX_CLUTTER_FRACTION
    area_range: tuple[float, float] = AREA_RANGE
    min_shape_iou: float = MIN_SHAPE_IOU
    edge_sharpening: float = EDGE_SHARPENING
    colour_tolerance_fraction: float = COLOUR_TOLERANCE_FRACTION
    min_speed_fraction: float = MIN_SPEED_FRACTION
    max_off_axis_ratio: float = MAX_OFF_AXIS_RATIO

    rim_px: int = RIM_PX

    def __post_init__(self) -> None:
        area = self.area_range
        if (
            not isinstance(area, tuple) or len(area) != 2
            or not all(_is_number(v) and v >= 0 for v in area) or not area[0] < area[1]
        ):
            raise ValueError(
                f"area_range must be a pair (low, high) of numbers with 0 <= low < high, "
                f"got {area!r}"
            )
        if isinstance(self.rim_px, bool) or not isinstance(self.rim_px, int) or self.rim_px < 0:
            raise ValueError(f"rim_px must be an int >= 0, got {self.rim_px!r}")
        if not _is_number(self.edge_sharpening) or self.edge_sharpening < 1:
            raise ValueError(f"edge_sharpening must be a number >= 1, got {self.edge_sharpening!r}")
        for f in fields(self):
            if f.name in ("area_range", "rim_px", "edge_sharpening"):
                continue
            value = getattr(self, f.name)
            if not _is_number(value) or value < 0:
                raise ValueError(f"{f.name} must be a finite number >= 0, got {value!r}")
        for name in ("mask_contrast_fraction", "speck_area_fraction", "max_clutter_fraction",
                     "min_shape_iou"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)!r}")


def _is_number(value: object) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    )


DEFAULT_THRESHOLDS = DetectorThresholds()

#: Data range of the videos ([-1, 1]) for PSNR and SSIM.
DATA_RANGE = 2.0
#: SSIM window: the standard 11 x 11 Gaussian of std 1.5 and constants K1, K2 (Wang et al. 2004).
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03

ATTRIBUTES = ("colour", "background", "shape", "direction", "count", "speed")


# ---------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------


def _check_video(video: object, config: SyntheticTaskConfig | None = None) -> torch.Tensor:
    if not isinstance(video, torch.Tensor):
        raise TypeError(f"video must be a torch.Tensor, got {type(video).__name__}")
    if video.dim() != 4 or video.shape[0] != 3:
        raise ValueError(f"video must have shape (3, F, H, W), got {tuple(video.shape)}")
    if config is not None and tuple(video.shape) != config.video_shape:
        raise ValueError(
            f"video shape {tuple(video.shape)} does not match the config's {config.video_shape}"
        )
    return video.detach().to("cpu", torch.float64)


def _as_caption(caption: Caption | str) -> Caption:
    return caption if isinstance(caption, Caption) else Caption.from_text(caption)


# ---------------------------------------------------------------------------------------------
# Connected components
# ---------------------------------------------------------------------------------------------


def label_components(mask: torch.Tensor) -> torch.Tensor:
    """8-connected components of a boolean ``mask`` ``(..., H, W)``, per 2-D slice.

    Returns int64 labels of the same shape: 0 off the mask; on it, a label unique over the whole
    tensor (the largest flat index of the component's pixels, plus one). Iterated 3x3 max
    propagation, vectorised over all slices; converges in (longest geodesic path) iterations.
    """
    if mask.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {mask.dtype}")
    if mask.dim() < 2:
        raise ValueError(f"mask must have shape (..., H, W), got {tuple(mask.shape)}")
    index = torch.arange(1, mask.numel() + 1, dtype=torch.long).reshape(mask.shape)
    labels = torch.where(mask, index, 0)
    for _ in range(mask.shape[-2] * mask.shape[-1]):
        grown = torch.where(mask, _max3x3(labels), 0)
        if torch.equal(grown, labels):
            break
        labels = grown
    return labels


def _max3x3(x: torch.Tensor) -> torch.Tensor:
    """3 x 3 maximum filter over the last two dims (zero padding; x >= 0). Separable shifts:
    an order of magnitude faster than ``max_pool2d`` on small CPU tensors."""
    p = F.pad(x, (1, 1))
    rows = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    p = F.pad(rows, (0, 0, 1, 1))
    return torch.maximum(torch.maximum(p[..., :-2, :], p[..., 1:-1, :]), p[..., 2:, :])


# ---------------------------------------------------------------------------------------------
# Analysis of one video
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DetectedAttributes:
    """What the detectors read from one video (None: could not be determined).

    ``shape``/``colour``/``background``/``direction``/``count``/``speed`` are attribute names
    comparable to a :class:`~asymrnr_lab.synthetic.config.Caption`'s (``speed`` stays None
    when the task has one speed). The rest are the measurements behind them.
    """

    shape: str | None
    colour: str | None
    background: str | None
    direction: str | None
    count: int | None
    speed: str | None
    objects_per_frame: tuple[int, ...]
    background_rgb: tuple[float, float, float]
    colour_rgb: tuple[float, float, float] | None
    shape_iou: float | None  # mean over objects of the best template's soft IoU
    shape_votes: dict[str, int]  # objects (over all frames) whose best template is each shape
    fill_ratio: float | None  # mean object pixels / bounding-box pixels
    velocity_px: tuple[float, float] | None  # centre-of-mass velocity (dy, dx) px/frame
    jitter_px: float | None  # RMS distance of the centre of mass from its straight-line fit


@dataclass(frozen=True)
class VideoAnalysis:
    """Everything measured on one video: its :class:`DetectedAttributes` and validity."""

    attributes: DetectedAttributes
    valid: bool
    reason: str  # "ok", or why the video is invalid


def _nearest(
    rgb: torch.Tensor, names: Sequence[str], tolerance: float
) -> str | None:
    table = torch.tensor([PALETTE[n] for n in names], dtype=torch.float64)
    dist = (table - rgb).norm(dim=-1)
    best = int(dist.argmin())
    return names[best] if float(dist[best]) <= tolerance else None


def _mode(values: Sequence) -> object | None:
    """Most common value; None on a tie or when empty."""
    counts = Counter(values).most_common(2)
    if not counts or (len(counts) == 2 and counts[0][1] == counts[1][1]):
        return None
    return counts[0][0]


def _sharpen(a: torch.Tensor, k: float) -> torch.Tensor:
    return ((a - 0.5) * k + 0.5).clamp(0.0, 1.0)


def _expected_areas(config: SyntheticTaskConfig) -> list[float]:
    return [FILL_RATIO[s] * config.object_size**2 for s in config.shapes]


def analyse(
    video: torch.Tensor,
    config: SyntheticTaskConfig,
    thresholds: DetectorThresholds = DEFAULT_THRESHOLDS,
) -> VideoAnalysis:
    """Run every detector on ``video`` ``(3, F, H, W)`` once."""
    v = _check_video(video, config)
    _, frames, h, w = v.shape
    th = thresholds

    # Background: the per-channel median over all pixels (objects cover < 30% of a frame).
    bg = v.flatten(1).median(dim=1).values
    diff = v - bg[:, None, None, None]
    dist = diff.pow(2).sum(0).sqrt()  # (F, H, W)
    mask = dist > th.mask_contrast_fraction * config.min_contrast
    labels = label_components(mask)

    ids, pixel_counts = torch.unique(labels[labels > 0], return_counts=True)
    speck_px = th.speck_area_fraction * min(_expected_areas(config))
    keep = pixel_counts >= speck_px
    clutter = torch.zeros(frames, dtype=torch.float64)
    speck_frames = (ids[~keep] - 1) // (h * w)
    clutter.index_add_(0, speck_frames, pixel_counts[~keep].to(torch.float64))
    clutter /= h * w
    ids, pixel_counts = ids[keep], pixel_counts[keep]
    frame_of = (ids - 1) // (h * w)
    objects_per_frame = tuple(
        torch.bincount(frame_of, minlength=frames).tolist() if len(ids) else [0] * frames
    )

    colour_rgb = None
    shape_iou = fill = velocity = jitter = None
    shape_votes: dict[str, int] = {}
    per_object_shape: list[str] = []
    best_iou = torch.zeros(0, dtype=torch.float64)
    areas = torch.zeros(0, dtype=torch.float64)

    if len(ids):
        comp = labels[frame_of] == ids[:, None, None]  # (K, H, W)
        pixels = v[:, frame_of].permute(1, 0, 2, 3)  # (K, 3, H, W)
        masked = torch.where(comp[:, None], pixels, torch.nan).flatten(2)
        colours = masked.nanmedian(dim=-1).values  # (K, 3)
        colour_rgb_t = colours.median(dim=0).values
        colour_rgb = tuple(float(c) for c in colour_rgb_t)

        # Soft coverage: projection of (pixel - background) on (object colour - background),
        # inside the component grown by RIM_PX pixels (its anti-aliased or blurred rim), minus
        # the other objects of the frame.
        region = comp.to(torch.float64)
        for _ in range(th.rim_px):
            region = _max3x3(region)
        region = region * ~(mask[frame_of] & ~comp)
        contrast = colours - bg
        proj = (diff[:, frame_of].permute(1, 0, 2, 3) * contrast[:, :, None, None]).sum(1)
        alpha = (proj / contrast.pow(2).sum(-1).clamp_min(1e-12)[:, None, None]).clamp(0, 1)
        alpha = alpha * region
        areas = alpha.sum((-2, -1))
        yy = torch.arange(h, dtype=torch.float64) + 0.5
        xx = torch.arange(w, dtype=torch.float64) + 0.5
        safe = areas.clamp_min(1e-12)
        cy = (alpha.sum(-1) * yy).sum(-1) / safe
        cx = (alpha.sum(-2) * xx).sum(-1) / safe

        ious = []
        a_sharp = _sharpen(alpha, th.edge_sharpening)
        for shape in config.shapes:
            size = torch.sqrt(areas / FILL_RATIO[shape])
            template = coverage(shape, cy - CENTROID_OFFSET[shape] * size, cx, size, h, w)
            t_sharp = _sharpen(template, th.edge_sharpening)
            inter = torch.minimum(a_sharp, t_sharp).sum((-2, -1))
            union = torch.maximum(a_sharp, t_sharp).sum((-2, -1)).clamp_min(1e-12)
            ious.append(inter / union)
        iou = torch.stack(ious, dim=-1)  # (K, S)
        best_iou, best = iou.max(dim=-1)
        per_object_shape = [config.shapes[i] for i in best.tolist()]
        shape_votes = dict(Counter(per_object_shape))
        shape_iou = float(best_iou.mean())

        rows = comp.any(-1)
        cols = comp.any(-2)
        bbox_h = h - rows.to(torch.int8).argmax(-1) - rows.flip(-1).to(torch.int8).argmax(-1)
        bbox_w = w - cols.to(torch.int8).argmax(-1) - cols.flip(-1).to(torch.int8).argmax(-1)
        fill = float((pixel_counts / (bbox_h * bbox_w)).to(torch.float64).mean())

        # Centre of mass per frame (mean over the frame's objects), then a straight-line fit.
        per_frame = torch.bincount(frame_of, minlength=frames).to(torch.float64)
        sums = torch.zeros(frames, 2, dtype=torch.float64)
        sums.index_add_(0, frame_of, torch.stack([cy, cx], dim=-1))
        seen = per_frame > 0
        if int(seen.sum()) >= 2:
            t = torch.arange(frames, dtype=torch.float64)[seen]
            pos = sums[seen] / per_frame[seen, None]  # (T, 2)
            tc = t - t.mean()
            vel = (tc[:, None] * (pos - pos.mean(0))).sum(0) / tc.pow(2).sum()
            fit = pos.mean(0) + tc[:, None] * vel
            jitter = float((pos - fit).pow(2).sum(-1).mean().sqrt())
            velocity = (float(vel[0]), float(vel[1]))

    tol = th.colour_tolerance_fraction * config.colour_separation
    background = _nearest(bg, config.backgrounds, tol)
    colour = None if colour_rgb is None else _nearest(
        torch.tensor(colour_rgb, dtype=torch.float64), config.colours, tol
    )
    shape = _mode(per_object_shape)
    count = _mode(objects_per_frame)
    count = None if count == 0 else count
    direction = speed = None
    if velocity is not None:
        direction = _direction(velocity, config, th)
        if direction is not None and len(config.speeds) > 1:
            along = max(abs(velocity[0]), abs(velocity[1]))
            speed = min(config.speeds, key=lambda s: abs(SPEEDS[s] - along))

    attributes = DetectedAttributes(
        shape=shape,
        colour=colour,
        background=background,
        direction=direction,
        count=count,
        speed=speed,
        objects_per_frame=objects_per_frame,
        background_rgb=(float(bg[0]), float(bg[1]), float(bg[2])),
        colour_rgb=colour_rgb,
        shape_iou=shape_iou,
        shape_votes=shape_votes,
        fill_ratio=fill,
        velocity_px=velocity,
        jitter_px=jitter,
    )
    valid, reason = _validity(
        objects_per_frame, clutter, areas, best_iou, frame_of, config, th
    )
    return VideoAnalysis(attributes=attributes, valid=valid, reason=reason)


def _direction(
    velocity: tuple[float, float], config: SyntheticTaskConfig, th: DetectorThresholds
) -> str | None:
    vy, vx = velocity
    along, across = (abs(vy), abs(vx)) if abs(vy) >= abs(vx) else (abs(vx), abs(vy))
    slowest = min(SPEEDS[s] for s in config.speeds)
    if along < th.min_speed_fraction * slowest or across > th.max_off_axis_ratio * along:
        return None
    unit = (int(math.copysign(1, vy)), 0) if abs(vy) >= abs(vx) else (0, int(math.copysign(1, vx)))
    return next(name for name, d in DIRECTIONS.items() if d == unit)


def _validity(
    objects_per_frame: tuple[int, ...],
    clutter: torch.Tensor,
    areas: torch.Tensor,
    best_iou: torch.Tensor,
    frame_of: torch.Tensor,
    config: SyntheticTaskConfig,
    th: DetectorThresholds,
) -> tuple[bool, str]:
    for f, n in enumerate(objects_per_frame):
        if n == 0:
            return False, f"frame {f}: no object"
        if n not in config.counts:
            return False, f"frame {f}: {n} objects (the task draws {config.counts})"
    if len(set(objects_per_frame)) > 1:
        return False, f"object count changes across frames: {objects_per_frame}"
    f = int(clutter.argmax())
    if float(clutter[f]) > th.max_clutter_fraction:
        return False, (
            f"frame {f}: {100 * float(clutter[f]):.1f}% of pixels are clutter (specks off the "
            f"background colour; at most {100 * th.max_clutter_fraction:g}%)"
        )
    expected = _expected_areas(config)
    lo, hi = th.area_range[0] * min(expected), th.area_range[1] * max(expected)
    for k in range(len(areas)):
        a = float(areas[k])
        if not lo <= a <= hi:
            return False, (
                f"frame {int(frame_of[k])}: object area {a:.1f} px outside the plausible "
                f"[{lo:.1f}, {hi:.1f}]"
            )
    for k in range(len(best_iou)):
        if float(best_iou[k]) < th.min_shape_iou:
            return False, (
                f"frame {int(frame_of[k])}: shapeless object (best shape IoU "
                f"{float(best_iou[k]):.2f} < {th.min_shape_iou:g})"
            )
    return True, "ok"


# ---------------------------------------------------------------------------------------------
# Public per-video metrics
# ---------------------------------------------------------------------------------------------


def validity(
    video: torch.Tensor,
    config: SyntheticTaskConfig,
    thresholds: DetectorThresholds = DEFAULT_THRESHOLDS,
) -> tuple[bool, str]:
    """``(valid, reason)``: every frame has the same number (one of ``config.counts``) of
    compact, shape-like objects of plausible size, and little clutter. ``reason`` is ``"ok"``
    or the first failure found."""
    result = analyse(video, config, thresholds)
    return result.valid, result.reason


def detect_attributes(
    video: torch.Tensor,
    config: SyntheticTaskConfig,
    thresholds: DetectorThresholds = DEFAULT_THRESHOLDS,
) -> DetectedAttributes:
    """Read every attribute of ``video`` (best effort; check :func:`validity` too)."""
    return analyse(video, config, thresholds).attributes


def attribute_matches(attributes: DetectedAttributes, caption: Caption) -> dict[str, bool]:
    """Per attribute, whether ``attributes`` agree with ``caption`` (speed only when the
    caption names one)."""
    result = {
        "colour": attributes.colour == caption.colour,
        "background": attributes.background == caption.background,
        "shape": attributes.shape == caption.shape,
        "direction": attributes.direction == caption.direction,
        "count": attributes.count == caption.count,
    }
    if caption.speed is not None:
        result["speed"] = attributes.speed == caption.speed
    return result


def adherence(
    video: torch.Tensor,
    caption: Caption | str,
    config: SyntheticTaskConfig,
    thresholds: DetectorThresholds = DEFAULT_THRESHOLDS,
) -> dict[str, bool]:
    """Per attribute of ``caption``, whether ``video`` shows it (see :func:`all_correct`)."""
    return attribute_matches(detect_attributes(video, config, thresholds), _as_caption(caption))


def all_correct(
    video: torch.Tensor,
    caption: Caption | str,
    config: SyntheticTaskConfig,
    thresholds: DetectorThresholds = DEFAULT_THRESHOLDS,
) -> bool:
    """Valid and every attribute right: the task's headline score."""
    result = analyse(video, config, thresholds)
    matches = attribute_matches(result.attributes, _as_caption(caption))
    return result.valid and all(matches.values())


def temporal_consistency(
    video: torch.Tensor,
    config: SyntheticTaskConfig | None = None,
    thresholds: DetectorThresholds = DEFAULT_THRESHOLDS,
) -> dict[str, float]:
    """Pixel-level temporal metrics of ``video`` ``(3, F, H, W)`` (lower is smoother):

    - ``mean_change``: mean |x[t+1] - x[t]| over all values (VBench-style temporal flicker
      score before normalisation);
    - ``flicker``: mean |x[t+1] - 2 x[t] + x[t-1]| / 2, the high-frequency temporal energy
      (equals ``mean_change`` for a frame-alternating signal; 0 for linear intensity ramps);
    - ``jitter_px`` (only with ``config``): RMS distance of the objects' centre of mass from its
      straight-line fit (0 for ground truth; NaN when no object is found in two frames).
    """
    v = _check_video(video)
    if v.shape[1] < 3:
        raise ValueError(f"temporal_consistency needs >= 3 frames, got {v.shape[1]}")
    d1 = v[:, 1:] - v[:, :-1]
    d2 = d1[:, 1:] - d1[:, :-1]
    out = {"mean_change": float(d1.abs().mean()), "flicker": float(d2.abs().mean() / 2)}
    if config is not None:
        jitter = analyse(video, config, thresholds).attributes.jitter_px
        out["jitter_px"] = math.nan if jitter is None else jitter
    return out


def _pair(a: torch.Tensor, b: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    for arg, value in (("a", a), ("b", b)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(value).__name__}")
    if a.shape != b.shape:
        raise ValueError(f"{name}: a and b must have the same shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    if a.dim() not in (4, 5) or a.shape[-4] != 3:
        raise ValueError(f"{name}: videos must be (3, F, H, W) or (B, 3, F, H, W), got "
                         f"{tuple(a.shape)}")
    single = a.dim() == 4
    a = a.detach().to("cpu", torch.float64)
    b = b.detach().to("cpu", torch.float64)
    return (a[None], b[None], True) if single else (a, b, False)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = DATA_RANGE):
    """Peak signal-to-noise ratio in dB (inf when equal) of videos in [-1, 1]
    (:func:`asymrnr_lab.metrics.psnr_db` with peak ``data_range``): a float for ``(3, F, H, W)``, a
    ``(B,)`` tensor for batches."""
    a, b, single = _pair(a, b, "psnr")
    out = psnr_db(a, b, peak=data_range, per_sample=True)
    return float(out[0]) if single else out


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g /= g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = DATA_RANGE):
    """Structural similarity (Wang et al. 2004: 11 x 11 Gaussian window of std 1.5, K1 0.01,
    K2 0.03, valid windows only), per frame and channel, averaged. A float for
    ``(3, F, H, W)``, a ``(B,)`` tensor for batches. ``ssim(x, x) == 1``."""
    a, b, single = _pair(a, b, "ssim")
    bsz, c, f, h, w = a.shape
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(f"ssim needs frames of at least {SSIM_WINDOW} x {SSIM_WINDOW}, got "
                         f"{h} x {w}")
    win = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA)
    x = a.reshape(-1, 1, h, w)
    y = b.reshape(-1, 1, h, w)
    mu_x, mu_y = F.conv2d(x, win), F.conv2d(y, win)
    sxx = F.conv2d(x * x, win) - mu_x**2
    syy = F.conv2d(y * y, win) - mu_y**2
    sxy = F.conv2d(x * y, win) - mu_x * mu_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    out = s.reshape(bsz, -1).mean(1)
    return float(out[0]) if single else out


# ---------------------------------------------------------------------------------------------
# Aggregation
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SampleScore:
    """The scores of one sample."""

    caption: str
    valid: bool
    reason: str
    matches: dict[str, bool]
    all_correct: bool
    detected: DetectedAttributes
    temporal: dict[str, float]
    psnr: float | None = None
    ssim: float | None = None


@dataclass(frozen=True)
class QualityReport:
    """Percentages over a set of samples (``score_samples``).

    ``attribute_accuracy`` is over all samples (an attribute that could not be read counts as
    wrong); ``all_correct`` is the headline: valid and every attribute right.
    """

    num_samples: int
    valid: float
    all_correct: float
    attribute_accuracy: dict[str, float]
    temporal: dict[str, float]  # means over samples (jitter over samples where it is defined)
    psnr: float | None  # mean dB over samples (finite values only), with a reference
    ssim: float | None
    invalid_reasons: dict[str, int]  # reason kind -> samples
    samples: list[SampleScore] = field(repr=False)

    def to_dict(self, with_samples: bool = False) -> dict:
        """JSON-serialisable summary (optionally with every sample)."""
        out = {k: v for k, v in asdict(self).items() if k != "samples"}
        if with_samples:
            out["samples"] = [asdict(s) for s in self.samples]
        return out

    def summary(self) -> str:
        """One line per figure."""
        lines = [
            f"samples: {self.num_samples}",
            f"valid: {self.valid:.1f}%",
            f"valid and all attributes right: {self.all_correct:.1f}%",
            *(f"{k}: {v:.1f}%" for k, v in self.attribute_accuracy.items()),
            *(f"{k}: {v:.4g}" for k, v in self.temporal.items()),
        ]
        if self.psnr is not None:
            lines.append(f"psnr: {self.psnr:.2f} dB")
        if self.ssim is not None:
            lines.append(f"ssim: {self.ssim:.4f}")
        if self.invalid_reasons:
            lines.append(f"invalid: {self.invalid_reasons}")
        return "\n".join(lines)


def _reason_kind(reason: str) -> str:
    """Strip frame numbers and values from a validity reason, for counting."""
    text = reason.split(": ", 1)[-1] if reason.startswith("frame ") else reason
    for kind in ("no object", "objects (", "count changes", "clutter", "area", "shapeless"):
        if kind in text:
            return {"objects (": "wrong number of objects"}.get(kind, kind)
    return text


def score_samples(
    videos: torch.Tensor | Sequence[torch.Tensor],
    captions: Sequence[Caption | str],
    config: SyntheticTaskConfig,
    reference: torch.Tensor | Sequence[torch.Tensor] | None = None,
    thresholds: DetectorThresholds = DEFAULT_THRESHOLDS,
) -> QualityReport:
    """Score ``videos`` ``(B, 3, F, H, W)`` against their ``captions``; with ``reference``
    (e.g. the unaccelerated samples from the same noise) also PSNR and SSIM to it."""
    if isinstance(videos, torch.Tensor):
        if videos.dim() != 5:
            raise ValueError(f"videos must be (B, 3, F, H, W), got {tuple(videos.shape)}")
        videos = list(videos)
    if len(videos) != len(captions):
        raise ValueError(f"got {len(videos)} videos but {len(captions)} captions")
    if not videos:
        raise ValueError("score_samples needs at least one video")
    if reference is not None:
        reference = list(reference) if not isinstance(reference, list) else reference
        if len(reference) != len(videos):
            raise ValueError(f"got {len(videos)} videos but {len(reference)} reference videos")

    samples = []
    for i, (video, caption) in enumerate(zip(videos, captions)):
        caption = _as_caption(caption)
        result = analyse(video, config, thresholds)
        matches = attribute_matches(result.attributes, caption)
        temporal = temporal_consistency(video)
        temporal["jitter_px"] = (
            math.nan if result.attributes.jitter_px is None else result.attributes.jitter_px
        )
        p = s = None
        if reference is not None:
            p = psnr(video, reference[i])
            s = ssim(video, reference[i])
        samples.append(
            SampleScore(
                caption=caption.text,
                valid=result.valid,
                reason=result.reason,
                matches=matches,
                all_correct=result.valid and all(matches.values()),
                detected=result.attributes,
                temporal=temporal,
                psnr=p,
                ssim=s,
            )
        )

    n = len(samples)

    def pct(k: int) -> float:
        return 100.0 * k / n

    attrs = [a for a in ATTRIBUTES if any(a in s.matches for s in samples)]
    temporal_means = {}
    for key in samples[0].temporal:
        vals = [s.temporal[key] for s in samples if not math.isnan(s.temporal[key])]
        temporal_means[key] = sum(vals) / len(vals) if vals else math.nan
    finite_psnr = [s.psnr for s in samples if s.psnr is not None and math.isfinite(s.psnr)]
    reasons = Counter(_reason_kind(s.reason) for s in samples if not s.valid)
    return QualityReport(
        num_samples=n,
        valid=pct(sum(s.valid for s in samples)),
        all_correct=pct(sum(s.all_correct for s in samples)),
        attribute_accuracy={
            a: pct(sum(s.matches.get(a, False) for s in samples)) for a in attrs
        },
        temporal=temporal_means,
        psnr=(sum(finite_psnr) / len(finite_psnr) if finite_psnr else
              (math.inf if reference is not None else None)),
        ssim=None if reference is None else sum(s.ssim for s in samples) / n,
        invalid_reasons=dict(reasons),
        samples=samples,
    )
