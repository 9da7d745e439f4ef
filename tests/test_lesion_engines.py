"""Fast lesion engine == reference engine (labels), and the weight surgery of a lesion."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from modtest.frameworks.keras.engines import FastEngine, ReferenceEngine, lesioned  # noqa: E402


def _mlp():
    keras.utils.set_random_seed(1)
    return keras.Sequential([keras.Input((6,)), keras.layers.Dense(12, activation="relu", name="d1"),
                             keras.layers.Dense(10, activation="tanh", name="d2"),
                             keras.layers.Dense(4, activation="softmax", name="out")])


def _cnn():
    keras.utils.set_random_seed(2)
    L = keras.layers
    m = keras.Sequential([keras.Input((6, 6, 1)), L.Conv2D(6, 3, padding="same", name="c1"),
                          L.BatchNormalization(name="bn1"), L.ReLU(name="r1"),
                          L.Conv2D(5, 3, padding="same", use_bias=False, name="c2"),
                          L.BatchNormalization(name="bn2"), L.ReLU(name="r2"), L.MaxPooling2D(2),
                          L.Flatten(), L.Dense(4, activation="softmax", name="out")])
    rng = np.random.default_rng(0)
    for bn in ("bn1", "bn2"):  # non-trivial BN statistics, so the shift of a lesioned map matters
        layer = m.get_layer(bn)
        layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype("float32") if i in (0, 3) else
                           rng.normal(0, 0.5, w.shape).astype("float32")
                           for i, w in enumerate(layer.get_weights())])
    c1 = m.get_layer("c1")
    c1.set_weights([c1.get_weights()[0], rng.normal(0, 0.5, 6).astype("float32")])
    out = m.get_layer("out")  # a spread-out read-out, so that the random network predicts every class
    out.set_weights([rng.normal(0, 1.0, out.kernel.shape).astype("float32"), np.zeros(4, "float32")])
    return m


def _residual():
    keras.utils.set_random_seed(3)
    inp = keras.Input((6,))
    h0 = keras.layers.Dense(10, activation="relu", name="d0")(inp)
    h1 = keras.layers.Dense(10, activation="relu", name="d1")(h0)
    h2 = keras.layers.Dense(10, name="d2")(h1)
    s = keras.layers.Add(name="add")([h0, h2])
    a = keras.layers.ReLU(name="relu")(s)
    out = keras.layers.Dense(4, activation="softmax", name="out")(a)
    m = keras.Model(inp, out)
    for name in ("d0", "d1", "d2"):
        layer = m.get_layer(name)
        k, b = layer.get_weights()
        layer.set_weights([k, np.random.default_rng(len(name)).normal(0, 0.3, b.shape).astype("float32")])
    return m


MODELS = {"mlp": (_mlp, (6,), ["d1", "d2"]), "cnn": (_cnn, (6, 6, 1), ["c1", "c2"]),
          "residual": (_residual, (6,), ["d0", "d1", "d2"])}


def _sets(layer_size, n, rng):
    return [np.sort(rng.choice(layer_size, size=rng.integers(1, layer_size), replace=False))
            for _ in range(n)]


@pytest.mark.parametrize("keep_bias", [False, True])
@pytest.mark.parametrize("kind", list(MODELS))
def test_fast_equals_reference_single_and_double(kind, keep_bias):
    build, shape, layers = MODELS[kind]
    model = build()
    x = np.random.default_rng(5).normal(size=(64,) + shape).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    ref = ReferenceEngine(model, x, keep_bias=keep_bias)
    fast = FastEngine(model, x, keep_bias=keep_bias)
    assert np.array_equal(ref.base_labels(), fast.base_labels())
    rng = np.random.default_rng(0)
    changed = 0
    for layer in layers:
        width = model.get_layer(layer).kernel.shape[-1]
        sets = _sets(width, 4, rng)
        assert fast._split(layer) not in (None, False), f"fast path not used for {layer}"
        a, b = ref.labels(layer, sets), fast.labels(layer, sets)
        assert a.shape == (4, 64)
        np.testing.assert_array_equal(a, b)
        changed += int((a != ref.base_labels()).any())
    assert changed > 0  # the lesions do something, so equality is not vacuous
    # double lesions: a fixed lesion in another layer, variants batched in this one
    for fixed_layer, var_layer in [(layers[0], layers[-1]), (layers[-1], layers[0])]:
        fw = model.get_layer(fixed_layer).kernel.shape[-1]
        fixed = [(fixed_layer, np.arange(fw // 2))]
        sets = _sets(model.get_layer(var_layer).kernel.shape[-1], 3, rng)
        np.testing.assert_array_equal(ref.labels(var_layer, sets, fixed=fixed),
                                      fast.labels(var_layer, sets, fixed=fixed))
    for w0, w1 in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w0, w1)


def test_residual_suffix_reads_the_skip_branch():
    model = _residual()
    x = np.zeros((4, 6), "float32")
    split = FastEngine(model, x)._split("d1")
    assert split.n_inputs == 2  # d1's output and d0's output (the skip connection)


def test_keep_bias_changes_the_lesioned_output():
    model = _mlp()
    x = np.random.default_rng(0).normal(size=(128, 6)).astype("float32")
    layer = model.get_layer("d1")
    k, b = layer.get_weights()
    layer.set_weights([k, np.full_like(b, 2.0)])
    sets = [np.arange(12)]
    for eng in (ReferenceEngine, FastEngine):
        zero = eng(model, x, keep_bias=False).labels("d1", sets)
        keep = eng(model, x, keep_bias=True).labels("d1", sets)
        # the whole layer lesioned: every example gets the same prediction either way
        assert len(set(zero[0].tolist())) == 1 and len(set(keep[0].tolist())) == 1


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("keep_bias", [False, True])
def test_lesioned_zeroes_exactly_the_kernel_slice_and_bias(kind, keep_bias):
    build, _, layers = MODELS[kind]
    model = build()
    layer = model.get_layer(layers[0])
    k0 = keras.ops.convert_to_numpy(layer.kernel).copy()
    b0 = keras.ops.convert_to_numpy(layer.bias).copy()
    units = [1, 3]
    with lesioned(model, layers[0], units, keep_bias=keep_bias):
        k, b = keras.ops.convert_to_numpy(layer.kernel), keras.ops.convert_to_numpy(layer.bias)
        assert np.all(k[..., units] == 0)
        other = [i for i in range(k.shape[-1]) if i not in units]
        np.testing.assert_array_equal(k[..., other], k0[..., other])
        if keep_bias:
            np.testing.assert_array_equal(b, b0)
        else:
            assert np.all(b[units] == 0)
            np.testing.assert_array_equal(b[other], b0[other])
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), k0)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.bias), b0)


def test_weights_restored_on_error():
    model = _mlp()
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(RuntimeError):
        with lesioned(model, "d2", [0, 1, 2]):
            raise RuntimeError("boom")
    for w0, w1 in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w0, w1)

    class Boom(Exception):
        pass

    x = np.zeros((8, 6), "float32")
    eng = ReferenceEngine(model, x)

    def fail(n):
        raise Boom

    with pytest.raises(Boom):
        eng.labels("d1", [np.array([0, 1])], fixed=[("d2", np.array([2]))], on_progress=fail)
    for w0, w1 in zip(before, model.get_weights()):
        np.testing.assert_array_equal(w0, w1)


def test_fast_engine_blocks_big_data_and_falls_back_when_it_cannot_split():
    model = _mlp()
    x = np.random.default_rng(1).normal(size=(50, 6)).astype("float32")
    ref = ReferenceEngine(model, x)
    sets = _sets(12, 5, np.random.default_rng(2))
    tiny = FastEngine(model, x, max_elements=12 * 7)  # 7 examples per suffix call
    np.testing.assert_array_equal(ref.labels("d1", sets), tiny.labels("d1", sets))
    keras.utils.set_random_seed(4)
    soft = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="softmax", name="s"),
                             keras.layers.Dense(3, name="out")])
    fast = FastEngine(soft, x)
    assert fast._split("s") is False  # softmax is not elementwise: reference path
    sets = _sets(8, 3, np.random.default_rng(3))
    np.testing.assert_array_equal(ReferenceEngine(soft, x).labels("s", sets), fast.labels("s", sets))


def test_incremental_path_with_folded_batch_norm_and_exact_recomputation(monkeypatch):
    """c1 -> bn1 -> relu -> c2 -> bn2: the incremental path at c1 folds bn2 into the increments;
    forcing every row through the exact suffix (screening tolerance huge) gives the same labels."""
    import modtest.frameworks.keras.engines as lesion

    model = _cnn()
    x = np.random.default_rng(7).normal(size=(40, 6, 6, 1)).astype("float32")
    ref = ReferenceEngine(model, x)
    sets = _sets(6, 6, np.random.default_rng(8))
    fast = FastEngine(model, x)
    inc = fast._incremental("c1")
    assert inc is not None and inc[3] is not None and inc[3].name == "bn2"
    np.testing.assert_array_equal(ref.labels("c1", sets), fast.labels("c1", sets))
    monkeypatch.setattr(lesion, "_SCREEN_TOL", 1e9)
    np.testing.assert_array_equal(ref.labels("c1", sets), FastEngine(model, x).labels("c1", sets))


def test_batch_norm_affine_equals_the_layer():
    from modtest.frameworks.keras.engines import _bn_affine

    bn = _cnn().get_layer("bn1")
    h = np.random.default_rng(9).normal(size=(5, 6, 6, 6)).astype("float32")
    scale, shift = (keras.ops.convert_to_numpy(t) for t in _bn_affine(bn))
    np.testing.assert_allclose(h * scale + shift, keras.ops.convert_to_numpy(bn(h, training=False)),
                               rtol=1e-5, atol=1e-5)


def test_equal_unit_sets_are_computed_once_and_reported_in_full():
    model = _mlp()
    x = np.random.default_rng(10).normal(size=(30, 6)).astype("float32")
    sets = [np.array([1, 3]), np.array([3, 1]), np.array([0]), np.array([1, 3, 3]), np.array([0])]
    fast, seen, calls = FastEngine(model, x), [], []
    inner = fast._labels_distinct
    fast._labels_distinct = lambda layer, s, *a, **k: calls.append(len(s)) or inner(layer, s, *a, **k)
    lab = fast.labels("d1", sets, on_progress=seen.append)
    assert calls == [2] and sum(seen) == len(sets)
    np.testing.assert_array_equal(lab, ReferenceEngine(model, x).labels("d1", sets))


@pytest.mark.parametrize("kind", ["conv1d_bn_strided", "conv2d_strided_tanh"])
def test_incremental_path_on_conv1d_and_strided_convs(kind):
    """The per-unit increments (one depthwise convolution) also hold for Conv1D, strides and a
    non-linear L2 activation (no batch norm to fold)."""
    L = keras.layers
    keras.utils.set_random_seed(3)
    if kind == "conv1d_bn_strided":
        shape = (12, 2)
        model = keras.Sequential([keras.Input(shape), L.Conv1D(6, 3, padding="same", name="c1"),
                                  L.BatchNormalization(), L.ReLU(), L.Conv1D(5, 3, strides=2, name="c2"),
                                  L.BatchNormalization(), L.ReLU(), L.Flatten(),
                                  L.Dense(4, activation="softmax")])
    else:
        shape = (9, 9, 1)
        model = keras.Sequential([keras.Input(shape), L.Conv2D(6, 3, padding="same", activation="relu", name="c1"),
                                  L.Conv2D(5, 3, strides=2, padding="same", activation="tanh", name="c2"),
                                  L.Flatten(), L.Dense(4, activation="softmax")])
    x = np.random.default_rng(0).normal(size=(50,) + shape).astype("float32")
    sets = _sets(6, 8, np.random.default_rng(1))
    fast, ref = FastEngine(model, x), ReferenceEngine(model, x)
    inc = fast._incremental("c1")
    assert inc is not None and (inc[3] is not None) == (kind == "conv1d_bn_strided")
    a = ref.labels("c1", sets)
    np.testing.assert_array_equal(a, fast.labels("c1", sets))
    assert (a != ref.base_labels()).any()
