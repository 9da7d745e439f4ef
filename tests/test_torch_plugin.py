"""The pytest plugin on torch models: ``pytest --model net.pt2 --data d.npz`` end to end (JSON, HTML),
serial and under pytest-xdist with the same verdicts, in processes that never import TensorFlow."""
import json
import shutil
from pathlib import Path

import _torch_models as tm
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = ("-p", "modtest", "-p", "no:cacheprovider")

#: the inner session records whether anything imported TensorFlow or Keras
NO_TF_CONFTEST = """
import json, sys

def pytest_sessionfinish(session):
    bad = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
    name = "imports-" + getattr(session.config, "workerinput", {}).get("workerid", "main") + ".json"
    with open(name, "w") as f:
        json.dump(bad, f)
"""

SMALL_SUITE = """
from modtest.assertions import assert_clusterable, assert_importance, assert_output_coherence

def test_importance(model, eval_data):
    assert_importance(model, data=eval_data)

def test_coherence(model, eval_data):
    assert_output_coherence(model, data=eval_data)

def test_clusterable(model):
    assert_clusterable(model, n_shuffles=9)
"""


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    """A trained-looking MLP (labels are its own predictions) saved as .pt2, and its data."""
    torch = tm.torch()
    folder = tmp_path_factory.mktemp("small")
    model = tm.mlp(seed=5, widths=(16, 12), n_in=8, n_out=3)
    x = tm.data((8,), n=120, seed=2) * 4 - 2
    with torch.no_grad():
        y = model(torch.as_tensor(x)).argmax(1).numpy()
    tm.save(tm.export(model, x), folder / "net.pt2")
    np.savez(folder / "d.npz", x=x, y=y)
    return folder


def _claims(path):
    rep = json.loads(Path(path).read_text())
    return sorted((c["nodeid"], c["measure"], c["p_raw"], c["p_corrected"], c["verdict"]) for c in rep["claims"])


def _no_tensorflow(folder):
    files = sorted(Path(folder).glob("imports-*.json"))
    assert files
    for f in files:
        assert json.loads(f.read_text()) == [], f.name


@pytest.mark.parametrize("workers", [0, pytest.param(2, marks=pytest.mark.slow)])
def test_small_suite_serial_and_xdist_agree(pytester, small_model, workers):
    """The suite under -n 0 (and, with ``workers`` 2, under -n 2 as well, both workers loading the
    .pt2: the same claims, raw and corrected p-values and verdicts); JSON and HTML written; no process
    imported TensorFlow."""
    for name in ("net.pt2", "d.npz"):
        shutil.copy(small_model / name, pytester.path)
    pytester.makeconftest(NO_TF_CONFTEST)
    pytester.makepyfile(test_small=SMALL_SUITE)
    common = PLUGIN + ("--model", "net.pt2", "--data", "d.npz", "--modtest-k", "3", "--modtest-ensemble", "5",
                       "--modtest-max-random", "40")
    runs = {}
    for n in sorted({0, workers}):
        res = pytester.runpytest_subprocess(*common, "--modtest-cache", f"cache{n}", "--modtest-json",
                                            f"r{n}.json", "--modtest-html", f"r{n}.html", "-n", str(n),
                                            "test_small.py", timeout=600)
        assert res.ret in (0, 1), res.stdout.str()[-3000:] + res.stderr.str()[-3000:]
        assert "Traceback" not in res.stdout.str()
        runs[n] = _claims(pytester.path / f"r{n}.json")
        # what ran the model: torch (the xdist controller, which never loads it, reads the file's kind)
        assert json.loads((pytester.path / f"r{n}.json").read_text())["versions"]["backend"] == "torch"
        html = (pytester.path / f"r{n}.html").read_text()
        assert "<html" in html.lower() and "importance" in html
    assert len(runs[0]) == 3 and runs[0] == runs[workers]
    _no_tensorflow(pytester.path)


@pytest.fixture(scope="module")
def digits_twin(tmp_path_factory):
    """digits_mlp.pt2 (the torch twin of the shipped Keras MLP) and digits_nchw.npz. Built in a fixture:
    pytester restores sys.modules after its test, and TensorFlow imported again in the same process
    aborts it."""
    import keras
    from _torch_twins import torch_twin

    from modtest.frameworks.torch import export_module

    folder = tmp_path_factory.mktemp("digits")
    km = keras.saving.load_model(ROOT / "examples" / "digits_mlp.keras")
    data = np.load(ROOT / "examples" / "digits_test.npz")
    twin, to_torch = torch_twin(km)
    xt = to_torch(data["x"])
    tm.save(export_module(twin, xt), folder / "digits_mlp.pt2")
    np.savez(folder / "digits_nchw.npz", x=xt, y=data["y"])
    return folder


@pytest.mark.slow
def test_readme_example_suite_on_the_torch_digits_twin(digits_twin, pytester):
    """examples/test_digits_modularity.py with --model digits_mlp.pt2 (the torch twin of the shipped
    MLP) and NCHW data: the Keras model's verdicts (importance holds, clusterable, output coherence an
    expected failure), JSON and HTML, and no TensorFlow in the inner session."""
    for name in ("digits_mlp.pt2", "digits_nchw.npz"):
        shutil.copy(digits_twin / name, pytester.path)
    shutil.copy(ROOT / "examples" / "test_digits_modularity.py", pytester.path)
    pytester.makeconftest(NO_TF_CONFTEST)
    res = pytester.runpytest_subprocess(*PLUGIN, "--model", "digits_mlp.pt2", "--data", "digits_nchw.npz",
                                        "--modtest-json", "r.json", "--modtest-html", "r.html",
                                        "test_digits_modularity.py", timeout=900)
    res.assert_outcomes(passed=2, xfailed=1)
    verdicts = {c["measure"]: c["verdict"] for c in json.loads((pytester.path / "r.json").read_text())["claims"]}
    assert verdicts == {"importance": "pass", "clusterability": "pass", "output_coherence": "fail"}
    assert (pytester.path / "r.html").stat().st_size > 10_000
    _no_tensorflow(pytester.path)
