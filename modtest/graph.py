"""Model -> weighted undirected graph, as section 2 of the paper defines it.

MLP: one node per neuron (input and output neurons included), edge = |weight|.
CNN: one node per feature map of each convolutional layer, edge between maps of consecutive conv
layers = entrywise L1 norm of the 2-D kernel slice, batch norm folded into the kernel before it.
Skip connections (Add, Concatenate) are traced: a conv layer connects to every unit layer whose
output reaches its input through pass-through and merge layers only.

A framework adapter reads the model once into a :class:`GraphSpec` (numpy arrays); the graph itself
is a pure function of the spec (:func:`graph_from_spec`), so that shuffled-weight controls never
touch a framework. This module imports none.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np


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
    """The paper's weighted graph of ``model`` (a native model, a model file or an adapter)."""
    from modtest.frameworks import adapt

    return graph_from_spec(adapt(model).graph_spec())
