"""Property tests (hypothesis): partition invariants, random unit sets, p-value helpers, correction."""
from __future__ import annotations

from unittest import mock

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from modtest import stats
from modtest._random import random_unit_sets
from modtest.cluster import cluster, subclusters_of
from modtest.graph import WeightGraph

FAST = settings(max_examples=30, deadline=None)


def _mlp_graph(sizes, seed, dead):
    """A layered graph (input, hidden..., output) with random weights; ``dead`` hidden units isolated."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    offs = np.concatenate([[0], np.cumsum(sizes)])
    a = sp.lil_matrix((n, n))
    for i in range(len(sizes) - 1):
        w = rng.uniform(0.1, 1.0, (sizes[i], sizes[i + 1]))
        a[offs[i]:offs[i + 1], offs[i + 1]:offs[i + 2]] = w
    a = a.tocsr()
    a = (a + a.T).tolil()
    for node in dead:
        a[node, :] = 0
        a[:, node] = 0
    names = [f"l{i}" for i in range(len(sizes))]
    roles = ["input"] + ["hidden"] * (len(sizes) - 2) + ["output"]
    return WeightGraph(a.tocsr(), "mlp", names, list(sizes), roles)


@st.composite
def graphs(draw):
    sizes = [draw(st.integers(2, 5))] + draw(st.lists(st.integers(2, 8), min_size=1, max_size=3)) \
        + [draw(st.integers(2, 4))]
    seed = draw(st.integers(0, 2**16))
    hidden = list(range(sizes[0], sum(sizes) - sizes[-1]))
    dead = draw(st.lists(st.sampled_from(hidden), max_size=2, unique=True))
    return _mlp_graph(sizes, seed, dead)


@FAST
@given(g=graphs(), k=st.integers(2, 5), seed=st.integers(0, 50))
def test_partition_invariants(g, k, seed):
    n_usable = int((g.degrees > 0).sum())
    if k >= n_usable:
        return
    part = cluster(g, k=k, seed=seed, n_init=3)
    labels = part.labels
    assert labels.shape == (g.n_nodes,) and labels.min() >= -1 and labels.max() < k
    assert np.array_equal(labels < 0, g.degrees == 0)  # -1 exactly for isolated nodes
    for name, size, role in zip(g.layer_names, g.layer_sizes, g.roles):
        subs = [s for s in part.subclusters if s.layer == name]
        if role != "hidden":
            assert not subs
            continue
        lab = labels[g.layer_slice(name)]
        covered = [u for s in subs for u in s.units]
        assert sorted(covered) == sorted(np.flatnonzero(lab >= 0).tolist())  # each unit exactly once
        assert sum(s.fraction for s in subs) <= 1 + 1e-12
        assert all(s.layer_size == size and s.size >= 1 for s in subs)
        assert len({s.cluster for s in subs}) == len(subs)


@FAST
@given(sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4), data=st.data())
def test_subclusters_of_arbitrary_labels(sizes, data):
    g = WeightGraph(sp.csr_matrix((sum(sizes) + 2, sum(sizes) + 2)), "mlp", ["in"] + [f"h{i}" for i in
                    range(len(sizes))] + ["out"], [1] + sizes + [1], ["input"] + ["hidden"] * len(sizes) + ["output"])
    labels = np.array(data.draw(st.lists(st.integers(-1, 3), min_size=g.n_nodes, max_size=g.n_nodes)))
    subs = subclusters_of(g, labels)
    for name in g.layer_names[1:-1]:
        lab = labels[g.layer_slice(name)]
        mine = [s for s in subs if s.layer == name]
        assert sorted(u for s in mine for u in s.units) == np.flatnonzero(lab >= 0).tolist()
        assert all(np.all(lab[list(s.units)] == s.cluster) for s in mine)


@FAST
@given(layer=st.integers(1, 60), frac=st.floats(0, 1), n=st.integers(0, 12), key=st.text(max_size=5),
       seed=st.integers(0, 10))
def test_random_unit_sets(layer, frac, n, key, seed):
    size = int(round(frac * layer))
    sets = random_unit_sets(layer, size, n, key, seed)
    assert sets.shape == (n, size) and sets.dtype == np.int64
    if size and n:
        assert sets.min() >= 0 and sets.max() < layer
    for row in sets:
        assert len(set(row.tolist())) == size and np.all(np.diff(row) > 0)  # distinct and sorted
    assert np.array_equal(random_unit_sets(layer, size, n // 2, key, seed), sets[: n // 2])  # prefix-stable


@FAST
@given(layer=st.integers(1, 10), extra=st.integers(1, 5))
def test_random_unit_sets_refuses_oversize(layer, extra):
    with pytest.raises(ValueError):
        random_unit_sets(layer, layer + extra, 1, "k")


finite = st.floats(-5, 5, allow_nan=False)


@FAST
@given(true=finite, rand=st.lists(finite, min_size=1, max_size=25), side=st.sampled_from(["right", "left"]),
       ties=st.sampled_from(["inclusive", "strict"]), shift=st.floats(0, 3))
def test_empirical_p_range_grid_monotone(true, rand, side, ties, shift):
    n = len(rand)
    p = stats.empirical_p(true, rand, side=side, ties=ties)
    assert 1 / (n + 1) - 1e-12 <= p <= 1 + 1e-12
    assert abs(p * (n + 1) - round(p * (n + 1))) < 1e-9  # exactly on the grid k/(n+1)
    more = true + shift if side == "right" else true - shift  # a more extreme statistic
    assert stats.empirical_p(more, rand, side=side, ties=ties) <= p + 1e-12
    if ties == "inclusive":
        assert p >= stats.empirical_p(true, rand, side=side, ties="strict") - 1e-12
    r = stats.rank_p(true, rand, np.random.default_rng(0), side=side)
    assert stats.empirical_p(true, rand, side=side, ties="strict") - 1e-12 <= r \
        <= stats.empirical_p(true, rand, side=side, ties="inclusive") + 1e-12
    assert abs(r * (n + 1) - round(r * (n + 1))) < 1e-9


@FAST
@given(n_random=st.integers(1, 30), data=st.data())
def test_combined_pvalues_in_range_and_fisher_monotone(n_random, data):
    ks = data.draw(st.lists(st.integers(1, n_random + 1), min_size=1, max_size=15))
    p = np.array(ks) / (n_random + 1)
    out = stats.combine_pvalues(p, n_random)
    for key in ("fisher_p", "chi2_p"):
        assert 0 <= out[key] <= 1
    i = data.draw(st.integers(0, len(ks) - 1))
    if ks[i] > 1:  # a smaller sub-cluster p never makes the Fisher p larger
        q = p.copy()
        q[i] = (ks[i] - 1) / (n_random + 1)
        assert stats.combine_pvalues(q, n_random)["fisher_p"] <= out["fisher_p"] + 1e-12


@FAST
@given(p=st.lists(st.floats(0, 1), min_size=1, max_size=12), method=st.sampled_from(stats.CORRECTION_METHODS),
       data=st.data())
def test_correction_monotone_and_never_below_raw(p, method, data):
    p = np.array(p)
    with mock.patch("gc.collect", lambda *a: 0):  # statsmodels collects garbage on every call
        _rej, adj = stats.correct(p, method)
    assert np.all(adj >= p - 1e-12) and np.all(adj <= 1 + 1e-12)
    order = np.argsort(p, kind="stable")
    assert np.all(np.diff(adj[order]) >= -1e-12)  # monotone in the raw p
    i = data.draw(st.integers(0, len(p) - 1))
    q = p.copy()
    q[i] = q[i] * data.draw(st.floats(0, 1))  # lowering one raw p lowers no adjusted p
    with mock.patch("gc.collect", lambda *a: 0):
        _r2, adj2 = stats.correct(q, method)
    assert np.all(adj2 <= adj + 1e-12)
