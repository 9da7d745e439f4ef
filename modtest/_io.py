"""Small file helpers: atomic writes, so that nothing is ever left half-written.

The temporary file is created with mode 0666 and the kernel applies the user's umask, as for any
file the user writes (``tempfile.mkstemp`` would make every report, baseline and cache entry 0600,
unreadable to a CI job's artifact step running as another user).
"""
from __future__ import annotations

import os
import secrets
from pathlib import Path


def _create_temp(folder: Path, name: str) -> tuple[int, Path]:
    """A new, empty, exclusively created file next to the destination (mode 0666 minus the umask)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    while True:
        tmp = folder / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:  # another writer drew the same name: draw again
            continue


def atomic_write_bytes(path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename. A path
    that exists and is not a regular file (``/dev/stdout``, a pipe) is written to directly: renaming
    over it would replace the device or link."""
    path = Path(path)
    if path.exists() and not path.is_file():
        with open(path, "wb") as f:
            f.write(data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path.parent, path.name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
