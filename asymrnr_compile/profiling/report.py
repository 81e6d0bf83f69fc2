"""Redundancy reports: ``report.json``, ``report.md`` and site x step heatmaps per feature.

Written by ``asymrnr-compile profile`` from a :class:`~asymrnr_compile.profiling.profiler.RedundancyProfile`
(paper Sec. 3.4: redundancy varies by block, step and feature). The quantity shown everywhere
is the mean *normalised nearest-destination distance* of the source tokens
(:mod:`asymrnr_compile.ops.redundancy`): 0 = every source token duplicates a destination token
(highly redundant, safe to reduce), about 1 = no more alike than random tokens (not redundant).

Heatmaps need matplotlib (the ``report`` extra: ``pip install -e .[report]``); it is imported
only here, when drawing, with the non-interactive Agg backend.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from asymrnr_compile.plan.schedule import Schedule
    from asymrnr_compile.profiling.profiler import RedundancyProfile

HIGH_LOW_COUNT = 5
"""How many (site, step, feature) cells report.md lists as most and least redundant."""


def _fmt(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def write_heatmaps(profile: RedundancyProfile, out_dir: Path, stat: str = "mean", label: str = "") -> list[Path]:
    """One PNG per feature, ``heatmap_<feature>.png``: sites (rows) x steps (columns) of ``stat``."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    values = profile.stat(stat)  # (sites, steps, features)
    paths = []
    for f_index, feature in enumerate(profile.features):
        grid = values[:, :, f_index].numpy()
        finite = values[:, :, f_index][~torch.isnan(values[:, :, f_index])]
        if not finite.numel():
            continue
        # Each feature on its own colour scale (the colour bar gives the values): the differences
        # between sites and steps are what the map is for.
        vmin, vmax = float(finite.min()), float(finite.max())
        height = max(2.5, 0.35 * len(profile.sites) + 1.5)
        fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * profile.num_steps + 2.5), height))
        image = ax.imshow(grid, aspect="auto", cmap="viridis_r", vmin=vmin, vmax=max(vmax, vmin + 1e-9),
                          interpolation="nearest")
        ax.set_xlabel("denoising step")
        ax.set_ylabel("attention site")
        ax.set_yticks(range(len(profile.sites)), [s.name for s in profile.sites], fontsize=7)
        ax.set_xticks(range(profile.num_steps))
        ax.set_title(f"{feature}: nearest-destination distance ({stat}, normalised)\n"
                     f"brighter = smaller distance = more redundant{label}", fontsize=9)
        fig.colorbar(image, ax=ax, label="normalised distance")
        fig.tight_layout()
        path = out_dir / f"heatmap_{feature}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


def markdown_report(profile: RedundancyProfile, *, title: str, schedule: Schedule | None = None,
                    predicted_speedup: float | None = None, notes: list[str] | None = None) -> str:
    """The readable summary: settings, the site table, where redundancy is high and low."""
    mean = profile.stat("mean")  # (sites, steps, features)
    lines = [f"# {title}", ""]
    lines += [f"- {note}" for note in (notes or [])]
    lines += [(f"- {len(profile.sites)} profiled attention sites in {profile.num_rows} schedule rows, "
               f"{profile.num_steps} steps; similarity `{profile.config.similarity}`, dst_stride "
               f"{tuple(profile.config.dst_stride)}, seed {profile.config.seed}"),
              ("- Values: mean normalised distance of source tokens to their nearest destination token "
               "(0 = duplicates, most redundant; ~1 = unrelated tokens). Averaged over batch, heads and the "
               "calls of a step."), ""]
    lines += ["## Sites", "", "| site | row | kind | video tokens | grid | N_dst | "
              + " | ".join(f"{f} mean (min..max over steps)" for f in profile.features) + " |",
              "|---|---|---|---|---|---|" + "---|" * len(profile.features)]
    for position, site in enumerate(profile.sites):
        cells = []
        for f_index in range(len(profile.features)):
            series = mean[position, :, f_index]
            if bool(torch.isnan(series).all()):
                cells.append("-")
                continue
            cells.append(f"{float(series.nanmean()):.3f} ({float(series.nan_to_num(math.inf).min()):.3f}.."
                         f"{float(series.nan_to_num(-math.inf).max()):.3f})")
        grid = "x".join(map(str, site.grid)) if site.grid else "-"
        lines.append(f"| {site.name} | {site.row} | {site.kind} | {site.video_tokens} | {grid} | {site.num_dst} | "
                     + " | ".join(cells) + " |")
    cells = []
    for position, site in enumerate(profile.sites):
        for step in range(profile.num_steps):
            for f_index, feature in enumerate(profile.features):
                value = float(mean[position, step, f_index])
                if not math.isnan(value):
                    cells.append((value, site.name, step, feature))
    cells.sort()
    for heading, chosen in (("Most redundant (smallest distance)", cells[:HIGH_LOW_COUNT]),
                            ("Least redundant (largest distance)", cells[::-1][:HIGH_LOW_COUNT])):
        lines += ["", f"## {heading}", "", "| site | step | feature | distance |", "|---|---|---|---|"]
        lines += [f"| {name} | {step} | {feature} | {value:.3f} |" for value, name, step, feature in chosen]
    lines += ["", "## By step (mean over sites)", "", "| step | " + " | ".join(profile.features) + " |",
              "|---|" + "---|" * len(profile.features)]
    for step in range(profile.num_steps):
        lines.append(f"| {step} | " + " | ".join(_fmt(float(mean[:, step, f].nanmean()))
                                                 for f in range(len(profile.features))) + " |")
    lines += ["", "## By feature", ""]
    for f_index, feature in enumerate(profile.features):
        series = mean[:, :, f_index]
        if bool(torch.isnan(series).all()):
            continue
        lines.append(f"- `{feature}`: mean {float(series.nanmean()):.3f}, "
                     f"spread over sites {float(series.nanmean(1).nan_to_num(math.inf).min()):.3f}.."
                     f"{float(series.nanmean(1).nan_to_num(-math.inf).max()):.3f}, over steps "
                     f"{float(series.nanmean(0).nan_to_num(math.inf).min()):.3f}.."
                     f"{float(series.nanmean(0).nan_to_num(-math.inf).max()):.3f}")
    lines += _error_section(profile)
    if schedule is not None:
        lines += ["", "## Schedule (schedule.safetensors)", ""]
        if predicted_speedup is not None:
            lines.append(f"- predicted speedup (cost model, FLOPs full / reduced): {predicted_speedup:.3f}x")
        lines.append(f"- source: {schedule.source}")
        for feature in ("q", "kv", "h"):
            ratios = schedule.ratios(feature)
            lines.append(f"- `{feature}`: mean ratio {float(ratios.mean()):.3f}, reduced in "
                         f"{int((ratios > 0).sum())} of {ratios.numel()} (row, step) cells")
        lines += ["", "Ratios per (row, step), q / kv:", "", "| row | " + " | ".join(str(s) for s in
                                                                                range(schedule.num_steps)) + " |",
                  "|---|" + "---|" * schedule.num_steps]
        q, kv = schedule.ratios("q"), schedule.ratios("kv")
        for row in range(schedule.num_blocks):
            lines.append(f"| {row} | " + " | ".join(f"{float(q[row, s]):.1f}/{float(kv[row, s]):.1f}"
                                                    for s in range(schedule.num_steps)) + " |")
    if profile.skipped:
        lines += ["", "## Not profiled", ""] + [f"- {s['site']}: {s['reason']}" for s in profile.skipped]
    return "\n".join(lines) + "\n"


def _error_section(profile: RedundancyProfile) -> list[str]:
    """Per site, the measured output error of q and kv reduction (mean over steps), if recorded."""
    error_ratios = getattr(profile, "error_ratios", ())
    if not error_ratios:
        return []
    columns = [(reduction, feature, ratio) for reduction, feature in (("q", "q"), ("kv", "v"))
               for ratio in error_ratios]
    lines = ["", "## Output error (measured)", "",
             "Relative L2 error of the attention output's video rows when the reduction runs at that "
             "ratio with the profiled matching (q: dropped rows copy their stand-in; kv: fewer keys), "
             "mean over steps: the damage to this call's output itself, where the distance is a proxy for it.", "",
             "| site | " + " | ".join(f"{r} @{ratio:g}" for r, _, ratio in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for position, site in enumerate(profile.sites):
        cells = []
        for _, feature, ratio in columns:
            values = profile.stat(f"error@{ratio:g}")[position, :, profile.features.index(feature)]
            cells.append(_fmt(float(values.nanmean())) if not bool(torch.isnan(values).all()) else "-")
        lines.append(f"| {site.name} | " + " | ".join(cells) + " |")
    return lines


def write_report(profile: RedundancyProfile, out_dir: str | Path, *, title: str = "Redundancy profile",
                 schedule: Schedule | None = None, predicted_speedup: float | None = None,
                 notes: list[str] | None = None,
                 extra: dict[str, Any] | None = None, heatmaps: bool = True) -> dict[str, Any]:
    """Write ``report.json``, ``report.md``, ``heatmap_<feature>.png`` (and ``schedule.safetensors``
    when a schedule is given) into ``out_dir`` (created). Returns ``{what: path}``; heatmaps are
    skipped with a note when matplotlib is missing."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {}
    data = {"title": title, "notes": notes or [], **(extra or {}), **profile.to_dict()}
    if schedule is not None:
        schedule.save(out / "schedule.safetensors")
        written["schedule"] = out / "schedule.safetensors"
        data["schedule"] = {**schedule.to_dict(), "predicted_speedup": predicted_speedup}
    (out / "report.json").write_text(json.dumps(data, indent=1))
    written["json"] = out / "report.json"
    (out / "report.md").write_text(markdown_report(profile, title=title, schedule=schedule,
                                                   predicted_speedup=predicted_speedup, notes=notes))
    written["markdown"] = out / "report.md"
    if heatmaps:
        try:
            written["heatmaps"] = write_heatmaps(profile, out)
        except ImportError:
            written["heatmaps"] = []
            written["heatmaps_skipped"] = "matplotlib is not installed (pip install -e '.[report]')"
    return written
