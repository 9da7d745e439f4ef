"""Keras model -> :class:`modtest.graph.GraphSpec`: the node layers, kernels, folded normalisation
scales and edge blocks of the paper's graph (section 2), read from the layer graph.

A node is a unit (a neuron, or a feature map); the edge between two units is the L1 norm of the
weights that connect them, with per-channel affine normalisations folded in. Where a normalisation
directly follows a unit layer (through per-channel layers only) its scale is folded into that
layer's kernel, as the paper does for batch norm; after a merge (Add, Concatenate, ...) or after an
MLP's input, where no single kernel comes before it, it scales the edges of the channels it
normalises (``EdgeBlock.row_scale``). docs/compatibility.md lists every layer type's semantics and
which are exact.
"""
from __future__ import annotations

import numpy as np

from modtest.errors import InvalidInput, UnsupportedModelError
from modtest.frameworks.keras import model as _model
from modtest.graph import EdgeBlock, GraphSpec, KernelLayout

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


def _per_unit(values, width: int, flat: bool) -> np.ndarray:
    """|values| as one factor per unit: a number for all, one per channel (the last axis), or over
    more axes (averaged to one per channel: an approximation, docs/compatibility.md)."""
    a = np.abs(np.asarray(values, dtype=np.float64))
    if a.size == 1:
        return np.full(width, float(a.ravel()[0]))
    if flat and a.size == width:
        return a.ravel()
    per_channel = a.reshape(-1, a.shape[-1]).mean(axis=0)
    if per_channel.size == width:
        return per_channel
    if flat and width % per_channel.size == 0:  # entry f of a flat input is in channel f % C
        return np.tile(per_channel, width // per_channel.size)
    return np.full(width, float(a.mean()))


def channel_scale(info) -> np.ndarray | None:
    """|factor| per unit of an affine layer's output (None: nothing to fold).

    Exact for BatchNormalization, Normalization, Rescaling, LayerScale and keras.ops scalings; for
    LayerNormalization, GroupNormalization and RMSNormalization the per-channel ``gamma`` is folded
    and the standardisation by statistics of the input is not (it is not a fixed affine map).
    """
    kind, layer = info.kind, info.layer
    if kind == "BatchNormalization":
        rank = len(layer.input.shape)
        if int(layer.axis) % rank != rank - 1:
            return None  # normalises another axis than the units'
        values = _bn_scale(layer)
    elif kind == "Normalization":
        sd = np.maximum(np.sqrt(np.asarray(layer.variance, dtype=np.float64)), 1e-7)  # Keras' epsilon
        values = sd if layer.invert else 1.0 / sd
    elif kind == "Rescaling":
        values = np.asarray(layer.scale, dtype=np.float64)
    elif kind == "LayerScale":
        values = np.asarray(layer.gamma, dtype=np.float64)
    elif kind in ("LayerNormalization", "GroupNormalization"):
        if layer.gamma is None:
            return None
        values = np.asarray(layer.gamma, dtype=np.float64)
    elif kind == "RMSNormalization":
        values = np.asarray(layer.scale, dtype=np.float64)
    elif kind == "Scale":
        values = info.const
    else:
        return None
    _check_finite(info.name, [np.asarray(values, dtype=np.float64)])
    return _per_unit(values, info.width, info.flat)


def _kernel(info):
    """The consumer's kernel as the graph reads it, and its layout (None: dense)."""
    layer, kind = info.layer, info.kind
    if kind in _model.SEPARABLE_TYPES:
        return (np.asarray(layer.depthwise_kernel, dtype=np.float64),
                np.asarray(layer.pointwise_kernel, dtype=np.float64)), KernelLayout("separable")
    kernel = np.asarray(layer.kernel, dtype=np.float64)
    if kind in _model.DEPTHWISE_TYPES:
        return kernel, KernelLayout("depthwise")
    if kind in _model.TRANSPOSE_TYPES:
        return kernel, KernelLayout("transpose")
    groups = int(getattr(layer, "groups", 1) or 1)
    if groups != 1:
        return kernel, KernelLayout("grouped", groups)
    return kernel, None


def _c_in(kernel, layout) -> int:
    """Input channels of a kernel."""
    kind = "dense" if layout is None else layout.kind
    if kind == "separable":
        return int(kernel[0].shape[-2])
    if kind == "transpose":
        return int(kernel.shape[-1])
    if kind == "grouped":
        return int(kernel.shape[-2]) * layout.groups
    return int(kernel.shape[-2])


def trace_paths(lg, node_set, input_node, scales) -> dict:
    """For every layer, the node units reaching its output: ``(producer, channel_map, merged,
    row_scale)`` with ``channel_map[c]`` the producer's unit in channel c (-1: none), ``merged`` when
    a merge lies between them, ``row_scale`` the normalisations to apply on that path (or None).

    Layers in model order, each from its inputs' paths. A normalisation reached from a unit layer
    without a merge is folded into that layer's ``scales`` (its kernel's output channels) here.
    """
    paths: dict[str, list] = {}
    for name in lg.order:
        info = lg.layers[name]
        kind = info.kind
        if name in node_set:
            paths[name] = [(name, np.arange(info.width), False, None)]
        elif kind == "InputLayer" or kind in _model.UNIT_TYPES or info.barrier:
            paths[name] = []  # a non-node (CNN input, dense layer, classifier): no edge passes it
        elif kind in _model.CONCAT_TYPES and info.channel_concat:
            out, offset = [], 0
            for inp in info.inputs:
                w = lg.layers[inp].width
                for prod, cmap, _, rs in paths[inp]:
                    full = -np.ones(info.width, dtype=np.int64)
                    full[offset:offset + w] = cmap
                    if rs is not None:
                        rs_full = np.ones(info.width)
                        rs_full[offset:offset + w] = rs
                        rs = rs_full
                    out.append((prod, full, True, rs))
                offset += w
            paths[name] = out
        elif kind in _model.ADD_TYPES or kind in _model.CONCAT_TYPES:
            out = []
            for inp in info.inputs:
                for prod, cmap, _, rs in paths[inp]:
                    if len(cmap) == 1 and info.width > 1:  # broadcast along the channels
                        cmap = np.repeat(cmap, info.width)
                        rs = None if rs is None else np.repeat(rs, info.width)
                    out.append((prod, cmap, True, rs))
            if kind == "Average":  # the mean of n inputs: each one scaled by 1/n
                f = 1.0 / len(info.inputs)
                out = [(p, c, m, np.full(len(c), f) if rs is None else rs * f) for p, c, m, rs in out]
            paths[name] = out
        else:
            sub = paths[info.inputs[0]]
            if info.remap is not None:
                sub = [(p, c[info.remap], m, None if rs is None else rs[info.remap]) for p, c, m, rs in sub]
            if kind in _model.AFFINE_TYPES and sub:
                s = channel_scale(info)
                if s is not None:
                    out = []
                    for p, c, m, rs in sub:
                        if m or p == input_node:
                            rs = s if rs is None else rs * s
                        else:  # the paper's fold: into the kernel of the unit layer before it
                            ok = c >= 0
                            scales[p][c[ok]] *= s[ok]
                        out.append((p, c, m, rs))
                    sub = out
            paths[name] = sub
    return paths


def extract_spec(model) -> GraphSpec:
    """Read the graph-relevant parts of a ``keras.Model``."""
    lg = _model.layer_graph(model)
    convolutional = _model.is_convolutional(lg)
    node_layers, roles = _model.node_layers(lg)
    node_set = set(node_layers)
    input_node = node_layers[0] if roles[0] == "input" else None

    kernels, scales, layouts = {}, {}, {}
    for n in node_layers:
        info = lg.layers[n]
        scales[n] = np.ones(info.width)
        if info.kind in _model.UNIT_TYPES:
            _check_finite(n, info.layer.get_weights())
            kernels[n], layout = _kernel(info)
            if layout is not None:
                layouts[n] = layout
    for n in lg.order:
        layer = lg.layers[n].layer
        if lg.layers[n].kind in _model.AFFINE_TYPES and hasattr(layer, "get_weights"):
            _check_finite(n, layer.get_weights())
    paths = trace_paths(lg, node_set, input_node, scales)

    blocks = []
    for n in node_layers:
        if n not in kernels:
            continue
        c_in = _c_in(kernels[n], layouts.get(n))
        for prod, cmap, _, rs in paths[lg.layers[n].inputs[0]]:
            if len(cmap) != c_in:
                raise UnsupportedModelError(
                    f"layer {n!r} has {c_in} input channels but {len(cmap)} units reach it from "
                    f"{prod!r}; add a Flatten before a Dense that reads a multi-dimensional input")
            blocks.append(EdgeBlock(prod, n, cmap, rs))
    return GraphSpec("cnn" if convolutional else "mlp", node_layers,
                     [lg.layers[n].width for n in node_layers], roles, kernels, scales, blocks, layouts)
