"""Quality of accelerated sampling on the trained text-to-video model, and pictures of it.

:func:`compare_variants` samples the same captions from the same noise with the unaccelerated
transformer and with each accelerated variant (e.g. asymrnr with matched reduction, a plain
token-dropping baseline at the same attention FLOPs, or one of diffusers' cache hooks: any
:class:`~asymrnr_lab.synthetic.accelerators.Accelerator`), then scores every variant's videos with
:func:`~asymrnr_lab.synthetic.quality.score_samples`: prompt adherence from the pixels, and
PSNR / SSIM against the unaccelerated videos. :func:`write_comparison_strip` and
:func:`write_comparison_gif` draw one prompt's variants (PNG: one row per variant, top to
bottom, frames left to right and numbered; GIF: the variants left to right, the frame number
above), with the caption in the picture (needs Pillow, part of the ``report`` extra).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from asymrnr_compile.config import AsymRnRConfig
from asymrnr_lab.sampling import SamplerConfig
from asymrnr_lab.synthetic.accelerators import Accelerator, AsymRnR, Eager, PlainInductor
from asymrnr_lab.synthetic.config import Caption, SyntheticTaskConfig
from asymrnr_lab.synthetic.generate import EVAL_SAMPLER, generate_videos
from asymrnr_lab.synthetic.model import TextToVideoDiT
from asymrnr_lab.synthetic.quality import QualityReport, score_samples

#: Name of the unaccelerated variant every other variant is compared with.
REFERENCE_VARIANT = "unaccelerated"

#: Pixels per video pixel in the written pictures (32 x 32 frames become 128 x 128).
PICTURE_SCALE = 4
#: Height in pixels of the label band above each video in the pictures.
LABEL_HEIGHT_PX = 14
#: Milliseconds per frame of the animated GIFs.
GIF_FRAME_MS = 150


@dataclass
class VariantQuality:
    """One variant's videos, scores and sampling time."""

    name: str
    videos: torch.Tensor = field(repr=False)
    report: QualityReport
    seconds: float
    backend_report: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"variant": self.name, "seconds": round(self.seconds, 3), **self.report.to_dict()}
        if self.backend_report is not None:
            out["ideal_speedup"] = self.backend_report["ideal_speedup"]
            out["matching_cache_misses"] = self.backend_report["cache_misses"]
            out["compiled_variants"] = self.backend_report["num_variants"]
        return out


@dataclass
class QualityComparison:
    """Every variant on the same captions and noise seeds (see :func:`compare_variants`)."""

    captions: list[Caption]
    seeds: list[int]
    variants: dict[str, VariantQuality]

    def adherence_drop(self, name: str) -> float:
        """Points of "valid and all attributes right" lost against the unaccelerated variant."""
        return self.variants[REFERENCE_VARIANT].report.all_correct - self.variants[name].report.all_correct

    def table(self, seconds: bool = True) -> str:
        """One row per variant; ``seconds=False`` leaves out the sampling-time column (when the
        variants were not timed on equal footing, e.g. one of them compiled and the other eager)."""
        width = max(24, *(len(name) + 2 for name in self.variants))
        lines = [f"{'variant':<{width}}{'all right':>10}{'valid':>8}{'PSNR dB':>9}{'SSIM':>7}"
                 + (f"{'seconds':>9}" if seconds else "")]
        for name, v in self.variants.items():
            psnr = "" if v.report.psnr is None else f"{v.report.psnr:.2f}"
            ssim = "" if v.report.ssim is None else f"{v.report.ssim:.3f}"
            lines.append(f"{name:<{width}}{v.report.all_correct:>9.1f}%{v.report.valid:>7.1f}%{psnr:>9}{ssim:>7}"
                         + (f"{v.seconds:>9.1f}" if seconds else ""))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": len(self.captions),
            "seeds": sorted(set(self.seeds)),
            "variants": [v.to_dict() for v in self.variants.values()],
        }


def compare_variants(
    model: TextToVideoDiT,
    task: SyntheticTaskConfig,
    captions: Sequence[Caption],
    seeds: Sequence[int],
    configs: Mapping[str, AsymRnRConfig | Accelerator],
    sampler: SamplerConfig = EVAL_SAMPLER,
    *,
    batch_size: int = 32,
    compile_reference: bool = True,
    log: Callable[[str], None] = print,
    on_step: Callable[[str, int, int], None] | None = None,
    on_variant: Callable[[str], None] | None = None,
) -> QualityComparison:
    """Sample ``captions`` x noise ``seeds`` with the unaccelerated model and every config.

    Args:
        model: the trained model (e.g. from :func:`load_trained_model`).
        task: the task it was trained on (gives shapes and the detectors' geometry).
        captions, seeds: one noise seed per caption.
        configs: variant name -> asymrnr configuration (run as
            ``torch.compile(model.transformer, backend=AsymRnRBackend(config))``) or any
            :class:`~asymrnr_lab.synthetic.accelerators.Accelerator` (e.g. a diffusers cache
            hook, :func:`~asymrnr_lab.synthetic.accelerators.first_block_cache`); an
            accelerator's ``reset()`` runs before every batch.
        sampler: steps, guidance, CFG pattern (default
            :data:`~asymrnr_lab.synthetic.generate.EVAL_SAMPLER`: 20 Euler steps, guidance 2).
        batch_size: captions per sampler call.
        compile_reference: compile the unaccelerated transformer with plain Inductor (True) or
            run it eagerly (False: no compile time; the same math).
        log: progress lines.
        on_step: called as ``on_step(variant, step, steps)`` after every sampler step (progress
            display; ``step`` restarts at 0 with every batch).
        on_variant: called with a variant's name just before it starts sampling (compiling
            included).

    Returns:
        Scores of each variant; the accelerated ones also carry PSNR/SSIM against the
        unaccelerated videos.
    """
    if REFERENCE_VARIANT in configs:
        raise ValueError(f"configs must not use the reserved name {REFERENCE_VARIANT!r}")
    captions, seeds = list(captions), list(seeds)
    accelerators: dict[str, Accelerator] = {REFERENCE_VARIANT: PlainInductor() if compile_reference else Eager()}
    for name, config in configs.items():
        accelerators[name] = AsymRnR(config) if isinstance(config, AsymRnRConfig) else config

    results: dict[str, VariantQuality] = {}
    reference_videos = None
    for name, accelerator in accelerators.items():
        log(f"sampling {len(captions)} videos: {name}")
        # Every variant compiles the same forward; without a reset, Dynamo's recompile limit
        # (torch._dynamo.config.recompile_limit, 8) silently runs the 9th and later ones eagerly.
        torch._dynamo.reset()
        if on_variant is not None:
            on_variant(name)
        start = time.perf_counter()
        transformer = accelerator.build(model)
        transformer.reset()

        def batch_done(done: int, total: int, transformer=transformer) -> None:
            log(f"  {done}/{total}")
            transformer.reset()

        videos = generate_videos(
            model, captions, seeds, task, sampler, transformer=transformer, batch_size=batch_size,
            on_batch=batch_done,
            on_step=None if on_step is None else (lambda step, steps, name=name: on_step(name, step, steps)),
        )
        seconds = time.perf_counter() - start
        backend = transformer.backend
        if backend is not None and not backend.report().graphs:
            raise RuntimeError(f"variant {name!r}: the asymrnr backend was never called (Dynamo ran the "
                               "transformer without it), so its videos would be the unaccelerated ones")
        report = score_samples(videos, captions, task, reference=reference_videos)
        if reference_videos is None:
            reference_videos = videos
        results[name] = VariantQuality(name, videos, report, seconds,
                                       None if backend is None else backend.report().to_dict())
    return QualityComparison(captions, seeds, results)


def _frames_to_uint8(video: torch.Tensor) -> torch.Tensor:
    """``(3, F, H, W)`` in [-1, 1] -> ``(F, H * s, W * s, 3)`` uint8, upscaled by nearest."""
    pixels = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    pixels = pixels.repeat_interleave(PICTURE_SCALE, dim=2).repeat_interleave(PICTURE_SCALE, dim=3)
    return pixels.permute(1, 2, 3, 0).contiguous()


#: Pixels between two words of a drawn label: PIL's default bitmap font draws a space so narrow
#: after some letters that "left on" reads "lefton".
WORD_GAP_PX = 5


def draw_words(draw: Any, xy: tuple[int, int], text: str, fill: str) -> None:
    """Draw ``text`` at ``xy`` word by word, :data:`WORD_GAP_PX` apart."""
    x, y = xy
    for word in text.split():
        draw.text((x, y), word, fill=fill)
        x += int(draw.textlength(word)) + WORD_GAP_PX


def _header(canvas, lines: list[str]) -> None:
    """Draw ``lines`` (one per :data:`LABEL_HEIGHT_PX` band) at the top of ``canvas``."""
    from PIL import ImageDraw

    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(lines):
        draw_words(draw, (2, i * LABEL_HEIGHT_PX + 1), line, fill="white")


def _labelled_row(videos: dict[str, torch.Tensor], frame: int, caption: str | None = None):
    """One frame of every variant side by side, each under its name, under a header (a PIL image):
    the caption (if given) and ``frame k/F`` (1-based)."""
    from PIL import Image, ImageDraw

    tiles = {name: _frames_to_uint8(video)[frame] for name, video in videos.items()}
    num_frames = next(iter(videos.values())).shape[1]
    header = [caption] if caption else []
    header.append(f"frame {frame + 1}/{num_frames}")
    top = len(header) * LABEL_HEIGHT_PX
    height, width = next(iter(tiles.values())).shape[:2]
    gap = PICTURE_SCALE
    canvas = Image.new("RGB", (len(tiles) * (width + gap) - gap, top + height + LABEL_HEIGHT_PX), "gray")
    _header(canvas, header)
    draw = ImageDraw.Draw(canvas)
    for i, (name, tile) in enumerate(tiles.items()):
        x = i * (width + gap)
        canvas.paste(Image.fromarray(tile.numpy()), (x, top + LABEL_HEIGHT_PX))
        draw_words(draw, (x + 2, top + 1), name, fill="white")
    return canvas


def write_comparison_gif(videos: dict[str, torch.Tensor], path: str | Path, caption: str | None = None) -> Path:
    """Animated GIF: the variants' ``(3, F, H, W)`` videos side by side, left to right in the order
    of ``videos``, each under its name; above them the caption (if given) and the frame number."""
    frames = [_labelled_row(videos, f, caption) for f in range(next(iter(videos.values())).shape[1])]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=GIF_FRAME_MS, loop=0)
    return path


def write_comparison_strip(videos: dict[str, torch.Tensor], path: str | Path, caption: str | None = None) -> Path:
    """PNG: one row per variant, top to bottom in the order of ``videos`` (its name above it), its
    frames left to right; above the rows the caption (if given) and a ``frame k`` (1-based) over
    each column."""
    from PIL import Image, ImageDraw

    tiles = {name: _frames_to_uint8(video) for name, video in videos.items()}
    frames, height, width = next(iter(tiles.values())).shape[:3]
    gap = PICTURE_SCALE
    row_height = LABEL_HEIGHT_PX + height
    header = 2 * LABEL_HEIGHT_PX if caption else LABEL_HEIGHT_PX
    strip = Image.new("RGB", (frames * (width + gap) - gap, header + len(tiles) * row_height), "gray")
    _header(strip, [caption] if caption else [])
    draw = ImageDraw.Draw(strip)
    for f in range(frames):
        draw.text((f * (width + gap) + 2, header - LABEL_HEIGHT_PX + 1), f"frame {f + 1}", fill="yellow")
    for row, (name, video) in enumerate(tiles.items()):
        top = header + row * row_height
        draw_words(draw, (2, top + 1), name, fill="white")
        for f in range(frames):
            strip.paste(Image.fromarray(video[f].numpy()), (f * (width + gap), top + LABEL_HEIGHT_PX))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    strip.save(path)
    return path
