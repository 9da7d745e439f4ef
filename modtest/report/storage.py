"""Stored audits (baselines), in the style of pytest-benchmark's storage: one JSON file per name.

``BaselineStorage(root)`` keeps ``root/NAME.json`` (default root: ``.modtest/baselines``).
``save(name, report)`` writes atomically; ``load(name)`` reads one back (``None``/``"latest"``: the
most recently saved); ``list()`` names them, oldest first.
"""
from __future__ import annotations

import re
from pathlib import Path

from modtest.errors import ReportError, StorageError
from modtest.report.schema import Report, load_report

DEFAULT_STORAGE = Path(".modtest") / "baselines"
LATEST = "latest"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")



def check_name(name: str) -> str:
    name = str(name)
    if name == LATEST:
        raise StorageError(f"baseline name {LATEST!r} is reserved (it means the most recent baseline)")
    if not _NAME.match(name):
        raise StorageError(f"bad baseline name {name!r}: use letters, digits, '.', '_' and '-' "
                           f"(no path separators, at most 128 characters)")
    return name


class BaselineStorage:
    """Baselines under one folder."""

    def __init__(self, root=DEFAULT_STORAGE):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"BaselineStorage({str(self.root)!r})"

    def path(self, name: str) -> Path:
        return self.root / f"{check_name(name)}.json"

    def list(self) -> list[str]:
        """Stored names, oldest first (by modification time, then name)."""
        if not self.root.is_dir():
            return []
        files = [p for p in self.root.glob("*.json") if _NAME.match(p.stem) and p.stem != LATEST]
        files.sort(key=lambda p: (p.stat().st_mtime_ns, p.stem))
        return [p.stem for p in files]

    def latest(self) -> str:
        names = self.list()
        if not names:
            raise StorageError(f"no baselines saved in {self.root} (save one with --modtest-save NAME)")
        return names[-1]

    def save(self, name: str, report) -> Path:
        """Write ``report`` (a :class:`Report` or its dict) as ``NAME.json``, atomically."""
        from modtest._io import atomic_write_text

        path = self.path(name)
        rep = report if isinstance(report, Report) else Report.from_dict(report, where=f"baseline {name}")
        atomic_write_text(path, rep.to_json())
        return path

    def resolve(self, name: str | None) -> tuple[str, Path]:
        """``(name, path)`` of a baseline; None or ``"latest"`` picks the most recent."""
        if name in (None, "", LATEST):
            name = self.latest()
        path = self.path(name)
        if not path.exists():
            have = self.list()
            raise StorageError(f"baseline {name!r} not found in {self.root}"
                               + (f" (saved: {', '.join(have)})" if have else " (none saved)"))
        return name, path

    def load(self, name: str | None = None) -> Report:
        _name, path = self.resolve(name)
        try:
            return load_report(path)
        except StorageError:
            raise
        except ReportError as exc:
            raise StorageError(str(exc).replace("report ", "baseline ", 1)) from None
