"""Text progress for the command line's long steps: ``label: k/n, 12.3 s`` on stderr.

On a terminal the line is redrawn in place (at most every :data:`TTY_INTERVAL_S` seconds);
elsewhere (a log file, a pipe, a test) one line is written for the first and the last update and
at most every :data:`PLAIN_INTERVAL_S` seconds in between, so a 4000-step training run does not
write 4000 lines. No dependency beyond the standard library.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: Seconds between redraws on a terminal.
TTY_INTERVAL_S = 0.1
#: Seconds between lines when stderr is not a terminal.
PLAIN_INTERVAL_S = 5.0


class Progress:
    """Progress of one long step with ``total`` units (steps, calls, batches).

    Call :meth:`update` with the number of units done (1..total), then :meth:`close` (also done
    by the last update and by leaving a ``with`` block). ``stream`` defaults to ``sys.stderr``
    at the time of the call (so pytest's ``capsys`` sees it).
    """

    def __init__(self, label: str, total: int, *, unit: str = "steps", stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(1, int(total))
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.perf_counter()
        self.done = 0
        self._last_shown = float("-inf")
        self._open_line = False
        self.closed = False
        isatty = getattr(self.stream, "isatty", None)
        self.tty = bool(isatty()) if callable(isatty) else False

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def text(self) -> str:
        return f"{self.label}: {self.unit} {self.done}/{self.total}, {self.elapsed:.1f} s"

    def update(self, done: int) -> None:
        """``done`` units of ``total`` are finished."""
        if self.closed:
            return
        self.done = min(int(done), self.total)
        now = time.perf_counter()
        last = self.done >= self.total
        interval = TTY_INTERVAL_S if self.tty else PLAIN_INTERVAL_S
        if last or self.done == 1 or now - self._last_shown >= interval:
            self._show()
            self._last_shown = now
        if last:
            self.close()

    def _show(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.text() + "\x1b[K")
            self._open_line = True
        else:
            self.stream.write(self.text() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the display (a newline after a redrawn terminal line)."""
        if self.closed:
            return
        self.closed = True
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
