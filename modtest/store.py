"""Content-addressed stores on disk: the probe cache (and, through :class:`DigestStore`, the workshare).

An entry's key is the sha256 of (model weights hash, data hash, probe, k, seed, settings JSON,
modtest version); its file name is that hex digest, so a path can never leave the cache folder.
Entries are JSON (:meth:`ProbeResult.to_dict`), never pickles, written through a temporary file
and ``os.replace``. One lock file per key (``filelock.FileLock``: ``flock`` on POSIX, so a lock
held by a process that died is released by the kernel) makes a worker that finds a probe in
progress wait for it instead of computing it again. A corrupt entry is a miss and is replaced.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from modtest.errors import CacheError
from modtest.results import ProbeResult

_HEX64 = re.compile(r"[0-9a-f]{64}")
DEFAULT_CACHE_DIR = Path(".modtest") / "cache"
DEFAULT_LOCK_TIMEOUT = 3600.0


def data_hash(x, y) -> str:
    """sha256 (hex, 16 chars) of the evaluation arrays: dtype, shape and bytes of ``x`` and ``y``."""
    h = hashlib.sha256()
    for a in (x, y):
        a = np.ascontiguousarray(np.asarray(a))
        h.update(f"{a.dtype.str}{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def _canonical(settings) -> str:
    from modtest.results import _jsonable

    return json.dumps(_jsonable(settings or {}), sort_keys=True, separators=(",", ":"))


def cache_key(model_hash: str, data_hash: str, probe: str, k: int, seed: int, settings=None) -> str:
    """The hex sha256 that names one probe result."""
    from modtest import __version__

    payload = json.dumps([str(model_hash), str(data_hash), str(probe), int(k), int(seed),
                          _canonical(settings), __version__], separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def digest_path(root: Path, key: str, suffix: str, what: str) -> Path:
    """``root/ab/<key><suffix>`` for a 64-hex-digit key: paths come only from the digest, so no
    model name or user string can make them escape ``root``."""
    if not isinstance(key, str) or not _HEX64.fullmatch(key):
        raise CacheError(f"{what} must be 64 lowercase hex digits, got {key!r}")
    return Path(root) / key[:2] / f"{key}{suffix}"


class DigestStore:
    """A folder of JSON files named by 64-hex digests (``root/ab/<key><suffix>``), each with its
    lock file. Files are written atomically (temporary file + ``os.replace``); a file that cannot be
    read, or names another key, reads as missing. The probe cache and the workshare are both one."""

    entry_suffix = ".json"
    lock_suffix = ".lock"
    what = "key"

    def __init__(self, root):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def path(self, key: str) -> Path:
        """``root/ab/abcdef...<suffix>``: derived only from the hex digest."""
        return digest_path(self.root, key, self.entry_suffix, self.what)

    def lock_path(self, key: str) -> Path:
        return digest_path(self.root, key, self.lock_suffix, self.what)

    def read(self, key: str) -> dict | None:
        """The JSON object stored under ``key`` (None when absent, unreadable or another key's)."""
        try:
            d = json.loads(self.path(key).read_bytes().decode("utf-8"))
        except (OSError, ValueError):
            return None
        return d if isinstance(d, dict) and d.get("key") == key else None

    def write(self, key: str, payload: dict, **dumps) -> Path:
        """Store ``{"key": key, **payload}`` atomically."""
        from modtest._io import atomic_write_text

        path = self.path(key)
        atomic_write_text(path, json.dumps({"key": key, **payload}, **dumps))
        return path

    def file_lock(self, key: str, timeout: float):
        """The key's ``flock`` lock (released by the kernel if its holder dies); a fresh object per
        call, so two claims of one process also exclude each other."""
        import filelock

        path = self.lock_path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        return filelock.FileLock(str(path), timeout=timeout)

    def clear(self) -> int:
        """Remove every entry and lock file; returns the number of entries removed."""
        n = 0
        if not self.root.is_dir():
            return 0
        for sub in self.root.iterdir():
            if sub.is_dir() and re.fullmatch(r"[0-9a-f]{2}", sub.name):
                for f in sub.iterdir():
                    if f.name.endswith(self.entry_suffix):
                        n += 1
                    try:
                        f.unlink()
                    except OSError:
                        pass
        return n


class ProbeCache(DigestStore):
    """A folder of JSON probe results keyed by :func:`cache_key`.

    Parameters
    ----------
    root : path, the cache folder (created on first write)
    lock_timeout : seconds to wait for another process computing the same entry
    """

    what = "cache key"

    def __init__(self, root=DEFAULT_CACHE_DIR, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT):
        super().__init__(root)
        self.lock_timeout = float(lock_timeout)
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> ProbeResult | None:
        """The stored result, or None when absent or unreadable (a corrupt entry is a miss)."""
        d = self.read(key)
        try:
            return None if d is None else ProbeResult.from_dict(d["result"])
        except (ValueError, KeyError, TypeError, AttributeError):
            return None

    def put(self, key: str, result: ProbeResult) -> Path:
        """Write ``result`` atomically."""
        return self.write(key, {"result": result.to_dict()}, sort_keys=True)

    def lock(self, key: str):
        return self.file_lock(key, self.lock_timeout)

    def get_or_compute(self, key: str, compute: Callable[[], ProbeResult]) -> tuple[ProbeResult, bool]:
        """The cached result, else ``compute()`` under the key's lock, stored.

        Returns ``(result, computed)``. A process that finds the lock held waits for it (up to
        ``lock_timeout``) and then reads what the holder wrote.
        """
        import filelock

        found = self.get(key)
        if found is not None:
            self.hits += 1
            return found, False
        try:
            with self.lock(key):
                found = self.get(key)
                if found is not None:
                    self.hits += 1
                    return found, False
                result = compute()
                self.misses += 1
                try:
                    self.put(key, result)
                except OSError as exc:  # a read-only or full disk must not fail the audit
                    import warnings

                    warnings.warn(f"modtest: cannot write cache entry {self.path(key)}: {exc}",
                                  stacklevel=2)
                return result, True
        except filelock.Timeout:
            raise CacheError(f"waited {self.lock_timeout:.0f}s for another process computing "
                             f"{self.path(key).name}; remove {self.lock_path(key)} if no "
                             f"modtest process is running") from None
