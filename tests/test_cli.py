"""The ``modtest`` command as a CI step: exit codes, one-line usage errors before any slow import, the
shipped data only for a model it fits, no TensorFlow start-up lines on stderr."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modtest import probes
from modtest.cli import main
from modtest.context import AuditContext, using
from modtest.results import ProbeResult

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_MODEL = ROOT / "examples" / "digits_mlp.keras"
EXAMPLE_DATA = ROOT / "examples" / "digits_test.npz"


@pytest.fixture
def stub_lesion():
    """The CLI run inside an audit context of its own, whose lesion probe is one with network
    p-values set per test (the real model and partition are used); nothing outside it changes."""
    net = {}

    def stub(req):
        rows = [{"layer": "dense_1", "cluster": 0, "size": 5, "fraction": 0.02, "drop": 0.1, "p_importance": 0.05,
                 "p_coherence": 0.5, "random_drops": [0.0] * 20, "category": "important", "name": "dense_1-0"}]
        network = {m: {"fisher_p": p, "fisher_stat": 1.0, "chi2_p": p, "chi2_stat": 1.0, "n": 1, "n_excluded": 0,
                       **bounds} for m, (p, bounds) in net.items()}
        network.update(n_filtered=0, n_subclusters=1)
        return ProbeResult("lesion", rows, network, {"k": req.k}, {"base_accuracy": 0.9})

    with using(AuditContext(registry=probes.builtin_registry())):
        for name, key in (("importance", "p_importance"), ("output_coherence", "p_coherence")):
            probes.register_measure(name, "lesion", stub, name, "stub", row_p_key=key, row_effect_key="drop")
        yield net


AUDIT = ["audit", str(EXAMPLE_MODEL), "--data", str(EXAMPLE_DATA), "--clusterability", "0", "--progress", "off"]


@pytest.mark.parametrize("imp, coh, extra, status", [
    (0.001, 0.002, [], 0),                      # every claim holds
    (0.001, 0.5, [], 1),                        # a claim fails
    (0.001, 0.5, ["--no-fail"], 0),             # reported, not failed
    (0.03, 0.04, [], 1),                        # each holds alone; after Holm both are 0.06 > 0.05
    (0.001, 0.03, ["--correction", "none"], 0),  # no correction: both hold
])
def test_audit_exit_status(stub_lesion, capsys, imp, coh, extra, status):
    stub_lesion.update(importance=(imp, {}), output_coherence=(coh, {}))
    assert main(AUDIT + extra) == status
    out, err = capsys.readouterr()
    assert ("claim(s) not shown (exit status 1" in err) is (status == 1)


@pytest.mark.parametrize("mode, status", [("report", 0), ("fail", 1)])
def test_inconclusive_claims_follow_the_option(stub_lesion, capsys, mode, status):
    # importance's noise bounds straddle alpha: inconclusive, never a pass
    stub_lesion.update(importance=(0.04, {"p_low": 0.01, "p_high": 0.09}), output_coherence=(0.001, {}))
    assert main(AUDIT + ["--inconclusive", mode, "--correction", "none"]) == status
    assert "importance inconclusive" in capsys.readouterr().out


def test_usage_errors_exit_2_with_one_line(capsys, tmp_path):
    for args in (["audit", "--k", "1"], ["audit", str(tmp_path / "missing.keras")], ["audit", "--alpha", "2"],
                 ["audit", "--clusterability", "many"], ["audit", "--max-examples", "0"]):
        assert main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("modtest: error: "), (args, err)


def test_audit_help_documents_the_exit_status(capsys):
    with pytest.raises(SystemExit):
        main(["audit", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 when every claim holds, 1 when a claim fails after correction" in out
    assert "--no-fail" in out and "--inconclusive" in out
    assert ".pt2 from torch.export" in out and "Hugging Face model folder" in out  # every kind it reads


def test_long_layer_names_widen_the_table_instead_of_breaking_it(capsys):
    from types import SimpleNamespace

    from modtest.cli import _print_lesion

    name = "block_12/attention/output_projection_dense"
    rows = [{"layer": layer, "cluster": 0, "size": 5, "fraction": 0.1, "drop": 0.01, "p_importance": 0.5,
             "p_coherence": 0.5, "random_drops": [0.0] * 20, "category": "other"} for layer in (name, "d1")]
    net = {"fisher_p": 0.5, "chi2_p": 0.5, "n": 2}
    res = SimpleNamespace(rows=rows, extras={"base_accuracy": 0.9}, network={
        "importance": net, "output_coherence": net, "n_filtered": 0, "n_subclusters": 2})
    _print_lesion(SimpleNamespace(protocol="paper"), SimpleNamespace(k=2, seed=0, ncut=1.0), res, "m.keras")
    lines = capsys.readouterr().out.splitlines()
    head, first, second = lines[1], lines[2], lines[3]
    col = head.index("cluster")  # every row's cluster column starts under the header's
    assert first.split()[0] == name and first[col:].split()[0] == "0" and second[col:].split()[0] == "0"


def _cli(args, env=None, cwd=None, timeout=600):
    """``modtest ARGS`` in a fresh process: (status, stdout, stderr, imported heavy modules)."""
    code = ("import sys; from modtest.cli import main; rc = main(sys.argv[1:]); "
            "print('IMPORTED', [m for m in ('tensorflow', 'keras', 'scipy.stats') if m in sys.modules]); "
            "sys.exit(rc)")
    full_env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout,
                         env=full_env, cwd=cwd)
    imported = next((line for line in out.stdout.splitlines() if line.startswith("IMPORTED")), "")
    return out.returncode, out.stdout, out.stderr, imported


def test_a_missing_model_file_is_reported_before_any_slow_import(tmp_path):
    rc, _out, err, imported = _cli(["audit", str(tmp_path / "nope.keras"), "--data", str(EXAMPLE_DATA)])
    assert rc == 2 and err.strip() == f"modtest: error: model file not found: {tmp_path / 'nope.keras'}"
    assert imported == "IMPORTED []"


@pytest.fixture(scope="module")
def flat_model(tmp_path_factory):
    """A model the shipped digits data does not fit (8 flat inputs, 3 classes)."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    path = tmp_path_factory.mktemp("flat") / "flat.keras"
    model.save(path)
    return path


def test_model_without_data_it_fits_is_a_one_line_usage_error(flat_model):
    rc, _out, err, imported = _cli(["audit", str(flat_model)])
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1, err
    assert "no --data given, and the shipped digits data" in lines[0] and "pass --data PATH" in lines[0]
    assert "tensorflow" not in imported  # read from the model's config: no framework import


def test_pytest_model_without_data_it_fits_is_a_usage_error(pytester, flat_model):
    for extra in ((), ("-n", "1")):  # the session, and the xdist controller (which imports no framework)
        res = pytester.runpytest_subprocess("-p", "modtest", "-p", "no:cacheprovider", "--model", str(flat_model),
                                            *extra)
        assert res.ret == 4, (extra, res.errlines)
        errors = [ln for ln in res.errlines if "modtest:" in ln]
        assert len(errors) == 1 and "pass --data PATH" in errors[0], res.errlines


def test_shipped_data_is_used_with_a_notice_when_it_fits(pytester):
    pytester.makepyfile("def test_data(eval_data):\n    assert eval_data[0].shape == (540, 8, 8, 1)\n")
    res = pytester.runpytest_subprocess("-p", "modtest", "-p", "no:cacheprovider", "--model", str(EXAMPLE_MODEL))
    res.assert_outcomes(passed=1)
    assert any("modtest: no --data given: using the shipped digits data (540 examples)" in ln for ln in res.outlines)


NOISE = ("absl::InitializeLog", "oneDNN custom operations", "cpu_feature_guard", "This TensorFlow binary is optimized",
         "rebuild TensorFlow with the appropriate compiler flags", "Unable to register cu")


def test_no_tensorflow_startup_lines_from_the_cli():
    # TF_CPP_MIN_LOG_LEVEL=0 asks TensorFlow for every line: the start-up notices are still dropped
    rc, out, err, imported = _cli(["cluster", "--k", "3"], env={"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert rc == 0 and "tensorflow" in imported, err
    assert not [ln for ln in err.splitlines() if any(n in ln for n in NOISE)], err


@pytest.mark.slow  # an -n 2 session; the default run checks the CLI's own stderr
def test_no_tensorflow_startup_lines_from_xdist_workers(pytester, monkeypatch):
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "0")
    pytester.makepyfile("import tensorflow  # the user's own import, at collection\n\n"
                        "def test_model(model):\n    assert model is not None\n")
    res = pytester.runpytest_subprocess("-p", "modtest", "-p", "no:cacheprovider", "-n", "1",
                                        "--model", str(EXAMPLE_MODEL), "--data", str(EXAMPLE_DATA))
    res.assert_outcomes(passed=1)
    assert not [ln for ln in res.errlines + res.outlines if any(n in ln for n in NOISE)], res.errlines


def test_startup_filter_keeps_every_other_line():
    from modtest.frameworks.keras.runtime import drop_startup_noise

    text = ("WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
            "I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on. You may see slightly different ...\n"
            "W0000 00:00:1.0 1 gpu_device.cc:2344] Cannot dlopen some GPU libraries. Skipping registering GPU\n"
            "I0000 00:00:1.0 1 cpu_feature_guard.cc:227] This TensorFlow binary is optimized to use available CPU\n"
            "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
            "appropriate compiler flags.\n"
            "E0000 00:00:1.0 1 cuda_dnn.cc:8310] Unable to register cuDNN factory: Attempting to register factory "
            "for plugin cuDNN when one has already been registered\n"
            "/x.py:1: UserWarning: something the user should see\n")
    assert drop_startup_noise(text) == (
        "W0000 00:00:1.0 1 gpu_device.cc:2344] Cannot dlopen some GPU libraries. Skipping registering GPU\n"
        "/x.py:1: UserWarning: something the user should see\n")


def test_max_examples_subsamples_the_audit_data(stub_lesion, capsys, tmp_path):
    import json

    stub_lesion.update(importance=(0.001, {}), output_coherence=(0.002, {}))
    assert main(AUDIT + ["--max-examples", "100", "--json", str(tmp_path / "a.json")]) == 0
    assert "using a stratified subsample of 100 examples" in capsys.readouterr().out
    assert json.loads((tmp_path / "a.json").read_text())["data"]["n_examples"] == 100
