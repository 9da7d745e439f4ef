"""Determinism: for a given seed, partitions, random controls and every p-value are identical between
runs, between call orders, with a cold or a warm cache, and between serial, ``-n 2`` and ``-n 3``
sessions.

Exact equality (not allclose) on one machine. Across machines, see the README: BLAS differences
can move spectral-clustering eigenvectors, oneDNN can change TF convolution sums in the last bits,
and a predicted label whose top-2 outputs are within round-off may flip.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from _models import planted_mlp, tiny_mlp

from modtest._random import random_unit_sets
from modtest.cluster import cluster
from modtest.probes.lesion import lesion_study
from modtest.probes.store import ProbeStore
from modtest.store import ProbeCache


@pytest.fixture(scope="module")
def setup():
    model = tiny_mlp(seed=3, widths=(16, 12))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 6)).astype("float32")
    y = model.predict(x, verbose=0).argmax(1)
    y[::5] = rng.integers(0, 4, len(y[::5]))  # not a perfect fit: drops vary
    return model, x, y


def _strip(d):
    d = json.loads(json.dumps(d))
    d.get("extras", {}).pop("seconds", None)
    return d


def test_partition_identical_between_runs():
    for model, k in ((tiny_mlp(seed=1), 3), (planted_mlp(), 2)):
        a, b = cluster(model, k=k, seed=7), cluster(model, k=k, seed=7)
        assert np.array_equal(a.labels, b.labels) and a.ncut == b.ncut
        assert a.to_dict() == b.to_dict()


def test_lesion_study_identical_between_runs_and_orders(setup):
    model, x, y = setup
    part = cluster(model, k=3, seed=0)
    r1 = lesion_study(model, part, x, y, seed=4, progress=False)
    r2 = lesion_study(model, part, x, y, seed=4, progress=False)
    assert _strip(r1.to_dict()) == _strip(r2.to_dict())
    # random controls do not depend on which other sub-clusters are tested, nor their order
    subset = list(reversed(part.subclusters[1:]))
    r3 = lesion_study(model, subset, x, y, seed=4, progress=False)
    by_name = {r["name"]: r for r in r1.rows}
    for r in r3.rows:
        ref = by_name[r["name"]]
        assert r["random_units"] == ref["random_units"] and r["random_drops"] == ref["random_drops"]
        assert (r["p_importance"], r["p_coherence"]) == (ref["p_importance"], ref["p_coherence"])
    r4 = lesion_study(model, part, x, y, seed=5, progress=False)  # another seed: other controls
    assert [r["random_units"] for r in r4.rows] != [r["random_units"] for r in r1.rows]


def test_random_controls_are_pure_functions_of_their_key():
    a = random_unit_sets(50, 7, 20, "hash", "lesion", "h1", 3, 0)
    _ = random_unit_sets(50, 7, 20, "hash", "lesion", "h1", 2, 0)  # drawing others changes nothing
    assert np.array_equal(a, random_unit_sets(50, 7, 20, "hash", "lesion", "h1", 3, 0))
    assert not np.array_equal(a, random_unit_sets(50, 7, 20, "hash", "lesion", "h1", 3, 1))


def test_cold_and_warm_cache_give_identical_results(setup, tmp_path):
    model, x, y = setup
    cold = ProbeStore(ProbeCache(tmp_path))  # no session partitions: each store clusters anew
    r_cold = cold.run("lesion", model, x, y, 3, 0, {"n_random": 10})
    warm = ProbeStore(ProbeCache(tmp_path))
    r_warm = warm.run("lesion", model, x, y, 3, 0, {"n_random": 10})
    nocache = ProbeStore(None).run("lesion", model, x, y, 3, 0, {"n_random": 10})
    assert (r_cold.source, r_warm.source) == ("computed", "disk")
    assert _strip(r_cold.result.to_dict()) == _strip(r_warm.result.to_dict()) == _strip(nocache.result.to_dict())
    for key in ("importance", "output_coherence"):
        for p in ("fisher_p", "chi2_p"):  # bit-identical floats through the JSON cache
            assert r_cold.result.network[key][p] == r_warm.result.network[key][p]


# --------------------------------------------------------------------------- whole sessions

AUDIT = """
from modtest.assertions import assert_clusterable, assert_importance, assert_output_coherence

def test_importance(model, eval_data):
    assert_importance(model, k=3, data=eval_data)

def test_importance_chi2(model, eval_data):
    assert_importance(model, k=4, data=eval_data, method="chi2")

def test_coherence(model, eval_data):
    assert_output_coherence(model, k=3, data=eval_data)

def test_clusterable(model):
    assert_clusterable(model, k=2, n_shuffles=9)
"""


def _pvalues(path):
    rep = json.loads(path.read_text())
    return sorted((c["nodeid"], c["measure"], c["method"], c["statistic"], c["p_raw"], c["p_corrected"])
                  for c in rep["claims"])


@pytest.mark.slow
def test_serial_parallel_cold_warm_sessions_identical(pytester, setup, tmp_path):
    """A small real audit (lesion + clusterability): serial cold, serial warm, -n 2 cold, -n 2 warm."""
    model, x, y = setup
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=x, y=y)
    pytester.makepyfile(test_audit=AUDIT)
    base = ("-p", "modtest", "-p", "no:cacheprovider", "--model", str(tmp_path / "m.keras"),
            "--data", str(tmp_path / "d.npz"), "--modtest-seed", "2")
    runs = {}
    for name, extra in (("serial_cold", ("--modtest-cache", "c1")), ("serial_warm", ("--modtest-cache", "c1")),
                        ("xdist_cold", ("--modtest-cache", "c2", "-n", "2")),
                        ("xdist_warm", ("--modtest-cache", "c1", "-n", "2"))):
        res = pytester.runpytest_subprocess(*base, *extra, "--modtest-json", f"{name}.json", timeout=300)
        assert res.ret in (0, 1), res.stdout.str()
        runs[name] = _pvalues(pytester.path / f"{name}.json")
    assert len(runs["serial_cold"]) == 4
    assert all(v == runs["serial_cold"] for v in runs.values()), runs
    e1 = sorted(p.relative_to(pytester.path / "c1") for p in (pytester.path / "c1").rglob("*.json"))
    e2 = sorted(p.relative_to(pytester.path / "c2") for p in (pytester.path / "c2").rglob("*.json"))
    assert e1 == e2 and len(e1) == 3  # lesion k=3, lesion k=4, clusterability k=2


def _cache_entries(root):
    """Every probe entry of a cache folder (units and locks left out), timings stripped, by file."""
    out = {}
    for path in sorted(root.glob("[0-9a-f][0-9a-f]/*.json")):
        d = json.loads(path.read_text())
        out[path.name] = _strip(d.get("result", d))
    return out


@pytest.mark.slow
def test_example_audit_identical_for_0_2_and_3_workers(pytester):
    """The shipped example audit (paper protocol) (examples/test_digits_modularity.py on the digits MLP) under -n 0, and
    under -n 2 and -n 3 with every worker sharing the lesion probe's work units: the same partition,
    the same random controls (the sub-clusters' and controls' unit sets in the cached probe results)
    and the same statistics and raw and corrected p-values of every claim."""
    import shutil
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    for name in ("test_digits_modularity.py", "digits_mlp.keras"):
        shutil.copy(root / "examples" / name, pytester.path)
    runs = {}
    for n in (0, 2, 3):
        args = ["-p", "modtest", "-p", "no:cacheprovider", "--model", "digits_mlp.keras", "--modtest-protocol",
                "paper", "--modtest-cache", f"cache{n}", "--modtest-json", f"r{n}.json", "-n", str(n)]
        if n:
            args += ["--modtest-prefetch", "importance"]
        res = pytester.runpytest_subprocess(*args, "test_digits_modularity.py", timeout=600)
        res.assert_outcomes(passed=2, xfailed=1)
        rep = json.loads((pytester.path / f"r{n}.json").read_text())
        runs[n] = {"claims": sorted((c["nodeid"], c["measure"], c["statistic"], c["p_raw"], c["p_corrected"],
                                     c["verdict"]) for c in rep["claims"]),
                   "partitions": sorted(rep["partitions"], key=lambda p: (p["k"], p["seed"])),
                   "probes": _cache_entries(pytester.path / f"cache{n}")}
        if n:  # the workers computed the lesion probe as shared work units (36 sub-clusters at k=12)
            assert len(list((pytester.path / f"cache{n}" / "workshare").glob("*/*.unit.json"))) >= 36
    serial = runs[0]
    assert len(serial["claims"]) == 3 and [p["k"] for p in serial["partitions"]] == [12]
    assert sorted(e["probe"] for e in serial["probes"].values()) == ["clusterability", "lesion"]
    lesion = [e for e in serial["probes"].values() if e["probe"] == "lesion"]
    assert len(lesion) == 1 and all(len(r["random_units"]) == 20 for r in lesion[0]["rows"])
    for n in (2, 3):
        assert runs[n]["claims"] == serial["claims"], n
        assert runs[n]["partitions"] == serial["partitions"], n
        assert runs[n]["probes"] == serial["probes"], n  # rows: units, random_units, drops, p-values


ROBUST = """
from modtest.assertions import assert_importance, assert_output_coherence

def test_importance(model, eval_data):
    assert_importance(model, data=eval_data)

def test_coherence(model, eval_data):
    assert_output_coherence(model, data=eval_data)
"""


@pytest.mark.slow  # the default run checks serial = -n 2 in test_session_correction.py
def test_robust_audit_identical_serial_and_two_workers(pytester, setup, tmp_path):
    """The robust protocol (an ensemble of 5 partitions, controls added where a decision needs them)
    under -n 0 and under -n 2 with both workers sharing the ensemble's lesion units: the same claims
    (p, noise bounds, verdicts) and the same cached probe results."""
    model, x, y = setup
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=x, y=y)
    pytester.makepyfile(test_robust=ROBUST)
    runs = {}
    for n in (0, 2):
        args = ["-p", "modtest", "-p", "no:cacheprovider", "--model", str(tmp_path / "m.keras"), "--data",
                str(tmp_path / "d.npz"), "--modtest-k", "3", "--modtest-ensemble", "5", "--modtest-cache", f"cache{n}",
                "--modtest-json", f"r{n}.json", "-n", str(n)]
        if n:
            args += ["--modtest-prefetch", "importance"]
        res = pytester.runpytest_subprocess(*args, timeout=600)
        assert res.ret in (0, 1), res.stdout.str()
        rep = json.loads((pytester.path / f"r{n}.json").read_text())
        runs[n] = {"claims": sorted((c["nodeid"], c["measure"], c["p_raw"], c["p_low"], c["p_high"], c["verdict"],
                                     c["p_corrected"]) for c in rep["claims"]),
                   "probes": _cache_entries(pytester.path / f"cache{n}")}
        if n:
            assert list((pytester.path / f"cache{n}" / "workshare").glob("*/*.unit.json"))
    assert len(runs[0]["claims"]) == 2 and all(c[3] is not None for c in runs[0]["claims"])
    assert runs[2] == runs[0]
