"""visualization_study (paper 3.1.2, A.4, A.5, A.8), untrained controls and image grids."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import json

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from modtest.errors import NoTestableSubclusters  # noqa: E402
from modtest.probes.visualization import (  # noqa: E402
    filter_subclusters,
    untrained_control,
    visualization_study,
)
from modtest.results import ProbeResult, SubCluster  # noqa: E402

N_RANDOM = 4
FAST = dict(n_random=N_RANDOM, steps=15, seed=0)


def _model():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((16,)),
        keras.layers.Dense(12, activation="relu", name="h1"),
        keras.layers.Dense(10, name="h2"),
        keras.layers.ReLU(name="h2_relu"),
        keras.layers.Dense(3, activation="softmax", name="out"),
    ])


SUBS = [
    SubCluster("h1", 0, (0, 1, 2, 3), 12),
    SubCluster("h1", 1, (4, 5, 6, 7, 8), 12),
    SubCluster("h2", 0, (0, 1, 2), 10),
    SubCluster("h2", 1, (3, 4), 10),  # too small: 2 < 3
    SubCluster("h2", 2, (1, 2, 3, 4, 5, 6, 7, 8, 9), 10),  # too large: 0.9 > 0.8
]


class _Partition:
    subclusters = SUBS


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def result(model):
    return visualization_study(model, _Partition(), **FAST)


def test_filtering_follows_the_paper():
    kept = filter_subclusters(SUBS)
    assert [(s.layer, s.cluster) for s in kept] == [("h1", 0), ("h1", 1), ("h2", 0)]
    assert len(filter_subclusters(SUBS, min_size=5)) == 1


def test_rows_and_measures(result):
    assert isinstance(result, ProbeResult) and result.probe == "visualization"
    assert [(r["layer"], r["cluster"]) for r in result.rows] == [("h1", 0), ("h1", 1), ("h2", 0)]
    grid = np.arange(1, N_RANDOM + 2) / (N_RANDOM + 1)
    for row in result.rows:
        assert len(row["random_scores"]) == len(row["random_entropies"]) == len(row["random_variances"]) == N_RANDOM
        for key in ("p_input", "p_output", "p_variance"):
            assert np.isclose(row[key], grid).any(), (key, row[key])
        # p-values recomputed from the row's own statistics
        above = sum(r >= row["score"] for r in row["random_scores"])
        below = sum(r <= row["entropy"] for r in row["random_entropies"])
        assert row["p_input"] == pytest.approx((1 + above) / (N_RANDOM + 1))
        assert row["p_output"] == pytest.approx((1 + below) / (N_RANDOM + 1))
        assert 0 <= row["entropy"] <= np.log(3) + 1e-9
        assert row["variance"] >= 0
        width = 12 if row["layer"] == "h1" else 10
        assert row["size"] == len(row["units"]) and row["fraction"] == pytest.approx(row["size"] / width)
    assert set(result.network) == {"input_coherence", "output_coherence", "activational_variance"}
    for measure in result.network.values():
        assert measure["n"] == 3 and 0 <= measure["fisher_p"] <= 1 and 0 <= measure["chi2_p"] <= 1
    q = result.extras["cov_quartiles"]
    assert len(q) == 3 and (np.isnan(q).all() or q[0] <= q[1] <= q[2])
    assert result.extras["n_tested"] == 3 and result.extras["n_skipped"] == 2
    assert "images" not in result.extras
    json.dumps(result.to_dict())  # JSON-ready


def test_deterministic_for_a_seed_and_independent_of_order(model, result):
    """Sub-clusters given in another order: the same rows, in the same (layer) order, to the bit."""
    again = visualization_study(model, list(reversed(SUBS)), **FAST)
    rows = lambda res: res.to_dict()["rows"]  # noqa: E731 - NaN -> None
    assert rows(again) == rows(result)
    other = visualization_study(model, SUBS, **{**FAST, "seed": 1})
    assert [r["score"] for r in other.rows] != [r["score"] for r in result.rows]


def test_images_are_returned_separately_and_saved_as_a_grid(model, tmp_path):
    from modtest.report.figures_vis import save_grid

    res, images = visualization_study(model, SUBS[:3], return_images=True, **FAST)
    assert set(images) == {"h1-0", "h1-1", "h2-0"}
    assert all(v.shape == (N_RANDOM + 1, 4, 4, 1) for v in images.values())
    names = ["h2-0", "h1-0", "h1-1"]
    path = save_grid([images[n][0] for n in names], [images[n][1:] for n in names],
                     [n.split("-")[0] for n in names], tmp_path / "grid.png", layer_order=["h1", "h2"])
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 500


def test_no_filter_subclusters(model):
    with pytest.raises(NoTestableSubclusters, match="none of the 2 sub-clusters"):
        visualization_study(model, SUBS[3:], **FAST)


def test_untrained_control_is_a_seeded_reinitialised_copy(model):
    a = untrained_control(model, seed=1)
    b = untrained_control(model, seed=1)
    c = untrained_control(model, seed=2)
    assert [layer.name for layer in a.layers] == [layer.name for layer in model.layers]
    for wa, wb, wc, wm in zip(a.get_weights(), b.get_weights(), c.get_weights(), model.get_weights()):
        assert wa.shape == wm.shape
        np.testing.assert_array_equal(wa, wb)
        if wa.ndim == 2:  # kernels: fresh and seed-dependent
            assert not np.allclose(wa, wm) and not np.allclose(wa, wc)
    res = visualization_study(a, SUBS, **FAST)
    assert len(res.rows) == 3


def test_robust_visualization_over_an_ensemble(tmp_path):
    """The robust protocol for the visualization measures: one entry per partition, a verdict per
    measure, controls added up to the cap where a decision needed them, and the same result when the
    images are rendered by shared work units (a workshare folder) as in this process."""
    from modtest.executors.workshare import WorkShare
    from modtest.probes.ensemble import robust_visualization_study

    model = _model()
    kw = dict(k=3, seed=0, ensemble=5, n_random=3, max_random=6, steps=6, batch_size=16, min_size=2)
    serial = robust_visualization_study(model, **kw)
    shared = robust_visualization_study(model, executor=WorkShare(tmp_path / "share"), **kw)
    a, b = json.loads(shared.to_json()), json.loads(serial.to_json())
    a["extras"].pop("seconds"), b["extras"].pop("seconds")
    assert a == b
    for measure in ("input_coherence", "output_coherence", "activational_variance"):
        net = serial.network[measure]
        assert net["verdict"] in ("pass", "fail", "inconclusive") and len(net["partitions"]) == 5
        assert net["p_low"] <= net["p"] <= net["p_high"]
        assert all(3 * e["n_subclusters"] <= e["n_controls"] <= 6 * e["n_subclusters"] for e in net["partitions"])
    assert serial.rows and all(3 <= r["n_random"] <= 6 for r in serial.rows)
