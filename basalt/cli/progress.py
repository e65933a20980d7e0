"""A small progress bar for long CLI commands (``basalt export`` / ``import``).

On a terminal the bar is redrawn in place at most ten times a second; on
anything else (a pipe, a log file, a test) only the final line of each bar is
written, so logs stay short. No dependency: the commands stay usable with the
core install.
"""

from __future__ import annotations

import time
from typing import TextIO

_WIDTH = 24
_REDRAW_S = 0.1


def human_bytes(n: int) -> str:
    """``1536`` → ``"1.5 KiB"``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class Progress:
    """One bar: ``label [#####-----]  50%  done/total``.

    ``stream`` None draws nothing (the counting still happens). ``in_bytes``
    shows the amounts as byte sizes. :meth:`advance` may change the label (to
    name the table at hand); the final line shows the first label again.
    """

    def __init__(
        self, stream: TextIO | None, label: str, total: int, *, in_bytes: bool = False
    ) -> None:
        self._stream = stream
        self._tty = stream is not None and stream.isatty()
        self.label = self.title = label
        self.total = max(total, 0)
        self.done = 0
        self._in_bytes = in_bytes
        self._drawn = 0.0
        self._closed = False

    def advance(self, n: int = 1, *, label: str | None = None) -> None:
        self.done += n
        if label is not None:
            self.label = label
        if self._tty and time.monotonic() - self._drawn >= _REDRAW_S:
            self._draw(end="")

    def close(self) -> None:
        """Draw the final state and end the line (once)."""
        if not self._closed:
            self._closed = True
            self.label = self.title
            self._draw(end="\n")

    def _amount(self, n: int) -> str:
        return human_bytes(n) if self._in_bytes else f"{n:,}"

    def _draw(self, end: str) -> None:
        if self._stream is None:
            return
        self._drawn = time.monotonic()
        fraction = 1.0 if self.total == 0 else min(self.done / self.total, 1.0)
        filled = round(fraction * _WIDTH)
        bar = "#" * filled + "-" * (_WIDTH - filled)
        line = (
            f"{self.label:<28.28} [{bar}] {fraction:4.0%}  "
            f"{self._amount(self.done)}/{self._amount(self.total)}"
        )
        prefix = "\r" if self._tty else ""
        self._stream.write(f"{prefix}{line}\x1b[K{end}" if self._tty else f"{line}{end}")
        self._stream.flush()
