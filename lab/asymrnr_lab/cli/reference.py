"""The command-line reference, docs/cli.md, written from the argparse parsers.

``python -m asymrnr_lab.cli.reference > docs/cli.md`` regenerates it; a test checks that the
file equals what this module writes, so the page cannot drift from ``asymrnr-compile --help``.
The help is formatted at a fixed width, so the page does not depend on the terminal.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager

#: Columns the help text is wrapped to (argparse reads ``COLUMNS``).
WIDTH = 100

HEADER = """\
# Command line

`asymrnr-compile` (also `python -m asymrnr_lab`) has three commands: `demo`, `profile` and
`train`. This page is the `--help` text of each, written by
`python -m asymrnr_lab.cli.reference > docs/cli.md` (a test checks that it is current). Long
steps (compiling, sampling, training, profiling) show their progress on stderr
(`label: steps k/n, elapsed s`).
"""


@contextmanager
def _columns(width: int) -> Iterator[None]:
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The parser's subcommands by name, in the order they were added."""
    actions = [action for action in parser._actions if isinstance(action, argparse._SubParsersAction)]
    return dict(actions[0].choices) if actions else {}


def render() -> str:
    """docs/cli.md: a header, then each parser's help text in a text block."""
    from asymrnr_lab.cli import build_parser

    with _columns(WIDTH):
        parser = build_parser()
        sections = [("asymrnr-compile --help", parser.format_help())]
        sections += [(f"asymrnr-compile {name} --help", sub.format_help())
                     for name, sub in subcommands(parser).items()]
    parts = [HEADER]
    for title, text in sections:
        parts.append(f"\n## `{title}`\n\n```text\n{text.rstrip()}\n```\n")
    return "".join(parts)


if __name__ == "__main__":
    print(render(), end="")
