"""Fast paths for graphs of tens of millions of edges, each against a plain reference on the same
seeds: the CSR assembly of graph_from_spec, the n-cut, threaded ARPACK products."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from modtest.cluster import ncut, spectral_labels_large
from modtest.graph import EdgeBlock, GraphSpec, KernelLayout, graph_from_spec, kernel_magnitudes


def coo_reference(spec: GraphSpec) -> np.ndarray:
    """Every edge of every block as (row, col, value), both directions, duplicates summed."""
    offsets = np.concatenate([[0], np.cumsum(spec.layer_sizes)])
    index = {n: i for i, n in enumerate(spec.layer_names)}
    rows, cols, vals = [], [], []
    for b in spec.blocks:
        mag = kernel_magnitudes(spec.kernels[b.consumer], spec.scales.get(b.consumer), spec.layouts.get(b.consumer))
        for c, unit in enumerate(b.channel_map):
            if unit < 0:
                continue
            for o in range(mag.shape[1]):
                v = mag[c, o] * (1.0 if b.row_scale is None else abs(b.row_scale[c]))
                if v:
                    rows.append(offsets[index[b.producer]] + unit)
                    cols.append(offsets[index[b.consumer]] + o)
                    vals.append(v)
    n = int(offsets[-1])
    a = sp.coo_matrix((vals + vals, (rows + cols, cols + rows)), shape=(n, n)).toarray()
    return a


def random_spec(seed: int) -> GraphSpec:
    """Four layers, every layout, parallel paths, skipped and repeated channels, row scales."""
    rng = np.random.default_rng(seed)
    n_a, mult = int(rng.integers(2, 7)), int(rng.integers(1, 4))
    sizes = [n_a, n_a * mult, 2 * int(rng.integers(1, 5)), int(rng.integers(2, 9))]
    names = ["a", "b", "c", "d"]
    kernels = {
        "b": rng.normal(size=(3, n_a, mult)),  # depthwise
        "c": (rng.normal(size=(3, 3, sizes[1], 2)), rng.normal(size=(1, 1, 2 * sizes[1], sizes[2]))),
        "d": rng.normal(size=(2, sizes[2] // 2, sizes[3] * 2)),  # grouped, 2 groups
    }
    kernels["b"][rng.random(kernels["b"].shape) < 0.2] = 0
    sizes[3] *= 2
    layouts = {"b": KernelLayout("depthwise"), "c": KernelLayout("separable"), "d": KernelLayout("grouped", 2)}
    if seed % 2:  # a transposed kernel instead of the grouped one
        kernels["d"] = rng.normal(size=(2, sizes[3], sizes[2]))
        layouts["d"] = KernelLayout("transpose")
    scales = {n: rng.uniform(0.5, 2, s) for n, s in zip(names, sizes)}
    cmap = np.arange(sizes[2])
    cmap[rng.random(sizes[2]) < 0.3] = -1
    blocks = [EdgeBlock("a", "b", np.arange(sizes[0])),
              EdgeBlock("b", "c", np.arange(sizes[1]), rng.uniform(0.1, 3, sizes[1])),
              EdgeBlock("c", "d", cmap),
              EdgeBlock("c", "d", rng.integers(0, sizes[2], sizes[2]), rng.uniform(0.1, 3, sizes[2])),  # parallel
              EdgeBlock("a", "d", np.resize(np.arange(sizes[0]), sizes[2]))]  # repeated units (broadcast)
    return GraphSpec("cnn", names, sizes, ["hidden"] * 4, kernels, scales, blocks, layouts)


@pytest.mark.parametrize("seed", range(8))
def test_csr_assembly_equals_every_edge_summed(seed):
    spec = random_spec(seed)
    a = graph_from_spec(spec).adjacency
    assert a.has_canonical_format and a.has_sorted_indices
    assert np.all(a.data > 0)
    want = coo_reference(spec)
    np.testing.assert_array_equal(a.toarray() != 0, want != 0)
    np.testing.assert_allclose(a.toarray(), want, rtol=1e-12)


def _random_graph(n, density, seed):
    u = sp.random(n, n, density=density, random_state=seed, format="csr")
    return (u + u.T).tocsr()


def ncut_reference(adjacency, labels) -> float:
    a = sp.csr_matrix(adjacency)
    deg = np.asarray(a.sum(axis=1)).ravel()
    total = 0.0
    for c in np.unique(labels[labels >= 0]):
        mask = labels == c
        vol = deg[mask].sum()
        if vol <= 0:
            continue
        total += (vol - a[mask][:, mask].sum()) / vol
    return float(total)


@pytest.mark.parametrize("seed", range(10))
def test_ncut_equals_the_submatrix_sums_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 2000))
    a = _random_graph(n, float(rng.uniform(0.001, 0.2)), seed)
    labels = rng.integers(-1, int(rng.integers(2, 20)), n)
    assert ncut(a, labels) == ncut_reference(a, labels)


def test_threaded_products_give_the_same_labels():
    a = _random_graph(1500, 0.02, 3)
    one = spectral_labels_large(a, 8, 0, n_init=5, threads=1)
    for threads in (2, 3):
        np.testing.assert_array_equal(spectral_labels_large(a, 8, 0, n_init=5, threads=threads), one)


def test_auto_solver_skips_the_factorisation_of_graphs_with_many_entries(monkeypatch):
    """Few nodes, many entries (VGG-16): the factorisation-free path, with the same labels."""
    import importlib

    from modtest.graph import WeightGraph

    cl = importlib.import_module("modtest.cluster")  # the module (modtest.cluster is also a function)

    rng = np.random.default_rng(5)
    block = np.repeat(np.arange(5), 80)  # five planted modules: the eigenvectors are well separated
    dense = rng.uniform(0, 1, (400, 400)) * np.where(block[:, None] == block[None, :], 1.0, 0.05)
    a = sp.csr_matrix(np.triu(dense, 1) + np.triu(dense, 1).T)
    graph = WeightGraph(a, "cnn", ["l"], [400], ["hidden"])
    used = []
    real = cl.spectral_labels_large
    monkeypatch.setattr(cl, "spectral_labels_large", lambda *args, **kw: used.append(1) or real(*args, **kw))
    monkeypatch.setattr(cl, "LARGE_GRAPH_ENTRIES", a.nnz - 1)
    auto = cl.cluster(graph, k=5, seed=0)
    assert used
    np.testing.assert_array_equal(auto.labels, cl.cluster(graph, k=5, seed=0, solver="arpack").labels)


@pytest.mark.parametrize("n, k", [(4, 3), (13, 12), (30, 12), (200, 12)])
def test_large_graph_solver_on_small_graphs_gives_sklearns_labels(n, k):
    """The Lanczos basis is capped by the node count (ARPACK needs k < basis <= n): ``solver="lanczos"``
    works on any graph clustering accepts, with scikit-learn's labels."""
    from modtest.cluster import spectral_labels

    rng = np.random.default_rng(n)
    d = rng.uniform(0, 1, (n, n))
    a = sp.csr_matrix(np.triu(d, 1) + np.triu(d, 1).T)
    np.testing.assert_array_equal(spectral_labels_large(a, k, 0, n_init=5), spectral_labels(a, k, 0, n_init=5))
