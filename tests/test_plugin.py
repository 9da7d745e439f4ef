"""The pytest plugin, through pytester inner sessions (stub probes unless a test says otherwise)."""
import json
import os
import sys

import numpy as np
import pytest

from modtest import assertions, probes

PLUGIN = ("-p", "modtest", "-p", "no:cacheprovider")


def run(pytester, *args):
    return pytester.runpytest_subprocess(*PLUGIN, *args)


def run_inline(pytester, *args):
    """In this process: for option parsing and usage errors (no keras, no xdist)."""
    return pytester.runpytest(*PLUGIN, *args)


@pytest.fixture
def keep_env(monkeypatch):
    """Inline runs may set KERAS_BACKEND: restore it afterwards."""
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))


def one_line_usage_error(res, match):
    assert res.ret == 4, res.stdout.str() + res.stderr.str()
    text = res.stdout.str() + res.stderr.str()
    err = [ln for ln in res.stderr.lines if ln.startswith("ERROR")]
    assert len(err) == 1 and match in err[0], err
    assert "Traceback" not in text and "must not run" not in text


# --------------------------------------------------------------------------- options and ini keys

STATE_TEST = """
import json
from modtest.plugin import get_session as _state

def test_state(request):
    st = _state(request.config)
    with open("state.json", "w") as f:
        json.dump({"k": st.k, "alpha": st.alpha, "seed": st.seed, "correction": st.correction,
                   "cache": str(st.cache_dir), "trust": st.trust, "json": str(st.json_path),
                   "model": str(st.model_path), "explicit": st.explicit, "backend": st.backend}, f)
"""


def _state(pytester):
    return json.loads((pytester.path / "state.json").read_text())


def test_defaults(pytester, keep_env):
    pytester.makepyfile(STATE_TEST)
    run_inline(pytester).assert_outcomes(passed=1)
    st = _state(pytester)
    assert (st["k"], st["alpha"], st["seed"], st["correction"], st["trust"]) == (12, 0.05, 0, "holm", False)
    assert st["cache"] == str(pytester.path / ".modtest" / "cache")
    assert st["model"].endswith("digits_mlp.keras") and not st["explicit"] and st["backend"] is None


def test_command_line_options(pytester, keep_env):
    pytester.makepyfile(STATE_TEST)
    run_inline(pytester, "--modtest-k", "5", "--modtest-alpha", "0.01", "--modtest-seed", "3",
        "--modtest-correction", "fdr_bh", "--modtest-cache", "c", "--modtest-trust-model",
        "--modtest-json", "r.json", "--modtest-backend", "jax").assert_outcomes(passed=1)
    st = _state(pytester)
    assert (st["k"], st["alpha"], st["seed"], st["correction"], st["trust"]) == (5, 0.01, 3, "fdr_bh", True)
    assert st["cache"] == str(pytester.path / "c") and st["json"] == str(pytester.path / "r.json")
    assert st["backend"] == "jax"


def test_ini_keys_and_command_line_wins(pytester, keep_env):
    pytester.makeini("""
        [pytest]
        modtest_k = 7
        modtest_alpha = 0.1
        modtest_seed = 2
        modtest_correction = bonferroni
        modtest_cache = ini_cache
        modtest_trust_model = true
        modtest_backend = torch
    """)
    pytester.makepyfile(STATE_TEST)
    run_inline(pytester).assert_outcomes(passed=1)
    st = _state(pytester)
    assert (st["k"], st["alpha"], st["seed"], st["correction"], st["trust"]) == (7, 0.1, 2, "bonferroni", True)
    assert st["cache"] == str(pytester.path / "ini_cache") and st["backend"] == "torch"
    run_inline(pytester, "--modtest-k", "4", "--modtest-correction", "none").assert_outcomes(passed=1)
    st = _state(pytester)
    assert (st["k"], st["correction"], st["alpha"]) == (4, "none", 0.1)


def test_help_lists_group(pytester, keep_env):
    res = run_inline(pytester, "--help")
    res.stdout.fnmatch_lines(["*modularity audits*", "*--model=MODEL*", "*--modtest-correction=*",
                              "*modtest_k (string)*"])


def test_backend_set_before_keras_and_unused_plugin_is_cheap(pytester):
    pytester.makepyfile("""
        import os, sys

        def test_x():
            assert os.environ["KERAS_BACKEND"] == "jax"
            assert "keras" not in sys.modules and "tensorflow" not in sys.modules
    """)
    run(pytester, "--modtest-backend", "jax").assert_outcomes(passed=1)
    assert not (pytester.path / ".modtest").exists()


@pytest.mark.parametrize("args,ini,match", [
    (["--modtest-correction", "sidak"], "", "--modtest-correction: unknown value 'sidak'"),
    ([], "modtest_correction = nope", "unknown value 'nope'"),
    (["--modtest-k", "abc"], "", "--modtest-k must be an integer"),
    (["--modtest-k", "1"], "", "--modtest-k must be an integer >= 2"),
    (["--modtest-alpha", "1.5"], "", "--modtest-alpha must be a number in (0, 1)"),
    (["--modtest-seed", "-1"], "", "--modtest-seed must be an integer >= 0"),
    (["--modtest-backend", "mxnet"], "", "--modtest-backend: unknown value 'mxnet'"),
    (["--modtest-ensemble", "0"], "", "--modtest-ensemble must be an integer >= 1"),
    (["--modtest-ensemble", "3"], "", "--modtest-ensemble: an ensemble of 3 partitions cannot give a verdict"),
    (["--modtest-ensemble", "ten"], "", "--modtest-ensemble must be an integer"),
    ([], "modtest_max_random = 0", "--modtest-max-random must be an integer >= 1"),
    (["--modtest-protocol", "fast"], "", "--modtest-protocol: unknown value 'fast'"),
    (["--modtest-inconclusive", "pass"], "", "--modtest-inconclusive: unknown value 'pass'"),
    (["--model", "missing.keras"], "", "model file not found"),
    ([], "model = missing.keras", "model file not found"),
])
def test_usage_errors_exit_4_with_one_line(pytester, keep_env, args, ini, match):
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_never():\n    raise SystemExit('must not run')\n")
    one_line_usage_error(run_inline(pytester, *args), match)


# --------------------------------------------------------------------------- real (tiny) models

@pytest.fixture
def saved_model(tmp_path):
    """An 8 -> 16 -> 16 -> 3 MLP saved as a file, good data for it and broken data."""
    from _models import tiny_mlp

    path = tmp_path / "tiny.keras"
    tiny_mlp(seed=0, widths=(16, 16), n_in=8, n_out=3).save(path)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "good.npz", x=rng.normal(size=(30, 8)).astype("float32"), y=rng.integers(0, 3, 30))
    np.savez(tmp_path / "noy.npz", x=np.zeros((30, 8), "float32"))
    np.savez(tmp_path / "shape.npz", x=np.zeros((30, 5), "float32"), y=np.zeros(30, int))
    np.savez(tmp_path / "labels.npz", x=np.zeros((30, 8), "float32"), y=np.full(30, 7))
    return path


@pytest.mark.parametrize("name, match", [
    ("shape", "model expects (N, 8)"),
    # the same checks as the CLI's (test_reliability.py, in process); here one session each
    pytest.param("noy", "has no array 'y'", marks=pytest.mark.slow),
    pytest.param("labels", "labels must lie in [0, 2]", marks=pytest.mark.slow),
    pytest.param("absent", "data file not found", marks=pytest.mark.slow),
])
def test_bad_data_is_usage_error_before_tests(pytester, saved_model, name, match):
    pytester.makepyfile("def test_never():\n    raise SystemExit('must not run')\n")
    one_line_usage_error(run(pytester, "--model", str(saved_model), "--data", str(saved_model.parent / f"{name}.npz")),
                         match)


def test_fixtures_shared_and_computed_once(pytester, saved_model):
    body = """
        import json
        from modtest.probes.store import ProbeStore

        def test_{n}(model, eval_data, partition, modtest_probes):
            x, y = eval_data
            assert x.shape == (30, 8) and y.dtype.kind == "i"
            assert partition.k == 3 and isinstance(modtest_probes, ProbeStore)
            with open("ids.txt", "a") as f:
                f.write(json.dumps([id(model), id(eval_data), id(partition), id(modtest_probes)]) + "\\n")
    """
    pytester.makepyfile(test_one=body.format(n="one"), test_two=body.format(n="two"))
    res = run(pytester, "--model", str(saved_model), "--data", str(saved_model.parent / "good.npz"),
              "--modtest-k", "3")
    res.assert_outcomes(passed=2)
    ids = [json.loads(line) for line in (pytester.path / "ids.txt").read_text().splitlines()]
    assert len(ids) == 2 and ids[0] == ids[1]


@pytest.mark.parametrize("protocol", ["robust", pytest.param("paper", marks=pytest.mark.slow)])
def test_clusterable_on_planted_modules(pytester, tmp_path, protocol):
    from _models import planted_mlp

    path = tmp_path / "planted.keras"
    planted_mlp().save(path)
    pytester.makepyfile("""
        from modtest.assertions import assert_clusterable

        def test_planted(model, request):
            claim = assert_clusterable(model, k=2, n_shuffles=19)
            assert claim.passed is None  # provisional until the session ends
            if request.config.getoption("modtest_protocol") == "paper":
                assert claim.p_raw == 0.05 and claim.p_low is None  # 19 shuffles, none as low: 1/20
            else:  # shuffles added until the interval of the exact p is below alpha
                assert claim.p_raw < 0.05 and claim.p_high <= 0.05
    """)
    # the shipped data does not fit this model (8 inputs): a weights-only session says --data none
    res = run(pytester, "--model", str(path), "--data", "none", "--modtest-json", "r.json",
              "--modtest-protocol", protocol)
    res.assert_outcomes(passed=1)
    rep = json.loads((pytester.path / "r.json").read_text())
    assert rep["claims"][0]["measure"] == "clusterability" and rep["claims"][0]["verdict"] == "pass"


# --------------------------------------------------------------------------- failures and reporting

FAILING = """
from modtest.assertions import assert_importance

def test_ok():
    assert_importance("m.keras", k=2)

def test_raw_fail():
    assert_importance("m.keras", k=3)

def test_nothing_testable():
    assert_importance("m.keras", k=4)
"""


def test_failures_reported_and_exit_status(pytester, modtest_stub):
    modtest_stub({2: 0.001, 3: 0.31, 4: None})
    pytester.makepyfile(test_inner=FAILING)
    res = run(pytester, "-rf", "--modtest-json", "r.json")
    res.assert_outcomes(passed=1, failed=2)
    assert res.ret == 1
    out = res.stdout.str()
    assert ("importance not shown: Fisher p=0.31 > alpha=0.05 over 29 sub-clusters "
            "(top: dense_2-3 drop 0.12 p=0.0476, dense_1-0 drop 0.01 p=0.5)") in out
    assert "no testable sub-clusters: none of the 4 sub-clusters has >= 3 units" in out
    res.stdout.fnmatch_lines(["*= modtest =*", "3 assertion(s), robust protocol, holm correction, 2 failed*",
                              "PASS test_inner.py::test_ok importance (fisher) statistic=1.5 raw p=0.001 "
                              "corrected p=0.002 alpha=0.05 probe *s"])
    claims = json.loads((pytester.path / "r.json").read_text())["claims"]
    assert [(c["nodeid"].split("::")[1], c["verdict"]) for c in claims] == [
        ("test_nothing_testable", "fail"), ("test_ok", "pass"), ("test_raw_fail", "fail")]
    assert claims[0]["p_raw"] is None  # nothing testable: excluded from the correction


def test_pass_becomes_failure_after_correction(pytester, modtest_stub):
    modtest_stub({2: 0.04, 3: 0.03})
    pytester.makepyfile(test_inner="""
        from modtest.assertions import assert_importance

        def test_a():
            assert_importance("m.keras", k=2)

        def test_b():
            assert_importance("m.keras", k=3)
    """)
    res = run(pytester, "-rf")
    res.assert_outcomes(failed=2)
    assert res.ret == 1
    res.stdout.fnmatch_lines(["*= FAILURES =*", "importance not shown after holm correction: "
                              "corrected p=0.06 > alpha=0.05 (raw p=0.04, fisher over 29 sub-clusters)*",
                              "*failed only after holm correction:*",
                              "FAILED test_inner.py::test_a - importance not shown after holm*"])
    res = run(pytester, "--modtest-correction", "none")
    res.assert_outcomes(passed=2)
    assert res.ret == 0


@pytest.mark.slow  # pinning rules unit-tested in test_gpus.py; one -n 2 session below checks them end to end
def test_xdist_workers_pinned_within_caller_gpus(pytester, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    pytester.makepyfile("""
        import os, time, pytest

        @pytest.mark.parametrize("i", range(6))
        def test_pin(i):
            time.sleep(0.05)
            with open(f"pin-{os.environ['PYTEST_XDIST_WORKER']}-{i}", "w") as f:
                f.write(os.environ["CUDA_VISIBLE_DEVICES"])
    """)
    run(pytester, "-n", "2").assert_outcomes(passed=6)
    seen = {p.name.split("-")[1]: p.read_text() for p in pytester.path.glob("pin-*")}
    assert seen and all({"gw0": "3", "gw1": "5"}[w] == g for w, g in seen.items())


def _fake_nvidia_smi(pytester, monkeypatch, n_gpus):
    """An ``nvidia-smi`` first on PATH that lists ``n_gpus`` GPUs."""
    bin_dir = pytester.path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "nvidia-smi"
    lines = "".join(f"echo 'GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})'\n" for i in range(n_gpus))
    tool.write_text("#!/bin/sh\n" + lines)
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("PYTEST_XDIST_AUTO_NUM_WORKERS", raising=False)


PIN_TEST = """
import json, os

def test_where():
    with open("pin-" + os.environ["PYTEST_XDIST_WORKER"], "w") as f:
        json.dump({k: os.environ.get(k) for k in ("CUDA_VISIBLE_DEVICES", "PYTEST_XDIST_WORKER_COUNT",
                   "XLA_PYTHON_CLIENT_PREALLOCATE", "TF_FORCE_GPU_ALLOW_GROWTH")}, f)
"""


@pytest.mark.slow  # three -n auto sessions; the pinning rules are unit-tested in test_gpus.py
def test_n_auto_gives_one_worker_per_visible_gpu(pytester, monkeypatch):
    """-n auto in a modtest session: one worker per GPU nvidia-smi lists, or per entry of the
    caller's CUDA_VISIBLE_DEVICES; a session that sets no modtest option keeps xdist's CPU count."""
    n_cpus = len(os.sched_getaffinity(0))
    _fake_nvidia_smi(pytester, monkeypatch, n_cpus + 1)  # a count xdist's own CPU count cannot give
    pytester.makepyfile(PIN_TEST)
    res = run(pytester, "-n", "auto", "--modtest-k", "8")
    res.stdout.fnmatch_lines([f"*created: {n_cpus + 1}/{n_cpus + 1} workers*"])
    seen = {p.name: json.loads(p.read_text()) for p in pytester.path.glob("pin-gw*")}
    assert seen and all(v["CUDA_VISIBLE_DEVICES"] == w[len("pin-gw"):] and v["XLA_PYTHON_CLIENT_PREALLOCATE"]
                        is None for w, v in seen.items()), seen  # one GPU each: no sharing settings
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    run(pytester, "-n", "auto", "--modtest-k", "8").stdout.fnmatch_lines(["*created: 2/2 workers*"])
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    plain = run(pytester, "-n", "auto").stdout.str()  # not a modtest session: xdist decides
    assert f"created: {n_cpus + 1}/" not in plain and "workers" in plain, plain


def test_workers_sharing_a_gpu_allocate_as_they_go(pytester, monkeypatch):
    """Two workers on one GPU: both pinned to it, with JAX preallocation off and TensorFlow memory
    growth on; a setting the caller chose is kept."""
    _fake_nvidia_smi(pytester, monkeypatch, 1)
    monkeypatch.setenv("TF_FORCE_GPU_ALLOW_GROWTH", "false")
    pytester.makepyfile(PIN_TEST.replace("def test_where():", "import pytest\n\n"
                                         "@pytest.mark.parametrize('i', range(4))\ndef test_where(i):"))
    run(pytester, "-n", "2").assert_outcomes(passed=4)
    seen = [json.loads(p.read_text()) for p in pytester.path.glob("pin-gw*")]
    assert len(seen) == 2, seen
    assert all(v == {"CUDA_VISIBLE_DEVICES": "0", "PYTEST_XDIST_WORKER_COUNT": "2",
                     "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "TF_FORCE_GPU_ALLOW_GROWTH": "false"}
               for v in seen), seen


# --------------------------------------------------------------------------- outside pytest

@pytest.fixture
def stubbed():
    """A context of its own in this process (its own measure registry), no session collecting claims;
    yields the registry."""
    from modtest.context import AuditContext, using
    from modtest.probes.store import ProbeStore

    registry = probes.Registry()
    with using(AuditContext(store=ProbeStore(registry=registry))):
        yield registry


def _net(p):
    return {"fisher_p": p, "fisher_stat": 3.0, "chi2_p": p / 2, "chi2_stat": 4.0, "n": 5, "n_excluded": 1}


def test_outside_pytest_judged_alone(stubbed):
    from modtest.results import ProbeResult

    stubbed.register("input_coherence", "visualization",
                             lambda ctx: ProbeResult("visualization", [], {"input_coherence": _net(0.04)}),
                             "input_coherence", row_p_key="p_input")
    from _fakes import FakeModel

    m = FakeModel("m")
    c = assertions.assert_input_coherence(m, alpha=0.05)
    assert (c.passed, c.p_raw, c.p_corrected, c.correction, c.statistic) == (True, 0.04, 0.04, "none", 3.0)
    assert assertions.assert_input_coherence(m, method="chi2").p_raw == 0.02
    with pytest.raises(AssertionError, match=r"input_coherence not shown: Fisher p=0.04 > alpha=0.01 "
                                             r"over 5 sub-clusters \(1 excluded\)"):
        assertions.assert_input_coherence(m, alpha=0.01)
    with pytest.raises(ValueError, match="unknown method"):
        assertions.assert_input_coherence(m, method="stouffer")


def test_xfail_claim_does_not_fail_session(pytester, modtest_stub):
    modtest_stub({2: 0.001, 3: 0.04, 4: 0.9})
    pytester.makepyfile(test_inner="""
        import pytest
        from modtest.assertions import assert_importance

        def test_a():
            assert_importance("m.keras", k=2)

        @pytest.mark.xfail(strict=False)
        def test_b():
            assert_importance("m.keras", k=3)  # raw pass, fails after holm: stays xpassed

        @pytest.mark.xfail(strict=False)
        def test_c():
            assert_importance("m.keras", k=4)
    """)
    res = run(pytester)
    res.assert_outcomes(passed=1, xpassed=1, xfailed=1)
    assert res.ret == 0
    res.stdout.fnmatch_lines(["3 assertion(s), robust protocol, holm correction, 0 failed, 2 expected to fail (xfail)*",
                              "PASS test_inner.py::test_a *", "XFAIL test_inner.py::test_b *",
                              "XFAIL test_inner.py::test_c *"])


# --------------------------------------------------------------------------- the shipped example

@pytest.mark.slow
def test_example_suite_for_real(pytester):
    """The CI example on the shipped MLP, for real (lesion + clusterability), twice: cold and cached."""
    import shutil
    import time

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for name in ("test_digits_modularity.py", "digits_mlp.keras"):  # inside the inner rootdir
        shutil.copy(os.path.join(root, "examples", name), pytester.path)
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        res = run(pytester, "--model", "digits_mlp.keras", "--modtest-json", "r.json",
                  "test_digits_modularity.py")
        times.append(time.perf_counter() - t0)
        res.assert_outcomes(passed=2, xfailed=1)
        assert res.ret == 0
    claims = json.loads((pytester.path / "r.json").read_text())["claims"]
    verdicts = {c["measure"]: c["verdict"] for c in claims}
    assert verdicts == {"importance": "pass", "clusterability": "pass", "output_coherence": "fail"}
    print(f"example suite: cold {times[0]:.1f}s, cached {times[1]:.1f}s")
    sys.stdout.write(res.stdout.str())


def test_backend_set_before_conftest_import(pytester):
    pytester.makeconftest("import os\nSEEN = os.environ.get('KERAS_BACKEND')\n")
    pytester.makepyfile("""
        def test_x(request):
            import conftest
            assert conftest.SEEN == "torch"
    """)
    run(pytester, "--modtest-backend", "torch").assert_outcomes(passed=1)


# --------------------------------------------------------------------------- --modtest-prefetch

@pytest.mark.parametrize("value, match", [
    ("nonsense", "--modtest-prefetch: unknown measure 'nonsense'"),
    ("importance,bogus", "--modtest-prefetch: unknown measure 'bogus'"),
    ("clusterability", "cannot be prefetched"),
])
def test_prefetch_bad_values_are_usage_errors(pytester, keep_env, value, match):
    pytester.makepyfile("def test_never():\n    raise SystemExit('must not run')\n")
    one_line_usage_error(run_inline(pytester, "--modtest-prefetch", value), match)


def test_prefetch_workers_share_lesion_units(pytester, tmp_path):
    """Two xdist workers join the lesion probe at session start: every work unit is published once
    into <cache>/workshare, and the assertions then read the finished probe from the cache."""
    import shutil

    from modtest._examples import EXAMPLE_DATA, EXAMPLE_MODEL

    shutil.copy(EXAMPLE_MODEL, pytester.path / "m.keras")
    shutil.copy(EXAMPLE_DATA, pytester.path / "d.npz")
    pytester.makepyfile("""
        from modtest import assert_importance

        def test_importance(model, eval_data):
            assert_importance(model, k=12, data=eval_data)

        def test_other():
            pass
    """)
    cache = pytester.path / "cache"
    res = run(pytester, "-n", "2", "--model", "m.keras", "--data", "d.npz", "--modtest-protocol", "paper",
              "--modtest-cache", str(cache),
              "--modtest-prefetch", "importance,output_coherence")
    res.assert_outcomes(passed=2)
    units = list((cache / "workshare").rglob("*.json"))
    assert len(units) == 36  # one per testable sub-cluster of the shipped MLP at k=12


def test_claims_of_a_worker_that_crashes_later_still_count(pytester, modtest_stub):
    """test_a passes with raw p=0.04 on a worker that a later test kills: its claim travelled with its
    report, so the controller still corrects it together with test_c's claim (Holm: 0.04 -> 0.06)."""
    modtest_stub({2: 0.04, 3: 0.03})
    pytester.makepyfile(test_inner="""
        import os, signal
        from modtest.assertions import assert_importance

        def test_a():
            assert_importance("m.keras", k=2)

        def test_b():
            os.kill(os.getpid(), signal.SIGKILL)

        def test_c():
            assert_importance("m.keras", k=3)
    """)
    out = pytester.path / "r.json"
    res = run(pytester, "-n", "1", "--max-worker-restart", "1", "-p", "xdist", "--modtest-json", str(out))
    claims = {c["nodeid"].split("::")[-1]: c for c in json.loads(out.read_text())["claims"]}
    assert set(claims) == {"test_a", "test_c"}
    assert claims["test_a"]["p_corrected"] == pytest.approx(0.06)
    assert res.ret == 1  # the crash, and test_a failing after correction


def test_xdist_controller_checks_the_model_file_without_keras(pytester, saved_model):
    """Under xdist the controller runs no test: it checks the file's format and safety without
    importing Keras (seconds of serial start-up), and a bad file is still a one-line usage error."""
    pytester.makeconftest("""
        import sys

        def pytest_sessionfinish(session):
            if not hasattr(session.config, "workerinput"):
                with open("controller-keras.txt", "w") as f:
                    f.write(str("keras" in sys.modules))
    """)
    pytester.makepyfile("def test_model(model):\n    assert model.name\n")
    # the controller also checks the data against the input shape and width read from the model's config
    run(pytester, "-n", "1", "--model", str(saved_model), "--data", str(saved_model.parent / "good.npz")
        ).assert_outcomes(passed=1)
    assert (pytester.path / "controller-keras.txt").read_text() == "False"
    corrupt = pytester.path / "corrupt.keras"
    corrupt.write_bytes(b"not a zip file at all")
    one_line_usage_error(run(pytester, "-n", "1", "--model", str(corrupt)), "corrupt .keras file")
    for name, match in (("shape", "model expects (N, 8)"), ("labels", "labels must lie in [0, 2]")):
        one_line_usage_error(run(pytester, "-n", "1", "--model", str(saved_model), "--data",
                                 str(saved_model.parent / f"{name}.npz")), match)


@pytest.mark.slow  # an -n 2 session with a handshake; workshare's unit sharing is in the default run
def test_idle_xdist_worker_joins_a_running_probe(pytester, saved_model):
    """With -n 2, the worker whose test ends first joins the clusterability job the other worker
    announced; the claim is the same as in a serial run. No timing: test_wait waits until the job is
    announced, and the owner, after its first unit, waits until the idle worker has computed one (the
    inner conftest wraps the probe's compute; serially nothing waits)."""
    pytester.makeconftest("""
        import os, time
        from pathlib import Path
        from modtest.probes.clusterability import ClusterabilityProbe

        real = ClusterabilityProbe.compute

        def compute(self, ctx, item, progress=None):
            value = real(self, ctx, item, progress)
            if os.environ.get("MODTEST_TEST_OWNER"):  # the job's owner: let the idle worker in first
                deadline = time.time() + 120
                while not Path("helper-unit").exists() and time.time() < deadline:
                    time.sleep(0.01)
            elif "PYTEST_XDIST_WORKER" in os.environ:
                Path("helper-unit").write_text("1")
            return value

        ClusterabilityProbe.compute = compute
    """)
    pytester.makepyfile("""
        import os, time
        from pathlib import Path
        from modtest.assertions import assert_clusterable

        def test_shuffles(model):
            if "PYTEST_XDIST_WORKER" in os.environ:
                os.environ["MODTEST_TEST_OWNER"] = "1"
            assert_clusterable(model, k=2, n_shuffles=12, alpha=0.99)

        def test_wait(model):
            if "PYTEST_XDIST_WORKER" not in os.environ:
                return
            jobs = Path("cache") / "workshare" / "jobs"
            while not list(jobs.glob("*/*.job.json")):
                time.sleep(0.005)
    """)
    args = ("--model", str(saved_model), "--data", "none", "--modtest-json", "r.json")  # weights only
    res = run(pytester, "-n", "2", "--modtest-cache", "cache", *args)
    res.assert_outcomes(passed=2)
    helped = [ln for ln in res.stdout.lines if "idle xdist workers" in ln]
    assert helped and "clusterability" in helped[0], res.stdout.str()
    shared = json.loads((pytester.path / "r.json").read_text())["claims"]
    res = run(pytester, "--modtest-cache", "serial", *args)
    res.assert_outcomes(passed=2)
    serial = json.loads((pytester.path / "r.json").read_text())["claims"]
    assert [(c["p_raw"], c["statistic"]) for c in shared] == [(c["p_raw"], c["statistic"]) for c in serial]
