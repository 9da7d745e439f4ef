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

from modtest.cli import main

PLUGIN = ("-p", "modtest", "-p", "no:cacheprovider")
NEVER = "def test_never():\n    raise SystemExit('must not run')\n"
USES_MODEL = "def test_uses(model, eval_data):\n    raise SystemExit('must not run')\n"


@pytest.fixture
def keep_env(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))


def run_inline(pytester, *args):
    return pytester.runpytest(*PLUGIN, "--modtest-cache", "cache", *args)


def usage_error(res, match):
    """Exit 4, one ``ERROR:`` line holding ``match``, no traceback, no test run."""
    text = res.stdout.str() + res.stderr.str()
    assert res.ret == 4, text
    err = [ln for ln in res.stderr.lines if ln.startswith("ERROR")]
    assert len(err) == 1 and match in err[0], err
    assert "Traceback" not in text and "must not run" not in text
    return err[0]


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
    keras.Model(inp, [L.Dense(4, activation="softmax")(h), L.Dense(4, activation="softmax")(h)]).save(d / "two.keras")
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


def test_pt2_member_refused_by_cli(tmp_path, capsys):
    bad = _with_member(_pt2(tmp_path / "good.pt2"), tmp_path / "bad.pt2", "m/data.pkl")
    cli_error(capsys, ["audit", str(bad), "--progress", "off"], "its archive member 'm/data.pkl' is a pickle")


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
