"""Cooperative computation of one probe by several processes, through a shared folder.

A probe's work is split into *units* (for the lesion probe: one sub-cluster with its random
controls). Every process that runs the same probe with the same :class:`WorkShare` folder walks the
units in order and, for each one:

* finds a published result -> takes it;
* else tries to *claim* it: a non-blocking per-unit file lock (``filelock.FileLock``, ``flock`` on
  POSIX: the kernel drops the lock when its process dies, so a crashed claimer never blocks anyone);
* claimed -> computes it and *publishes* it: an atomic JSON file (temporary file + ``os.replace``),
  so a reader sees either no file or a complete one, never a partial unit;
* held by a live process -> moves on to the next unit.

At the end it waits for the units other processes hold (a blocking acquire of their locks), reads
what they published, and computes itself any unit whose claimer died before publishing. Every
process ends with all unit results, so each builds the same final result.

Unit files are named by a sha256 of everything the unit result depends on, so stale or foreign
units are never reused; an unreadable unit file is treated as missing and recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from modtest.errors import CacheError, InvalidInput
from modtest.store import DigestStore, digest_path

__all__ = ["WorkShare", "unit_key", "as_workshare", "WorkShareStats"]



def unit_key(*parts) -> str:
    """The hex sha256 naming one unit: a pure function of ``parts`` (JSON-able values) and the version."""
    from modtest import __version__
    from modtest.results import _jsonable

    payload = json.dumps([_jsonable(list(parts)), __version__], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


@dataclass
class WorkShareStats:
    """What this process did in its :meth:`WorkShare.run` calls."""

    computed: int = 0        # units this process computed
    found: int = 0           # units already published when first looked at
    waited: int = 0          # units held by another process, read after it published
    recovered: int = 0       # units whose claimer died before publishing, computed here
    computed_keys: list = field(default_factory=list)


class WorkShare(DigestStore):
    """A shared folder of unit results and unit locks.

    Parameters
    ----------
    root : path, the folder (created on first use); processes cooperate when they use the same one
    wait_timeout : seconds to wait for one unit held by another process before giving up
    """

    entry_suffix = ".unit.json"
    lock_suffix = ".unit.lock"
    what = "unit key"

    def __init__(self, root, *, wait_timeout: float = 3600.0):
        super().__init__(root)
        self.wait_timeout = float(wait_timeout)
        self.stats = WorkShareStats()

    def get(self, key: str):
        """The published result of ``key`` (a JSON value), or None when absent or unreadable."""
        d = self.read(key)
        return None if d is None or "value" not in d else d["value"]

    def put(self, key: str, value) -> Path:
        """Publish ``value`` atomically."""
        return self.write(key, {"pid": os.getpid(), "value": value}, allow_nan=True)

    def _lock(self, key: str):
        return self.file_lock(key, -1)

    def try_claim(self, key: str):
        """The acquired lock of ``key``, or None when another live process holds it (non-blocking)."""
        import filelock

        lock = self._lock(key)
        try:
            lock.acquire(timeout=0)
        except filelock.Timeout:
            return None
        return lock

    def wait_claim(self, key: str):
        """Block until ``key``'s lock is free (its holder published or died), then hold it."""
        import filelock

        lock = self._lock(key)
        try:
            lock.acquire(timeout=self.wait_timeout)
        except filelock.Timeout:
            raise CacheError(f"waited {self.wait_timeout:.0f}s for unit {key[:12]} held by another "
                             f"process; remove {self.lock_path(key)} if no modtest process is running") \
                from None
        return lock

    # -- jobs: probes in progress that idle processes may join -----------------------------------
    def announce(self, job: dict) -> str:
        """Publish ``job`` (a JSON dict that says how to run a probe) as open; returns its key."""
        from modtest._io import atomic_write_text
        from modtest.results import _jsonable

        job = _jsonable(dict(job))
        key = unit_key("job", job)
        path = digest_path(self.root / "jobs", key, ".job.json", "job key")
        atomic_write_text(path, json.dumps({"key": key, "job": job}))
        return key

    def retire(self, key: str) -> None:
        """The job ``key`` is done (its result is in the cache): no one needs to join it."""
        try:
            digest_path(self.root / "jobs", key, ".job.json", "job key").unlink()
        except OSError:
            pass

    def open_jobs(self) -> list[dict]:
        """The announced jobs not retired yet (unreadable files are skipped)."""
        jobs = []
        for path in sorted((self.root / "jobs").glob("*/*.job.json")):
            try:
                d = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(d, dict) and isinstance(d.get("job"), dict):
                jobs.append(d["job"])
        return jobs

    # -- the protocol ----------------------------------------------------------------------------
    def run(self, units: Iterable[tuple[str, object]], compute: Callable[[object], object],
            on_unit: Callable[[str, object, str], None] | None = None) -> dict:
        """All unit results, computing here the units no other process has or holds.

        Parameters
        ----------
        units : iterable of (key, item); ``compute(item)`` returns the unit's JSON-able result
        compute : callable(item) -> JSON value
        on_unit : optional callable(key, value, how) with how in "computed", "found", "waited",
            "recovered", called as each unit result becomes available here

        Returns
        -------
        dict key -> value, for every unit
        """
        units = list(units)
        keys = [k for k, _ in units]
        if len(set(keys)) != len(keys):
            raise InvalidInput("unit keys must be distinct")
        out, pending = {}, []

        def done(key, value, how):
            out[key] = value
            setattr(self.stats, how, getattr(self.stats, how) + 1)
            if how in ("computed", "recovered"):
                self.stats.computed_keys.append(key)
            if on_unit is not None:
                on_unit(key, value, how)

        def compute_publish(key, item, how):
            value = compute(item)
            value = json.loads(json.dumps(value, allow_nan=True))  # what a reader would get
            try:
                self.put(key, value)
            except OSError as exc:  # a full/read-only disk: keep going, others will recompute
                import warnings

                warnings.warn(f"modtest: cannot publish unit {self.path(key)}: {exc}", stacklevel=3)
            done(key, value, how)

        def settle(key, item, lock, found_how, computed_how):
            """Holding the unit's lock: take a result published meanwhile, else compute it."""
            try:
                value = self.get(key)
                if value is not None:
                    done(key, value, found_how)
                else:
                    compute_publish(key, item, computed_how)
            finally:
                lock.release()

        for key, item in units:
            value = self.get(key)
            if value is not None:
                done(key, value, "found")
                continue
            lock = self.try_claim(key)
            if lock is None:  # a live process is computing it: move on
                pending.append((key, item))
                continue
            settle(key, item, lock, "found", "computed")
        # the units other processes held: take the free ones first, then wait for the rest
        while pending:
            rest = []
            for key, item in pending:
                value = self.get(key)
                if value is not None:
                    done(key, value, "waited")
                    continue
                lock = self.try_claim(key)
                if lock is None:
                    rest.append((key, item))
                    continue
                settle(key, item, lock, "waited", "recovered")  # "recovered": its claimer died
            if rest and len(rest) == len(pending):  # nothing moved: block on the first one
                key, item = rest[0]
                settle(key, item, self.wait_claim(key), "waited", "recovered")
                rest = rest[1:]
            pending = rest
            if pending:
                time.sleep(0.01)
        return out

    def map(self, probe, ctx, units, progress=None) -> list:
        """The values of a probe's ``units`` (the executor interface), shared with every process that
        runs the same probe with this folder."""
        ident = probe.identity(ctx)
        keyed = [(unit_key(f"{probe.name}-unit", ident, u.key), u) for u in units]

        def counted(key, value, how):
            if progress is not None and how not in ("computed", "recovered"):
                progress(by_key[key].work)

        by_key = dict(keyed)
        got = self.run(keyed, lambda u: probe.compute(ctx, u.item, progress), on_unit=counted)
        return [got[key] for key, _ in keyed]


def as_workshare(workshare) -> WorkShare | None:
    """None, a :class:`WorkShare`, or a folder path -> a WorkShare (or None)."""
    if workshare is None or isinstance(workshare, WorkShare):
        return workshare
    if isinstance(workshare, (str, os.PathLike)):
        return WorkShare(workshare)
    raise InvalidInput(f"workshare must be None, a folder path or a WorkShare, got "
                       f"{type(workshare).__name__}")
