"""Spectral partition, n-cut, sub-clusters and clusterability (paper section 2, appendix A.1)."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from _models import planted_blocks, planted_mlp, tiny_mlp
from hypothesis import given, settings
from hypothesis import strategies as st

from modtest import InvalidInput, build_graph, cluster, clusterability
from modtest.cluster import ncut
from modtest.graph import WeightGraph


def same_partition(a, b):
    """Labels equal up to a permutation of label names."""
    a, b = np.asarray(a), np.asarray(b)
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_planted_two_modules_recovered_exactly():
    model = planted_mlp()
    part = cluster(model, k=2, seed=0)
    assert part.ncut < 0.01
    assert same_partition(part.labels, planted_blocks(model))
    # sub-clusters: each hidden layer splits into its two halves
    hidden = {(s.layer, s.units) for s in part.subclusters}
    assert hidden == {("h1", tuple(range(4))), ("h1", tuple(range(4, 8))),
                      ("h2", tuple(range(4))), ("h2", tuple(range(4, 8)))}
    for s in part.subclusters:
        assert s.fraction == pytest.approx(0.5) and s.size == 4 and s.layer_size == 8


def test_ncut_by_hand():
    a = sp.csr_matrix(np.array([[0, 2, 1, 0], [2, 0, 0, 0], [1, 0, 0, 3], [0, 0, 3, 0]], float))
    # clusters {0,1}, {2,3}: cut = 1; vol = 5, 7
    assert ncut(a, [0, 0, 1, 1]) == pytest.approx(1 / 5 + 1 / 7)
    assert ncut(a, [0, 0, 0, 0]) == pytest.approx(0.0)
    assert ncut(a, [0, 0, -1, -1]) == pytest.approx(1 / 5)  # -1 nodes are ignored


def test_same_seed_same_partition_and_seed_matters_somewhere():
    model = tiny_mlp(seed=3, widths=(20, 20))
    p1, p2 = cluster(model, k=4, seed=1), cluster(model, k=4, seed=1)
    assert np.array_equal(p1.labels, p2.labels) and p1.ncut == p2.ncut
    assert p1.to_dict()["subclusters"] == p2.to_dict()["subclusters"]


def test_isolated_nodes_get_label_minus_one():
    model = tiny_mlp(seed=1)
    w, b = model.get_layer("h1").get_weights()
    w[:, 0] = 0  # unit 0 of h1 has no input ...
    model.get_layer("h1").set_weights([w, b])
    w2, b2 = model.get_layer("h2").get_weights()
    w2[0, :] = 0  # ... and no output: a dead unit
    model.get_layer("h2").set_weights([w2, b2])
    part = cluster(model, k=3, seed=0)
    assert part.layer_labels("h1")[0] == -1
    assert (part.labels == -1).sum() == 1
    assert all(0 not in s.units for s in part.subclusters if s.layer == "h1")


@pytest.mark.parametrize("k, message", [(1, "k must be at least 2"), (0, "k must be at least 2"),
                                        (10_000, "k=10000 is too large"), (2.5, "k must be an integer")])
def test_bad_k_is_one_line_error(k, message):
    with pytest.raises(InvalidInput, match=message) as exc:
        cluster(tiny_mlp(), k=k)
    assert "\n" not in str(exc.value)


def _block_graph(sizes, seed):
    """A random graph with len(sizes) dense blocks and weak links between them."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    a = rng.uniform(0, 0.01, (n, n))
    off = np.concatenate([[0], np.cumsum(sizes)])
    for i in range(len(sizes)):
        a[off[i]:off[i + 1], off[i]:off[i + 1]] = rng.uniform(0.5, 1.0, (sizes[i], sizes[i]))
    a = np.triu(a, 1)
    a = a + a.T
    return WeightGraph(sp.csr_matrix(a), "mlp", ["x"], [n], ["hidden"]), np.repeat(np.arange(len(sizes)), sizes)


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(3, 8), min_size=2, max_size=4), seed=st.integers(0, 1000), data=st.data())
def test_permuting_nodes_permutes_labels_and_keeps_ncut(sizes, seed, data):
    g, truth = _block_graph(sizes, seed)
    k = len(sizes)
    perm = np.asarray(data.draw(st.permutations(range(g.n_nodes))))
    gp = WeightGraph(g.adjacency[perm][:, perm].tocsr(), "mlp", ["x"], [g.n_nodes], ["hidden"])
    p1, p2 = cluster(g, k=k, seed=0), cluster(gp, k=k, seed=0)
    assert 0 <= p1.ncut <= k
    assert p1.ncut == pytest.approx(p2.ncut, rel=1e-9, abs=1e-12)
    assert same_partition(p1.labels[perm], p2.labels)
    assert same_partition(p1.labels, truth)


def test_clusterability_planted_beats_shuffles():
    res = clusterability(planted_mlp(), k=2, n_shuffles=9, seed=0)
    assert res.p_value == pytest.approx(0.1)  # lower n-cut than all 9 shuffles
    assert res.z_score < -3
    assert len(res.shuffled_ncuts) == 9 and min(res.shuffled_ncuts) > res.ncut


def test_clusterability_p_on_grid_for_random_model():
    res = clusterability(tiny_mlp(seed=2, widths=(16, 16)), k=3, n_shuffles=5, seed=0)
    assert res.p_value in {i / 6 for i in range(1, 7)}


def test_example_model_partition():
    from modtest._examples import EXAMPLE_MODEL

    part = cluster(EXAMPLE_MODEL, k=12, seed=0)
    g = part.graph
    assert g.layer_sizes == [64, 256, 256, 256, 256, 10]
    assert 0 < part.ncut < 12
    assert {s.layer for s in part.subclusters} == {"dense_1", "dense_2", "dense_3", "dense_4"}
    # every hidden non-isolated unit is in exactly one sub-cluster
    for layer in ("dense_1", "dense_4"):
        units = sorted(u for s in part.subclusters if s.layer == layer for u in s.units)
        assert units == sorted(np.flatnonzero(part.layer_labels(layer) >= 0).tolist())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_large_graph_solver_equals_arpack_path(seed):
    model = tiny_mlp(seed=seed, widths=(24, 24, 24), n_in=10, n_out=6)
    a = cluster(model, k=5, seed=seed, solver="arpack")
    b = cluster(model, k=5, seed=seed, solver="lanczos")
    assert np.array_equal(a.labels, b.labels)
    assert a.ncut == pytest.approx(b.ncut)


def test_large_graph_solver_equals_arpack_on_example():
    from modtest._examples import EXAMPLE_CNN

    g = build_graph(EXAMPLE_CNN)
    a, b = cluster(g, k=12, seed=0, solver="arpack"), cluster(g, k=12, seed=0, solver="lanczos")
    assert same_partition(a.labels, b.labels)
