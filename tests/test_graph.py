"""Graph building against plain dense re-computations from the weights (paper section 2)."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from _models import cnn_with_bn, fold_batchnorm, residual_block, tiny_mlp
from hypothesis import given, settings
from hypothesis import strategies as st

from modtest.graph import EdgeBlock, GraphSpec, build_graph, graph_from_spec


def dense_mlp_adjacency(model):
    kernels = [layer.get_weights()[0] for layer in model.layers]
    sizes = [kernels[0].shape[0]] + [k.shape[1] for k in kernels]
    off = np.concatenate([[0], np.cumsum(sizes)])
    a = np.zeros((off[-1], off[-1]))
    for i, k in enumerate(kernels):
        for r in range(k.shape[0]):
            for c in range(k.shape[1]):
                a[off[i] + r, off[i + 1] + c] = abs(k[r, c])
    return a + a.T


def test_mlp_graph_equals_dense_recomputation():
    model = tiny_mlp()
    g = build_graph(model)
    assert g.kind == "mlp"
    assert g.layer_names == ["input", "h1", "h2", "out"]
    assert g.roles == ["input", "hidden", "hidden", "output"]
    np.testing.assert_allclose(g.adjacency.toarray(), dense_mlp_adjacency(model), rtol=1e-6)


def l1_slices(kernel):
    """Entrywise L1 norm of every 2-D slice: out[c_in, c_out] = sum_ij |k[i, j, c_in, c_out]|."""
    out = np.zeros(kernel.shape[2:])
    for ci in range(kernel.shape[2]):
        for co in range(kernel.shape[3]):
            out[ci, co] = np.abs(kernel[:, :, ci, co]).sum()
    return out


def test_cnn_graph_folds_batchnorm_like_folded_kernels():
    model = cnn_with_bn()
    g = build_graph(model)
    folded = build_graph(fold_batchnorm(model))
    assert g.kind == "cnn" and g.layer_names == ["c1", "c2", "c3"]
    np.testing.assert_allclose(g.adjacency.toarray(), folded.adjacency.toarray(), rtol=1e-5)
    # and by hand: c1->c2 edges scaled by bn2 (the BN after c2), c2->c3 edges unscaled (no BN after c3)
    bn = model.get_layer("bn2")
    gamma, _, _, var = bn.get_weights()
    s = np.abs(gamma / np.sqrt(var + bn.epsilon))
    a = g.adjacency.toarray()
    np.testing.assert_allclose(a[0:4, 4:9], l1_slices(model.get_layer("c2").get_weights()[0]) * s, rtol=1e-5)
    np.testing.assert_allclose(a[4:9, 9:12], l1_slices(model.get_layer("c3").get_weights()[0]), rtol=1e-5)
    assert np.all(a[0:4, 9:12] == 0)  # not consecutive: no edge


def test_cnn_graph_differs_without_folding():
    """Guard against a no-op fold: the BN scales really change the graph."""
    model = cnn_with_bn()
    unfolded = build_graph(cnn_with_bn(bn=False)).adjacency.toarray()
    plain = cnn_with_bn(bn=False)
    for name in ("c1", "c2", "c3", "out"):
        plain.get_layer(name).set_weights(model.get_layer(name).get_weights())
    assert not np.allclose(build_graph(model).adjacency.toarray(), build_graph(plain).adjacency.toarray())
    assert unfolded.shape == (12, 12)


def test_residual_add_connects_both_branches():
    model = residual_block(merge="add")
    a = build_graph(model).adjacency.toarray()
    k2 = l1_slices(model.get_layer("c2").get_weights()[0])
    k3 = l1_slices(model.get_layer("c3").get_weights()[0])
    np.testing.assert_allclose(a[0:4, 4:8], k2, rtol=1e-6)   # c1 -> c2
    np.testing.assert_allclose(a[0:4, 8:13], k3, rtol=1e-6)  # c1 -> c3 through the skip
    np.testing.assert_allclose(a[4:8, 8:13], k3, rtol=1e-6)  # c2 -> c3
    np.testing.assert_allclose(a, a.T)


def test_concatenate_maps_channel_slices():
    model = residual_block(merge="concat")
    a = build_graph(model).adjacency.toarray()
    k3 = l1_slices(model.get_layer("c3").get_weights()[0])  # (4 + 3, 5)
    np.testing.assert_allclose(a[0:4, 7:12], k3[:4], rtol=1e-6)  # c1 channels come first
    np.testing.assert_allclose(a[4:7, 7:12], k3[4:], rtol=1e-6)


# ------------------------------------------------------------------------- property tests (pure)

def _random_spec(draw_sizes, seed):
    rng = np.random.default_rng(seed)
    names = [f"l{i}" for i in range(len(draw_sizes))]
    kernels, blocks = {}, []
    for i in range(1, len(names)):
        k = rng.normal(size=(draw_sizes[i - 1], draw_sizes[i]))
        k[rng.random(k.shape) < 0.3] = 0
        kernels[names[i]] = k
        blocks.append(EdgeBlock(names[i - 1], names[i], np.arange(draw_sizes[i - 1])))
    roles = ["input"] + ["hidden"] * (len(names) - 2) + ["output"]
    scales = {n: np.ones(s) for n, s in zip(names, draw_sizes)}
    return GraphSpec("mlp", names, list(draw_sizes), roles, kernels, scales, blocks)


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 7), min_size=2, max_size=5), seed=st.integers(0, 2**16))
def test_adjacency_symmetric_nonnegative(sizes, seed):
    g = graph_from_spec(_random_spec(sizes, seed))
    a = g.adjacency
    assert a.shape == (sum(sizes), sum(sizes))
    assert (a != a.T).nnz == 0
    assert a.nnz == 0 or a.data.min() > 0
    assert g.layer_slice(g.layer_names[-1]).stop == g.n_nodes


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(2, 6), min_size=3, max_size=4), seed=st.integers(0, 2**16),
       data=st.data())
def test_permuting_hidden_units_permutes_graph(sizes, seed, data):
    spec = _random_spec(sizes, seed)
    perm = np.asarray(data.draw(st.permutations(range(sizes[1]))))
    kernels = dict(spec.kernels)
    kernels["l1"] = spec.kernels["l1"][:, perm]
    kernels["l2"] = spec.kernels["l2"][perm, :]
    a = graph_from_spec(spec).adjacency.toarray()
    b = graph_from_spec(spec, kernels).adjacency.toarray()
    order = np.arange(sum(sizes))
    order[sizes[0]:sizes[0] + sizes[1]] = sizes[0] + perm
    np.testing.assert_allclose(b, a[np.ix_(order, order)])


def test_graph_is_sparse_csr():
    g = build_graph(tiny_mlp())
    assert sp.isspmatrix_csr(g.adjacency) or isinstance(g.adjacency, sp.csr_array)
    layer, unit = g.node_table()
    assert layer.shape == unit.shape == (g.n_nodes,)
    assert unit[g.layer_slice("h2")].tolist() == list(range(10))
