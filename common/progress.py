"""Progress of a long command (export, verify, model download) on standard error.

On a terminal: a bar redrawn in place, at most ten times a second. Otherwise (a pipe, a log
file, the journal): one ordinary log line every ``every_s`` seconds, so a long run still shows
it is alive without filling the log with carriage returns. Standard output stays untouched
(``--json`` reports go there).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

log = logging.getLogger("veilcam.progress")

REDRAW_S = 0.1


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"  # not reached


class Progress:
    """``update(done)`` as work goes; ``close()`` (or a ``with`` block) at the end.

    ``unit`` is what ``done`` and ``total`` count: ``"bytes"`` is shown as KiB/MiB/GiB, any
    other word is printed after the numbers. A ``total`` of 0 means unknown (no bar).
    """

    def __init__(
        self,
        label: str,
        total: int = 0,
        unit: str = "",
        *,
        every_s: float = 10.0,
        stream: TextIO | None = None,
        enabled: bool = True,
    ) -> None:
        self.label, self.total, self.unit = label, total, unit
        self.stream = stream or sys.stderr
        self.every_s = every_s
        self.enabled = enabled
        try:
            self.tty = enabled and self.stream.isatty()
        except (AttributeError, ValueError):
            self.tty = False
        self.started = time.monotonic()
        self._last = 0.0 if self.tty else self.started
        self._drawn = False
        self.done = 0
        self.note = ""

    def _amount(self, n: int) -> str:
        return human_bytes(n) if self.unit == "bytes" else str(n)

    def text(self) -> str:
        elapsed = time.monotonic() - self.started
        unit = "" if self.unit in ("", "bytes") else f" {self.unit}"
        note = f", {self.note}" if self.note else ""
        if self.total > 0:
            share = min(1.0, self.done / self.total)
            return (
                f"{share * 100:5.1f}% {self._amount(self.done)}/{self._amount(self.total)}"
                f"{unit}{note}, {elapsed:.1f} s"
            )
        return f"{self._amount(self.done)}{unit}{note}, {elapsed:.1f} s"

    def update(self, done: int, total: int | None = None, note: str = "") -> None:
        if not self.enabled:
            return
        self.done = done
        if total is not None:
            self.total = total
        if note:
            self.note = note
        now = time.monotonic()
        finished = self.total > 0 and done >= self.total
        if self.tty:
            if now - self._last < REDRAW_S and not finished:
                return
            self._last = now
            bar = ""
            if self.total > 0:
                bar = "[" + f"{'#' * int(min(1.0, done / self.total) * 30):<30}" + "] "
            self.stream.write(f"\r{self.label} {bar}{self.text()}\x1b[K")
            self.stream.flush()
            self._drawn = True
        elif now - self._last >= self.every_s:
            self._last = now
            log.info("%s: %s", self.label, self.text())

    def close(self) -> None:
        """End the bar's line (terminal only); nothing else is printed."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
