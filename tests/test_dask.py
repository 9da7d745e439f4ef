"""Probe work units on a real dask.distributed LocalCluster (worker processes, not threads).

Every probe's units computed by Dask workers give the serial result to the last bit (rows, p-values,
verdicts); a worker killed in the middle of a unit is replaced and the audit still gives the serial
result; an unreachable scheduler or a cluster without workers is one line, in bounded time.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
distributed = pytest.importorskip("distributed")

from modtest.errors import ExecutorError, InvalidInput  # noqa: E402
from modtest.executors.dask import DaskExecutor, check_address  # noqa: E402

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _strip(result) -> dict:
    """A probe result without its timings (the only part that depends on where it ran)."""
    d = json.loads(result.to_json())
    d["extras"].pop("seconds", None)
    return d


@pytest.fixture(scope="module")
def cluster():
    """Two worker processes, one thread each; tests/ on their path (they import _dask_helpers)."""
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS), str(ROOT), old) if p)
    try:
        with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                      silence_logs=logging.CRITICAL) as lc:
            yield lc
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old


@pytest.fixture(scope="module")
def executor(cluster):
    with DaskExecutor(cluster, timeout=60) as ex:
        yield ex


@pytest.fixture(scope="module")
def example():
    from modtest._examples import EXAMPLE_DATA, EXAMPLE_MODEL, example_path
    from modtest._validation import load_data
    from modtest.frameworks import adapt

    adapter = adapt(example_path(EXAMPLE_MODEL))
    x, y = load_data(example_path(EXAMPLE_DATA))
    return adapter, x, y


@pytest.fixture(scope="module")
def cnn():
    from _models import cnn_with_bn

    from modtest.frameworks import adapt

    model = cnn_with_bn(seed=3)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 2)).astype("float32")
    y = model.predict(x, verbose=0).argmax(1)
    flip = rng.random(len(y)) < 0.3  # not every prediction right: drops can go both ways
    y[flip] = rng.integers(0, 3, flip.sum())
    return adapt(model), x, y


# ------------------------------------------------------------------------------------------ addresses

@pytest.mark.parametrize("given, expected", [("127.0.0.1:8786", "tcp://127.0.0.1:8786"),
                                             ("tcp://sched.example:8786", "tcp://sched.example:8786"),
                                             ("tls://[::1]:9000", "tls://[::1]:9000")])
def test_addresses_are_checked_without_dask(given, expected):
    assert check_address(given) == expected


@pytest.mark.parametrize("bad", ["nonsense", "host:", "host:99999", "tcp://:8786", "missing-file.json"])
def test_bad_addresses_are_one_line(bad):
    with pytest.raises(InvalidInput) as e:
        check_address(bad, "--modtest-scheduler")
    assert "--modtest-scheduler" in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------------ the model's parcel

def test_a_pickled_adapter_travels_as_its_payload_and_opens_once_per_process(example):
    import pickle

    from modtest.frameworks.base import ModelParcel

    adapter = example[0]
    assert pickle.loads(pickle.dumps(adapter)) is adapter  # this process has it: no second load
    parcel = pickle.loads(pickle.dumps(adapter.parcel()))
    assert parcel.data and parcel.path is None and parcel.open() is adapter
    fresh = ModelParcel(type(adapter), adapter.fingerprint(), data=adapter.payload())
    fresh._load = lambda: pytest.fail("loaded twice")  # the process-wide cache answers
    assert fresh.open() is adapter
    by_path = adapter.parcel(path=True)
    assert by_path.path == adapter.source_path and by_path.data is None


def test_a_parcel_that_opens_another_model_is_refused(example):
    from modtest.errors import ModelLoadError
    from modtest.frameworks.base import ModelParcel

    adapter = example[0]
    wrong = ModelParcel(type(adapter), "0" * 16, data=adapter.payload())
    with pytest.raises(ModelLoadError, match=f"has fingerprint {adapter.fingerprint()}, expected 0000"):
        wrong.open()


# ------------------------------------------------------------------------------------------ identical results

def test_units_match_serial_and_workshare_through_the_same_interface(executor, example, tmp_path):
    """One probe, one list of units: the serial executor, a workshare folder and Dask workers return
    the same values (each runs the probe's own compute/compute_many)."""
    from modtest.cluster import cluster as partition_of
    from modtest.executors import SERIAL
    from modtest.executors.workshare import WorkShare
    from modtest.probes.lesion import LesionProbe, lesion_context

    adapter, x, y = example
    ctx = lesion_context(adapter, partition_of(adapter, k=12, seed=0), x, y, n_random=4)
    probe = LesionProbe()
    units = probe.units(ctx)[::4]
    serial = SERIAL.map(probe, ctx, units)
    seen = []
    assert executor.map(probe, ctx, units, seen.append) == serial
    assert sum(seen) == sum(u.work for u in units)  # progress: every unit's work, once
    assert WorkShare(tmp_path / "share").map(probe, ctx, units) == serial


def test_a_client_is_taken_as_a_dask_executor_and_left_open(executor):
    from modtest.executors import as_executor

    ex = as_executor(executor.client)
    assert isinstance(ex, DaskExecutor) and ex.client is executor.client
    ex.close()
    assert executor.client.status == "running"  # given, not opened: closing the executor leaves it


@pytest.mark.slow  # a full paper audit twice; the default run checks units, visualization and a CNN
@pytest.mark.parametrize("n_random", [5, 20])
def test_example_audit_is_bit_identical_to_serial(executor, example, n_random):
    """The shipped example, paper protocol with clusterability and double lesions: every row,
    p-value, statistic and verdict is the serial one."""
    from modtest.report.audit import run_audit

    adapter, x, y = example
    kw = dict(k=12, seed=0, protocol="paper", n_random=n_random, clusterability=4, double_lesion=True,
              double_n_random=5)
    before = dict(executor.stats)
    serial = run_audit(adapter, x, y, **kw)
    dask = run_audit(adapter, x, y, executor=executor, **kw)
    assert executor.stats["units"] > before["units"]  # the workers did compute them
    assert _strip(dask[2]) == _strip(serial[2])
    for a, b in zip(dask[0].claims, serial[0].claims):
        assert {k: a[k] for k in ("measure", "p_raw", "p_corrected", "verdict", "statistic")} == \
               {k: b[k] for k in ("measure", "p_raw", "p_corrected", "verdict", "statistic")}
    assert sorted(c["measure"] for c in serial[0].claims) == ["clusterability", "importance", "output_coherence"]
    strip_dl = lambda r: {k: v for k, v in r.double_lesion.items() if k != "seconds"}  # noqa: E731
    assert strip_dl(dask[0]) == strip_dl(serial[0])
    assert dask[0].probe("clusterability")["network"] == serial[0].probe("clusterability")["network"]


def test_robust_protocol_on_a_cnn_is_bit_identical_to_serial(executor, cnn):
    """The robust protocol's rounds (controls added where a decision is close) run unchanged on Dask."""
    from modtest.probes.ensemble import robust_lesion_study

    adapter, x, y = cnn
    kw = dict(k=3, seed=0, ensemble=5, n_random=8, max_random=32, progress=False)
    serial = robust_lesion_study(adapter, x, y, **kw)
    dask = robust_lesion_study(adapter, x, y, executor=executor, **kw)
    assert _strip(dask) == _strip(serial)
    assert serial.network["importance"]["verdict"] in ("pass", "fail", "inconclusive")


def test_visualization_chunks_are_bit_identical_to_serial(executor):
    from test_visualization_probe import _model, _Partition

    from modtest.probes.visualization import visualization_study

    model = _model()
    kw = dict(n_random=3, steps=8, seed=0, batch_size=4)
    serial = visualization_study(model, _Partition(), **kw)
    dask = visualization_study(model, _Partition(), executor=executor, **kw)
    assert _strip(dask) == _strip(serial)


# ------------------------------------------------------------------------------------------ faults

def test_a_worker_killed_mid_unit_is_replaced_and_the_result_is_serial(cluster, executor, cnn, tmp_path):
    """The worker computing one unit dies (SIGKILL, as the out-of-memory killer would); Dask gives the
    unit to another worker, and the audit ends with the serial values."""
    from _dask_helpers import KillOnceLesionProbe

    from modtest.cluster import cluster as partition_of
    from modtest.executors import SERIAL
    from modtest.probes.lesion import LesionProbe, lesion_context

    adapter, x, y = cnn
    ctx = lesion_context(adapter, partition_of(adapter, k=3, seed=1), x, y, n_random=10)
    units = LesionProbe().units(ctx)
    victim = units[len(units) // 2].item["tag"]
    marker = tmp_path / "killed"
    client = executor.client
    pids_before = set(client.run(os.getpid).values())
    got = executor.map(KillOnceLesionProbe(victim, str(marker)), ctx, units)
    assert got == SERIAL.map(LesionProbe(), ctx, units)
    killed = int(marker.read_text())
    assert killed in pids_before  # the unit really started on a worker, which died
    client.wait_for_workers(2, timeout=120)  # the nanny started a new worker process
    assert killed not in set(client.run(os.getpid).values())


def test_unreachable_scheduler_is_one_line_in_bounded_time():
    address = f"tcp://127.0.0.1:{_free_port()}"  # nothing listens there
    t0 = time.monotonic()
    with pytest.raises(ExecutorError) as e:
        DaskExecutor(address, timeout=1).connect()
    assert time.monotonic() - t0 < 60  # bounded: about the timeout, a hang guard only
    msg = str(e.value)
    assert "\n" not in msg and address in msg and "within 1s" in msg


def test_a_cluster_without_workers_is_one_line():
    with distributed.LocalCluster(n_workers=0, processes=False, dashboard_address=None,
                                  silence_logs=logging.CRITICAL) as lc:
        with pytest.raises(ExecutorError, match="has no worker after 0.5s.*dask worker"):
            DaskExecutor(lc, timeout=0.5).connect()


def test_workers_on_another_keras_backend_are_refused(monkeypatch):
    """Units computed on another backend could differ in their last bits: refused at connection."""
    monkeypatch.delenv("KERAS_BACKEND", raising=False)  # this process: tensorflow
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.CRITICAL, env={"KERAS_BACKEND": "jax"}) as lc:
        with pytest.raises(ExecutorError, match="runs Keras backend jax, this process tensorflow.*KERAS_BACKEND="):
            DaskExecutor(lc, timeout=60).connect()


def test_models_without_a_payload_are_refused_in_one_line(executor):
    """A model whose adapter cannot travel (no payload()) is refused before any unit is submitted."""
    from test_adapter_boundary import NumpyAdapter, NumpyMLP

    from modtest.errors import UnsupportedModelError
    from modtest.probes.lesion import lesion_study
    from modtest.results import SubCluster

    rng = np.random.default_rng(0)
    layers = [(rng.normal(size=(6, 12)), np.zeros(12)), (rng.normal(size=(12, 4)), np.zeros(4))]
    adapter = NumpyAdapter(NumpyMLP(layers))
    x = rng.normal(size=(20, 6))
    y = np.arange(20) % 4
    tasks = executor.stats["tasks"]
    with pytest.raises(UnsupportedModelError, match="cannot be sent to other processes") as e:
        lesion_study(adapter, [SubCluster("h1", 0, (0, 1), 12)], x, y, n_random=2, executor=executor, progress=False)
    assert "\n" not in str(e.value) and executor.stats["tasks"] == tasks


# ------------------------------------------------------------------------------------------ entry points

@pytest.mark.slow
def test_cli_unreachable_scheduler_exits_2_with_one_line():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (str(ROOT), os.environ.get("PYTHONPATH")))))
    res = subprocess.run([sys.executable, "-m", "modtest.cli", "audit", "--scheduler", f"127.0.0.1:{_free_port()}",
                          "--scheduler-timeout", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot reach the Dask scheduler" in lines[0]


def test_pytest_unreachable_scheduler_is_a_usage_error(pytester):
    pytester.makepyfile(test_a="def test_a():\n    pass\n")
    res = pytester.runpytest_subprocess("-p", "no:randomly", "--modtest-scheduler", f"127.0.0.1:{_free_port()}",
                                        "--modtest-scheduler-timeout", "1")
    assert res.ret == 4
    err = [line for line in res.stderr.lines if "modtest" in line]
    assert len(err) == 1 and "--modtest-scheduler: cannot reach the Dask scheduler" in err[0]


@pytest.mark.slow
def test_pytest_session_on_the_cluster_matches_serial(pytester, cluster):
    """A pytest session with --modtest-scheduler gives the claims (p-values, verdicts) of a serial one."""
    pytester.makepyfile(test_audit='''
        from modtest import assert_importance, assert_output_coherence

        def test_importance(model):
            assert_importance(model)

        def test_coherence(model):
            assert_output_coherence(model)
    ''')
    common = ["-p", "no:randomly", "--modtest-protocol", "paper", "--modtest-cache", "cache-{}"]

    def run(name, *extra):
        args = [a.format(name) for a in common] + ["--modtest-json", f"{name}.json", *extra]
        res = pytester.runpytest_subprocess(*args)
        assert res.ret in (0, 1), res.stdout.str()
        return json.loads((pytester.path / f"{name}.json").read_text())

    serial = run("serial")
    dask = run("dask", "--modtest-scheduler", cluster.scheduler_address)
    keep = ("measure", "p_raw", "p_corrected", "verdict", "statistic", "nodeid")
    assert [{k: c[k] for k in keep} for c in dask["claims"]] == [{k: c[k] for k in keep} for c in serial["claims"]]
    assert len(serial["claims"]) == 2
