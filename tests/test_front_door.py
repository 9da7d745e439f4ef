"""The front door (modtest.audit): a model is adapted once and its data checked once; below the door
nothing checks them again, and the results are those of the old path."""
from pathlib import Path

import numpy as np
import pytest
from _models import tiny_mlp

from modtest import assertions, audit, probes
from modtest.audit import Audit, bind_data
from modtest.data import EvalData
from modtest.errors import DataError
from modtest.frameworks import adapt
from modtest.probes import ensemble, lesion

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def model_and_data():
    model = adapt(tiny_mlp(seed=3))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 6)).astype("float32")
    return model, x, np.arange(60) % 4


def _count(monkeypatch, module, name="check_data"):
    calls = []
    real = getattr(module, name)

    def counted(*a, **kw):
        calls.append(1)
        return real(*a, **kw)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_bound_data_carries_its_model_and_is_not_checked_again(model_and_data, monkeypatch):
    model, x, y = model_and_data
    data = bind_data(model, (x, y))
    assert isinstance(data, EvalData) and data.checked_for == model.fingerprint()
    assert bind_data(model, data) is data
    calls = _count(monkeypatch, audit)
    assert assertions.resolve_data(data, model) is data and calls == []
    other = adapt(tiny_mlp(seed=4))  # another model: its own check
    assert bind_data(other, data) is not data and len(calls) == 1
    with pytest.raises(DataError, match="single class"):
        bind_data(model, (x, np.zeros(60, dtype=int)))


def test_the_robust_study_checks_its_data_once_for_the_ensemble(model_and_data, monkeypatch):
    model, x, y = model_and_data
    in_lesion, in_ensemble = _count(monkeypatch, lesion), _count(monkeypatch, ensemble)
    res = ensemble.robust_lesion_study(model, x, y, k=3, ensemble=5, n_random=5, max_random=10)
    assert res.network["importance"]["ensemble"] == 5
    assert in_ensemble == [1] and in_lesion == []  # once, not once per partition


def test_run_audit_is_the_door_and_gives_what_it_gave(model_and_data):
    """run_audit (the old entry point) and Audit.open(...).run() give the same claims."""
    from modtest.report import run_audit

    model, x, y = model_and_data
    kw = dict(k=3, seed=0, protocol="paper", n_random=9)
    old, _p, _r = run_audit(model, x, y, progress=False, **kw)
    door = Audit.open(model, (x, y), progress=False, registry=probes.builtin_registry(), **kw)
    new, part, res = door.run()
    strip = [{k: c[k] for k in ("measure", "p_raw", "p_corrected", "verdict")} for c in old.claims]
    assert strip == [{k: c[k] for k in ("measure", "p_raw", "p_corrected", "verdict")} for c in new.claims]
    assert part is door.partition() and res.probe == "lesion" and door.x is door.data[0]


def test_the_door_reads_the_shipped_example(monkeypatch):
    calls = _count(monkeypatch, audit, "adapt")
    door = Audit.open(ROOT / "examples" / "digits_mlp.keras", None, progress=False)
    assert calls == [1] and door.data.checked_for == door.adapter.fingerprint() and len(door.x) == 540
