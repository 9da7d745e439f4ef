"""Shared test helpers: the pytester plugin and a stub-probe conftest for inner sessions (small seeded
models live in tests/_models.py)."""

import _pytest.pytester
import pytest

pytest_plugins = ["pytester"]

#: compiled frameworks that cannot be imported twice in one process (TensorFlow aborts)
_FRAMEWORKS = frozenset({"tensorflow", "keras", "tf_keras", "tensorboard", "jax", "jaxlib", "torch",
                         "ml_dtypes", "h5py"})


class _KeepFrameworks(_pytest.pytester.SysModulesSnapshot):
    """pytester drops the modules a test imported when the test ends; a framework first imported
    inside a pytester test (a file run alone, or first on its xdist worker) would then be imported
    again by the next test and abort the process. Frameworks stay loaded."""

    def __init__(self, preserve=None):
        super().__init__(lambda name: name.partition(".")[0] in _FRAMEWORKS or bool(preserve and preserve(name)))


_pytest.pytester.SysModulesSnapshot = _KeepFrameworks

# A conftest for pytester inner sessions: replaces the lesion probe with a stub whose network p-value
# is P[str(k)] (so each assertion's raw p is known), and registers a fake model adapter for .keras
# files (no framework, fits the shipped digits data), so an inner session needs no Keras and runs in
# about a second. Each probe computation appends a line to
# the file named by $MODTEST_STUB_CALLS (when set), so tests can count them across processes.
STUB_CONFTEST = '''
import os
from pathlib import Path
import numpy as np
from modtest import probes
from modtest.frameworks import ModelAdapter, register_adapter
from modtest.results import ProbeResult

P = {p_by_k!r}

class FakeModel:
    def __init__(self, name):
        self.name = name

class FakeAdapter(ModelAdapter):
    # fits the shipped digits data; its fingerprint is its name: no framework, no weights
    framework = "fake"
    input_shape = (8, 8, 1)
    n_classes = 10
    def compute_fingerprint(self):
        return "fake-" + Path(self.model.name).name
    def graph_spec(self):
        raise NotImplementedError
    def unit_layers(self):
        return []
    def lesion_engine(self, x, **kw):
        raise NotImplementedError

register_adapter("fake", accepts=lambda m: isinstance(m, FakeModel), wrap=FakeAdapter,
                 suffixes=(".keras",), load=lambda path, trust=False: FakeModel(str(path)))
for _name in ("m.keras", "m1.keras", "m2.keras"):
    Path(_name).touch()

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
