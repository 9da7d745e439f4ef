"""Files modtest writes (reports, baselines, cache entries, HTML) respect the umask and stay atomic."""
import os
import stat

import pytest

from modtest._io import atomic_write_text
from modtest.report.storage import BaselineStorage
from modtest.results import ProbeResult
from modtest.store import ProbeCache


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask, want", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_every_written_file_follows_the_umask(tmp_path, umask, mask, want):
    from test_report import small_report

    umask(mask)
    rep = small_report()
    atomic_write_text(tmp_path / "plain.json", "{}")
    baseline = BaselineStorage(tmp_path / "baselines").save("main", rep)
    cache = ProbeCache(tmp_path / "cache")
    entry = cache.put("ab" * 32, ProbeResult("lesion", [], {}, {}, {}))
    for path in (tmp_path / "plain.json", baseline, entry):
        assert _mode(path) == want, (path.name, oct(_mode(path)))
    # atomic: no temporary file left next to any of them
    assert [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")] == []


def test_html_report_follows_the_umask(tmp_path, umask):
    from test_report import small_report

    from modtest.report.html import write_html

    umask(0o027)
    html = write_html(small_report(), tmp_path / "out" / "audit.html")
    assert _mode(html) == 0o640 and sorted(p.name for p in html.parent.iterdir()) == ["audit.html"]


def test_replacing_a_file_keeps_no_old_content_and_no_temporary(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "r.json"
    atomic_write_text(path, "old" * 1000)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from modtest import _io

    def boom(fd):
        raise OSError("disk full")

    monkeypatch.setattr(_io.os, "fsync", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(tmp_path / "r.json", "x")
    assert list(tmp_path.iterdir()) == []


def test_a_device_or_pipe_is_written_to_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    import threading

    got = []
    reader = threading.Thread(target=lambda: got.append(open(fifo, "rb").read()))
    reader.start()
    atomic_write_text(fifo, "through the pipe")
    reader.join(timeout=30)
    assert got == [b"through the pipe"] and stat.S_ISFIFO(os.stat(fifo).st_mode)
