"""A fixed-width text table of attention sites, for reports and the command line."""

from __future__ import annotations

from collections.abc import Sequence

from asymrnr_compile.analysis.site import AttentionSite

#: Column titles of :func:`describe`, in order; the last column (reason) is not padded.
COLUMNS: tuple[str, ...] = (
    "#", "site", "kind", "text", "video", "grid", "features", "reducible", "reason",
)


def _text(site: AttentionSite) -> str:
    if site.kind != "joint" or site.text_position is None:
        return "-"
    length = "?" if site.text_tokens is None else str(site.text_tokens)
    return f"{site.text_position}:{length}"


def _row(site: AttentionSite) -> tuple[str, ...]:
    return (
        str(site.index),
        site.name,
        site.kind,
        _text(site),
        "-" if site.video_tokens is None else str(site.video_tokens),
        "-" if site.grid is None else "x".join(str(g) for g in site.grid),
        ",".join(site.features) or "-",
        "yes" if site.reducible else "no",
        site.reason or "",
    )


def describe(sites: Sequence[AttentionSite]) -> str:
    """One line per site: index, name, kind, text position:length (``?`` when symbolic),
    video tokens, grid ``FxHxW``, reducible features, reducible, reason.

    Example (diffusers' small CogVideoX test config)::

        #  site                        kind   text     video  grid   features  reducible  reason
        0  transformer_blocks.0.attn1  joint  first:8  16     1x4x4  q,kv,h    yes
    """
    rows = [COLUMNS] + [_row(site) for site in sites]
    widths = [max(len(row[c]) for row in rows) for c in range(len(COLUMNS) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths)] + [row[-1]]
        lines.append("  ".join(cells).rstrip())
    if not sites:
        lines.append("(no attention sites)")
    return "\n".join(lines)
