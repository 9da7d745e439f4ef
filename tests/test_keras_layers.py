"""Modern Keras layers: graph semantics against plain recomputations from the weights, folding of
normalisations against models folded by hand, fast lesions against the reference engine, nested
models, refusals (docs/compatibility.md)."""
from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import modtest  # noqa: E402
from modtest.errors import UnsafeModelError, UnsupportedModelError  # noqa: E402
from modtest.frameworks.keras.engines import FastEngine, ReferenceEngine, lesioned  # noqa: E402
from modtest.frameworks.keras.model import get_layer, layer_graph, unit_layers, unit_width  # noqa: E402
from modtest.graph import build_graph  # noqa: E402

L = keras.layers


# ------------------------------------------------------------------ plain references (loops)

def w(model, name, attr="kernel"):
    return np.asarray(getattr(get_layer(model, name), attr), dtype=np.float64)


def ref_conv(k):
    """[ci, co] = sum over positions of |k[..., ci, co]|."""
    out = np.zeros(k.shape[-2:])
    for ci in range(k.shape[-2]):
        for co in range(k.shape[-1]):
            out[ci, co] = np.abs(k[..., ci, co]).sum()
    return out


def ref_depthwise(k):
    """Input map ci connects only to output maps ci * m + j, through the slice k[..., ci, j]."""
    c_in, m = k.shape[-2:]
    out = np.zeros((c_in, c_in * m))
    for ci in range(c_in):
        for j in range(m):
            out[ci, ci * m + j] = np.abs(k[..., ci, j]).sum()
    return out


def ref_separable(dk, pk):
    """L1 of the composed kernel: sum over positions of |sum_j dk[..., ci, j] * pk[ci * m + j, co]|."""
    c_in, m = dk.shape[-2:]
    pk = pk.reshape(-1, pk.shape[-1])
    out = np.zeros((c_in, pk.shape[-1]))
    for ci in range(c_in):
        for co in range(pk.shape[-1]):
            composed = sum(dk[..., ci, j] * pk[ci * m + j, co] for j in range(m))
            out[ci, co] = np.abs(composed).sum()
    return out


def ref_grouped(k, groups):
    cig, c_out = k.shape[-2:]
    cog = c_out // groups
    out = np.zeros((cig * groups, c_out))
    for co in range(c_out):
        g = co // cog
        for i in range(cig):
            out[g * cig + i, co] = np.abs(k[..., i, co]).sum()
    return out


def ref_transpose(k):
    """Keras' transposed kernels are (..., filters, in_channels)."""
    out = np.zeros((k.shape[-1], k.shape[-2]))
    for ci in range(k.shape[-1]):
        for co in range(k.shape[-2]):
            out[ci, co] = np.abs(k[..., co, ci]).sum()
    return out


def bn_scale(model, name):
    bn = get_layer(model, name)
    g, _, _, var = [np.asarray(a, dtype=np.float64) for a in bn.get_weights()]
    return np.abs(g / np.sqrt(var + bn.epsilon))


def dense_adjacency(graph, blocks):
    """The adjacency a graph must have: ``blocks`` = {(producer, consumer): (n_p, n_c) edges}."""
    a = np.zeros((graph.n_nodes, graph.n_nodes))
    for (p, c), m in blocks.items():
        a[graph.layer_slice(p), graph.layer_slice(c)] += m
    return a + a.T


def randomise_norms(model, seed=0):
    """Non-trivial statistics and scales in every normalisation layer (not the identity at init)."""
    rng = np.random.default_rng(seed)
    for layer in _all_layers(model):
        if isinstance(layer, L.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n),
                               rng.uniform(0.3, 2, n)])
        elif isinstance(layer, (L.LayerNormalization, L.GroupNormalization)) or type(layer).__name__ == "LayerScale":
            layer.set_weights([rng.uniform(0.3, 2, v.shape).astype("float32") for v in layer.get_weights()])
    return model


def spread_output(model, name="out", seed=0):
    """A read-out of standardised features (random weights, centred on normal inputs): the random
    network predicts every class, and lesions change some predictions."""
    layer = get_layer(model, name)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(256,) + tuple(model.inputs[0].shape[1:])).astype("float32")
    feats = np.asarray(keras.Model(model.inputs[0], layer.input)(x), dtype=np.float64)
    k = rng.normal(0, 1, layer.kernel.shape) / (feats.std(axis=0) + 1e-6)[:, None]
    bias = -feats.mean(axis=0) @ k
    layer.set_weights([k.astype("float32"), bias.astype("float32")])
    return model


def _all_layers(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)
        else:
            yield layer


# ------------------------------------------------------------------ models with every layer type

def modern_2d(seed=0):
    """conv -> BN -> depthwise(x2) -> BN -> separable(x2) -> grouped conv -> transposed conv -> Dense on
    maps -> GAP -> Dense."""
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="c1")(x)
    x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU()(x)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = L.BatchNormalization(name="bn2")(x)
    x = L.Activation("relu6")(x)
    x = L.SeparableConv2D(6, 3, depth_multiplier=2, padding="same", activation="relu", name="sep")(x)
    x = L.Conv2D(4, 1, groups=2, activation="relu", name="grp")(x)
    x = L.Conv2DTranspose(5, 3, strides=2, activation="relu", name="tr")(x)
    x = L.Dense(3, activation="gelu", name="pw")(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(4, activation="softmax", name="out")(x)
    return spread_output(randomise_norms(keras.Model(inp, out), seed), seed=seed)


def modern_1d(seed=0):
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((12, 2))
    x = L.Conv1D(4, 3, padding="same", activation="relu", name="c1")(x)
    x = L.DepthwiseConv1D(3, depth_multiplier=3, activation="relu", name="dw")(x)
    x = L.SeparableConv1D(5, 3, depth_multiplier=2, activation="relu", name="sep")(x)
    x = L.Conv1DTranspose(4, 3, strides=2, activation="relu", name="tr")(x)
    x = L.Flatten()(x)
    out = L.Dense(3, activation="softmax", name="out")(x)
    return spread_output(keras.Model(inp, out), seed=seed)


def modern_3d(seed=0):
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((4, 4, 4, 1))
    x = L.Conv3D(3, 2, activation="relu", name="c1")(x)
    x = L.Conv3DTranspose(4, 2, activation="relu", name="tr")(x)
    x = L.Conv3D(4, 1, groups=2, activation="relu", name="grp")(x)
    x = L.GlobalMaxPooling3D()(x)
    out = L.Dense(3, activation="softmax", name="out")(x)
    return spread_output(keras.Model(inp, out), seed=seed)


def test_graph_of_every_unit_type_equals_loops_over_the_weights():
    m = modern_2d()
    g = build_graph(m)
    assert g.kind == "cnn" and g.layer_names == ["c1", "dw", "sep", "grp", "tr", "pw"]
    assert g.layer_sizes == [4, 8, 6, 4, 5, 3]
    want = dense_adjacency(g, {
        ("c1", "dw"): ref_depthwise(w(m, "dw")) * bn_scale(m, "bn2")[None, :],
        ("dw", "sep"): ref_separable(w(m, "sep", "depthwise_kernel"), w(m, "sep", "pointwise_kernel")),
        ("sep", "grp"): ref_grouped(w(m, "grp"), 2),
        ("grp", "tr"): ref_transpose(w(m, "tr")),
        ("tr", "pw"): np.abs(w(m, "pw")),  # a Dense on a feature map: a 1x1 convolution
    })
    np.testing.assert_allclose(g.adjacency.toarray(), want, rtol=1e-6)
    # the BN after c1 scales the edges into c1 (none: c1 is the first node layer) -- and only those
    assert g.adjacency[g.layer_slice("c1")].nnz == 4 * 2  # each input map to its 2 depthwise maps


@pytest.mark.parametrize("build", [modern_1d, modern_3d], ids=["1d", "3d"])
def test_graph_of_1d_and_3d_layers(build):
    m = build()
    g = build_graph(m)
    if build is modern_1d:
        assert g.layer_names == ["c1", "dw", "sep", "tr"]
        want = {("c1", "dw"): ref_depthwise(w(m, "dw")),
                ("dw", "sep"): ref_separable(w(m, "sep", "depthwise_kernel"), w(m, "sep", "pointwise_kernel")),
                ("sep", "tr"): ref_transpose(w(m, "tr"))}
    else:
        assert g.layer_names == ["c1", "tr", "grp"]
        want = {("c1", "tr"): ref_transpose(w(m, "tr")), ("tr", "grp"): ref_grouped(w(m, "grp"), 2)}
    np.testing.assert_allclose(g.adjacency.toarray(), dense_adjacency(g, want), rtol=1e-6)


def test_shuffled_controls_keep_the_layout():
    """A shuffled depthwise layer still connects each map to its own input map only; a separable
    layer's two kernels are each shuffled within themselves."""
    from modtest._random import keyed_rng
    from modtest.graph import graph_from_spec
    from modtest.probes.clusterability import shuffle_kernels

    m = modern_2d()
    spec = modtest.frameworks.adapt(m).graph_spec()
    kernels = shuffle_kernels(spec.kernels, keyed_rng("test", 0))
    assert isinstance(kernels["sep"], tuple) and [a.shape for a in kernels["sep"]] == \
        [a.shape for a in spec.kernels["sep"]]
    for a, b in zip(kernels["sep"], spec.kernels["sep"]):
        np.testing.assert_array_equal(np.sort(a.ravel()), np.sort(b.ravel()))
    g = graph_from_spec(spec, kernels)
    a = g.adjacency.toarray()[g.layer_slice("c1"), g.layer_slice("dw")]
    assert np.array_equal(a != 0, ref_depthwise(w(m, "dw")) != 0)  # the same structure
    assert not np.allclose(a, graph_from_spec(spec).adjacency.toarray()[g.layer_slice("c1"), g.layer_slice("dw")])


# ------------------------------------------------------------------ folding

def _chain(norm=None, seed=0, dense_maps=False, after_act=False):
    """c1 -> [norm] -> relu -> c2 -> GAP -> out: the norm's scale folds into c1's kernel."""
    keras.utils.set_random_seed(seed)
    x = inp = keras.Input((6, 6, 3))
    x = (L.Dense(4, name="c1") if dense_maps else L.Conv2D(4, 3, padding="same", name="c1"))(x)
    if after_act:
        x = L.ReLU()(x)
    if norm is not None:
        x = norm(x)
    if not after_act:
        x = L.ReLU()(x)
    x = L.Conv2D(5, 3, name="c2")(x)
    x = L.GlobalAveragePooling2D()(x)
    out = L.Dense(3, activation="softmax", name="out")(x)
    return keras.Model(inp, out)


def _layer_scale(x):
    from keras.src.applications.convnext import LayerScale

    return LayerScale(1e-2, 4, name="ls")(x)


def _copy_weights(src, dst, names=("c1", "c2", "out")):
    for n in names:
        get_layer(dst, n).set_weights(get_layer(src, n).get_weights())


FOLDS = {
    # name: (the normalisation, its per-channel |scale| read from the model)
    "batchnorm": (lambda x: L.BatchNormalization(name="norm")(x), lambda m: bn_scale(m, "norm")),
    "normalization": (lambda x: L.Normalization(mean=[0.1, 0.2, 0.3, 0.4], variance=[4.0, 0.25, 1.0, 9.0],
                                                name="norm")(x),
                      lambda m: 1.0 / np.sqrt([4.0, 0.25, 1.0, 9.0])),
    "rescaling": (lambda x: L.Rescaling(-0.5, offset=1.0, name="norm")(x), lambda m: np.full(4, 0.5)),
    "layerscale": (_layer_scale, lambda m: np.abs(w(m, "ls", "gamma"))),
    "layernorm (gamma)": (lambda x: L.LayerNormalization(name="norm")(x), lambda m: np.abs(w(m, "norm", "gamma"))),
    "groupnorm (gamma)": (lambda x: L.GroupNormalization(groups=2, name="norm")(x),
                          lambda m: np.abs(w(m, "norm", "gamma"))),
    "rmsnorm (scale)": (lambda x: L.RMSNormalization(name="norm")(x), lambda m: np.abs(w(m, "norm", "scale"))),
    "keras.ops multiply": (lambda x: x * -0.25, lambda m: np.full(4, 0.25)),
    "keras.ops divide": (lambda x: x / 8.0, lambda m: np.full(4, 0.125)),
}


@pytest.mark.parametrize("name", list(FOLDS))
def test_normalisation_folds_like_a_model_folded_by_hand(name):
    norm, scale_of = FOLDS[name]
    m = randomise_norms(_chain(norm), seed=1)
    if name.startswith("rmsnorm"):
        get_layer(m, "norm").set_weights([np.array([0.5, -2.0, 1.5, 0.25], "float32")])
    s = scale_of(m)
    assert not np.allclose(s, 1.0)  # the fold is not a no-op
    by_hand = _chain(None)
    _copy_weights(m, by_hand)
    k, b = get_layer(m, "c1").get_weights()
    get_layer(by_hand, "c1").set_weights([k * s.astype("float32"), b])
    np.testing.assert_allclose(build_graph(m).adjacency.toarray(), build_graph(by_hand).adjacency.toarray(),
                               rtol=1e-5)


def _stochastic_depth(x):
    from keras.src.applications.convnext import StochasticDepth

    return StochasticDepth(0.5, name="norm")(x)


@pytest.mark.parametrize("norm", [lambda x: L.UnitNormalization(name="norm")(x), _stochastic_depth,
                                  lambda x: L.Softmax(name="norm")(x)], ids=["unitnorm", "stochastic depth", "softmax"])
def test_pass_through_layers_leave_the_graph_of_the_model_without_them(norm):
    """Documented approximations (UnitNormalization, Softmax) and the identity at inference
    (StochasticDepth): no scale is folded, the graph is that of the same weights without the layer."""
    m = _chain(norm, seed=3)
    without = _chain(None)
    _copy_weights(m, without)
    g = build_graph(m)
    assert g.layer_names == ["c1", "c2"] and g.adjacency.nnz > 0
    np.testing.assert_array_equal(g.adjacency.toarray(), build_graph(without).adjacency.toarray())


def test_layerscale_after_a_dense_on_maps_folds_into_the_dense():
    """ConvNeXt's pointwise Dense -> LayerScale."""
    m = randomise_norms(_chain(_layer_scale, dense_maps=True), seed=2)
    g = build_graph(m)
    assert g.layer_names == ["c1", "c2"]
    want = ref_conv(w(m, "c2"))
    np.testing.assert_allclose(g.adjacency.toarray()[g.layer_slice("c1"), g.layer_slice("c2")], want, rtol=1e-6)
    k = w(m, "c1") * np.abs(w(m, "ls", "gamma"))[None, :]  # no edges into c1 (first node layer) ...
    by_hand = _chain(None, dense_maps=True)
    _copy_weights(m, by_hand)
    get_layer(by_hand, "c1").set_weights([k.astype("float32"), get_layer(m, "c1").get_weights()[1]])
    np.testing.assert_allclose(g.adjacency.toarray(), build_graph(by_hand).adjacency.toarray(), rtol=1e-6)


def _concat_bn(bn=True, seed=0):
    """DenseNet's pattern: concat(c1, c2) -> BN -> relu -> c3: the BN normalises each producer's
    channels separately, so it scales the edges into c3 (no kernel of its own comes before it)."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6, 6, 2))
    a = L.Conv2D(3, 3, padding="same", name="c1")(inp)
    b = L.Conv2D(2, 3, padding="same", name="c2")(a)
    x = L.Concatenate(name="cat")([a, b])
    if bn:
        x = L.BatchNormalization(name="bn")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(4, 3, name="c3")(x)
    out = L.Dense(3, activation="softmax", name="out")(L.GlobalAveragePooling2D()(x))
    return keras.Model(inp, out)


def test_batchnorm_after_a_concatenation_scales_the_rows_of_the_next_kernel():
    m = randomise_norms(_concat_bn(), seed=3)
    s = bn_scale(m, "bn")
    by_hand = _concat_bn(bn=False)
    _copy_weights(m, by_hand, ("c1", "c2", "c3", "out"))
    k, b = get_layer(m, "c3").get_weights()
    get_layer(by_hand, "c3").set_weights([k * s[:, None].astype("float32"), b])
    g = build_graph(m)
    np.testing.assert_allclose(g.adjacency.toarray(), build_graph(by_hand).adjacency.toarray(), rtol=1e-5)
    k3 = ref_conv(w(m, "c3")) * s[:, None]
    want = {("c1", "c2"): ref_conv(w(m, "c2")), ("c1", "c3"): k3[:3], ("c2", "c3"): k3[3:]}
    np.testing.assert_allclose(g.adjacency.toarray(), dense_adjacency(g, want), rtol=1e-6)


def test_average_merge_halves_both_branches_and_mlp_input_normalisation_scales_input_rows():
    keras.utils.set_random_seed(4)
    inp = keras.Input((6, 6, 2))
    a = L.Conv2D(3, 3, padding="same", name="c1")(inp)
    b = L.Conv2D(3, 3, padding="same", name="c2")(a)
    x = L.Conv2D(4, 3, name="c3")(L.Average()([a, b]))
    m = keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(x)))
    g = build_graph(m)
    k3 = ref_conv(w(m, "c3"))
    want = {("c1", "c2"): ref_conv(w(m, "c2")), ("c1", "c3"): k3 / 2, ("c2", "c3"): k3 / 2}
    np.testing.assert_allclose(g.adjacency.toarray(), dense_adjacency(g, want), rtol=1e-6)
    # MLP: an input Normalization has no kernel before it: it scales the edges out of the inputs
    var = np.array([4.0, 1.0, 0.25, 16.0])
    mlp = keras.Sequential([keras.Input((4,)), L.Normalization(mean=np.zeros(4), variance=var),
                            L.Dense(3, name="h"), L.Dense(2, name="out")])
    g = build_graph(mlp)
    np.testing.assert_allclose(g.adjacency.toarray()[g.layer_slice("input"), g.layer_slice("h")],
                               np.abs(w(mlp, "h")) / np.sqrt(var)[:, None], rtol=1e-6)


def test_squeeze_excitation_reshape_permute_and_pass_through_layers():
    """x * gate(x): the gate's units reach the next conv like the map's own; Reshape and Permute that
    keep channels last, crops, pads, pooling and activations of any kind pass channels unchanged."""
    keras.utils.set_random_seed(5)
    inp = keras.Input((8, 8, 2))
    x = L.Conv2D(4, 3, padding="same", activation="swish", name="c1")(inp)
    se = L.GlobalAveragePooling2D()(x)
    se = L.Reshape((1, 1, 4))(se)
    se = L.Conv2D(2, 1, activation="relu", name="se_reduce")(se)
    se = L.Conv2D(4, 1, activation="sigmoid", name="se_expand")(se)
    x = L.Multiply()([x, se])
    x = L.ZeroPadding2D(1)(L.Cropping2D(1)(x))
    x = L.Permute((2, 1, 3))(L.AveragePooling2D(2)(x))
    x = L.Activation("hard_silu")(L.LeakyReLU()(L.UpSampling2D()(x)))
    x = L.Conv2D(3, 3, name="c2")(x + 1.0)
    m = keras.Model(inp, L.Dense(2, name="out")(L.GlobalMaxPooling2D()(x)))
    g = build_graph(m)
    assert g.layer_names == ["c1", "se_reduce", "se_expand", "c2"]
    k2 = ref_conv(w(m, "c2"))
    want = {("c1", "se_reduce"): ref_conv(w(m, "se_reduce")), ("se_reduce", "se_expand"): ref_conv(w(m, "se_expand")),
            ("c1", "c2"): k2, ("se_expand", "c2"): k2}
    np.testing.assert_allclose(g.adjacency.toarray(), dense_adjacency(g, want), rtol=1e-6)


def test_reshapes_that_mix_channels_with_positions_stop_edges():
    keras.utils.set_random_seed(6)
    inp = keras.Input((4, 4, 2))
    x = L.Conv2D(4, 3, padding="same", name="c1")(inp)
    x = L.Reshape((4, 16, 1))(x)  # channels become positions
    x = L.Conv2D(3, 3, name="c2")(x)
    m = keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(x)))
    g = build_graph(m)
    assert g.layer_names == ["c1", "c2"] and g.adjacency.nnz == 0


def test_permute_of_a_flat_mlp_input_permutes_its_rows():
    keras.utils.set_random_seed(7)
    mlp = keras.Sequential([keras.Input((2, 3)), L.Permute((2, 1)), L.Flatten(), L.Dense(4, name="h"),
                            L.Dense(2, name="out")])
    g = build_graph(mlp)
    assert g.layer_sizes[0] == 6
    # Dense row r reads permuted entry r = (j, i) of the transposed input, which is input entry (i, j)
    src = np.arange(6).reshape(2, 3).T.ravel()
    want = np.zeros((6, 4))
    want[src] = np.abs(w(mlp, "h"))
    np.testing.assert_allclose(g.adjacency.toarray()[g.layer_slice("input"), g.layer_slice("h")], want, rtol=1e-6)


def test_classifier_convolution_is_the_output_layer():
    """MobileNet's head: GAP -> Conv 1x1 (the classes) -> Reshape -> softmax: not a node, not lesioned."""
    keras.utils.set_random_seed(8)
    inp = keras.Input((6, 6, 2))
    x = L.Conv2D(4, 3, activation="relu", name="c1")(inp)
    x = L.Conv2D(5, 3, activation="relu", name="c2")(x)
    x = L.GlobalAveragePooling2D(keepdims=True)(x)
    x = L.Conv2D(3, 1, name="preds")(L.Dropout(0.1)(x))
    m = keras.Model(inp, L.Activation("softmax")(L.Reshape((3,))(x)))
    assert build_graph(m).layer_names == ["c1", "c2"]
    assert unit_layers(m) == ["c1", "c2"]


# ------------------------------------------------------------------ nested models

def _base(seed=0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="stem")(inp)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU()(x)
    y = L.DepthwiseConv2D(3, padding="same", name="block_dw")(x)
    y = L.BatchNormalization(name="block_bn")(y)
    y = L.Conv2D(4, 1, name="block_project")(L.ReLU()(y))
    x = L.Add()([x, y])
    inner = keras.Sequential([L.LayerNormalization(name="ln"), L.Conv2D(6, 2, strides=2, name="down")],
                             name="downsample")
    x = inner(x)
    return keras.Model(inp, x, name="base")


def nested_model(seed=0):
    """The transfer-learning shape: a base model (itself holding a Sequential) inside a Sequential."""
    base = randomise_norms(_base(seed), seed)
    m = keras.Sequential([keras.Input((8, 8, 3)), base, L.GlobalAveragePooling2D(), L.Dropout(0.2),
                          L.Dense(16, activation="relu", name="head"), L.Dense(4, activation="softmax", name="out")])
    return spread_output(m, seed=seed)


def test_nested_models_are_flattened_with_stable_names():
    m = nested_model()
    g = build_graph(m)
    names = ["base/stem", "base/block_dw", "base/block_project", "base/downsample/down"]
    assert g.layer_names == names
    assert unit_layers(m) == names
    lg = layer_graph(m)
    assert lg.layers["base/downsample/ln"].kind == "LayerNormalization"
    ln = np.abs(w(m, "base/downsample/ln", "gamma"))
    kd = ref_conv(w(m, "base/downsample/down"))
    want = {("base/stem", "base/block_dw"): ref_depthwise(w(m, "base/block_dw")) * bn_scale(m, "base/block_bn")[None],
            ("base/block_dw", "base/block_project"): ref_conv(w(m, "base/block_project")),
            # the residual add, then the LayerNormalization: its gamma scales the rows into 'down'
            ("base/stem", "base/downsample/down"): kd * ln[:, None],
            ("base/block_project", "base/downsample/down"): kd * ln[:, None]}
    np.testing.assert_allclose(g.adjacency.toarray(), dense_adjacency(g, want), rtol=1e-6)
    part = modtest.cluster(m, k=3, seed=0)
    assert {s.layer for s in part.subclusters} <= set(names)


def test_lesions_address_units_of_nested_layers():
    m = nested_model()
    layer = get_layer(m, "base/block_project")
    k0 = np.asarray(layer.kernel).copy()
    with lesioned(m, "base/block_project", [1, 2]):
        k = np.asarray(layer.kernel)
        assert np.all(k[..., [1, 2]] == 0) and np.array_equal(k[..., [0, 3]], k0[..., [0, 3]])
    np.testing.assert_array_equal(np.asarray(layer.kernel), k0)
    with pytest.raises(modtest.InvalidInput, match="no layer named 'base/nope'"):
        with lesioned(m, "base/nope", [0]):
            pass


# ------------------------------------------------------------------ fast engine == reference engine

def _unit_sets(width, n, rng):
    return [np.sort(rng.choice(width, size=int(rng.integers(1, width)), replace=False)) for _ in range(n)]


LESION_MODELS = {"2d": (modern_2d, (8, 8, 3)), "1d": (modern_1d, (12, 2)), "3d": (modern_3d, (4, 4, 4, 1)),
                 "nested": (nested_model, (8, 8, 3))}


@pytest.mark.parametrize("kind", list(LESION_MODELS))
def test_fast_lesions_equal_reference_on_every_new_layer_type(kind):
    build, shape = LESION_MODELS[kind]
    m = build()
    x = np.random.default_rng(9).normal(size=(48,) + shape).astype("float32")
    ref, fast = ReferenceEngine(m, x), FastEngine(m, x)
    base = ref.base_labels()
    np.testing.assert_array_equal(base, fast.base_labels())
    rng = np.random.default_rng(0)
    changed = 0
    for layer in unit_layers(m):
        assert fast._split(layer) not in (None, False), f"{layer}: not batched"
        sets = _unit_sets(unit_width(get_layer(m, layer)), 5, rng)
        a, b = ref.labels(layer, sets), fast.labels(layer, sets)
        np.testing.assert_array_equal(a, b, err_msg=layer)
        changed += int((a != base).any())
    assert changed >= 2  # lesions change predictions: the equality is not vacuous
    layers = unit_layers(m)
    fixed = [(layers[0], np.array([0]))]
    sets = _unit_sets(unit_width(get_layer(m, layers[-1])), 3, rng)
    np.testing.assert_array_equal(ref.labels(layers[-1], sets, fixed=fixed), fast.labels(layers[-1], sets, fixed=fixed))


def test_incremental_path_after_a_depthwise_layer():
    """depthwise -> BN -> relu -> conv 1x1 (MobileNet's block) takes the incremental path, exactly."""
    keras.utils.set_random_seed(10)
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, padding="same", name="c1")(inp)
    x = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(L.ReLU()(x))
    x = L.ReLU()(L.BatchNormalization(name="bn")(x))
    x = L.Conv2D(5, 1, name="pw")(x)
    m = spread_output(keras.Model(inp, L.Dense(3, activation="softmax", name="out")(L.Flatten()(L.ReLU()(x)))))
    randomise_norms(m, 1)
    x = np.random.default_rng(3).normal(size=(40, 6, 6, 3)).astype("float32")
    ref, fast = ReferenceEngine(m, x), FastEngine(m, x)
    sets = _unit_sets(8, 6, np.random.default_rng(1))
    a, b = ref.labels("dw", sets), fast.labels("dw", sets)
    assert fast._inc.get("dw") is not None
    np.testing.assert_array_equal(a, b)
    assert (a != ref.base_labels()).any()


# ------------------------------------------------------------------ visualization on new layers

def test_visualization_reads_depthwise_and_nested_layers():
    from modtest.frameworks.keras.visualize import render, unit_activations, unit_post_activations

    m = nested_model()
    imgs, scores = render(m, [("base/block_dw", [0, 1]), ("base/downsample/down", [2])], steps=4, seed=0)
    assert imgs.shape == (2, 8, 8, 3) and np.all(np.isfinite(scores))
    x = np.random.default_rng(0).normal(size=(5, 8, 8, 3)).astype("float32")
    acts = unit_activations(m, x, ["base/block_dw", "base/downsample/down"])
    assert acts["base/block_dw"].shape == (5, 4) and acts["base/downsample/down"].shape == (5, 6)
    # the block's post-activation is the ReLU after its batch norm: non-negative
    post = unit_post_activations(m, "base/block_dw", x)
    inner = keras.Model(m.layers[0].inputs[0], m.layers[0].get_layer("block_bn").output)
    want = np.abs(np.maximum(np.asarray(inner(x)), 0)).reshape(5, -1, 4).sum(axis=1)
    np.testing.assert_allclose(post, want, rtol=1e-5)


# ------------------------------------------------------------------ refusals and loading

def one_line(excinfo):
    text = str(excinfo.value)
    assert text and "\n" not in text, text
    return text


@pytest.mark.parametrize("layer, kind, alternative", [
    (lambda: L.LSTM(4, name="bad"), "LSTM", "unroll the recurrence into Dense"),
    (lambda: L.MultiHeadAttention(2, 3, name="bad"), "MultiHeadAttention", "Dense is the nearest"),
    (lambda: L.EinsumDense("abc,cd->abd", output_shape=(5, 4), name="bad"), "EinsumDense", "Dense"),
])
def test_unsupported_layers_are_named_with_their_nearest_alternative(layer, kind, alternative):
    inp = keras.Input((5, 3))
    lay = layer()
    x = lay(inp, inp) if kind == "MultiHeadAttention" else lay(inp)
    m = keras.Model(inp, L.Dense(2)(L.Flatten()(x) if len(x.shape) > 2 else x))
    with pytest.raises(UnsupportedModelError, match=f"'bad' of type {kind}; nearest supported: .*{alternative}") as e:
        build_graph(m)
    one_line(e)


class Doubler(L.Layer):
    """A user's own layer (defined in a test module, not in Keras)."""

    def call(self, x):
        return 2.0 * x


def test_custom_layers_are_refused_in_memory_and_need_trust_in_a_file(tmp_path):
    keras.utils.set_random_seed(0)
    m = keras.Sequential([keras.Input((4,)), L.Dense(3, name="h"), Doubler(name="twice"), L.Dense(2, name="out")])
    with pytest.raises(UnsupportedModelError, match="custom layer 'twice' of type .*Doubler") as e:
        build_graph(m)
    one_line(e)
    path = tmp_path / "custom.keras"
    m.save(path)
    with pytest.raises(UnsafeModelError, match=r"twice \(.*Doubler\).*trust=True") as e:
        modtest.load_model(path)
    one_line(e)


def test_keras_own_application_classes_load_safely_and_build_a_graph(tmp_path):
    """ConvNeXt's LayerScale and StochasticDepth are Keras classes: no trust needed, understood."""
    from keras.src.applications.convnext import LayerScale, StochasticDepth

    keras.utils.set_random_seed(0)
    inp = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, padding="same", name="c1")(inp)
    y = L.Dense(4, name="pw")(x)
    y = StochasticDepth(0.1, name="sd")(LayerScale(0.5, 4, name="ls")(y))
    x = L.Conv2D(3, 3, name="c2")(x + y)
    m = keras.Model(inp, L.Dense(2, name="out")(L.Flatten()(x)))
    path = tmp_path / "convnext_like.keras"
    m.save(path)
    loaded = modtest.load_model(path)
    g = build_graph(loaded)
    assert g.layer_names == ["c1", "pw", "c2"]
    np.testing.assert_allclose(g.adjacency.toarray(), build_graph(m).adjacency.toarray())
    a = g.adjacency.toarray()
    np.testing.assert_allclose(a[g.layer_slice("c1"), g.layer_slice("pw")], np.abs(w(m, "pw")) * 0.5, rtol=1e-6)


# ------------------------------------------------------------------ keras.applications

def _application(name, size=32):
    keras.utils.set_random_seed(0)
    return getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)


def test_mobilenet_v3_small_graph_cluster_and_lesion_study():
    """The smallest application family end to end: keras.ops calls (hard sigmoid), squeeze-and-
    excitation, depthwise layers, a convolutional classifier; the lesion study on the fast engine."""
    from modtest.probes.lesion import lesion_study
    from modtest.results import SubCluster

    m = _application("MobileNetV3Small")
    part = modtest.cluster(m, k=12, seed=0)
    assert part.graph.n_nodes > 5000 and "expanded_conv_depthwise" in part.graph.layer_names
    assert "logits" not in {n.lower() for n in part.graph.layer_names}  # the classifier conv
    x = np.random.default_rng(0).uniform(0, 255, size=(24, 32, 32, 3)).astype("float32")
    y = np.arange(24) % 10
    # random weights cluster by depth (each layer falls in one cluster): halves of two layers instead
    subs = [SubCluster(layer, c, tuple(range(c, size, 2)), size) for layer in (unit_layers(m)[1], unit_layers(m)[-1])
            for size in [part.graph.layer_sizes[part.graph.layer_names.index(layer)]] for c in (0, 1)]
    res = lesion_study(m, subs, x, y, n_random=2, seed=0, progress=False)
    assert len(res.rows) == 4


@pytest.mark.slow
@pytest.mark.parametrize("name, size", [
    ("VGG16", 32), ("ResNet50", 32), ("ResNet50V2", 32), ("MobileNet", 32), ("MobileNetV2", 32),
    ("MobileNetV3Small", 32), ("EfficientNetB0", 32), ("EfficientNetV2B0", 32), ("DenseNet121", 32),
    ("InceptionV3", 75), ("Xception", 71), ("ConvNeXtTiny", 32), ("NASNetMobile", 32)])
def test_every_application_family_builds_a_graph_and_clusters(name, size):
    m = _application(name, size)
    part = modtest.cluster(m, k=12, seed=0)
    assert len(np.unique(part.labels[part.labels >= 0])) == 12
    assert set(unit_layers(m)) == set(part.graph.layer_names)


@pytest.mark.slow
def test_nested_application_lesions_fast_equal_reference():
    base = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), include_top=False)
    m = keras.Sequential([keras.Input((32, 32, 3)), base, L.GlobalAveragePooling2D(),
                          L.Dense(10, activation="softmax", name="out")])
    spread_output(m)
    layers = unit_layers(m)
    assert layers[0].startswith(base.name + "/") and f"{base.name}/block_3_project" in layers
    x = np.random.default_rng(0).uniform(-1, 1, size=(16, 32, 32, 3)).astype("float32")
    ref, fast = ReferenceEngine(m, x), FastEngine(m, x)
    rng = np.random.default_rng(0)
    for layer in layers[::8]:
        sets = _unit_sets(unit_width(get_layer(m, layer)), 3, rng)
        np.testing.assert_array_equal(ref.labels(layer, sets), fast.labels(layer, sets), err_msg=layer)
