"""Cross-framework identity: a Keras model and its torch twin (same weights, kernels transposed, flatten
order permuted, NCHW inputs) give the same graph, partition, lesion drops, p-values and verdicts.

Random controls are keyed on the model's fingerprint, which differs between frameworks; the twins
draw the same controls through the ``control_key`` setting (the Keras model's fingerprint here, so the
torch twins of the shipped examples reproduce the paper protocol's golden rows bit for bit).
"""
import json
from pathlib import Path

import numpy as np
import pytest
from _torch_twins import torch_twin

from modtest import build_graph, cluster, lesion_study
from modtest.frameworks import adapt

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = ("name", "layer", "units", "drop", "class_drops", "random_drops", "random_units", "p_importance",
            "p_coherence", "category")


def _twins(keras_model, x):
    import torch

    twin, to_torch = torch_twin(keras_model)
    xt = to_torch(x)
    yk = keras_model.predict(x, verbose=0).argmax(1)
    with torch.no_grad():
        yt = twin(torch.as_tensor(xt)).numpy().argmax(1)
    np.testing.assert_array_equal(yk, yt)
    return twin, xt, yk


@pytest.fixture(scope="module")
def mlp_twins():
    from _models import tiny_mlp

    km = tiny_mlp(seed=2)
    x = np.random.default_rng(0).normal(size=(120, 6)).astype("float32")
    twin, xt, y = _twins(km, x)
    return km, twin, x, xt, y


@pytest.fixture(scope="module")
def cnn_twins():
    from _models import cnn_with_bn

    km = cnn_with_bn(seed=0)
    x = 3 * np.random.default_rng(1).normal(size=(150, 8, 8, 2)).astype("float32")  # all three classes
    twin, xt, y = _twins(km, x)
    return km, twin, x, xt, y


@pytest.mark.parametrize("which", ["mlp_twins", "cnn_twins"])
def test_same_graph_and_partition(which, request):
    km, twin, _x, xt, _y = request.getfixturevalue(which)
    ta = adapt(twin)
    ta.bind_data(xt)
    gk, gt = build_graph(km), build_graph(ta)
    assert gk.kind == gt.kind and gk.layer_sizes == gt.layer_sizes and gk.roles == gt.roles
    assert gk.layer_names[-len(ta.unit_layers()):] == gt.layer_names[-len(ta.unit_layers()):]
    np.testing.assert_array_equal(gk.adjacency.toarray(), gt.adjacency.toarray())
    for k in (3, 4):
        pk, pt = cluster(km, k=k, seed=1), cluster(ta, k=k, seed=1)
        np.testing.assert_array_equal(pk.labels, pt.labels)
        assert pk.ncut == pt.ncut


@pytest.mark.parametrize("which", ["mlp_twins", "cnn_twins"])
def test_same_lesion_rows_and_p_values(which, request):
    """The paper's protocol (one partition, fixed controls) on both: every row equal (drops per class,
    controls, p-values, categories) and the network statistics too."""
    km, twin, x, xt, y = request.getfixturevalue(which)
    ka, ta = adapt(km), adapt(twin)
    key = ka.fingerprint()
    rk = lesion_study(ka, cluster(ka, k=3, seed=0), x, y, n_random=15, seed=0, control_key=key)
    rt = lesion_study(ta, cluster(ta, k=3, seed=0), xt, y, n_random=15, seed=0, control_key=key)
    assert len(rk.rows) == len(rt.rows) > 0
    rows = [json.dumps([[r[k] for k in ROW_KEYS] for r in res.rows]) for res in (rk, rt)]  # NaN == NaN
    assert rows[0] == rows[1]
    assert rk.network["importance"] == rt.network["importance"]
    assert json.dumps(rk.network["output_coherence"]) == json.dumps(rt.network["output_coherence"])


@pytest.mark.parametrize("which", ["mlp_twins", "cnn_twins"])
def test_same_robust_verdicts(which, request):
    """The robust protocol (an ensemble of 5 partitions, adaptive controls): the same claims, raw p and
    Monte Carlo bounds, hence the same verdict."""
    from modtest.assertions import assert_importance, assert_output_coherence
    from modtest.context import AuditContext, Defaults, using

    km, twin, x, xt, y = request.getfixturevalue(which)
    key = adapt(km).fingerprint()
    out = []
    for model, data in ((km, (x, y)), (twin, (xt, y))):
        claims = []
        settings = {"lesion": {"control_key": key}}
        with using(AuditContext(Defaults(ensemble=5, max_random=40, settings=settings))):
            for check in (assert_importance, assert_output_coherence):
                try:
                    c = check(model, k=3, data=data)
                    claims.append((c.verdict, c.p_raw, c.p_low, c.p_high))
                except AssertionError as exc:
                    claims.append(("fail", str(exc).split(" over ")[0]))
        out.append(claims)
    assert out[0] == out[1]


@pytest.mark.parametrize("name", ["digits_mlp.keras", pytest.param("digits_cnn.keras", marks=pytest.mark.slow)])
def test_torch_twins_of_the_examples_give_the_golden_rows(name):
    """The torch twins of the shipped models reproduce tests/golden/paper_protocol.json exactly: the
    partition, every lesion row and every network statistic (controls keyed on the Keras fingerprint)."""
    import keras

    from modtest.results import _jsonable

    km = keras.saving.load_model(ROOT / "examples" / name)
    data = np.load(ROOT / "examples" / "digits_test.npz")
    twin, to_torch = torch_twin(km)
    ta = adapt(twin)
    xt = to_torch(data["x"])
    ta.bind_data(xt)
    part = cluster(ta, k=12, seed=0)
    res = lesion_study(ta, part, xt, data["y"], n_random=20, seed=0, control_key=adapt(km).fingerprint())
    want = json.loads((ROOT / "tests" / "golden" / "paper_protocol.json").read_text())[name]
    got = json.loads(json.dumps(_jsonable({"labels": part.labels, "ncut": part.ncut, "rows": res.rows,
                                           "network": res.network}), allow_nan=False))
    assert got["labels"] == want["labels"] and got["ncut"] == want["ncut"]
    assert len(got["rows"]) == len(want["rows"])
    for g, w in zip(got["rows"], want["rows"]):
        assert g == w, (g["name"], {k for k in w if g.get(k) != w[k]})
    assert got["network"] == want["network"]
