"""Bad input gets a one-line error that names the problem; loading never runs code without trust."""
from __future__ import annotations

import numpy as np
import pytest
from _models import keras, tiny_mlp

import modtest
from modtest import DataError, InvalidInput, ModelLoadError, UnsafeModelError, UnsupportedModelError
from modtest._validation import check_data, load_data


def one_line(excinfo):
    text = str(excinfo.value)
    assert text and "\n" not in text, text
    return text


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    m = tiny_mlp()
    m.save(d / "m.keras")
    m.save(d / "m.h5")
    return d


def test_missing_file(tmp_path):
    with pytest.raises(ModelLoadError, match="model file not found") as e:
        modtest.load_model(tmp_path / "nope.keras")
    one_line(e)


def test_savedmodel_directory(tmp_path):
    (tmp_path / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="SavedModel directory.*model.save") as e:
        modtest.load_model(tmp_path)
    one_line(e)


def test_unsupported_suffix(tmp_path):
    p = tmp_path / "model.onnx"
    p.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"unsupported model file 'model.onnx'.*keras: \.keras/\.h5/\.hdf5 .*"
                                             r"torch: \.pt2 \(export it with torch.export") as e:
        modtest.load_model(p)
    one_line(e)
    p = tmp_path / "model.pt"  # torch's suffix: said what it holds and how to export a .pt2
    p.write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"model.pt is not a torch file modtest knows; export it") as e:
        modtest.load_model(p)
    one_line(e)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_garbage_file(tmp_path, suffix):
    p = tmp_path / f"bad{suffix}"
    p.write_bytes(b"this is not a model" * 10)
    with pytest.raises(ModelLoadError, match="corrupt") as e:
        modtest.load_model(p)
    one_line(e)


@pytest.mark.parametrize("name", ["m.keras", "m.h5"])
def test_truncated_file(tmp_path, saved, name):
    data = (saved / name).read_bytes()
    p = tmp_path / name
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError) as e:
        modtest.load_model(p)
    assert name in one_line(e) or "corrupt" in str(e.value)


def test_weights_only_h5(tmp_path):
    p = tmp_path / "w.weights.h5"
    tiny_mlp().save_weights(p)
    with pytest.raises(ModelLoadError, match="no model config") as e:
        modtest.load_model(p)
    one_line(e)


@pytest.mark.parametrize("name", ["m.keras", "m.h5"])
def test_round_trip_loads(saved, name):
    m = modtest.load_model(saved / name)
    ref = tiny_mlp()
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    np.testing.assert_allclose(m.predict(x, verbose=0), ref.predict(x, verbose=0), rtol=1e-5)


def _lambda_model():
    k = keras()
    return k.Sequential([k.Input((6,)), k.layers.Dense(4, name="h"),
                         k.layers.Lambda(lambda x: x * 2.0, name="lam"), k.layers.Dense(3, name="out")])


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_lambda_refused_without_trust_and_loads_with_it(tmp_path, suffix, monkeypatch):
    p = tmp_path / f"lam{suffix}"
    _lambda_model().save(p)
    import keras as k

    real_load = k.saving.load_model
    calls = []
    monkeypatch.setattr(k.saving, "load_model", lambda *a, **kw: calls.append(a) or real_load(*a, **kw))
    with pytest.raises(UnsafeModelError, match="lam \\(Lambda\\).*trust=True") as e:
        modtest.load_model(p)
    one_line(e)
    assert calls == []  # refused from the config alone: Keras never deserialised anything
    loaded = modtest.load_model(p, trust=True)
    assert loaded.get_layer("lam") is not None and len(calls) == 1


def test_custom_layer_refused(tmp_path):
    k = keras()

    @k.saving.register_keras_serializable(package="mytests")
    class Twice(k.layers.Layer):
        def call(self, x):
            return 2 * x

    m = k.Sequential([k.Input((6,)), k.layers.Dense(4), Twice(name="twice"), k.layers.Dense(3)])
    p = tmp_path / "custom.keras"
    m.save(p)
    with pytest.raises(UnsafeModelError, match="twice") as e:
        modtest.load_model(p)
    one_line(e)


def test_in_memory_model_accepted_everywhere():
    m = tiny_mlp()
    assert modtest.load_model(m) is m
    assert modtest.build_graph(m).n_nodes == 6 + 12 + 10 + 4


def test_unsupported_layer_named():
    k = keras()
    m = k.Sequential([k.Input((5, 3)), k.layers.LSTM(4, name="recurrent"), k.layers.Dense(2)])
    with pytest.raises(UnsupportedModelError, match="'recurrent' of type LSTM") as e:
        modtest.build_graph(m)
    one_line(e)


def test_model_without_dense_or_conv():
    k = keras()
    m = k.Sequential([k.Input((4, 4)), k.layers.Flatten(), k.layers.Activation("relu")])
    with pytest.raises(UnsupportedModelError, match="no Dense or convolutional layers") as e:
        modtest.build_graph(m)
    one_line(e)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nonfinite_weights(bad):
    m = tiny_mlp()
    w, b = m.get_layer("h2").get_weights()
    w[0, 0] = bad
    m.get_layer("h2").set_weights([w, b])
    with pytest.raises(InvalidInput, match="layer 'h2' has NaN or infinite weights") as e:
        modtest.cluster(m, k=2)
    one_line(e)


# ----------------------------------------------------------------------------------------- data

def test_npz_without_y(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.zeros((3, 6)))
    with pytest.raises(DataError, match="no array 'y'") as e:
        load_data(p)
    one_line(e)


def test_npz_with_objects_never_unpickled(tmp_path):
    p = tmp_path / "d.npz"
    np.savez(p, x=np.array([object()], dtype=object), y=np.zeros(1))
    with pytest.raises(DataError, match="Python objects") as e:
        load_data(p)
    one_line(e)


def test_missing_data_file(tmp_path):
    with pytest.raises(DataError, match="data file not found") as e:
        load_data(tmp_path / "none.npz")
    one_line(e)


@pytest.mark.parametrize("x, y, message", [
    (np.zeros((20, 5)), np.zeros(20, int), r"x has shape \(20, 5\) but the model expects \(N, 6\)"),
    (np.zeros(6), np.zeros(1, int), "needs a batch axis"),
    (np.zeros((20, 6)), np.full(20, 4), r"labels must lie in \[0, 3\]"),
    (np.zeros((20, 6)), np.full(20, -1), r"labels must lie in \[0, 3\]"),
    (np.zeros((20, 6)), np.full(20, 0.5), "integer class labels"),
    (np.zeros((3, 6)), np.zeros(3, int), "3 examples are fewer than the model's 4 classes"),
    (np.zeros((20, 6)), np.zeros(19, int), "20 examples but y has 19"),
    (np.full((20, 6), np.nan), np.zeros(20, int), "NaN"),
])
def test_data_that_does_not_fit(x, y, message):
    with pytest.raises(DataError, match=message) as e:
        check_data(tiny_mlp(), x, y)
    one_line(e)


def test_one_hot_labels_accepted():
    y = np.eye(4)[[0, 1, 2, 3, 0]]
    _, labels = check_data(tiny_mlp(), np.zeros((5, 6)), y)
    assert labels.tolist() == [0, 1, 2, 3, 0]
