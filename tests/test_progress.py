"""Progress of long probes: live lines on a terminal (a pseudo-terminal here), heartbeat lines in logs,
xdist workers' progress shown by the controller. Timing rules are tested with a fake clock; the
end-to-end runs set MODTEST_PROGRESS_DELAY/HEARTBEAT to 0 so what they print does not depend on speed.
"""
import io
import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FAKE_FILES
from modtest.progress import BoardReporter, BoardWatcher, ConsoleReporter, format_state

ROOT = Path(__file__).resolve().parent.parent
PLUGIN = ("-p", "modtest", "-p", "no:cacheprovider")


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_heartbeat_lines_follow_the_interval_and_end_with_a_final_line():
    clock, out = Clock(), []
    rep = ConsoleReporter("heartbeat", write=out.append, delay=2.0, heartbeat=30.0, clock=clock)
    with rep.task("lesion", 100) as t:
        for step in range(100):
            clock.t = step  # one unit per second
            t.update(1)
        clock.t = 100.0
    # lines at 30, 60 and 90 s, then the final line; nothing in the first 30 s
    assert [line.split(":")[1].strip().split()[0] for line in out[:3]] == ["31/100", "61/100", "91/100"]
    assert len(out) == 4 and out[-1].startswith("modtest lesion: done, 100 units in 1:40")
    assert "units/s" in out[0] and "ETA" in out[0] and "elapsed" in out[0]


def test_a_short_probe_prints_nothing():
    clock, out = Clock(), []
    rep = ConsoleReporter("heartbeat", write=out.append, delay=2.0, heartbeat=30.0, clock=clock)
    with rep.task("lesion", 10) as t:
        for step in range(10):
            clock.t = step * 0.1
            t.update(1)
    assert out == []


def test_eta_and_rate_in_a_state_line():
    line = format_state({"name": "lesion", "done": 30, "total": 120, "elapsed": 60.0, "finished": False})
    assert line == "lesion: 30/120 units (25%), 0.5 units/s, 1:00 elapsed, ETA 3:00"


def test_live_mode_draws_with_rich_after_the_delay():
    clock = Clock()
    buf = io.StringIO()
    rep = ConsoleReporter("live", file=buf, delay=2.0, clock=clock, width=120)
    t = rep.task("lesion", 50)
    t.update(5)
    assert buf.getvalue() == ""  # within the delay: nothing drawn
    for step in range(1, 46):
        clock.t = 2.0 + step
        t.update(1)
    t.close()
    text = buf.getvalue()
    assert "modtest lesion" in text and "50/50" in text and "units/s" in text and "\x1b[" in text


def test_board_reporter_and_watcher_show_a_workers_task(tmp_path):
    clock, lines = Clock(), []
    rep = BoardReporter(tmp_path, "gw1", every=1.0, clock=clock)
    watcher = BoardWatcher(tmp_path, lines.append, first=2.0, every=10.0)
    t = rep.task("lesion", 100)
    clock.t = 1.0
    t.update(10)
    watcher.read()
    assert lines == []  # ran 1 s: below `first`
    clock.t = 3.0
    t.update(10)
    watcher.read()
    assert lines == ["modtest [gw1] lesion: 20/100 units (20%), 6.67 units/s, 0:03 elapsed, ETA 0:12"]
    clock.t = 5.0
    t.update(10)
    watcher.read()
    assert len(lines) == 1  # next line 10 s after the last
    clock.t = 6.0
    t.close()
    watcher.stop()  # the final read
    assert lines[-1] == "modtest [gw1] lesion: done, 30 units in 0:06 (5 units/s)"
    assert json.loads((tmp_path / "gw1.json").read_text())["tasks"][0]["finished"] is True


def _run_in_pty(cmd, env, cwd, timeout=600) -> tuple[int, str]:
    """Run ``cmd`` with stdout and stderr on a pseudo-terminal; returns (status, everything written)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=env, cwd=cwd,
                            close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        ready, _, _ = select.select([master], [], [], timeout)
        if not ready:
            proc.kill()
            raise AssertionError(f"no output for {timeout}s: {b''.join(chunks)[-2000:]!r}")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=timeout), b"".join(chunks).decode("utf-8", "replace")


def _env(**extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "MODTEST_PROGRESS_DELAY": "0", "COLUMNS": "120", **extra}
    env.pop("NO_COLOR", None)
    return env


def test_cli_audit_draws_a_live_progress_line_on_a_terminal(tmp_path):
    rc, out = _run_in_pty([sys.executable, "-m", "modtest.cli", "audit", "--protocol", "paper", "--n-random", "2",
                           "--clusterability", "0", "--no-fail"], _env(), tmp_path)
    assert rc == 0, out[-3000:]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    live = [chunk for chunk in re.split(r"\r|\n", plain) if "modtest lesion" in chunk]
    assert live, out[-3000:]
    assert any(re.search(r"(\d+)/\1 units", c) and "units/s" in c for c in live), live[-3:]  # the final state
    assert "\x1b[" in out  # drawn and redrawn in place (rich's cursor control)


STUB_PROBE_CONFTEST = FAKE_FILES + '''
from modtest import probes
from modtest.progress import task
from modtest.results import ProbeResult

register_fake_files("m.keras")

def stub(req):
    with task("stub probe", 4) as t:
        for _ in range(4):
            t.update(1)
    net = {"fisher_p": 0.01, "fisher_stat": 1.0, "chi2_p": 0.01, "chi2_stat": 1.0, "n": 3, "n_excluded": 0}
    return ProbeResult("lesion", [], {"importance": net}, {"k": req.k}, {})

probes.register_measure("importance", "lesion", stub, "importance", "stub")
'''

TESTS = '''
from modtest.assertions import assert_importance

def test_a(model):
    assert_importance(model, k=3)

def test_b(model):
    assert_importance(model, k=4)
'''


@pytest.fixture
def stub_project(pytester):
    pytester.makeconftest(STUB_PROBE_CONFTEST)
    pytester.makepyfile(test_stub=TESTS)
    return pytester


def test_pytest_heartbeat_lines_when_not_a_terminal(stub_project, monkeypatch):
    monkeypatch.setenv("MODTEST_PROGRESS_DELAY", "0")
    monkeypatch.setenv("MODTEST_PROGRESS_HEARTBEAT", "0")
    res = stub_project.runpytest_subprocess(*PLUGIN, "--model", "m.keras", "--modtest-cache", "c")
    res.assert_outcomes(passed=2)
    lines = [ln for ln in res.outlines if ln.startswith("modtest stub probe:")]
    assert "modtest stub probe: 1/4 units (25%)" in lines[0] and len(lines) == 2 * 5  # 4 updates + done, twice
    assert sum("done, 4 units" in ln for ln in lines) == 2


def test_pytest_quiet_without_progress_option(stub_project, monkeypatch):
    monkeypatch.setenv("MODTEST_PROGRESS_DELAY", "0")
    monkeypatch.setenv("MODTEST_PROGRESS_HEARTBEAT", "0")
    res = stub_project.runpytest_subprocess(*PLUGIN, "--model", "m.keras", "--modtest-cache", "c",
                                            "--modtest-progress", "off")
    res.assert_outcomes(passed=2)
    assert not [ln for ln in res.outlines if "stub probe" in ln]


def test_pytest_live_line_on_a_terminal(stub_project):
    rc, out = _run_in_pty([sys.executable, "-m", "pytest", *PLUGIN, "--model", "m.keras", "--modtest-cache", "c"],
                          _env(), stub_project.path)
    assert rc == 0, out[-3000:]
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out)
    assert "modtest stub probe" in plain and "4/4 units" in plain and "units/s" in plain, plain[-3000:]
    assert "2 passed" in out


def test_xdist_controller_shows_each_workers_progress(stub_project, monkeypatch):
    monkeypatch.setenv("MODTEST_PROGRESS_DELAY", "0")
    monkeypatch.setenv("MODTEST_PROGRESS_HEARTBEAT", "0")
    res = stub_project.runpytest_subprocess(*PLUGIN, "-n", "2", "--model", "m.keras", "--modtest-cache", "c")
    res.assert_outcomes(passed=2)
    shown = [ln for ln in res.outlines if re.match(r"modtest \[gw[01]\] stub probe: ", ln)]
    finals = [ln for ln in shown if "done, 4 units" in ln]
    assert len(finals) == 2, res.outlines  # one final line per probe run, whichever worker ran it
