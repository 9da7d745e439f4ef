"""Work split of the lesion probe between processes through a shared folder (modtest.workshare).

Several processes running the same lesion_study with one workshare folder give the serial result,
each computing only part of the units; a process killed mid-unit leaves no unit file and its lock
dies with it (flock), so the next run recomputes that unit.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from modtest.errors import CacheError, InvalidInput  # noqa: E402
from modtest.executors.workshare import WorkShare, unit_key  # noqa: E402

try:
    import importlib.util

    _HAVE_JAX = importlib.util.find_spec("jax") is not None
except (ImportError, ValueError):
    _HAVE_JAX = False
ROOT = Path(__file__).resolve().parents[1]
N_RANDOM = 6
K = 3

# One worker: load the model and data, wait for the go file, run the study, write JSON. Each unit it
# claims is marked (name.claim.N) and then held until the test writes "release": so while the first
# claimer holds its unit, the other process must claim another one (no timing involved).
WORKER = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path
    import numpy as np
    from modtest.frameworks.keras.model import load_model
    from modtest.cluster import cluster
    from modtest.probes.lesion import lesion_study
    from modtest.executors.workshare import WorkShare

    tmp, name, hang = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1"
    model = load_model(tmp / "model.keras")
    d = np.load(tmp / "data.npz")
    part = cluster(model, k=%(k)d, seed=0)

    class Held(WorkShare):
        def run(self, units, compute, on_unit=None):
            def held(item):
                if hang:  # claimed (the lock is held): say so, then never finish
                    (tmp / (name + ".claimed")).write_text("1")
                    time.sleep(600)
                n = len(list(tmp.glob(name + ".claim.*")))
                (tmp / f"{name}.claim.{n}").write_text("1")
                while not (tmp / "release").exists():
                    time.sleep(0.01)
                return compute(item)
            return super().run(units, held, on_unit)

    share = Held(tmp / "share")
    (tmp / (name + ".ready")).write_text("1")
    while not (tmp / "go").exists():
        time.sleep(0.02)
    res = lesion_study(model, part, d["x"], d["y"], n_random=%(n)d, seed=0, progress=False, workshare=share)
    out = {"result": json.loads(res.to_json()), "computed": share.stats.computed,
           "found": share.stats.found, "waited": share.stats.waited, "recovered": share.stats.recovered}
    if name == "w0":  # the serial run, in the same backend as the workers
        out["serial"] = json.loads(lesion_study(model, part, d["x"], d["y"], n_random=%(n)d, seed=0,
                                                progress=False).to_json())
    (tmp / (name + ".json")).write_text(json.dumps(out))
''') % {"k": K, "n": N_RANDOM}


def _model(tmp):
    keras.utils.set_random_seed(7)
    m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(12, activation="relu", name="h1"),
                          keras.layers.Dense(10, activation="relu", name="h2"),
                          keras.layers.Dense(4, activation="softmax", name="out")])
    m.save(tmp / "model.keras")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 6)).astype("float32")
    y = rng.integers(0, 4, 80)
    np.savez(tmp / "data.npz", x=x, y=y)
    return m, x, y


def _spawn(tmp, name, hang=False):
    script = tmp / "worker.py"
    script.write_text(WORKER)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(ROOT))
    if _HAVE_JAX:  # imports in half the time of tensorflow; the serial reference runs in worker w0
        env["KERAS_BACKEND"] = "jax"
    return subprocess.Popen([sys.executable, str(script), str(tmp), name, "1" if hang else "0"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _wait_files(paths, procs, timeout=180):
    t0 = time.time()
    while not all(p.exists() for p in paths):
        for pr in procs:
            if pr.poll() not in (None, 0):
                raise AssertionError(pr.stderr.read().decode()[-3000:])
        assert time.time() - t0 < timeout, "workers did not get ready"
        time.sleep(0.05)


def _serial(tmp):
    from modtest.cluster import cluster
    from modtest.frameworks.keras.model import load_model

    model = load_model(tmp / "model.keras")
    d = np.load(tmp / "data.npz")
    return model, cluster(model, k=K, seed=0), d


def _same(a: dict, b: dict):
    assert a["rows"] == b["rows"]
    assert a["network"] == b["network"]
    assert {k: v for k, v in a["settings"].items()} == b["settings"]


def _shared_run(tmp_path, n_procs):
    _model(tmp_path)
    procs = [_spawn(tmp_path, f"w{i}") for i in range(n_procs)]
    try:
        _wait_files([tmp_path / f"w{i}.ready" for i in range(n_procs)], procs)
        (tmp_path / "go").write_text("1")
        # every process holds a unit of its own before any is computed: each computes at least one
        _wait_files([tmp_path / f"w{i}.claim.0" for i in range(n_procs)], procs)
        (tmp_path / "release").write_text("1")
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err.decode()[-3000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    outs = [json.loads((tmp_path / f"w{i}.json").read_text()) for i in range(n_procs)]
    serial = outs[0]["serial"]
    n_units = len(serial["rows"])
    assert n_units >= 4
    for o in outs:
        _same(o["result"], serial)
        assert o["computed"] + o["found"] + o["waited"] + o["recovered"] == n_units
        assert o["computed"] < n_units  # each did only part of the work
    assert sum(o["computed"] for o in outs) == n_units  # and no unit was computed twice
    assert all(o["computed"] > 0 for o in outs)
    assert len(list((tmp_path / "share").glob("*/*.unit.json"))) == n_units
    return outs


def test_two_processes_share_units_and_match_serial(tmp_path):
    _shared_run(tmp_path, 2)


@pytest.mark.slow
def test_three_processes_share_units_and_match_serial(tmp_path):
    _shared_run(tmp_path, 3)


VICTIM = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    from modtest.executors.workshare import WorkShare

    def hang(_):  # the unit is claimed (its lock held): say so, then "compute" until killed
        Path(sys.argv[3]).write_text("1")
        time.sleep(600)

    WorkShare(sys.argv[1]).run([(sys.argv[2], None)], hang)
''')


def test_killed_claimer_leaves_no_unit_and_does_not_block(tmp_path):
    from modtest.cluster import cluster
    from modtest.probes.lesion import lesion_study

    model, x, y = _model(tmp_path)
    part = cluster(model, k=K, seed=0)
    first = WorkShare(tmp_path / "first")  # learn the study's unit keys
    want = json.loads(lesion_study(model, part, x, y, n_random=N_RANDOM, seed=0, progress=False,
                                   workshare=first).to_json())
    n_units = len(want["rows"])
    key = first.stats.computed_keys[1]
    share = WorkShare(tmp_path / "share")
    (tmp_path / "victim.py").write_text(VICTIM)
    p = subprocess.Popen([sys.executable, str(tmp_path / "victim.py"), str(share.root), key,
                          str(tmp_path / "claimed")], env=dict(os.environ, PYTHONPATH=str(ROOT)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        _wait_files([tmp_path / "claimed"], [p], timeout=60)
        assert share.try_claim(key) is None  # held by the live process
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert not list(share.root.glob("*/*.unit.json"))  # nothing half-written
    assert not [f for f in share.root.glob("*/*") if f.suffix == ".tmp"]
    lock = share.try_claim(key)  # the kernel dropped the dead process's lock
    assert lock is not None
    lock.release()
    # a corrupt unit file (e.g. a truncated copy) is a miss too
    (share.root / key[:2] / f"{key}.unit.json").write_text('{"key": "' + key + '", "val')
    assert share.get(key) is None
    got = lesion_study(model, part, x, y, n_random=N_RANDOM, seed=0, progress=False, workshare=share)
    _same(json.loads(got.to_json()), want)
    assert share.stats.computed == n_units and key in share.stats.computed_keys
    again = WorkShare(share.root)  # a third run finds every unit published
    lesion_study(model, part, x, y, n_random=N_RANDOM, seed=0, progress=False, workshare=again)
    assert again.stats.found == n_units and again.stats.computed == 0


def test_workshare_protocol_in_process(tmp_path):
    share = WorkShare(tmp_path)
    keys = [unit_key("t", i) for i in range(4)]
    held = share.try_claim(keys[2])  # "another process" holds unit 2 ...
    calls = []

    def compute(i):
        calls.append(i)
        if i == 3:  # ... and publishes it while we work on unit 3
            share.put(keys[2], {"v": 20})
            held.release()
        return {"v": i * 10, "nan": float("nan")}

    out = share.run([(k, i) for i, k in enumerate(keys)], compute)
    assert calls == [0, 1, 3]
    assert [out[k]["v"] for k in keys] == [0, 10, 20, 30]
    assert np.isnan(out[keys[0]]["nan"])
    assert (share.stats.computed, share.stats.waited) == (3, 1)
    again = WorkShare(tmp_path)
    again.run([(k, i) for i, k in enumerate(keys)], lambda i: pytest.fail("recomputed"))
    assert again.stats.found == 4
    with pytest.raises(CacheError, match="64 lowercase hex digits"):
        share.path("../../etc/passwd")


@pytest.mark.parametrize("probe, settings", [
    ("lesion", {"n_random": N_RANDOM, "progress": False}),
    ("visualization", {"n_random": 3, "steps": 4, "batch_size": 8, "min_size": 1}),
])
def test_prefetch_fills_the_store_with_the_probe_result(tmp_path, probe, settings):
    from modtest.probes.store import ProbeStore
    from modtest.store import ProbeCache
    model, x, y = _model(tmp_path)
    store = ProbeStore(ProbeCache(tmp_path / "cache"))
    run = store.prefetch(probe, model, x, y, K, 0, settings)
    assert run.source == "computed"
    assert list((tmp_path / "cache" / "workshare").glob("*/*.unit.json"))
    fresh = ProbeStore(ProbeCache(tmp_path / "cache"))  # what an assertion then gets: a disk hit
    hit = fresh.run(probe, model, x, y, K, 0, settings)
    rows = json.loads(run.result.to_json())["rows"]  # JSON: a NaN CoV reads back as null
    assert hit.source == "disk" and json.loads(hit.result.to_json())["rows"] == rows
    plain = ProbeStore().run(probe, model, x, y, K, 0, settings)
    assert json.loads(plain.result.to_json())["rows"] == rows


def test_idle_process_helps_with_announced_jobs_and_results_match(tmp_path):
    """A store with a workshare announces its splittable probe as a job while computing it; another
    store (an idle xdist worker) that calls help() computes free units of the jobs on its model only;
    the owner then finds them, and every result equals the serial one."""
    from modtest.probes.clusterability import clusterability
    from modtest.probes.store import ProbeStore, data_fingerprint, model_fingerprint

    model, x, y = _model(tmp_path)
    share_dir = tmp_path / "share"
    zeros = (np.zeros(0, np.float32), np.zeros(0, np.int64))
    owner = WorkShare(share_dir)
    job = {"probe": "clusterability", "k": 2, "seed": 0, "settings": {"n_shuffles": 6},
           "model": model_fingerprint(model), "data": data_fingerprint(*zeros)}
    key = owner.announce(job)
    other = dict(job, model="0" * 64)  # a job on another model: not this helper's business
    owner.announce(other)
    assert len(owner.open_jobs()) == 2
    helper = ProbeStore(workshare=WorkShare(share_dir))
    assert helper.help(model, [zeros, (x, y)]) == 7  # the model's n-cut and its 6 shuffles
    assert helper.helped == {"clusterability": 7}
    shared = clusterability(model, k=2, n_shuffles=6, workshare=owner)
    assert owner.stats.found == 7 and owner.stats.computed == 0
    assert shared == clusterability(model, k=2, n_shuffles=6)
    owner.retire(key)
    assert owner.open_jobs() == [other]
    assert ProbeStore().help(model, [zeros]) == 0  # no workshare: nothing to join


def test_store_with_workshare_announces_while_computing_and_retires(tmp_path):
    from modtest.probes.store import ProbeStore

    model, x, y = _model(tmp_path)
    share = WorkShare(tmp_path / "share")
    seen = []
    real_retire = share.retire
    share.retire = lambda k: (seen.append(list(share.open_jobs())), real_retire(k))
    store = ProbeStore(workshare=share)
    zeros = (np.zeros(0, np.float32), np.zeros(0, np.int64))
    res = store.run("clusterability", model, *zeros, 2, 0, {"n_shuffles": 4}).result
    assert seen and seen[0][0]["probe"] == "clusterability" and seen[0][0]["settings"] == {"n_shuffles": 4}
    assert share.open_jobs() == [] and share.stats.computed == 5
    assert res.network["clusterability"]["n"] == 4


def test_a_replaced_compute_is_shared_only_when_it_says_so(tmp_path):
    """A measure re-registered with a compute function of its own (a plugin's stub, a custom lesion)
    is run whole by one process: no job is announced and no helper joins it, since a helper would
    otherwise run the whole function again. ``splittable=True`` opts back in."""
    from modtest.probes import SPLITTABLE, Registry, builtin_registry
    from modtest.probes.store import ProbeStore, data_fingerprint, model_fingerprint
    from modtest.results import ProbeResult

    model, x, y = _model(tmp_path)
    calls, announced, current = [], [], {}

    def whole(req):
        calls.append(req.executor)
        announced.append(list(current["share"].open_jobs()))
        return ProbeResult("lesion", [], {"importance": {"fisher_p": 0.5}}, {"k": req.k}, {})

    assert builtin_registry().splittable == set(SPLITTABLE) == {"lesion", "clusterability", "visualization"}
    registry = Registry()
    registry.register("importance", "lesion", whole)
    share = current["share"] = WorkShare(tmp_path / "share")
    ProbeStore(workshare=share, registry=registry).run("lesion", model, x, y, K, 0)
    assert calls == [None] and announced == [[]]  # run here, nothing announced
    share.announce({"probe": "lesion", "k": K, "seed": 0, "settings": {},
                    "model": model_fingerprint(model), "data": data_fingerprint(x, y)})
    helper = ProbeStore(workshare=WorkShare(tmp_path / "share"), registry=registry)
    assert helper.help(model, [(x, y)]) == 0 and len(calls) == 1  # not joined, not run again
    with pytest.raises(InvalidInput, match="cannot be shared out"):
        helper.prefetch("lesion", model, x, y, K, 0)

    registry.register("importance", "lesion", whole, splittable=True)
    registry.register("another", "lesion", whole)  # a second measure of the same function keeps it
    assert registry.is_splittable("lesion")
    share2 = current["share"] = WorkShare(tmp_path / "share2")
    ProbeStore(workshare=share2, registry=registry).run("lesion", model, x, y, K, 1)
    assert calls[-1] is not None and announced[-1] and announced[-1][0]["probe"] == "lesion"


def test_visualization_units_shared_match_serial(tmp_path):
    """The visualization probe's units are chunks of batch_size images: a helper computing them
    (through an announced job) gives the owner exactly the serial result."""
    from modtest.cluster import cluster
    from modtest.probes.store import ProbeStore, data_fingerprint, model_fingerprint
    from modtest.probes.visualization import visualization_study

    model, x, y = _model(tmp_path)
    settings = {"n_random": 3, "steps": 4, "batch_size": 4, "min_size": 1}
    part = cluster(model, k=K, seed=0)
    serial = visualization_study(model, part, seed=0, **settings)
    share = WorkShare(tmp_path / "share")
    share.announce({"probe": "visualization", "k": K, "seed": 0, "settings": settings,
                    "model": model_fingerprint(model), "data": data_fingerprint(x, y)})
    helper = ProbeStore(workshare=WorkShare(tmp_path / "share"))
    n_images = serial.extras["n_images"]
    assert helper.help(model, [(x, y)]) == -(-n_images // 4) >= 2
    owner = WorkShare(tmp_path / "share")
    shared = visualization_study(model, part, seed=0, workshare=owner, **settings)
    assert owner.stats.found == helper.helped["visualization"] and owner.stats.computed == 0
    assert json.loads(shared.to_json())["rows"] == json.loads(serial.to_json())["rows"]
    assert shared.network == serial.network


def test_helper_retires_a_job_whose_result_is_already_cached(tmp_path):
    """A job left open by a killed worker whose probe was computed since is closed, not redone."""
    from modtest.probes.store import ProbeStore, data_fingerprint, model_fingerprint
    from modtest.store import ProbeCache

    model, _, _ = _model(tmp_path)
    zeros = (np.zeros(0, np.float32), np.zeros(0, np.int64))
    cache = ProbeCache(tmp_path / "cache")
    ProbeStore(cache).run("clusterability", model, *zeros, 2, 0, {"n_shuffles": 3})
    share = WorkShare(tmp_path / "share")
    share.announce({"probe": "clusterability", "k": 2, "seed": 0, "settings": {"n_shuffles": 3},
                    "model": model_fingerprint(model), "data": data_fingerprint(*zeros)})
    helper = ProbeStore(cache, workshare=share)
    assert helper.help(model, [zeros]) == 0 and share.open_jobs() == []
