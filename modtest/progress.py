"""Progress of long probes: a live line on a terminal, a heartbeat line in logs, a board for xdist.

A probe counts its work in units (``Unit.work``: lesion variants, clusterings, images) and reports
them to a :class:`Task` from the audit context's reporter (:func:`task`). What is shown depends on
where the audit runs:

* **live** (a terminal: the CLI, a serial pytest session): once a probe has run ``delay`` seconds
  (2), one line per probe drawn by rich: bar, units done/total, rate, elapsed time and ETA. The
  line is redrawn as work finishes (no thread: nothing is written while a test holds the terminal
  otherwise) and its last state stays.
* **heartbeat** (not a terminal, ``-q``, CI logs): one plain line every ``heartbeat`` seconds (30)
  while a probe runs, and its final line when a heartbeat was shown.
* **board** (a pytest-xdist worker): each task's state goes to ``<folder>/<worker>.json`` at most
  once a second; the controller's :class:`BoardWatcher` reads the folder and writes each worker's
  progress as heartbeat lines (every 10 s on a terminal, every ``heartbeat`` s otherwise).

``MODTEST_PROGRESS_DELAY`` and ``MODTEST_PROGRESS_HEARTBEAT`` (seconds) change the two intervals.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["Task", "Reporter", "NullReporter", "ConsoleReporter", "BoardReporter", "BoardWatcher",
           "task", "default_reporter", "MODES", "format_state"]

from modtest.options import PROGRESS_MODES as MODES  # auto (live on a terminal, else heartbeat), live, heartbeat, off

DELAY, HEARTBEAT, BOARD_EVERY = 2.0, 30.0, 1.0
_IDS = itertools.count()  # task ids, unique within a process


def _env_seconds(name: str, default: float) -> float:
    try:
        return max(0.0, float(os.environ.get(name, default)))
    except ValueError:
        return default


def delay_seconds() -> float:
    return _env_seconds("MODTEST_PROGRESS_DELAY", DELAY)


def heartbeat_seconds() -> float:
    return _env_seconds("MODTEST_PROGRESS_HEARTBEAT", HEARTBEAT)


def _clock_text(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "?"
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def format_state(state: dict) -> str:
    """One line for a task's state: ``lesion: 120/480 units (25%), 3.1 units/s, 0:38 elapsed, ETA 1:56``."""
    done, total, elapsed = state["done"], max(state["total"], 1), state["elapsed"]
    rate = done / elapsed if elapsed > 0 else 0.0
    if state.get("finished"):
        return f"{state['name']}: done, {done} units in {_clock_text(elapsed)} ({rate:.3g} units/s)"
    eta = (total - done) / rate if rate > 0 else None
    return (f"{state['name']}: {done}/{total} units ({100 * done / total:.0f}%), {rate:.3g} units/s, "
            f"{_clock_text(elapsed)} elapsed, ETA {_clock_text(eta)}")


class Task:
    """The progress of one probe: ``update(n)`` as units finish, ``add_total(n)`` when more work is
    planned (the robust protocol's later rounds), ``close()`` at the end (or use ``with``)."""

    def __init__(self, reporter: Reporter, name: str, total: int, clock: Callable[[], float]):
        self.reporter, self.name, self.total, self.done = reporter, name, max(int(total), 0), 0
        self.clock = clock
        self.started = clock()
        self.closed = False
        self.ident = f"{os.getpid()}-{next(_IDS)}"

    def state(self) -> dict:
        return {"id": self.ident, "name": self.name, "done": self.done, "total": max(self.total, self.done),
                "elapsed": self.clock() - self.started, "finished": self.closed}

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        self.reporter.tick(self)

    def add_total(self, n: int) -> None:
        self.total += int(n)
        self.reporter.tick(self)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.reporter.finish(self)

    def __enter__(self) -> Task:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __call__(self, n: int = 1) -> None:  # usable where a progress(n) callback is expected
        self.update(n)


class Reporter:
    """Makes tasks and shows them; this base class shows nothing."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock

    def task(self, name: str, total: int) -> Task:
        return Task(self, name, total, self.clock)

    def tick(self, task: Task) -> None:
        pass

    def finish(self, task: Task) -> None:
        pass


NullReporter = Reporter


class ConsoleReporter(Reporter):
    """Live lines (rich) or heartbeat lines on a stream.

    ``write(text)`` writes a whole line (heartbeat); ``file`` is what rich draws on (live);
    ``guard()`` is held around every write (pytest: capture suspended); ``before_live()`` runs
    before the first live draw (pytest: end the current line).
    """

    def __init__(self, mode: str = "auto", *, file=None, write: Callable[[str], None] | None = None,
                 guard=None, before_live: Callable[[], None] | None = None, prefix: str = "modtest ",
                 delay: float | None = None, heartbeat: float | None = None, width: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        super().__init__(clock)
        self.width = width
        self.file = file if file is not None else sys.stderr
        if mode == "auto":
            isatty = getattr(self.file, "isatty", None)
            mode = "live" if callable(isatty) and isatty() else "heartbeat"
        self.mode = mode
        self.write = write or self._write_line
        self.guard = guard or contextlib.nullcontext
        self.before_live = before_live
        self.prefix = prefix
        self.delay = delay_seconds() if delay is None else delay
        self.heartbeat = heartbeat_seconds() if heartbeat is None else heartbeat
        self._beats: dict[str, float] = {}  # heartbeat: task id -> time of its last line
        self._progress = None  # live: one rich Progress for every task shown
        self._rows: dict[str, object] = {}
        self._drawn = 0.0

    def _write_line(self, text: str) -> None:
        self.file.write(text + "\n")
        self.file.flush()

    # -- heartbeat ------------------------------------------------------------------------------
    def _beat(self, task: Task, final: bool) -> None:
        now = self.clock()
        last = self._beats.get(task.ident)
        if final:
            if last is None and now - task.started < max(self.heartbeat, self.delay):
                return
        elif now - (task.started if last is None else last) < self.heartbeat \
                or now - task.started < self.delay:
            return
        self._beats[task.ident] = now
        with self.guard():
            self.write(self.prefix + format_state(task.state()))

    # -- live -------------------------------------------------------------------------------------
    def _live(self, task: Task, final: bool) -> None:
        now = self.clock()
        if task.ident not in self._rows:
            if final or now - task.started < self.delay:
                return
            with self.guard():
                if self._progress is None:
                    if self.before_live is not None:
                        self.before_live()
                    self._progress = _rich_progress(self.file, self.width)
                    self._progress.start()
                self._rows[task.ident] = self._progress.add_task(self.prefix + task.name,
                                                                 total=max(task.total, task.done))
        if not final and now - self._drawn < 0.1:
            return
        self._drawn = now
        with self.guard():
            self._progress.update(self._rows[task.ident], completed=task.done, total=max(task.total, task.done))
            self._progress.refresh()
            if final:
                self._progress.stop_task(self._rows.pop(task.ident))
                if not self._rows:
                    self._progress.stop()
                    self._progress = None

    def tick(self, task: Task) -> None:
        if self.mode == "live":
            self._live(task, final=False)
        elif self.mode == "heartbeat":
            self._beat(task, final=False)

    def finish(self, task: Task) -> None:
        if self.mode == "live":
            self._live(task, final=True)
        elif self.mode == "heartbeat":
            self._beat(task, final=True)
            self._beats.pop(task.ident, None)


def _rich_progress(file, width: int | None = None):
    """One rich Progress (no refresh thread, no stdout redirection) drawing on ``file``."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task):
            speed = task.finished_speed or task.speed
            return Text("" if speed is None else f"{speed:.3g} units/s")

    console = Console(file=file, force_terminal=True, highlight=False, width=width)
    return Progress(TextColumn("{task.description}"), BarColumn(bar_width=24), MofNCompleteColumn(),
                    TextColumn("units"), RateColumn(), TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=console, auto_refresh=False, transient=False,
                    redirect_stdout=False, redirect_stderr=False)


class BoardReporter(Reporter):
    """An xdist worker's tasks, written to ``<folder>/<worker>.json`` (at most every ``every`` s,
    and at each task's end) for the controller to show."""

    def __init__(self, folder, worker: str, every: float = BOARD_EVERY, clock=time.monotonic):
        super().__init__(clock)
        self.path = Path(folder) / f"{worker}.json"
        self.every = every
        self.tasks: dict[str, dict] = {}
        self._written = float("-inf")

    def _publish(self, task: Task, force: bool) -> None:
        self.tasks[task.ident] = task.state()
        now = self.clock()
        if not force and now - self._written < self.every:
            return
        self._written = now
        from modtest._io import atomic_write_text

        try:
            atomic_write_text(self.path, json.dumps({"tasks": list(self.tasks.values())}))
        except OSError:  # progress is informative: never fail a probe for it
            pass

    def tick(self, task: Task) -> None:
        self._publish(task, force=False)

    def finish(self, task: Task) -> None:
        self._publish(task, force=True)


class BoardWatcher:
    """The xdist controller's side: a thread reading the workers' board files and writing a line
    per worker task (``write(text)``): the first once the task has run ``first`` seconds, then every
    ``every`` seconds, and its final line when a line was shown or it ran at least ``first``
    seconds. :meth:`stop` reads the folder a last time, so no finished task is missed."""

    def __init__(self, folder, write: Callable[[str], None], *, first: float, every: float, poll: float = 1.0):
        self.folder = Path(folder)
        self.write = write
        self.first, self.every, self.poll = first, every, poll
        self._shown: dict[str, float] = {}  # task id -> its elapsed time at its last line
        self._final: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="modtest-progress", daemon=True)
        self._lock = threading.Lock()

    def start(self) -> BoardWatcher:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            self.read()

    def read(self) -> None:
        """Show what is due in every worker's board file."""
        with self._lock:
            for path in sorted(self.folder.glob("*.json")):
                try:
                    tasks = json.loads(path.read_text()).get("tasks", [])
                except (OSError, ValueError, AttributeError):
                    continue
                for state in tasks:
                    if isinstance(state, dict) and self._due(state):
                        self.write(f"modtest [{path.stem}] {format_state(state)}")

    def _due(self, state: dict) -> bool:
        ident, elapsed = state.get("id"), float(state.get("elapsed", 0.0))
        if ident in self._final:
            return False
        last = self._shown.get(ident)
        if state.get("finished"):
            if last is None and elapsed < self.first:
                return False
            self._final.add(ident)
        elif (elapsed < self.first) if last is None else (elapsed - last < self.every):
            return False
        self._shown[ident] = elapsed
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.read()


def default_reporter() -> Reporter:
    """Outside the CLI and pytest (scripts, notebooks): live lines on a terminal's stderr, else none."""
    isatty = getattr(sys.stderr, "isatty", None)
    return ConsoleReporter("live") if callable(isatty) and isatty() else NullReporter()


def task(name: str, total: int, progress=None) -> Task:
    """A task for a probe's work units: ``progress=False`` shows nothing; None or True uses the
    running audit's reporter (:attr:`modtest.context.AuditContext.progress`)."""
    if progress is False:
        return NullReporter().task(name, total)
    from modtest.context import current

    return current().progress.task(name, total)
