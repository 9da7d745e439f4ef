"""Bad input at the plugin and assertion level: one-line message, and nothing half-written.

tests/test_bad_input.py covers the library entry points (load_model, load_data, check_data, cluster)
and tests/test_plugin.py the option parsing errors it lists; here every case goes through the pytest
plugin (usage error, exit 4, before any test runs) or an assertion, and after each failure the
cache folder holds no new entry and no --modtest-json report was written (or, where the design
writes one at the end of a session with a failed claim, a complete one that parses).
Also: safe loading (no code from a model file runs without trust, cache entries are never
unpickled, cache paths never leave the cache folder).
"""
from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
from _models import tiny_mlp

from modtest import assertions, probes
from modtest.claims import ClaimCollector
from modtest.context import AuditContext, Defaults, current, using
from modtest.errors import InvalidInput, ModelLoadError, UnsafeModelError
from modtest.probes.store import ProbeStore
from modtest.store import ProbeCache

PLUGIN = ("-p", "modtest", "-p", "no:cacheprovider")
NEVER = "def test_never():\n    raise SystemExit('must not run')\n"


@pytest.fixture
def keep_env(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))


def run_inline(pytester, *args):
    return pytester.runpytest(*PLUGIN, "--modtest-cache", "cache", "--modtest-json", "r.json", *args)


def nothing_written(root):
    """No cache entry (nor cache folder) and no JSON report under ``root``."""
    assert not (root / "cache").exists() or not list((root / "cache").rglob("*.json"))
    assert not (root / "r.json").exists()
    assert not list(root.rglob("*.tmp"))


def usage_error(res, match):
    text = res.stdout.str() + res.stderr.str()
    assert res.ret == 4, text
    err = [ln for ln in res.stderr.lines if ln.startswith("ERROR")]
    assert len(err) == 1 and match in err[0], err
    assert "Traceback" not in text and "must not run" not in text
    return err[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A saved tiny MLP (6 inputs, 4 classes), broken variants of it and of its data."""
    d = tmp_path_factory.mktemp("reliability")
    m = tiny_mlp()
    m.save(d / "m.keras")
    m.save(d / "m.h5")
    (d / "garbage.keras").write_bytes(b"not a zip file" * 20)
    data = (d / "m.h5").read_bytes()
    (d / "truncated.h5").write_bytes(data[: len(data) // 3])
    (d / "dir.keras").mkdir()
    import zipfile

    with zipfile.ZipFile(d / "noconfig.keras", "w") as zf:
        zf.writestr("metadata.json", "{}")
    (d / "model.onnx").write_bytes(b"\x08\x01")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 6)).astype("float32")
    np.savez(d / "good.npz", x=x, y=rng.integers(0, 4, 30))
    np.savez(d / "nox.npz", y=np.zeros(30, int))
    np.savez(d / "pickled.npz", x=np.array([object()] * 30, dtype=object), y=np.zeros(30, int))
    np.savez(d / "negative.npz", x=x, y=np.full(30, -2))
    np.savez(d / "fractional.npz", x=x, y=np.full(30, 0.5))
    np.savez(d / "nan.npz", x=np.full((30, 6), np.nan, "float32"), y=np.zeros(30, int))
    np.savez(d / "few.npz", x=x[:3], y=np.zeros(3, int))
    np.savez(d / "mismatch.npz", x=x, y=np.zeros(29, int))
    np.savez(d / "image.npz", x=np.zeros((30, 8, 8, 1), "float32"), y=np.zeros(30, int))
    (d / "notzip.npz").write_bytes(b"garbage")
    np.save(d / "array.npz.npy", x)
    (d / "array.npz.npy").rename(d / "array.npz")  # a single .npy array under an .npz name
    return d


# --------------------------------------------------------------------------- plugin: usage errors

@pytest.mark.parametrize("model, match", [
    ("garbage.keras", "corrupt .keras file"),
    ("truncated.h5", "truncated.h5"),
    ("dir.keras", "dir.keras is a directory"),  # unreadable: a folder where a file should be
    ("noconfig.keras", "corrupt .keras file"),  # a zip without config.json
    ("model.onnx", "unsupported model file 'model.onnx'"),
    ("absent.keras", "model file not found"),
])
def test_bad_model_is_usage_error(pytester, keep_env, files, model, match):
    pytester.makepyfile(NEVER)
    usage_error(run_inline(pytester, "--model", str(files / model)), match)
    nothing_written(pytester.path)


@pytest.mark.parametrize("data, match", [
    ("nox.npz", "has no array 'x'"),
    ("pickled.npz", "holds Python objects"),
    ("negative.npz", "labels must lie in [0, 3]"),
    ("fractional.npz", "integer class labels"),
    ("nan.npz", "NaN"),
    ("few.npz", "3 examples are fewer than the model's 4 classes"),
    ("mismatch.npz", "30 examples but y has 29"),
    ("image.npz", "model expects (N, 6)"),
    ("notzip.npz", "data file notzip.npz is not an .npz archive"),
    ("array.npz", "data file array.npz is not an .npz archive"),
])
def test_bad_data_is_usage_error(pytester, keep_env, files, data, match):
    pytester.makepyfile(NEVER)
    usage_error(run_inline(pytester, "--model", str(files / "m.keras"), "--data", str(files / data)), match)
    nothing_written(pytester.path)


@pytest.mark.parametrize("args, match", [
    (["--modtest-alpha", "0"], "--modtest-alpha must be a number in (0, 1)"),
    (["--modtest-alpha", "-0.5"], "--modtest-alpha must be a number in (0, 1)"),
    (["--modtest-alpha", "nan"], "--modtest-alpha must be a number in (0, 1)"),
    (["--modtest-alpha", "five"], "--modtest-alpha must be a number"),
    (["--modtest-k", "2.5"], "--modtest-k must be an integer"),
    (["--modtest-k", ""], "--modtest-k must be an integer"),
    (["--modtest-seed", "1e3"], "--modtest-seed must be an integer"),
    (["--modtest-correction", "HOLM"], "--modtest-correction: unknown value 'HOLM'"),
])
def test_bad_option_values(pytester, keep_env, args, match):
    pytester.makepyfile(NEVER)
    usage_error(run_inline(pytester, *args), match)
    nothing_written(pytester.path)


# --------------------------------------------------------------------------- safe loading

@pytest.fixture
def lambda_file(tmp_path, monkeypatch):
    """A .keras file whose Lambda (tests/_lambda_payload.payload) writes $MODTEST_LAMBDA_MARKER."""
    import _lambda_payload

    marker = tmp_path / "lambda-ran"
    path = tmp_path / "lam.keras"
    _lambda_payload.lambda_model().save(path)
    if marker.exists():  # building the model ran it once, here, on purpose
        marker.unlink()
    monkeypatch.setenv("MODTEST_LAMBDA_MARKER", str(marker))
    return path, marker


def test_lambda_payload_never_runs_without_trust(lambda_file):
    import modtest

    path, marker = lambda_file
    with pytest.raises(UnsafeModelError, match=r"lam \(Lambda\)") as e:
        modtest.load_model(path)
    assert "\n" not in str(e.value)
    assert not marker.exists()
    modtest.load_model(path, trust=True)  # the payload is real: trusted loading does run it
    assert marker.exists()


def test_lambda_model_plugin_refused_then_trusted(pytester, keep_env, lambda_file):
    path, marker = lambda_file
    pytester.makepyfile(NEVER)
    usage_error(run_inline(pytester, "--model", str(path)), "lam (Lambda)")
    assert not marker.exists()
    nothing_written(pytester.path)
    # trusted, it is still a model modtest cannot audit (a Lambda layer): a usage error read from the
    # config, before Keras loads anything
    line = usage_error(run_inline(pytester, "--model", str(path), "--modtest-trust-model", "--data", "none"),
                       "unsupported layer 'lam' of type Lambda")
    assert "trust" not in line
    assert not marker.exists()


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):  # unpickling this would create the marker file
        from pathlib import Path

        return (Path.touch, (Path(self.marker),))


def _result(v):
    from modtest.results import ProbeResult

    return ProbeResult("lesion", [], {"importance": {"fisher_p": v, "n": 1, "n_excluded": 0}}, {})


def test_pickled_cache_entry_is_corrupt_not_loaded(tmp_path):
    from modtest.store import cache_key

    key = cache_key("m", "d", "lesion", 3, 0, {})
    marker = tmp_path / "unpickled"
    cache = ProbeCache(tmp_path / "cache")
    cache.path(key).parent.mkdir(parents=True)
    for proto in (0, pickle.HIGHEST_PROTOCOL):
        cache.path(key).write_bytes(pickle.dumps({"key": key, "result": _Evil(marker)}, protocol=proto))
        assert cache.get(key) is None and not marker.exists()
    res, fresh = cache.get_or_compute(key, lambda: _result(0.25))
    assert fresh and res == _result(0.25) and not marker.exists()
    assert json.loads(cache.path(key).read_text())["key"] == key  # replaced by a JSON entry


@pytest.mark.parametrize("name", ["../../etc/x", "/etc/passwd", "..", "a/../../b", "C:\\evil\\..\\x",
                                  "\x00nul", "~/.ssh/id", "x" * 500])
def test_cache_paths_stay_inside_whatever_the_model_name(tmp_path, monkeypatch, name):
    from _fakes import FakeModel

    registry = probes.Registry()
    registry.register("evil", "evilprobe", lambda req: _result(0.5))
    root = tmp_path / "cache"
    store = ProbeStore(ProbeCache(root), registry=registry)
    run = store.run("evilprobe", FakeModel(name), np.zeros((2, 2)), np.zeros(2), 3, 0, {"path": name})
    path = store.cache.path(run.key)
    assert path.resolve().is_relative_to(root.resolve())
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(p.resolve().is_relative_to(root.resolve()) for p in written)
    assert all(p.name[:64].strip(".") and set(p.parent.name) <= set("0123456789abcdef") for p in written)


# --------------------------------------------------------------------------- assertion level

@pytest.fixture
def real_session(tmp_path):
    """A session collector and a disk-cached store in this process; yields (collector, cache root)."""
    root = tmp_path / "cache"
    col = ClaimCollector("holm")
    with using(AuditContext(Defaults(settings={"lesion": {"min_size": 10_000}}), col,
                            ProbeStore(ProbeCache(root)))):
        yield col, root


@pytest.fixture(scope="module")
def tiny_data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(40, 6)).astype("float32"), rng.integers(0, 4, 40)


def test_all_subclusters_filtered_fails_never_passes(real_session, tiny_data):
    col, root = real_session
    with pytest.raises(AssertionError, match=r"no testable sub-clusters: all \d+ were filtered out by "
                                             r"min_size=10000.*try another k") as e:
        assertions.assert_importance(tiny_mlp(), k=3, data=tiny_data)
    assert "\n" not in str(e.value)
    assert len(col.claims) == 1 and col.claims[0].passed is False
    col.finalize()
    assert col.claims[0].passed is False and col.report()["n_failed"] == 1
    assert not root.exists() or not list(root.rglob("*.json"))  # a failed probe is not cached


def test_all_subclusters_filtered_outside_session(monkeypatch, tiny_data):
    """Outside pytest (no collector) the claim cannot be recorded: it must still raise."""
    with using(AuditContext()), \
            pytest.raises(AssertionError, match="no testable sub-clusters: all .* max_fraction=1e-06"):
        assertions._assert_measure("output_coherence", tiny_mlp(), 3, 0.05, tiny_data, 0, "fisher",
                                   {"max_fraction": 1e-6})


@pytest.mark.parametrize("kwargs, exc, match", [
    ({"alpha": 1.5}, InvalidInput, "alpha must be a number in (0, 1)"),
    ({"alpha": True}, InvalidInput, "alpha must be a number in (0, 1)"),
    ({"k": 1}, InvalidInput, "k must be an integer >= 2"),
    ({"k": "3"}, InvalidInput, "k must be an integer"),
    ({"seed": -1}, InvalidInput, "seed must be an integer >= 0"),
    ({"method": "stouffer"}, InvalidInput, "unknown method 'stouffer'"),
    ({"data": 42}, InvalidInput, "data must be (x, y), an .npz path or None"),
    ({"data": (np.zeros((40, 5)), np.zeros(40, int))}, InvalidInput, "model expects (N, 6)"),
    ({"data": "missing.npz"}, InvalidInput, "data file not found"),
    ({"model": "missing.keras"}, ModelLoadError, "model file not found"),
])
def test_bad_assertion_arguments_write_nothing(real_session, tiny_data, kwargs, exc, match):
    col, root = real_session
    kw = {"k": 3, "data": tiny_data, **kwargs}
    model = kw.pop("model", tiny_mlp())
    with pytest.raises(exc) as e:
        assertions.assert_importance(model, **kw)
    assert match in str(e.value) and "\n" not in str(e.value)
    assert col.claims == [] and current().store.memory == {}
    assert not root.exists()


def test_failed_claim_json_report_is_complete_and_cache_clean(pytester, modtest_stub):
    """The design writes the JSON report at the end of a session with failures: it must be whole."""
    modtest_stub({2: 0.001, 4: None})
    pytester.makepyfile(test_inner="""
        from modtest.assertions import assert_importance

        def test_ok():
            assert_importance("m.keras", k=2)

        def test_nothing_testable():
            assert_importance("m.keras", k=4)
    """)
    res = pytester.runpytest_subprocess(*PLUGIN, "--modtest-json", "r.json")
    res.assert_outcomes(passed=1, failed=1)
    rep = json.loads((pytester.path / "r.json").read_text())
    assert rep["n_claims"] == 2 and rep["n_failed"] == 1
    assert {c["nodeid"].split("::")[1]: c["verdict"] for c in rep["claims"]} == {
        "test_ok": "pass", "test_nothing_testable": "fail"}
    entries = list((pytester.path / ".modtest" / "cache").rglob("*.json"))
    assert len(entries) == 1  # only the probe that succeeded (k=2)
    assert ProbeCache(pytester.path / ".modtest" / "cache").get(entries[0].stem) is not None
    assert not list(pytester.path.rglob("*.tmp"))
