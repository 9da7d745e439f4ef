"""Shared test helpers: the pytester plugin and a stub-probe conftest for inner sessions (small seeded
models live in tests/_models.py)."""

import random
import sys
import tempfile
from pathlib import Path

import _pytest.pytester
import pytest

pytest_plugins = ["pytester"]

_TMP = str(Path(tempfile.gettempdir()).resolve())


def _outlives_inner_sessions(name: str) -> bool:
    """Whether module ``name`` stays loaded when a pytester test ends: every module except the inner
    sessions' own (their conftest.py and test files, written under the temporary folder)."""
    module = sys.modules.get(name)
    path = getattr(module, "__file__", None)
    return not path or not str(Path(path).resolve()).startswith(_TMP)


class _KeepLibraries(_pytest.pytester.SysModulesSnapshot):
    """pytester drops the modules a test imported when the test ends, and the next import loads them
    again: TensorFlow aborts the process then, numpy's and scipy's compiled parts refuse ("cannot
    load module more than once per process"), so whether a test passed depended on which file its
    worker ran first. Only the inner sessions' own modules are dropped."""

    def __init__(self, preserve=None):
        super().__init__(lambda name: _outlives_inner_sessions(name) or bool(preserve and preserve(name)))


_pytest.pytester.SysModulesSnapshot = _KeepLibraries

#: the head of an inner session's conftest: tests/_fakes.py (the fake adapter), importable there
FAKE_FILES = f'''
import sys
sys.path.insert(0, {str(Path(__file__).resolve().parent / "tests")!r})
from _fakes import FakeModel, register_fake_files
'''

# A conftest for pytester inner sessions: replaces the lesion probe with a stub whose network p-value
# is P[str(k)] (so each assertion's raw p is known), and registers the fake model adapter of
# tests/_fakes.py for .keras files (no framework, fits the shipped digits data), so an inner session
# needs no Keras and runs in about a second. Each probe computation appends a line to
# the file named by $MODTEST_STUB_CALLS (when set), so tests can count them across processes.
STUB_CONFTEST = FAKE_FILES + '''
import os
from modtest import probes
from modtest.results import ProbeResult

P = {p_by_k!r}

register_fake_files("m.keras", "m1.keras", "m2.keras")

def stub_lesion(req):
    calls = os.environ.get("MODTEST_STUB_CALLS")
    if calls:
        with open(calls, "a") as f:
            f.write(f"{{os.getpid()}} {{req.k}}\\n")
    p = P.get(str(req.k), 0.5)
    if p is None:
        from modtest.errors import NoTestableSubclusters
        raise NoTestableSubclusters("none of the 4 sub-clusters has >= 3 units")
    rows = [{{"layer": "dense_2", "cluster": 3, "size": 9, "fraction": 0.1, "drop": 0.12,
             "p_importance": 1 / 21, "p_coherence": 0.5, "category": "important"}},
            {{"layer": "dense_1", "cluster": 0, "size": 5, "fraction": 0.05, "drop": 0.01,
             "p_importance": 0.5, "p_coherence": 0.2, "category": "other"}}]
    net = {{"fisher_p": p, "fisher_stat": 1.5, "chi2_p": p, "chi2_stat": 2.5, "n": 29, "n_excluded": 0}}
    return ProbeResult("lesion", rows, {{"importance": net, "output_coherence": dict(net)}},
                       {{"k": req.k}}, {{"seconds": 0.01}})

for _name, _pk in (("importance", "p_importance"), ("output_coherence", "p_coherence")):
    probes.register_measure(_name, "lesion", stub_lesion, _name, "stub claim",
                            row_p_key=_pk, row_effect_key="drop")
'''


@pytest.fixture
def modtest_stub(pytester):
    """``make(p_by_k)`` writes the stub conftest into the pytester folder."""

    def make(p_by_k: dict):
        pytester.makeconftest(STUB_CONFTEST.format(p_by_k={str(k): v for k, v in p_by_k.items()}))
        return pytester

    return make


@pytest.fixture(autouse=True)
def _inner_sessions_are_not_xdist_workers(monkeypatch):
    """This suite runs under xdist (``-n 2`` in pyproject's addopts): its workers' PYTEST_XDIST_*
    variables, and the mark modtest's plugin leaves on a pinned worker, must not leak into the inner
    sessions and subprocesses the tests start (they would think they are workers of another session)."""
    for name in ("PYTEST_XDIST_WORKER", "PYTEST_XDIST_WORKER_COUNT", "PYTEST_XDIST_TESTRUNUID", "_MODTEST_PINNED"):
        monkeypatch.delenv(name, raising=False)


def pytest_addoption(parser):
    parser.addoption("--shuffle", metavar="SEED", default=None,
                     help="run the tests in an order shuffled with SEED (test files and the tests in each); "
                          ".ci/run does a shuffled pass to catch tests that depend on another's leftovers")


def pytest_collection_modifyitems(config, items):
    """``--shuffle SEED``: the same order on every xdist worker (xdist needs identical collections)."""
    seed = config.getoption("--shuffle")
    if seed is None:
        return
    rng = random.Random(str(seed))
    files: dict[str, list] = {}
    for item in items:
        files.setdefault(item.nodeid.split("::")[0], []).append(item)
    groups = list(files.values())
    rng.shuffle(groups)
    for group in groups:
        rng.shuffle(group)
    items[:] = [item for group in groups for item in group]


def pytest_report_header(config):
    seed = config.getoption("--shuffle")
    return None if seed is None else f"tests shuffled with --shuffle {seed}"
