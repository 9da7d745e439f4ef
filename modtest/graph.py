"""Model -> weighted undirected graph, as section 2 of the paper defines it.

MLP: one node per neuron (input and output neurons included), edge = |weight|.
CNN: one node per feature map of each convolutional layer, edge between maps of consecutive conv
layers = entrywise L1 norm of the 2-D kernel slice, batch norm folded into the kernel before it.
Skip connections (Add, Concatenate) are traced: a conv layer connects to every unit layer whose
output reaches its input through pass-through and merge layers only.

The Keras model is read once into a :class:`GraphSpec` (numpy arrays); the graph itself is a pure
function of the spec (:func:`graph_from_spec`), so that shuffled-weight controls never touch Keras.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from modtest import model as _model
from modtest.errors import InvalidInput, UnsupportedModelError

if TYPE_CHECKING:
    import scipy.sparse


@dataclass
class EdgeBlock:
    """Edges from a producer layer into a consumer layer.

    ``channel_map[c]`` is the producer unit feeding input channel ``c`` of the consumer's kernel
    (-1 when channel ``c`` comes from somewhere else).
    """

    producer: str
    consumer: str
    channel_map: np.ndarray


@dataclass
class GraphSpec:
    """Everything the graph depends on, as numpy: node layers, kernels, BN scales, edge blocks."""

    kind: str  # "mlp" or "cnn"
    layer_names: list[str]
    layer_sizes: list[int]
    roles: list[str]  # "input" | "hidden" | "output" per node layer
    kernels: dict[str, np.ndarray]  # consumer layer -> kernel (..., c_in, c_out)
    scales: dict[str, np.ndarray]  # node layer -> folded batch-norm scale per unit (c_out,)
    blocks: list[EdgeBlock] = field(default_factory=list)


@dataclass
class WeightGraph:
    """Sparse symmetric non-negative adjacency plus the node table.

    Nodes are numbered layer by layer: node ``offsets[i] + u`` is unit ``u`` of ``layer_names[i]``.
    """

    adjacency: scipy.sparse.csr_matrix
    kind: str
    layer_names: list[str]
    layer_sizes: list[int]
    roles: list[str]
    offsets: np.ndarray = field(init=False)

    def __post_init__(self):
        self.offsets = np.concatenate([[0], np.cumsum(self.layer_sizes)]).astype(np.int64)

    @property
    def n_nodes(self) -> int:
        return int(self.offsets[-1])

    def layer_slice(self, name: str) -> slice:
        i = self.layer_names.index(name)
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def node_table(self) -> tuple[np.ndarray, np.ndarray]:
        """(layer index, unit index) per node, each of shape (n_nodes,)."""
        layer = np.repeat(np.arange(len(self.layer_sizes)), self.layer_sizes)
        unit = np.arange(self.n_nodes) - self.offsets[layer]
        return layer, unit

    @property
    def degrees(self) -> np.ndarray:
        return np.asarray(self.adjacency.sum(axis=1)).ravel()


# --------------------------------------------------------------------------------------------
# Keras edge: model -> spec
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
    """Read the graph-relevant parts of a Keras model (the only Keras-facing step)."""
    model = _model.load_model(model)
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


# --------------------------------------------------------------------------------------------
# Pure core: spec -> graph
# --------------------------------------------------------------------------------------------

def kernel_magnitudes(kernel: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray:
    """(c_in, c_out) edge weights of one kernel: |w| for dense, entrywise L1 of each 2-D slice for conv.

    ``scale`` (c_out,) is the folded batch-norm factor of the consumer's output channels.
    """
    k = np.abs(np.asarray(kernel, dtype=np.float64))
    if k.ndim > 2:
        k = k.sum(axis=tuple(range(k.ndim - 2)))
    if scale is not None:
        k = k * np.abs(scale)[None, :]
    return k


def graph_from_spec(spec: GraphSpec, kernels: dict[str, np.ndarray] | None = None) -> WeightGraph:
    """Build the sparse symmetric adjacency; ``kernels`` may replace the spec's (shuffled controls)."""
    kernels = spec.kernels if kernels is None else kernels
    offsets = np.concatenate([[0], np.cumsum(spec.layer_sizes)]).astype(np.int64)
    index = {n: i for i, n in enumerate(spec.layer_names)}
    rows, cols, vals = [], [], []
    for block in spec.blocks:
        mag = kernel_magnitudes(kernels[block.consumer], spec.scales.get(block.consumer))
        ok = np.flatnonzero(block.channel_map >= 0)
        sub = mag[ok]  # (n_ok, c_out)
        src = offsets[index[block.producer]] + block.channel_map[ok]
        dst = offsets[index[block.consumer]] + np.arange(mag.shape[1])
        r = np.repeat(src, len(dst))
        c = np.tile(dst, len(src))
        v = sub.ravel()
        keep = v != 0
        rows.append(r[keep]); cols.append(c[keep]); vals.append(v[keep])
    n = int(offsets[-1])
    if rows:
        r, c, v = np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
    else:
        r = c = np.zeros(0, dtype=np.int64); v = np.zeros(0)
    import scipy.sparse as sp  # here, not at import: the pytest plugin loads this package at start-up

    # both directions in one COO: tocsr() sums duplicate (parallel) edges
    adjacency = sp.coo_matrix((np.concatenate([v, v]), (np.concatenate([r, c]), np.concatenate([c, r]))),
                              shape=(n, n)).tocsr()
    adjacency.sum_duplicates()
    return WeightGraph(adjacency, spec.kind, list(spec.layer_names), list(spec.layer_sizes), list(spec.roles))


def build_graph(model) -> WeightGraph:
    """The paper's weighted graph of ``model`` (a ``keras.Model`` or a ``.keras``/``.h5`` path)."""
    return graph_from_spec(extract_spec(model))
