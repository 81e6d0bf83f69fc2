"""Validation of the quality detectors: accuracy on ground truth and on each corruption.

``python -m asymrnr_lab.synthetic.validate [--seeds 4] [--counts 1 2] [--speeds ...]
[--json out.json]`` prints one row per video kind (ground truth, then every corruption of
:data:`~asymrnr_lab.synthetic.corrupt.CORRUPTIONS`): validity, each attribute's accuracy,
"valid and all right", and the temporal metrics, over every caption x seed.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence

import torch

from asymrnr_lab.synthetic.config import Caption, SyntheticTaskConfig, all_captions
from asymrnr_lab.synthetic.corrupt import CORRUPTIONS
from asymrnr_lab.synthetic.quality import QualityReport, score_samples
from asymrnr_lab.synthetic.render import render_video

Renderer = Callable[[Caption, SyntheticTaskConfig, int], torch.Tensor]


def score_kind(
    render: Renderer, config: SyntheticTaskConfig, seeds: Sequence[int],
    captions: Sequence[Caption] | None = None,
) -> QualityReport:
    """Score ``render(caption, config, seed)`` for every caption x seed against the caption."""
    captions = list(captions) if captions is not None else all_captions(config)
    pairs = [(c, s) for c in captions for s in seeds]
    videos = torch.stack([render(c, config, s) for c, s in pairs])
    return score_samples(videos, [c for c, _ in pairs], config)


def applicable(name: str, config: SyntheticTaskConfig) -> bool:
    """Whether corruption ``name`` can be made under ``config``."""
    if name == "extra_object":
        return max(config.counts) == 1  # count 2 -> 3 objects do not fit the frame
    if name == "perpendicular_motion":
        return any(d in config.directions for d in ("up", "down")) and any(
            d in config.directions for d in ("left", "right")
        )
    needs_two = {"wrong_colour": "colours", "wrong_background": "backgrounds",
                 "wrong_shape": "shapes"}
    return name not in needs_two or len(getattr(config, needs_two[name])) > 1


def detector_table(
    config: SyntheticTaskConfig, seeds: Sequence[int] = (0, 1, 2, 3)
) -> dict[str, dict]:
    """Kind -> summary (``QualityReport.to_dict()``) for ground truth and every corruption."""
    rows = {"ground_truth": score_kind(render_video, config, seeds).to_dict()}
    for name, (render, _) in CORRUPTIONS.items():
        if applicable(name, config):
            rows[name] = score_kind(render, config, seeds).to_dict()
    return rows


def format_table(rows: dict[str, dict]) -> str:
    """A markdown table of :func:`detector_table`'s rows (percentages; temporal means)."""
    attrs = list(next(iter(rows.values()))["attribute_accuracy"])
    head = ["video", "valid", *attrs, "all right", "change", "flicker", "jitter px"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        t = r["temporal"]
        jitter = "n/a" if math.isnan(t["jitter_px"]) else f"{t['jitter_px']:.2f}"
        cells = [
            name, f"{r['valid']:.1f}", *(f"{r['attribute_accuracy'][a]:.1f}" for a in attrs),
            f"{r['all_correct']:.1f}", f"{t['mean_change']:.4f}", f"{t['flicker']:.4f}", jitter,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4, help="seeds per caption (default 4)")
    parser.add_argument("--counts", type=int, nargs="+", default=None)
    parser.add_argument("--speeds", nargs="+", default=None)
    parser.add_argument("--shapes", nargs="+", default=None)
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    overrides = {k: tuple(v) for k, v in
                 (("counts", args.counts), ("speeds", args.speeds), ("shapes", args.shapes))
                 if v is not None}
    config = SyntheticTaskConfig(**overrides)
    # Thousands of ops on tiny tensors: one thread avoids OpenMP hand-off costs, which dominate
    # on a busy machine (this is the process's own entry point, so the setting is ours).
    torch.set_num_threads(1)
    start = time.perf_counter()
    rows = detector_table(config, seeds=range(args.seeds))
    print(f"{config}\n{config.num_captions} captions x {args.seeds} seeds per row, "
          f"{time.perf_counter() - start:.1f} s\n")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
