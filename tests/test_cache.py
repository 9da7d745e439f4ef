"""The content-addressed probe cache: reuse across runs, locks, corruption, path safety."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from modtest.errors import CacheError
from modtest.results import ProbeResult
from modtest.store import ProbeCache, cache_key, data_hash

KEY = cache_key("m" * 16, "d" * 16, "lesion", 12, 0, {"n_random": 20})


def _result(v=1.0):
    return ProbeResult("lesion", [{"layer": "d", "cluster": 0, "p_importance": v}],
                       {"importance": {"fisher_p": v, "n": 1, "n_excluded": 0}}, {"n_random": 20})


def test_key_depends_on_every_part():
    base = ("a", "b", "lesion", 12, 0, {"x": 1})
    keys = {cache_key(*base), cache_key("z", *base[1:]), cache_key("a", "z", *base[2:]),
            cache_key("a", "b", "visualization", 12, 0, {"x": 1}), cache_key("a", "b", "lesion", 11, 0, {"x": 1}),
            cache_key("a", "b", "lesion", 12, 1, {"x": 1}), cache_key("a", "b", "lesion", 12, 0, {"x": 2})}
    assert len(keys) == 7
    assert cache_key(*base) == cache_key("a", "b", "lesion", 12, 0, {"x": 1})  # deterministic
    assert data_hash(np.zeros(3), np.zeros(3)) != data_hash(np.zeros(3), np.ones(3))


def test_roundtrip_is_json(tmp_path):
    c = ProbeCache(tmp_path)
    assert c.get(KEY) is None
    path = c.put(KEY, _result(0.25))
    assert json.loads(path.read_text())["result"]["network"]["importance"]["fisher_p"] == 0.25
    assert c.get(KEY) == _result(0.25)


def test_get_or_compute_computes_once(tmp_path):
    calls = []
    compute = lambda: calls.append(1) or _result()  # noqa: E731
    r1, fresh1 = ProbeCache(tmp_path).get_or_compute(KEY, compute)
    r2, fresh2 = ProbeCache(tmp_path).get_or_compute(KEY, compute)  # a new process's cache object
    assert (fresh1, fresh2) == (True, False) and r1 == r2 and len(calls) == 1


@pytest.mark.parametrize("garbage", [b"{not json", b"", b'{"key": "x"}', b"[1, 2]", b"\xff\xfe"])
def test_corrupt_entry_is_recomputed_and_replaced(tmp_path, garbage):
    c = ProbeCache(tmp_path)
    c.path(KEY).parent.mkdir(parents=True)
    c.path(KEY).write_bytes(garbage)
    assert c.get(KEY) is None
    r, fresh = c.get_or_compute(KEY, lambda: _result(0.5))
    assert fresh and c.get(KEY) == _result(0.5)


@pytest.mark.parametrize("bad", ["../" * 5 + "etc/passwd", "/etc/passwd", "ab", "A" * 64, KEY + "x",
                                 "..", "0" * 63 + "/", None, 5])
def test_no_path_escape(tmp_path, bad):
    c = ProbeCache(tmp_path / "cache")
    with pytest.raises(CacheError):
        c.path(bad)
    with pytest.raises(CacheError):
        c.get(bad)


def test_paths_stay_inside_root(tmp_path):
    c = ProbeCache(tmp_path / "cache")
    for key in (KEY, "0" * 64, "f" * 64):
        assert c.path(key).resolve().is_relative_to((tmp_path / "cache").resolve())
        assert c.lock_path(key).resolve().is_relative_to((tmp_path / "cache").resolve())


HOLDER = """
import sys, time
from modtest.store import ProbeCache
c = ProbeCache(sys.argv[1])
lock = c.lock(sys.argv[2])
lock.acquire()
print("locked", flush=True)
time.sleep(float(sys.argv[3]))
if sys.argv[4] == "write":
    from modtest.results import ProbeResult
    c.put(sys.argv[2], ProbeResult("lesion", [], {"importance": {"fisher_p": 0.125}}, {}))
lock.release()
"""


def _hold(tmp_path, seconds, write=False):
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), KEY, str(seconds),
                             "write" if write else "-"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_lock_of_killed_process_does_not_block(tmp_path):
    proc = _hold(tmp_path, 120)
    try:
        busy = ProbeCache(tmp_path, lock_timeout=0.3)
        with pytest.raises(CacheError, match="waited"):  # the live holder really blocks
            busy.get_or_compute(KEY, _result)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert ProbeCache(tmp_path).lock_path(KEY).exists()  # the lock file is left behind ...
    # ... but the kernel released it: a cache that may not wait at all (timeout 0) gets it at once
    r, fresh = ProbeCache(tmp_path, lock_timeout=0).get_or_compute(KEY, lambda: _result(0.75))
    assert fresh and r == _result(0.75)


def test_waits_for_probe_in_progress(tmp_path):
    proc = _hold(tmp_path, 1.0, write=True)
    calls = []
    r, fresh = ProbeCache(tmp_path, lock_timeout=30).get_or_compute(KEY, lambda: calls.append(1) or _result())
    proc.wait()
    assert not fresh and not calls and r.network["importance"]["fisher_p"] == 0.125


def _worker(root):
    def compute():
        time.sleep(0.3)
        with open(os.path.join(root, "calls"), "a") as f:
            f.write(f"{os.getpid()}\n")
        return _result(0.5)

    r, fresh = ProbeCache(root).get_or_compute(KEY, compute)
    return r.to_dict(), fresh


def test_concurrent_writers_one_valid_entry(tmp_path):
    with ProcessPoolExecutor(4) as ex:
        outs = list(ex.map(_worker, [str(tmp_path)] * 4))
    assert sum(fresh for _, fresh in outs) == 1
    assert len((tmp_path / "calls").read_text().split()) == 1
    assert all(d == _result(0.5).to_dict() for d, _ in outs)
    entries = list(tmp_path.glob("*/*.json"))
    assert len(entries) == 1 and ProbeCache(tmp_path).get(KEY) == _result(0.5)
    assert not list(tmp_path.glob("*/*.tmp"))


def test_concurrent_put_never_half_written(tmp_path):
    c = ProbeCache(tmp_path)
    stop = threading.Event()
    seen = []

    def reader():
        while not stop.is_set():
            if c.path(KEY).exists():
                seen.append(c.get(KEY) is not None)

    t = threading.Thread(target=reader)
    t.start()
    threads = [threading.Thread(target=lambda v=v: [c.put(KEY, _result(v)) for _ in range(20)])
               for v in (0.1, 0.2, 0.3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stop.set()
    t.join()
    assert all(seen) and c.get(KEY).network["importance"]["fisher_p"] in (0.1, 0.2, 0.3)


def test_store_memory_then_disk(tmp_path):
    from _fakes import FakeModel

    from modtest.probes import Registry
    from modtest.probes.store import ProbeStore

    calls = []

    def fake(req):
        calls.append(req.k)
        return _result(0.01)

    registry = Registry()
    registry.register("fake", "fakeprobe", fake)
    x, y, model = np.zeros((2, 2)), np.zeros(2), FakeModel("fake")
    s1 = ProbeStore(ProbeCache(tmp_path), registry=registry)
    assert s1.run("fakeprobe", model, x, y, 3, 0).source == "computed"
    assert s1.run("fakeprobe", model, x, y, 3, 0).source == "memory"
    s2 = ProbeStore(ProbeCache(tmp_path), registry=registry)
    assert s2.run("fakeprobe", model, x, y, 3, 0).source == "disk"
    assert s2.run("fakeprobe", model, x, y, 4, 0).source == "computed"
    assert calls == [3, 4]


INNER = """
from modtest.assertions import assert_importance, assert_output_coherence

def test_a():
    assert_importance("m.keras", k=2)
    assert_output_coherence("m.keras", k=2)  # same probe: reused in memory

def test_b():
    assert_importance("m.keras", k=3)
"""


def test_second_run_computes_nothing(pytester, modtest_stub, monkeypatch):
    modtest_stub({2: 0.01, 3: 0.02})
    pytester.makepyfile(test_inner=INNER)
    calls = pytester.path / "calls.txt"
    monkeypatch.setenv("MODTEST_STUB_CALLS", str(calls))
    for _ in range(2):
        res = pytester.runpytest_subprocess("-p", "modtest", "-p", "no:cacheprovider")
        res.assert_outcomes(passed=2)
    assert len(calls.read_text().splitlines()) == 2  # k=2 and k=3, in the first run only
    assert len(list((pytester.path / ".modtest" / "cache").glob("*/*.json"))) == 2
