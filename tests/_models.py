"""Small seeded Keras models shared by the foundation tests."""
from __future__ import annotations

import numpy as np


def keras():
    import keras as k

    return k


def tiny_mlp(seed=0, widths=(12, 10), n_in=6, n_out=4):
    k = keras()
    k.utils.set_random_seed(seed)
    layers = [k.Input((n_in,))]
    layers += [k.layers.Dense(w, activation="relu", name=f"h{i + 1}") for i, w in enumerate(widths)]
    layers.append(k.layers.Dense(n_out, activation="softmax", name="out"))
    return k.Sequential(layers)


def cnn_with_bn(seed=0, bn=True):
    """conv(4) -> BN -> relu -> conv(5) -> BN -> relu -> pool -> conv(3) -> flatten -> dense(3)."""
    k = keras()
    k.utils.set_random_seed(seed)
    L = k.layers
    x = inp = k.Input((8, 8, 2))
    x = L.Conv2D(4, 3, padding="same", name="c1")(x)
    if bn:
        x = L.BatchNormalization(name="bn1")(x)
    x = L.ReLU()(x)
    x = L.Conv2D(5, 3, padding="same", name="c2")(x)
    if bn:
        x = L.BatchNormalization(name="bn2")(x)
    x = L.ReLU()(x)
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(3, 2, name="c3")(x)
    x = L.Flatten()(x)
    out = L.Dense(3, activation="softmax", name="out")(x)
    model = k.Model(inp, out)
    if bn:  # non-trivial moving statistics and scales
        rng = np.random.default_rng(seed)
        for name in ("bn1", "bn2"):
            layer = model.get_layer(name)
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(-2, 2, n), rng.normal(size=n), rng.normal(size=n),
                               rng.uniform(0.1, 3, n)])
    return model


def fold_batchnorm(model):
    """The same CNN without BN layers, each BN folded into the kernel and bias of the conv before it."""
    plain = cnn_with_bn(bn=False)
    for name, bn in (("c1", "bn1"), ("c2", "bn2")):
        w, b = model.get_layer(name).get_weights()
        g, beta, mean, var = model.get_layer(bn).get_weights()
        s = g / np.sqrt(var + model.get_layer(bn).epsilon)
        plain.get_layer(name).set_weights([w * s, (b - mean) * s + beta])
    for name in ("c3", "out"):
        plain.get_layer(name).set_weights(model.get_layer(name).get_weights())
    return plain


def residual_block(seed=0, merge="add"):
    """c1 -> c2; merge(c1, c2) -> c3: c3 connects to both c1 and c2."""
    k = keras()
    k.utils.set_random_seed(seed)
    L = k.layers
    inp = k.Input((6, 6, 1))
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="c1")(inp)
    b = L.Conv2D(4 if merge == "add" else 3, 3, padding="same", activation="relu", name="c2")(a)
    m = L.Add(name="merge")([a, b]) if merge == "add" else L.Concatenate(name="merge")([a, b])
    c = L.Conv2D(5, 3, activation="relu", name="c3")(m)
    out = L.Dense(3, activation="softmax", name="out")(L.GlobalAveragePooling2D()(c))
    return k.Model(inp, out)


def planted_mlp(seed=0, n_in=8, width=8, n_out=4, cross=1e-3):
    """An MLP with two planted modules: block-diagonal weights, near-zero weights across blocks."""
    model = tiny_mlp(seed, widths=(width, width), n_in=n_in, n_out=n_out)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        w, b = layer.get_weights()
        mask = np.zeros_like(w, dtype=bool)
        hi, ho = w.shape[0] // 2, w.shape[1] // 2
        mask[:hi, :ho] = mask[hi:, ho:] = True
        w = np.where(mask, rng.uniform(0.5, 1.5, w.shape), cross * rng.uniform(-1, 1, w.shape))
        layer.set_weights([w.astype(np.float32), b])
    return model


def planted_blocks(model):
    """The true module (0/1) of each graph node of :func:`planted_mlp`, in graph node order."""
    sizes = [model.inputs[0].shape[-1]] + [layer.kernel.shape[1] for layer in model.layers]
    return np.concatenate([np.repeat([0, 1], [s // 2, s - s // 2]) for s in sizes])
