"""Issue 28: bad input found once, at the start, in one line, by the CLI (exit 2) and under pytest
(usage error, exit 4): models that cannot be audited, archives with members their writer does not
write, the trust flag of the interface in use, regression models, data with too few classes, output
paths, option values checked against the model, short fixture reprs, labelled numbers."""
from __future__ import annotations

import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from _models import tiny_mlp
from test_reliability import usage_error  # exit 4, one ERROR line, no traceback

from modtest.cli import main

PLUGIN = ("-p", "modtest", "-p", "no:cacheprovider")
NEVER = "def test_never():\n    raise SystemExit('must not run')\n"
USES_MODEL = "def test_uses(model, eval_data):\n    raise SystemExit('must not run')\n"


@pytest.fixture
def keep_env(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))


def run_inline(pytester, *args):
    return pytester.runpytest_subprocess(*PLUGIN, "--modtest-cache", "cache", *args)


def cli_error(capsys, argv, match):
    """``modtest ...`` exits 2 with one line on stderr that starts ``modtest: error:`` and holds ``match``."""
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert lines and lines[0].startswith("modtest: error:") and match in lines[0], err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Keras models that cannot be audited (two outputs, an LSTM, a regression output), a good tiny
    MLP (6 inputs, 4 classes) and data for them."""
    import keras

    d = tmp_path_factory.mktemp("issue28")
    L = keras.layers
    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    h = L.Dense(12, activation="relu")(inp)
    keras.Model(inp, [L.Dense(4, activation="softmax")(h), L.Dense(4, activation="softmax")(h)],
                name="functional").save(d / "two.keras")  # named: Keras numbers unnamed models per process
    keras.Sequential([keras.Input((5, 6)), L.LSTM(8), L.Dense(4, activation="softmax")]).save(d / "lstm.keras")
    keras.Sequential([keras.Input((6,)), L.Dense(12, activation="relu"), L.Dense(10, activation="relu"),
                      L.Dense(1)]).save(d / "reg.keras")
    tiny_mlp().save(d / "m.keras")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 6)).astype("float32")
    np.savez(d / "d6.npz", x=x, y=rng.integers(0, 4, 40))
    np.savez(d / "d56.npz", x=rng.normal(size=(40, 5, 6)).astype("float32"), y=rng.integers(0, 4, 40))
    np.savez(d / "one_class.npz", x=x, y=np.zeros(40, int))
    np.savez(d / "three_classes.npz", x=x, y=np.arange(40) % 3)
    return d


@pytest.fixture(scope="module", autouse=True)
def audit_output(files):
    """One real ``modtest audit`` run first, outside any pytester test: whatever an audit imports
    (scipy, scikit-learn, modtest's probes) is then imported before pytester snapshots sys.modules, so
    no test here drops a module that a later test (of this file or another) imports again."""
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        status = main(["audit", str(files / "m.keras"), "--data", str(files / "d6.npz"), "--clusterability", "0",
                       "--progress", "off", "--no-fail"])
    return status, buf.getvalue()


# --------------------------------------------------------------------------- 2: archive members

def _with_member(src, dst, name, data=b"\x80\x04N."):
    shutil.copy(src, dst)
    with zipfile.ZipFile(dst, "a") as zf:
        zf.writestr(name, data)
    return dst


def _pt2(path, root="m"):
    """A minimal PT2 archive (torch.export.save's layout, a program with no nodes): no torch import."""
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{root}/archive_format", "pt2")
        zf.writestr(f"{root}/archive_version", "0")
        zf.writestr(f"{root}/byteorder", "little")
        zf.writestr(f"{root}/.data/version", "1")
        zf.writestr(f"{root}/models/model.json", "{}")
        zf.writestr(f"{root}/data/weights/weight_0", b"\0" * 16)
    return path


@pytest.mark.parametrize("member, why", [
    ("m/data.pkl", "'m/data.pkl' is a pickle"),             # a pickle inside the archive folder
    ("data.pkl", "'data.pkl' is a pickle"),                 # a pickle at the zip root
    ("m/notes.txt", "'m/notes.txt' is not a file torch.export.save writes"),
    ("/etc/evil", "'/etc/evil' is an absolute path"),
    ("m/../../evil", "'m/../../evil' is a path with '..'"),
])
def test_pt2_with_foreign_member_refused(tmp_path, member, why):
    from modtest.errors import ModelLoadError
    from modtest.frameworks import check_model_file

    good = _pt2(tmp_path / "good.pt2")
    check_model_file(good)  # the writer's members only: accepted
    bad = _with_member(good, tmp_path / "bad.pt2", member)
    with pytest.raises(ModelLoadError) as e:
        check_model_file(bad)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("bad.pt2: refused before loading") and why in msg, msg


def test_truncated_pt2_is_said_to_be_truncated(tmp_path):
    from modtest.errors import ModelLoadError
    from modtest.frameworks import check_model_file

    data = _pt2(tmp_path / "good.pt2").read_bytes()
    (tmp_path / "cut.pt2").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"corrupt \.pt2 archive cut\.pt2: a zip file whose end is missing") as e:
        check_model_file(tmp_path / "cut.pt2")
    assert "pickled" not in str(e.value) and "unparseable" not in str(e.value)


def test_pt2_member_refused_by_cli_and_pytest(pytester, tmp_path, capsys):
    bad = _with_member(_pt2(tmp_path / "good.pt2"), tmp_path / "bad.pt2", "data.pkl")
    match = "bad.pt2: refused before loading: its archive member 'data.pkl' is a pickle"
    cli_error(capsys, ["audit", str(bad), "--progress", "off"], match)
    pytester.makepyfile(USES_MODEL)
    usage_error(run_inline(pytester, "--model", str(bad), "--data", "none"), match)


@pytest.mark.parametrize("member, why", [
    ("../../evil.txt", "'../../evil.txt' is a path with '..'"),
    ("/tmp/evil.txt", "'/tmp/evil.txt' is an absolute path"),
    ("assets/data.pkl", "'assets/data.pkl' is a pickle"),
    ("extra.bin", "'extra.bin' is not a file Keras's model.save writes"),
])
def test_keras_archive_with_foreign_member_refused(pytester, keep_env, files, capsys, member, why):
    import warnings

    bad = _with_member(files / "m.keras", pytester.path / "bad.keras", member, b"x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zipfile's "Skipping invalid path" never reached
        cli_error(capsys, ["audit", str(bad), "--data", str(files / "d6.npz"), "--progress", "off"], why)
    pytester.makepyfile(NEVER)
    usage_error(run_inline(pytester, "--model", str(bad), "--data", str(files / "d6.npz")), why)
    assert not (pytester.path.parent / "evil.txt").exists() and not list(pytester.path.rglob("evil.txt"))


# --------------------------------------------------------------------------- 1: models modtest cannot audit

@pytest.mark.parametrize("model, data, match", [
    ("two.keras", "d6.npz", "two.keras cannot be audited: model functional has 1 inputs and 2 outputs"),
    ("lstm.keras", "d56.npz", "lstm.keras cannot be audited: unsupported layer 'lstm' of type LSTM"),
    ("two.keras", "none", "two.keras cannot be audited: model functional has 1 inputs and 2 outputs"),
])
def test_unauditable_model_is_found_at_start(pytester, keep_env, files, capsys, model, data, match):
    if data != "none":
        cli_error(capsys, ["audit", str(files / model), "--data", str(files / data), "--progress", "off"], match)
    pytester.makepyfile(USES_MODEL)
    usage_error(run_inline(pytester, "--model", str(files / model), "--data",
                           data if data == "none" else str(files / data)), match)


def test_unauditable_model_in_memory_found_from_the_graph(pytester, keep_env, files):
    """What the config check cannot see is found from the loaded model's graph at the start."""
    import keras

    keras.Sequential([keras.Input((4, 4)), keras.layers.Flatten(), keras.layers.Activation("relu")]).save(
        pytester.path / "nounits.keras")
    pytester.makepyfile(USES_MODEL)
    usage_error(run_inline(pytester, "--model", "nounits.keras", "--data", "none"), "no Dense or convolutional")


# --------------------------------------------------------------------------- 3: Lambda, and the flag's name

@pytest.fixture
def lambda_file(tmp_path, monkeypatch):
    import _lambda_payload

    marker = tmp_path / "lambda-ran"
    path = tmp_path / "lam.keras"
    _lambda_payload.lambda_model().save(path)
    if marker.exists():
        marker.unlink()
    monkeypatch.setenv("MODTEST_LAMBDA_MARKER", str(marker))
    return path, marker


def test_lambda_says_unsupported_first_and_names_the_interfaces_flag(pytester, keep_env, lambda_file, capsys):
    path, marker = lambda_file
    first = "lam.keras cannot be audited, with or without trust: unsupported layer 'lam' of type Lambda"
    line = cli_error(capsys, ["audit", str(path), "--progress", "off"], first)
    assert "--trust-model loads it" in line and "--modtest-trust-model" not in line
    line = cli_error(capsys, ["audit", str(path), "--trust-model", "--progress", "off"],
                     "lam.keras cannot be audited: unsupported layer 'lam' of type Lambda")
    pytester.makepyfile(USES_MODEL)
    line = usage_error(run_inline(pytester, "--model", str(path)), first)
    assert "--modtest-trust-model loads it" in line
    usage_error(run_inline(pytester, "--model", str(path), "--modtest-trust-model"),
                "lam.keras cannot be audited: unsupported layer 'lam' of type Lambda")
    assert not marker.exists()  # refused from the config: nothing from the file ran


def test_custom_object_names_the_interfaces_flag(tmp_path, capsys):
    """A custom object that is not a layer: trust would make it auditable, so the flag is named."""
    import keras

    @keras.saving.register_keras_serializable(package="issue28")
    def my_relu(x):
        return keras.ops.relu(x)

    keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation=my_relu),
                      keras.layers.Dense(3, activation="softmax")]).save(tmp_path / "act.keras")
    line = cli_error(capsys, ["cluster", str(tmp_path / "act.keras")], "contains code that would run on loading")
    assert "pass --trust-model if you trust this file" in line, line


# --------------------------------------------------------------------------- 7: option values against the model

def test_k_too_large_is_refused_at_start_even_when_tests_pass_their_own(pytester, keep_env, files, capsys):
    cli_error(capsys, ["audit", str(files / "m.keras"), "--data", str(files / "d6.npz"), "--k", "100000",
                       "--progress", "off"], "k=100000 is too large")
    pytester.makepyfile("from modtest import assert_importance\n"
                        "def test_own_k(model, eval_data):\n"
                        "    raise SystemExit('must not run')\n"
                        "    assert_importance(model, k=3)\n")
    usage_error(run_inline(pytester, "--model", str(files / "m.keras"), "--data", str(files / "d6.npz"),
                           "--modtest-k", "100000"), "--modtest-k: k=100000 is too large: the model's graph has only")


# --------------------------------------------------------------------------- 4, 5: what the data and model must be

CLASSIFIERS = "modtest audits classifiers"


def test_regression_model_is_told_what_modtest_audits(pytester, keep_env, files, capsys):
    line = cli_error(capsys, ["audit", str(files / "reg.keras"), "--data", str(files / "d6.npz"), "--progress",
                              "off"], "the model has 1 output (a regression")
    assert CLASSIFIERS in line and "Dense(2)" in line and "labels must lie" not in line
    cli_error(capsys, ["audit", str(files / "reg.keras"), "--progress", "off"], CLASSIFIERS)  # not "pass --data"
    pytester.makepyfile(USES_MODEL)
    usage_error(run_inline(pytester, "--model", str(files / "reg.keras"), "--data", str(files / "d6.npz")),
                CLASSIFIERS)


def test_single_class_data_is_refused(pytester, keep_env, files, capsys):
    match = "the data holds a single class (every label is 0)"
    cli_error(capsys, ["audit", str(files / "m.keras"), "--data", str(files / "one_class.npz"), "--progress", "off"],
              match)
    pytester.makepyfile(USES_MODEL)
    usage_error(run_inline(pytester, "--model", str(files / "m.keras"), "--data", str(files / "one_class.npz")),
                match)


def test_single_class_data_refused_by_an_assertion_not_by_the_probes():
    """An assertion's ``data`` is audit input (refused); the probe functions accept self-labelled
    data of one class (an engine check)."""
    from modtest.assertions import resolve_data
    from modtest.errors import DataError

    model, x = tiny_mlp(), np.random.default_rng(0).normal(size=(20, 6)).astype("float32")
    with pytest.raises(DataError, match=r"^the data holds a single class \(every label is 2\)"):
        resolve_data((x, np.full(20, 2)), model)
    assert len(resolve_data((x, np.arange(20) % 2), model)[1]) == 20


def test_single_class_folder_is_refused(pytester, keep_env, files, capsys):
    from PIL import Image

    (pytester.path / "imgs" / "cat").mkdir(parents=True)
    for i in range(3):
        Image.new("L", (8, 8), color=i * 40).save(pytester.path / "imgs" / "cat" / f"{i}.png")
    match = "holds a single class (images only in cat/)"
    cli_error(capsys, ["audit", str(files / "m.keras"), "--data", str(pytester.path / "imgs"), "--progress", "off"],
              match)
    pytester.makepyfile(USES_MODEL)
    usage_error(run_inline(pytester, "--model", str(files / "m.keras"), "--data", "imgs"), match)


def test_missing_classes_are_noted_by_the_cli(files, capsys):
    from modtest.audit import Audit
    from modtest.cli import _print_data

    path = files / "three_classes.npz"
    audit = Audit.open(files / "m.keras", path, progress=False)
    _print_data(audit, path, None)
    assert len(audit.x) == 40
    assert "note: the data holds 3 of the model's 4 classes (no examples of class 3)" in capsys.readouterr().out


def test_missing_classes_are_noted_in_the_header(pytester, keep_env, files):
    pytester.makepyfile("def test_uses(model, eval_data):\n    assert len(eval_data[1]) == 40\n")
    res = run_inline(pytester, "--model", str(files / "m.keras"), "--data", str(files / "three_classes.npz"))
    res.assert_outcomes(passed=1)
    res.stdout.fnmatch_lines(["modtest: note: the data holds 3 of the model's 4 classes (no examples of class 3)*"])
    from modtest._validation import class_coverage

    assert class_coverage(np.arange(40) % 4, 4) is None


# --------------------------------------------------------------------------- 6: output paths

@pytest.mark.parametrize("flag, value, match", [
    ("--modtest-json", "afile/r.json", "afile/r.json: cannot create its folder"),
    ("--modtest-json", "adir", "adir: is a folder; name the file to write"),
    ("--modtest-html", "afile/deeper/r.html", "afile/deeper/r.html: cannot create its folder"),
    ("--modtest-storage", "afile", "afile: is a file, not a folder"),
])
def test_unwritable_output_is_usage_error_before_tests(pytester, modtest_stub, flag, value, match):
    modtest_stub({2: 0.001})
    (pytester.path / "afile").write_text("x")
    (pytester.path / "adir").mkdir()
    pytester.makepyfile(NEVER)
    extra = ["--modtest-save", "b1"] if flag == "--modtest-storage" else []
    line = usage_error(pytester.runpytest_subprocess(*PLUGIN, flag, value, *extra), match)
    assert line.startswith(f"ERROR: modtest: {flag} "), line
    assert not (pytester.path / "cache").exists() and not (pytester.path / ".modtest").exists()


def test_unwritable_output_refused_by_cli(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    cli_error(capsys, ["audit", "--json", str(tmp_path / "afile" / "r.json"), "--progress", "off"],
              "cannot create its folder")


def test_missing_parent_folders_are_created(pytester, modtest_stub):
    modtest_stub({2: 0.001})
    pytester.makepyfile("from modtest.assertions import assert_importance\n"
                        "def test_ok():\n    assert_importance('m.keras', k=2)\n")
    res = pytester.runpytest_subprocess(*PLUGIN, "--modtest-json", "new/deeper/r.json")
    assert res.ret == 0
    assert json.loads((pytester.path / "new" / "deeper" / "r.json").read_text())["n_claims"] == 1


def test_failed_write_after_the_run_fails_the_session(pytester, modtest_stub):
    """The path was writable at the start; the test itself puts a folder there: the write fails."""
    modtest_stub({2: 0.001})
    pytester.makepyfile("import os\nfrom modtest.assertions import assert_importance\n"
                        "def test_ok():\n    assert_importance('m.keras', k=2)\n    os.mkdir('r.json')\n")
    res = pytester.runpytest_subprocess(*PLUGIN, "--modtest-json", "r.json")
    res.assert_outcomes(passed=1)
    assert res.ret == 1
    res.stdout.fnmatch_lines(["modtest: could not write --modtest-json: IsADirectoryError*"])


# --------------------------------------------------------------------------- 8: short fixture reprs

def test_eval_data_is_a_tuple_with_a_short_repr():
    import pickle

    from modtest.data import EvalData

    x, y = np.zeros((40, 6), "float32"), np.arange(40) % 4
    d = EvalData(x, y)
    a, b = d
    assert a is x and b is y and d[0] is x and d.y is y and len(d) == 2 and isinstance(d, tuple)
    assert type(tuple(d)) is tuple and tuple(d)[1] is y
    assert repr(d) == "EvalData(x: (40, 6) float32, y: (40,) int64, 4 classes 0..3)"
    back = pickle.loads(pickle.dumps(d))
    assert isinstance(back, EvalData) and np.array_equal(back[0], x) and np.array_equal(back[1], y)


def test_failing_claim_shows_its_message_not_the_arrays(pytester, keep_env, files):
    pytester.makepyfile("""
        from modtest import assert_clusterable

        def test_fails(model, eval_data, partition):
            x, y = eval_data
            assert len(x) == len(y) == 40 and isinstance(eval_data, tuple)
            assert_clusterable(model, k=3, n_shuffles=3, alpha=1e-9)
    """)
    res = run_inline(pytester, "--model", str(files / "m.keras"), "--data", str(files / "d6.npz"))
    res.assert_outcomes(failed=1)
    out = res.stdout.str()
    assert "array(" not in out, out
    res.stdout.fnmatch_lines(["eval_data = EvalData(x: (40, 6) float32, y: (40,) int64, 4 classes 0..3)",
                              "partition = Partition(k=12, seed=0, *)",
                              "E       AssertionError: clusterability not shown: *"])


# --------------------------------------------------------------------------- 9: every number labelled

def test_partition_counts_account_for_every_partition():
    from modtest.robust import partition_counts

    assert partition_counts(9, 0, 10) == ("holds in 9, fails in 0 and is undecided in 1 of 10 partitions "
                                          "(undecided: its Monte Carlo interval straddles the threshold)")
    assert partition_counts(0, 10, 10) == "holds in 0, fails in 10 of 10 partitions"


def test_cli_labels_raw_and_corrected_p(audit_output):
    status, out = audit_output
    assert status == 0, out
    lines = {ln.split(":")[0]: ln for ln in out.splitlines() if ln and not ln.startswith(" ")}
    assert "raw p=" in lines["importance"] and "(before correction)" in lines["importance"], out
    assert " of 10 partitions" in lines["importance"] and "raw chi2 p=" in lines["importance"]
    claims = next(ln for ln in out.splitlines() if ln.startswith("claims ("))
    assert "importance " in claims and "(corrected p=" in claims and "(p=" not in claims, claims


def test_k_alone_is_checked_against_the_example_model(pytester, keep_env):
    pytester.makepyfile(USES_MODEL)
    usage_error(run_inline(pytester, "--modtest-k", "100000"), "--modtest-k: k=100000 is too large")
