"""Scaling of the lesion probe's work units: serial vs a Dask ``LocalCluster`` with 1 and 2 worker
processes, and ``pytest -n 1`` vs ``pytest -n 2`` (xdist workers sharing units through a workshare
folder), on one audit; identical results checked.

    python benchmarks/dask_scaling.py [--images 512] [--subclusters 6] [--n-random 20] [--skip-pytest]

The audit: ``keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), classes=10)`` (seeded),
``--images`` random images labelled by the model with 30% of the labels redrawn, the partition
``cluster(model, k=12, seed=0)`` of which ``--subclusters`` sub-clusters spread evenly over the
layers are tested (SUBSAMPLED: the whole study has ~150), each lesioned with ``--n-random`` random
controls (the paper protocol). Printed, each measured in this run:

1. serial: ``lesion_study`` in this process (the baseline);
2. Dask, W = 1 and 2 worker processes (one thread each): the same call with a ``DaskExecutor``;
   start-up (cluster, imports, model load on each worker: a warm-up map) is timed apart and not in
   the probe time, as it is paid once per cluster, not per audit;
3. pytest: a session auditing importance and output coherence of the same model, data and
   sub-clusters (``--modtest-protocol paper --modtest-prefetch importance``), ``-n 1`` vs ``-n 2``,
   whole command wall time (start-up included) and the probe's own time from the JSON report.

The speed-up of 2 workers over serial is capped by the free cores: TensorFlow's serial run already
uses both cores of a 2-core machine for a part of its work. The load average is printed before and
after; on a shared machine absolute times are only indicative.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from _machine import machine  # noqa: E402

CONFTEST = textwrap.dedent('''
    import dataclasses, json, os
    import pytest

    @pytest.hookimpl(tryfirst=True)
    def pytest_collection_finish(session):
        """Test only the benchmark's sub-clusters with its controls (before --modtest-prefetch starts)."""
        from modtest.plugin import get_session

        st = get_session(session.config)
        model = st.context.adapter(st.get_model())
        part = st.context.partition(model, st.k, st.seed)
        keep = set(json.loads(os.environ["DASK_SCALING_SUBS"]))
        st.context.defaults.settings.setdefault("lesion", {})["n_random"] = int(os.environ["DASK_SCALING_N_RANDOM"])
        st.context.partitions[(model.fingerprint(), st.k, st.seed)] = dataclasses.replace(
            part, subclusters=[s for s in part.subclusters if s.name in keep])
''')

TESTS = textwrap.dedent('''
    from modtest import assert_importance, assert_output_coherence

    def test_importance(model):
        assert_importance(model)

    def test_output_coherence(model):
        assert_output_coherence(model)
''')


def _load() -> str:
    try:
        a = os.getloadavg()
        return f"{a[0]:.1f} {a[1]:.1f} {a[2]:.1f}"
    except OSError:
        return "?"


def _spread(items, m):
    idx = np.unique(np.linspace(0, len(items) - 1, m).round().astype(int))
    return [items[i] for i in idx]


def _strip(result) -> dict:
    d = json.loads(result.to_json())
    d["extras"].pop("seconds", None)
    return d


def _audit(args, tmp: Path):
    """The model (saved), data (saved), and the sub-clusters tested."""
    import keras

    from modtest.cluster import cluster
    from modtest.frameworks import adapt

    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), classes=10)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (args.images, 32, 32, 3)).astype("float32")
    y = model.predict(x, verbose=0, batch_size=128).argmax(1)
    flip = rng.random(len(y)) < 0.3
    y[flip] = rng.integers(0, 10, int(flip.sum()))
    model.save(tmp / "vgg16.keras")
    np.savez(tmp / "data.npz", x=x, y=y)
    adapter = adapt(tmp / "vgg16.keras")
    part = cluster(adapter, k=12, seed=0)
    subs = _spread(sorted(part.subclusters, key=lambda s: (adapter.unit_layers().index(s.layer), s.cluster)),
                   args.subclusters)
    return adapter, x, y, subs


def _dask(adapter, x, y, subs, workers: int, n_random: int):
    """(start-up seconds, probe seconds, result) on a LocalCluster of ``workers`` processes."""
    import distributed

    from modtest.executors.dask import DaskExecutor
    from modtest.probes.lesion import lesion_study

    t0 = time.perf_counter()
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=None, silence_logs=logging.CRITICAL) as lc:
        with DaskExecutor(lc, timeout=120) as ex:
            # warm-up: imports and the model on every worker (a unit per worker, on a slice of the data)
            lesion_study(adapter, subs[:max(workers, 1)], x[:16], y[:16], n_random=1, progress=False, executor=ex)
            startup = time.perf_counter() - t0
            t = time.perf_counter()
            res = lesion_study(adapter, subs, x, y, n_random=n_random, progress=False, executor=ex)
            return startup, time.perf_counter() - t, res


def _pytest(tmp: Path, n: int, subs, n_random: int) -> tuple[float, dict]:
    work = tmp / f"pytest-n{n}"
    work.mkdir()
    (work / "conftest.py").write_text(CONFTEST)
    (work / "test_audit.py").write_text(TESTS)
    env = dict(os.environ, DASK_SCALING_SUBS=json.dumps([s.name for s in subs]), DASK_SCALING_N_RANDOM=str(n_random),
               PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider", f"-n{n}",
           "--model", str(tmp / "vgg16.keras"), "--data", str(tmp / "data.npz"), "--modtest-protocol", "paper",
           "--modtest-prefetch", "importance", "--modtest-cache", str(work / "cache"),
           "--modtest-json", str(work / "audit.json"), "test_audit.py"]
    t = time.perf_counter()
    res = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if res.returncode not in (0, 1):
        raise SystemExit(f"pytest -n {n} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return wall, json.loads((work / "audit.json").read_text())


def _claims(report: dict) -> list:
    keep = ("measure", "p_raw", "p_corrected", "verdict", "statistic")
    return sorted(([c[k] for k in keep] for c in report["claims"]), key=str)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--subclusters", type=int, default=6, help="sub-clusters tested, spread over the layers")
    ap.add_argument("--n-random", type=int, default=20)
    ap.add_argument("--workers", default="1,2", help="comma-separated Dask worker counts")
    ap.add_argument("--skip-pytest", action="store_true")
    ap.add_argument("--skip-dask", action="store_true")
    args = ap.parse_args(argv)

    from modtest.probes.lesion import lesion_study

    print(f"machine: {machine()}")
    print(f"load average at start: {_load()} (a shared machine: absolute times are only indicative)")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        adapter, x, y, subs = _audit(args, tmp)
        n_lesions = len(subs) * (args.n_random + 1)
        print(f"audit: VGG-16 32x32 random weights, {len(x)} images, k=12, {len(subs)} sub-clusters "
              f"(SUBSAMPLED, spread over the layers: {', '.join(s.name for s in subs)}), {args.n_random} "
              f"controls each: {n_lesions} lesioned networks, {n_lesions * len(x)} lesioned images")
        t = time.perf_counter()
        serial = lesion_study(adapter, subs, x, y, n_random=args.n_random, progress=False)
        t_serial = time.perf_counter() - t
        print(f"serial (baseline):          {t_serial:7.1f} s probe   ({n_lesions * len(x) / t_serial:.0f} "
              f"lesioned images/s)")
        if not args.skip_dask:
            for w in [int(v) for v in args.workers.split(",")]:
                startup, t_w, res = _dask(adapter, x, y, subs, w, args.n_random)
                same = _strip(res) == _strip(serial)
                print(f"Dask LocalCluster, {w} worker(s): {t_w:7.1f} s probe   {t_serial / t_w:.2f}x serial; "
                      f"start-up {startup:.1f} s apart; rows and p-values identical to serial: {same}")
        if not args.skip_pytest:
            walls, reports = {}, {}
            for n in (1, 2):
                walls[n], reports[n] = _pytest(tmp, n, subs, args.n_random)
                probe_s = sum(p.get("seconds") or 0 for p in reports[n].get("probes", []) if p.get("probe") == "lesion")
                print(f"pytest -n {n}: {walls[n]:7.1f} s wall (start-up included); lesion probe {probe_s:.1f} s")
            lesion = next((p for p in reports[1].get("probes", []) if p.get("probe") == "lesion"), None)
            same = _claims(reports[1]) == _claims(reports[2])
            print(f"pytest -n 2 vs -n 1: {walls[1] / walls[2]:.2f}x wall; claims identical: {same}")
            if lesion is not None:
                from modtest.report.schema import probe_entry

                ref = probe_entry(serial)
                same = (lesion["rows"], lesion["network"]) == (ref["rows"], ref["network"])
                print(f"pytest lesion rows and network identical to the serial lesion_study: {same}")
                if not same:
                    differ = sorted({k for a, b in zip(lesion["rows"], ref["rows"]) for k in a if a[k] != b.get(k)}
                                    | {f"network.{k}" for k in lesion["network"]
                                       if lesion["network"][k] != ref["network"].get(k)})
                    print(f"  differing fields: {', '.join(differ) or 'row count'}")
    print(f"load average at end: {_load()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
