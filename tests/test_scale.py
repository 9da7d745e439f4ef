"""Memory bounds of the fast lesion engine: a small budget gives the same labels and results as a
large one, and the bytes held in cached/per-block arrays (measured, ``peak_cached_bytes``) and the
stacked suffix inputs (``peak_stacked_elements``) stay under their budgets."""
from __future__ import annotations

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from modtest.cluster import cluster  # noqa: E402
from modtest.frameworks.keras.engines import FastEngine, ReferenceEngine  # noqa: E402
from modtest.probes.lesion import lesion_study  # noqa: E402


def _cnn():
    """c1 -> BN -> relu -> c2 (incremental path at c1), then a residual branch over c3."""
    keras.utils.set_random_seed(5)
    L = keras.layers
    inp = keras.Input((8, 8, 2))
    a = L.ReLU()(L.BatchNormalization(name="bn1")(L.Conv2D(6, 3, padding="same", name="c1")(inp)))
    b = L.Conv2D(6, 3, padding="same", activation="relu", name="c2")(a)
    c = L.Conv2D(6, 3, padding="same", activation="relu", name="c3")(b)
    m = L.Add()([b, c])
    d = L.Dense(8, activation="relu", name="d1")(L.Flatten()(L.MaxPooling2D()(m)))
    out = L.Dense(4, activation="softmax", name="out")(d)
    model = keras.Model(inp, out)
    rng = np.random.default_rng(0)
    bn = model.get_layer("bn1")
    bn.set_weights([rng.uniform(0.5, 1.5, 6), rng.normal(0, .5, 6), rng.normal(0, .5, 6), rng.uniform(.5, 2, 6)])
    o = model.get_layer("out")
    o.set_weights([rng.normal(0, 1.0, o.kernel.shape).astype("float32"), np.zeros(4, "float32")])
    return model


def _sets(width, n, rng):
    return [np.sort(rng.choice(width, size=rng.integers(1, width), replace=False)) for _ in range(n)]


@pytest.fixture(scope="module")
def cnn():
    model = _cnn()
    x = np.random.default_rng(1).normal(size=(90, 8, 8, 2)).astype("float32")
    return model, x


def test_small_budget_same_labels_and_bounded_peak(cnn):
    model, x = cnn
    rng = np.random.default_rng(2)
    sets = {layer: _sets(w, 7, rng) for layer, w in (("c1", 6), ("c2", 6), ("c3", 6), ("d1", 8))}
    ref = ReferenceEngine(model, x)
    big = FastEngine(model, x)
    per_ex = 8 * 8 * 6 * 4 * 2  # the largest per-example prefix (c2: its output and the side tensor)
    budget = 11 * per_ex  # far less than one layer for all 90 examples: streamed in blocks
    small = FastEngine(model, x, cache_bytes=budget, max_elements=3000)
    streamed_inc = FastEngine(model, x, cache_bytes=budget)  # incremental path at c1, in blocks
    assert streamed_inc._incremental("c1") is not None
    for layer, s in sets.items():
        want = ref.labels(layer, s)
        np.testing.assert_array_equal(big.labels(layer, s), want)
        np.testing.assert_array_equal(small.labels(layer, s), want)
        np.testing.assert_array_equal(streamed_inc.labels(layer, s), want)
        # double lesions (prefix lesioned: never cached) also stay bounded
        if layer != "c1":
            fixed = [("c1", np.array([0, 3]))]
            np.testing.assert_array_equal(small.labels(layer, s, fixed=fixed), ref.labels(layer, s, fixed=fixed))
    assert 0 < small.peak_cached_bytes <= budget
    assert 0 < streamed_inc.peak_cached_bytes <= budget
    assert small.cached_bytes <= budget
    assert 0 < small.peak_stacked_elements <= 3000
    assert big.peak_cached_bytes > budget  # the large budget did cache whole layers


def test_lru_keeps_cache_under_budget_and_reuses_entries(cnn):
    model, x = cnn
    rng = np.random.default_rng(3)
    one_layer = len(x) * 8 * 8 * 6 * 4 * 2  # c2/c3 prefix arrays (output + side tensor) for all x
    eng = FastEngine(model, x, cache_bytes=one_layer + len(x) * 8 * 4)  # one conv layer (+ d1) fits
    for layer in ("c2", "c3", "d1", "c2"):
        eng.labels(layer, _sets(6, 3, rng))
        assert eng.cached_bytes <= eng.cache_bytes
    keys = [k[1] for k in eng._lru]
    assert keys[-1] == "c2" and "c3" not in keys  # c3 evicted to make room for c2 again
    assert eng.peak_cached_bytes <= eng.cache_bytes


def test_lesion_study_identical_under_small_budget(cnn):
    model, x = cnn
    y = np.random.default_rng(4).integers(0, 4, len(x))
    part = cluster(model, k=3, seed=0)
    a = lesion_study(model, part, x, y, n_random=6, progress=False)
    b = lesion_study(model, part, x, y, n_random=6, progress=False, cache_bytes=4096, max_elements=2000)
    assert json.loads(a.to_json())["rows"] == json.loads(b.to_json())["rows"]
    assert a.network == b.network


def test_budget_below_one_example_still_works(cnn):
    model, x = cnn
    s = _sets(6, 4, np.random.default_rng(5))
    eng = FastEngine(model, x[:10], cache_bytes=1, max_elements=1)
    np.testing.assert_array_equal(eng.labels("c2", s), ReferenceEngine(model, x[:10]).labels("c2", s))
    assert eng.cached_bytes == 0
