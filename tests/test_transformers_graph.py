"""The transformer graph (modtest.transformer_graph): hand-computed virtual weights, and the paper's
graph when the blocks are plain dense layers. numpy only: no framework is imported."""
import numpy as np
import pytest

from modtest.errors import InvalidInput
from modtest.graph import graph_from_spec
from modtest.transformer_graph import (
    Scale,
    embedding,
    gpt2_sublayers,
    head_layer,
    neuron_layer,
    plain_layer,
    readout,
    transformer_spec,
    virtual_weights,
)


def _adjacency(sublayers):
    g = graph_from_spec(transformer_spec(sublayers))
    return g, g.adjacency.toarray()


def test_plain_dense_layers_give_the_papers_graph():
    """No attention, no residual, blocks = dense layers: edges are |W| between consecutive layers only
    (the paper's MLP graph, built here by hand), nothing between non-consecutive layers."""
    rng = np.random.default_rng(0)
    w1, w2, w3 = rng.normal(size=(6, 12)), rng.normal(size=(12, 10)), rng.normal(size=(10, 4))
    g, a = _adjacency([embedding(6, "input"), plain_layer("h1", w1), plain_layer("h2", w2), readout("out", w3)])
    assert g.layer_names == ["input", "h1", "h2", "out"] and g.layer_sizes == [6, 12, 10, 4]
    assert g.roles == ["input", "hidden", "hidden", "output"]
    want = np.zeros((32, 32))
    want[0:6, 6:18] = np.abs(w1)
    want[6:18, 18:28] = np.abs(w2)
    want[18:28, 28:32] = np.abs(w3)
    want = want + want.T
    np.testing.assert_allclose(a, want, rtol=1e-12, atol=0)


def _one_block():
    """d=2, one head (d_head=1), two MLP neurons, one class; the numbers of the docstring below."""
    return [embedding(2),
            head_layer("block0.attn", w_v=[[[1.0], [2.0]]], w_o=[[[3.0, -1.0]]], ln_gain=[1.0, 0.5], block=0),
            neuron_layer("block0.mlp", w_in=[[1.0, 0.0], [1.0, 2.0]], w_out=[[1.0, 1.0], [0.0, -1.0]],
                         ln_gain=[2.0, 1.0], block=0),
            readout("out", [[1.0], [1.0]], ln_gain=[1.0, 1.0])]


def test_one_block_hand_computed():
    """M = diag(1, .5) [1, 2]^T [3, -1] = [[3, -1], [3, -1]]; the MLP reads g2 * W_in = [[2, 0], [1, 2]].
    embed_k -> head: ||row k of M|| = sqrt(10); embed_k -> neuron j: g2_k W_in[k, j];
    head -> neuron j: ||M r_j||, r_0 = (2, 1): M r_0 = (5, 5) -> sqrt(50); r_1 = (0, 2): (-2, -2) -> sqrt(8);
    head -> out: ||M (1, 1)|| = ||(2, 2)|| = sqrt(8); neuron i -> out: |W_out[i] . (1, 1)| = 2, 1;
    embed_k -> out: 1. The two neurons of the block are not connected, nor is the head to itself."""
    g, a = _adjacency(_one_block())
    assert g.layer_names == ["embed", "block0.attn", "block0.mlp", "out"] and g.layer_sizes == [2, 1, 2, 1]
    e, h, n, o = [0, 1], 2, [3, 4], 5
    want = np.zeros((6, 6))
    want[e, h] = np.sqrt(10)
    want[np.ix_(e, n)] = [[2, 0], [1, 2]]
    want[h, n] = [np.sqrt(50), np.sqrt(8)]
    want[h, o] = np.sqrt(8)
    want[n, o] = [2, 1]
    want[e, o] = 1
    want = want + want.T
    np.testing.assert_allclose(a, want, rtol=1e-12, atol=1e-12)


def _ov(w_v, w_o, g):
    return np.diag(g) @ w_v @ w_o  # d x d


def test_two_blocks_virtual_weights_from_full_matrices():
    """Two pre-LN blocks, two heads each (d=4, d_head=2, 3 neurons): every cross-layer virtual weight
    equals its definition computed with the full d x d OV circuits (not the factors the module keeps)."""
    rng = np.random.default_rng(3)
    d, dh, m, n_h = 4, 2, 3, 2
    blocks = [{"w_v": rng.normal(size=(n_h, d, dh)), "w_o": rng.normal(size=(n_h, dh, d)),
               "ln1": rng.uniform(0.5, 2, d), "w_in": rng.normal(size=(d, m)), "w_out": rng.normal(size=(m, d)),
               "ln2": rng.uniform(0.5, 2, d)} for _ in range(2)]
    w_score, ln_f = rng.normal(size=(d, 2)), rng.uniform(0.5, 2, d)
    vw = virtual_weights(gpt2_sublayers(blocks, w_score, ln_f))
    b0, b1 = blocks
    ov = [[_ov(b["w_v"][h], b["w_o"][h], b["ln1"]) for h in range(n_h)] for b in blocks]
    reads = [b["ln2"][:, None] * b["w_in"] for b in blocks]  # (d, m): column j is neuron j's read
    # neuron (block 0) -> neuron (block 1): |W_out0[i] . (g * W_in1[:, j])|
    np.testing.assert_allclose(vw[("block0.mlp", "block1.mlp")], np.abs(b0["w_out"] @ reads[1]), rtol=1e-10)
    # neuron (block 0) -> head (block 1): ||W_out0[i] M_h||
    want = np.array([[np.linalg.norm(b0["w_out"][i] @ ov[1][h]) for h in range(n_h)] for i in range(m)])
    np.testing.assert_allclose(vw[("block0.mlp", "block1.attn")], want, rtol=1e-10)
    # head (block 0) -> head (block 1): ||M_h M_h'||_F (V-composition of the OV circuits)
    want = np.array([[np.linalg.norm(ov[0][h] @ ov[1][k]) for k in range(n_h)] for h in range(n_h)])
    np.testing.assert_allclose(vw[("block0.attn", "block1.attn")], want, rtol=1e-10)
    # head (block 0) -> neuron (block 0 and block 1): ||M_h r_j||
    for b in (0, 1):
        want = np.array([[np.linalg.norm(ov[0][h] @ reads[b][:, j]) for j in range(m)] for h in range(n_h)])
        np.testing.assert_allclose(vw[("block0.attn", f"block{b}.mlp")], want, rtol=1e-10)
    # head (block 1) -> out, neuron (block 1) -> out: through the final LayerNorm's gain
    r_out = ln_f[:, None] * w_score
    want = np.array([[np.linalg.norm(ov[1][h] @ r_out[:, c]) for c in range(2)] for h in range(n_h)])
    np.testing.assert_allclose(vw[("block1.attn", "out")], want, rtol=1e-10)
    np.testing.assert_allclose(vw[("block1.mlp", "out")], np.abs(b1["w_out"] @ r_out), rtol=1e-10)
    # no edge within a layer, none backwards, none from a block's MLP to its own heads
    assert ("block0.mlp", "block0.attn") not in vw and ("block1.mlp", "block1.mlp") not in vw
    assert ("block0.attn", "block0.attn") not in vw and ("block1.mlp", "block0.mlp") not in vw
    assert set(vw) == {("embed", "block0.attn"), ("embed", "block0.mlp"), ("embed", "block1.attn"),
                       ("embed", "block1.mlp"), ("embed", "out"), ("block0.attn", "block0.mlp"),
                       ("block0.attn", "block1.attn"), ("block0.attn", "block1.mlp"), ("block0.attn", "out"),
                       ("block0.mlp", "block1.attn"), ("block0.mlp", "block1.mlp"), ("block0.mlp", "out"),
                       ("block1.attn", "block1.mlp"), ("block1.attn", "out"), ("block1.mlp", "out")}


def test_head_edges_do_not_depend_on_how_the_ov_circuit_is_factored():
    """W_V A and A^-1 W_O give the same OV circuit: the same edges (the gauge of a head)."""
    rng = np.random.default_rng(5)
    w_v, w_o = rng.normal(size=(1, 3, 2)), rng.normal(size=(1, 2, 3))
    t = np.array([[2.0, 1.0], [0.0, 0.5]])
    mlp = dict(w_in=rng.normal(size=(3, 4)), w_out=rng.normal(size=(4, 3)))
    vw1 = virtual_weights([embedding(3), head_layer("a", w_v, w_o), neuron_layer("n", **mlp)])
    vw2 = virtual_weights([embedding(3), head_layer("a", w_v @ t, np.linalg.inv(t) @ w_o), neuron_layer("n", **mlp)])
    for key in vw1:
        np.testing.assert_allclose(vw1[key], vw2[key], rtol=1e-10)


def test_a_layernorm_in_the_stream_scales_what_was_written_before_it():
    """Post-LN (BERT): a Scale(g) between writer and reader gives |w . (g * r)|; writes after it are
    not scaled."""
    w_out = np.array([[1.0, 2.0]])
    w_in = np.array([[3.0], [5.0]])
    subs = [embedding(2), neuron_layer("a", np.eye(2)[:, :1], w_out), Scale(np.array([0.5, -2.0])),
            neuron_layer("b", w_in, np.array([[1.0, 0.0]]))]
    vw = virtual_weights(subs)
    assert vw[("a", "b")][0, 0] == pytest.approx(abs(1 * 0.5 * 3 + 2 * -2.0 * 5))
    np.testing.assert_allclose(vw[("embed", "b")][:, 0], [0.5 * 3, 2.0 * 5])


def test_bad_shapes_are_one_line_errors():
    with pytest.raises(InvalidInput, match="w_out has 3 rows"):
        neuron_layer("n", np.ones((2, 4)), np.ones((3, 2)))
    with pytest.raises(InvalidInput, match="ln_gain has shape"):
        neuron_layer("n", np.ones((2, 4)), np.ones((4, 2)), ln_gain=np.ones(3))
    with pytest.raises(InvalidInput, match="w_o has shape"):
        head_layer("h", np.ones((2, 4, 2)), np.ones((2, 3, 4)))
    with pytest.raises(InvalidInput, match="NaN"):
        readout("o", np.full((2, 2), np.nan))
