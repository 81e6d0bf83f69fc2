"""A procedural text-to-video task whose quality can be scored exactly.

Videos show flat-coloured shapes moving in a straight line on a plain background; captions name
every attribute (``"a red circle moving left on a black background"``) and become token ids
through a small fixed :class:`Vocabulary` (no external text encoder). :mod:`.quality` scores
generated videos from their pixels: validity, per-attribute prompt adherence, temporal
consistency and fidelity (PSNR, SSIM) to a reference sample.

Typical use::

    config = SyntheticTaskConfig()                  # 96 captions, 8 x 32 x 32 RGB in [-1, 1]
    videos, ids, captions = sample_batch(32, config, torch.Generator().manual_seed(0))
    report = score_samples(generated, captions, config, reference=unaccelerated)
    print(report.summary())
"""

from __future__ import annotations

from asymrnr_lab.synthetic.config import (
    COUNT_WORDS,
    DIRECTIONS,
    PALETTE,
    SHAPES,
    SPEEDS,
    Caption,
    SyntheticTaskConfig,
    all_captions,
    iter_captions,
)
from asymrnr_lab.synthetic.quality import (
    DEFAULT_THRESHOLDS,
    DetectedAttributes,
    DetectorThresholds,
    QualityReport,
    SampleScore,
    VideoAnalysis,
    adherence,
    all_correct,
    analyse,
    detect_attributes,
    label_components,
    psnr,
    score_samples,
    ssim,
    temporal_consistency,
    validity,
)
from asymrnr_lab.synthetic.render import layout, render_video, sample_batch
from asymrnr_lab.synthetic.vocab import Vocabulary

__all__ = [
    "COUNT_WORDS",
    "DEFAULT_THRESHOLDS",
    "DIRECTIONS",
    "PALETTE",
    "SHAPES",
    "SPEEDS",
    "Caption",
    "DetectedAttributes",
    "DetectorThresholds",
    "QualityReport",
    "SampleScore",
    "SyntheticTaskConfig",
    "VideoAnalysis",
    "Vocabulary",
    "adherence",
    "all_captions",
    "all_correct",
    "analyse",
    "detect_attributes",
    "iter_captions",
    "label_components",
    "layout",
    "psnr",
    "render_video",
    "sample_batch",
    "score_samples",
    "ssim",
    "temporal_consistency",
    "validity",
]
