"""Faults under xdist: a worker killed in the middle of a probe, locks of dead processes, concurrency.

Inner pytester sessions use the stub probe of conftest.py (no Keras), wrapped so that the probe for
k=3 kills its own worker with SIGKILL while it holds the cache entry's lock, once (a marker file
arms it). tests/test_cache.py covers the cache object itself (killed lock holder, concurrent writers
in a process pool); here the same faults go through the plugin and xdist.
"""
from __future__ import annotations

import json

import pytest

from modtest.store import ProbeCache

PLUGIN = ("-p", "modtest", "-p", "no:cacheprovider")

KILLER = '''

# --- appended by test_faults: kill this worker in the middle of the k=3 probe, once
_stub = stub_lesion

def killing_lesion(ctx):
    arm = os.environ.get("MODTEST_KILL_ARMED")
    if ctx.k == 3 and arm and os.path.exists(arm):
        os.remove(arm)  # only the first run dies
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
    return _stub(ctx)

for _name, _pk in (("importance", "p_importance"), ("output_coherence", "p_coherence")):
    probes.register_measure(_name, "lesion", killing_lesion, _name, "stub claim",
                            row_p_key=_pk, row_effect_key="drop")
'''

INNER = """
from modtest.assertions import assert_importance, assert_output_coherence

def test_a():
    assert_importance("m.keras", k=2)

def test_b():
    assert_importance("m.keras", k=3)
    assert_output_coherence("m.keras", k=3)

def test_c():
    assert_importance("m.keras", k=4)

def test_d():
    assert_output_coherence("m.keras", k=2)
"""

P_BY_K = {2: 0.001, 3: 0.002, 4: 0.03}


@pytest.fixture
def killer(pytester, modtest_stub, monkeypatch):
    modtest_stub(P_BY_K)
    with open(pytester.path / "conftest.py", "a") as f:
        f.write(KILLER)
    pytester.makepyfile(test_inner=INNER)
    arm = pytester.path / "kill-armed"
    monkeypatch.setenv("MODTEST_KILL_ARMED", str(arm))
    monkeypatch.setenv("MODTEST_STUB_CALLS", str(pytester.path / "calls.txt"))
    return pytester, arm


def _run(pytester, *args):
    return pytester.runpytest_subprocess(*PLUGIN, *args, timeout=180)


def _claims(path):
    rep = json.loads(path.read_text())
    return [(c["nodeid"], c["measure"], c["p_raw"], c["p_corrected"], c["verdict"]) for c in rep["claims"]]


def _entries_all_valid(root):
    cache = ProbeCache(root)
    entries = [p for p in root.rglob("*.json") if "workshare" not in p.relative_to(root).parts]
    assert all(cache.get(p.stem) is not None for p in entries), "corrupt cache entry"
    assert not list(root.rglob("*.tmp")), "half-written temporary file left behind"
    return entries


def test_worker_killed_mid_probe_then_clean_rerun(killer):
    pytester, arm = killer
    arm.write_text("armed")
    res = _run(pytester, "-n", "2", "--modtest-cache", "cache", "--modtest-json", "crash.json")
    out = res.stdout.str()
    assert res.ret != 0 and not arm.exists(), out
    assert "crashed" in out or "node down" in out, out
    res.assert_outcomes(failed=1, passed=3)  # test_b died with its worker; xdist replaced the worker
    entries = _entries_all_valid(pytester.path / "cache")
    assert len(entries) == 2  # k=2 and k=4; nothing for the probe that was killed
    locks = list((pytester.path / "cache").rglob("*.lock"))
    assert locks  # the dead worker's lock file is left behind ...

    res = _run(pytester, "-n", "2", "--modtest-cache", "cache", "--modtest-json", "after.json")
    res.assert_outcomes(passed=4)  # ... and does not block (flock is released with its process)
    assert len(_entries_all_valid(pytester.path / "cache")) == 3

    res = _run(pytester, "--modtest-cache", "clean", "--modtest-json", "clean.json")  # serial, cold
    res.assert_outcomes(passed=4)
    assert _claims(pytester.path / "after.json") == _claims(pytester.path / "clean.json")
    assert len(_claims(pytester.path / "clean.json")) == 5
    a = {p.relative_to(pytester.path / "cache") for p in _entries_all_valid(pytester.path / "cache")}
    b = {p.relative_to(pytester.path / "clean") for p in _entries_all_valid(pytester.path / "clean")}
    assert a == b  # the same entries (same keys), whichever run computed them
    for rel in a:
        ja = json.loads((pytester.path / "cache" / rel).read_text())["result"]
        jb = json.loads((pytester.path / "clean" / rel).read_text())["result"]
        ja["extras"].pop("seconds", None), jb["extras"].pop("seconds", None)
        assert ja == jb


@pytest.mark.slow
def test_workers_sharing_a_probe_compute_it_once(killer):
    """Two workers asking for the same probe at once: one computes, the other waits and reads."""
    pytester, _arm = killer
    pytester.makepyfile(test_inner="""
        import pytest
        from modtest.assertions import assert_importance

        @pytest.mark.parametrize("i", range(4))
        def test_same(i):
            assert_importance("m.keras", k=2)
    """)
    res = _run(pytester, "-n", "2", "--modtest-cache", "cache")
    res.assert_outcomes(passed=4)
    calls = (pytester.path / "calls.txt").read_text().split("\n")
    assert len([c for c in calls if c]) == 1
    assert len(_entries_all_valid(pytester.path / "cache")) == 1
