"""The documents and the package speak of the project, not of how the work on it went.

Results name their machine by its CPU or GPU model, their command and, in RESULTS.md, the date
of the measurement; they do not refer to tracker numbers, to who had which machine when, or to
throwaway scripts. This scans the prose a user reads (README.md, docs/*.md,
benchmarks/RESULTS.md) and the package's strings, docstrings and comments for such words.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: Case-insensitive patterns of words about the working process rather than the project.
BANNED = (
    r"\bissue \d+",
    r"\bthis cpu\b",
    r"\blent\b",
    r"\bborrowed\b",
    r"\bsessions?\b",
    r"device time",
    r"scratch script",
    r"\bscratch (run|harness|patch|profile|hooks)\b",
    r"\bthis machine image\b",
    r"\bnew today\b",
    r"\bsame evening\b",
)
PATTERN = re.compile("|".join(f"(?:{p})" for p in BANNED), re.IGNORECASE)


def _files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "benchmarks" / "RESULTS.md"]
    files += sorted((ROOT / "docs").glob("*.md"))
    files += [ROOT / "lab" / "README.md"]
    files += sorted((ROOT / "asymrnr_compile").rglob("*.py"))
    files += sorted((ROOT / "lab" / "asymrnr_lab").rglob("*.py"))
    return [path for path in files if path.is_file()]


def offending_lines(path: Path) -> list[str]:
    """``file:line: text`` for every line of ``path`` that uses a banned word."""
    found = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        match = PATTERN.search(line)
        if match:
            name = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
            found.append(f"{name}:{number}: {match.group(0)!r} in {line.strip()[:120]}")
    return found


def test_the_scan_finds_what_it_bans(tmp_path):
    sample = tmp_path / "sample.md"
    sample.write_text("fine\nAgainst issue 16's targets\nnot measured: none lent\nOn this CPU\n"
                      "a scratch script\nthe device time ran out\na second session\ntraining from scratch\n")
    flagged = [int(hit.split(":")[1]) for hit in offending_lines(sample)]
    assert flagged == [2, 3, 4, 5, 6, 7]
    assert offending_lines(sample)[0].startswith(f"{sample}:2: 'issue 16'")


def test_the_scan_covers_the_documents_and_the_package():
    names = {path.relative_to(ROOT).as_posix() for path in _files()}
    assert {"README.md", "benchmarks/RESULTS.md", "asymrnr_compile/__init__.py"} <= names
    assert any(name.startswith("docs/") for name in names)


@pytest.mark.parametrize("path", _files(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_no_words_about_the_working_process(path):
    found = offending_lines(path)
    assert not found, "words about the working process, not the project:\n" + "\n".join(found)
