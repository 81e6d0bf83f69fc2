"""The command line's text progress (stderr): step k/n and elapsed seconds."""

from __future__ import annotations

import io
import re

from asymrnr_lab.cli import progress as progress_module
from asymrnr_lab.cli.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


LINE = re.compile(r"^compiling: steps (\d+)/4, (\d+\.\d) s$")


def test_plain_output_writes_the_first_and_last_step_and_throttles_the_rest(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(progress_module, "PLAIN_INTERVAL_S", 3600.0)
    bar = Progress("compiling", 4, stream=stream)
    for done in range(1, 5):
        bar.update(done)
    lines = stream.getvalue().splitlines()
    assert [LINE.match(line).group(1) for line in lines] == ["1", "4"]
    assert bar.closed
    bar.update(4)  # after the end: nothing more
    assert stream.getvalue().splitlines() == lines


def test_plain_output_writes_every_step_when_steps_are_slow(monkeypatch):
    stream = io.StringIO()
    monkeypatch.setattr(progress_module, "PLAIN_INTERVAL_S", 0.0)
    with Progress("compiling", 4, stream=stream) as bar:
        for done in range(1, 5):
            bar.update(done)
    assert [LINE.match(line).group(1) for line in stream.getvalue().splitlines()] == ["1", "2", "3", "4"]


def test_elapsed_seconds_are_shown(monkeypatch):
    clock = iter([100.0, 112.34, 112.34, 130.0, 130.0])
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: next(clock))
    stream = io.StringIO()
    bar = Progress("compiling", 4, stream=stream)
    bar.update(1)
    assert stream.getvalue() == "compiling: steps 1/4, 12.3 s\n"


def test_a_terminal_line_is_redrawn_in_place_and_ended(monkeypatch):
    monkeypatch.setattr(progress_module, "TTY_INTERVAL_S", 0.0)
    stream = _Terminal()
    bar = Progress("compiling", 4, stream=stream)
    bar.update(1)
    bar.update(2)
    assert stream.getvalue().count("\r") == 2 and "\n" not in stream.getvalue()
    bar.close()
    assert stream.getvalue().endswith("\n") and stream.getvalue().count("\n") == 1


def test_defaults_to_stderr_at_creation(capsys):
    Progress("sampling", 1, unit="calls").update(1)
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("sampling: calls 1/1, ")
