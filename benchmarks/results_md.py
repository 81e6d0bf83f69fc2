"""Replace one generated section of ``benchmarks/RESULTS.md``, leaving the rest as it is.

Each generating script owns the text between its two markers ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->``; the section is appended at the end of the file the first time.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def markers(name: str) -> tuple[str, str]:
    """The begin and end markers of section ``name``."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_section(name: str, body: str, path: Path = RESULTS) -> Path:
    """Write ``body`` between the markers of ``name`` in ``path`` (appending them if absent)."""
    begin, end = markers(name)
    text = path.read_text() if path.is_file() else "# Benchmark results\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
    return path
