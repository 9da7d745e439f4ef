"""A minimal progress bar on stderr for studies that run for more than a couple of seconds.

It stays silent when stderr is not a terminal (CI logs, pytest capture) or when ``progress=False``,
and it draws nothing during the first ``delay`` seconds, so that quick studies print nothing at all.
"""
from __future__ import annotations

import sys
import time


class Progress:
    """Counts finished work items and redraws one stderr line at most every 0.2 s.

    Parameters
    ----------
    total : int
        Number of work items.
    desc : str
        Label shown before the bar.
    enabled : bool or None
        ``False``: never draw. ``None``/``True``: draw when stderr is a TTY.
    delay : float
        Seconds before the first draw.
    """

    def __init__(self, total: int, desc: str = "", enabled=None, delay: float = 2.0, stream=None):
        self.total = max(int(total), 1)
        self.desc = desc
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        tty = bool(isatty()) if callable(isatty) else False
        self.enabled = enabled is not False and tty
        self.delay = delay
        self._start = time.monotonic()
        self._last = 0.0
        self._drawn = False

    def update(self, n: int = 1) -> None:
        """Mark ``n`` more items as done and redraw if it is time to."""
        self.done = min(self.done + int(n), self.total)
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._start < self.delay or (now - self._last < 0.2 and self.done < self.total):
            return
        self._last = now
        width = 30
        filled = int(width * self.done / self.total)
        elapsed = now - self._start
        eta = elapsed / self.done * (self.total - self.done) if self.done else 0.0
        self.stream.write(f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] "
                          f"{self.done}/{self.total} {elapsed:5.1f}s eta {eta:5.1f}s")
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """End the line if anything was drawn."""
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()
            self._drawn = False

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
