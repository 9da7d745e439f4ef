"""Keras model -> :class:`modtest.graph.GraphSpec`: the node layers, kernels, folded batch-norm
scales and edge blocks of the paper's graph (section 2), read from the layer graph."""
from __future__ import annotations

import numpy as np

from modtest.errors import InvalidInput, UnsupportedModelError
from modtest.frameworks.keras import model as _model
from modtest.graph import EdgeBlock, GraphSpec


# --------------------------------------------------------------------------------------------

def _check_finite(name: str, arrays) -> None:
    for a in arrays:
        if not np.all(np.isfinite(a)):
            raise InvalidInput(f"layer {name!r} has NaN or infinite weights")


def _bn_scale(layer) -> np.ndarray:
    """gamma / sqrt(moving_variance + epsilon) per channel, exactly as Keras computes it."""
    var = np.asarray(layer.moving_variance, dtype=np.float64)
    gamma = np.asarray(layer.gamma, dtype=np.float64) if layer.gamma is not None else np.ones_like(var)
    return gamma / np.sqrt(var + layer.epsilon)


def _trace(lg, name, node_set, through_merge=False):
    """Producers reaching layer ``name``'s output: list of (producer, channel_map, via_merge)."""
    info = lg.layers[name]
    if name in node_set:
        return [(name, np.arange(info.width), through_merge)]
    if info.kind == "InputLayer" or info.kind in _model.UNIT_TYPES:
        return []  # a non-node (CNN input or dense layer): no edge passes through it
    if info.kind in _model.CONCAT_TYPES:
        out, offset = [], 0
        for inp in info.inputs:
            w = lg.layers[inp].width
            for prod, cmap, _ in _trace(lg, inp, node_set, True):
                full = -np.ones(info.width, dtype=np.int64)
                full[offset:offset + w] = cmap
                out.append((prod, full, True))
            offset += w
        return out
    if info.kind in _model.ADD_TYPES:
        return [t for inp in info.inputs for t in _trace(lg, inp, node_set, True)]
    return _trace(lg, info.inputs[0], node_set, through_merge)


def extract_spec(model) -> GraphSpec:
    """Read the graph-relevant parts of a ``keras.Model``."""
    lg = _model.layer_graph(model)
    by_name = {layer.name: layer for layer in model.layers}
    convolutional = _model.is_convolutional(lg)
    units = [n for n in lg.order if lg.layers[n].kind in _model.UNIT_TYPES]
    if not units:
        raise UnsupportedModelError(f"model {model.name} has no Dense or convolutional layers")
    if convolutional:
        node_layers = [n for n in units if lg.layers[n].kind in _model.CONV_TYPES]
        roles = ["hidden"] * len(node_layers)
    else:
        dense = [n for n in units if lg.layers[n].kind in _model.DENSE_TYPES]
        node_layers = [lg.input_names[0]] + dense
        roles = ["input"] + ["hidden"] * (len(dense) - 1) + ["output"]
    node_set = set(node_layers)

    kernels, scales = {}, {}
    for n in node_layers:
        scales[n] = np.ones(lg.layers[n].width)
        if n in by_name and lg.layers[n].kind in _model.UNIT_TYPES:
            layer = by_name[n]
            if getattr(layer, "groups", 1) != 1:
                raise UnsupportedModelError(f"layer {n!r} is a grouped convolution (groups="
                                            f"{layer.groups}); modtest supports groups=1")
            _check_finite(n, layer.get_weights())
            kernels[n] = np.asarray(layer.kernel, dtype=np.float64)
    for n in lg.order:
        info = lg.layers[n]
        if info.kind in _model.BATCHNORM_TYPES:
            _check_finite(n, by_name[n].get_weights())
            s = np.abs(_bn_scale(by_name[n]))
            for prod, cmap, via_merge in _trace(lg, info.inputs[0], node_set):
                if via_merge or prod not in kernels:
                    continue  # a BN after a merge normalises a sum: not a kernel fold (README)
                ok = cmap >= 0
                scales[prod][cmap[ok]] *= s[ok]

    blocks = []
    for n in node_layers:
        if n not in kernels:
            continue
        c_in = kernels[n].shape[-2]
        for prod, cmap, _ in _trace(lg, lg.layers[n].inputs[0], node_set):
            if len(cmap) != c_in:
                raise UnsupportedModelError(
                    f"layer {n!r} has {c_in} input channels but {len(cmap)} units reach it from "
                    f"{prod!r}; add a Flatten before a Dense that reads a multi-dimensional input")
            blocks.append(EdgeBlock(prod, n, cmap))
    return GraphSpec("cnn" if convolutional else "mlp", node_layers,
                     [lg.layers[n].width for n in node_layers], roles, kernels, scales, blocks)
