"""Model -> weighted undirected graph, as section 2 of the paper defines it.

MLP: one node per neuron (input and output neurons included), edge = |weight|.
CNN: one node per feature map of each convolutional layer, edge between maps of consecutive conv
layers = entrywise L1 norm of the 2-D kernel slice, batch norm folded into the kernel before it.
Skip connections (Add, Concatenate) are traced: a conv layer connects to every unit layer whose
output reaches its input through pass-through and merge layers only.

Kernels that do not connect every input map to every output map say how they are laid out
(:class:`KernelLayout`: depthwise, grouped, separable, transposed), so that a shuffled control
permutes the real weights and keeps the structure; see docs/compatibility.md for each layer type.

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
    (-1 when channel ``c`` comes from somewhere else). ``row_scale[c]`` (optional, >= 0) multiplies
    the edges of input channel ``c``: a per-channel normalisation between the two that cannot be
    folded into the producer's kernel (it follows a merge, or the producer is an input).
    """

    producer: str
    consumer: str
    channel_map: np.ndarray
    row_scale: np.ndarray | None = None


@dataclass(frozen=True)
class KernelLayout:
    """How a consumer's kernel connects its input channels to its output channels.

    ``"dense"``: ``(..., c_in, c_out)``, every pair. ``"grouped"``: ``(..., c_in / groups, c_out)``,
    group g's inputs to group g's outputs. ``"depthwise"``: ``(..., c_in, multiplier)``, input c to
    outputs ``c * multiplier + m``. ``"separable"``: a pair (depthwise ``(..., c_in, multiplier)``,
    pointwise ``(..., c_in * multiplier, c_out)``) composed into one effective kernel.
    ``"transpose"``: ``(..., c_out, c_in)``.
    """

    kind: str = "dense"
    groups: int = 1


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
    layouts: dict[str, KernelLayout] = field(default_factory=dict)  # consumer -> layout (default dense)


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

def kernel_magnitudes(kernel, scale: np.ndarray | None = None, layout: KernelLayout | None = None) -> np.ndarray:
    """(c_in, c_out) edge weights of one kernel: |w| for dense, entrywise L1 of each 2-D slice for conv.

    ``scale`` (c_out,) is the folded batch-norm factor of the consumer's output channels; ``layout``
    says how the kernel connects channels (default: every input to every output).
    """
    kind = "dense" if layout is None else layout.kind
    if kind == "separable":  # the effective kernel of each (input map, output map) pair, then its L1
        dk, pk = (np.asarray(a, dtype=np.float64) for a in kernel)
        c_in, mult = dk.shape[-2:]
        k = np.abs(np.einsum("...cm,cmo->...co", dk, pk.reshape(c_in, mult, pk.shape[-1])))
    else:
        k = np.abs(np.asarray(kernel, dtype=np.float64))
    if k.ndim > 2:
        k = k.sum(axis=tuple(range(k.ndim - 2)))
    if kind == "depthwise":  # (c_in, multiplier) -> block diagonal (c_in, c_in * multiplier)
        c_in, mult = k.shape
        full = np.zeros((c_in, c_in * mult))
        full[np.repeat(np.arange(c_in), mult), np.arange(c_in * mult)] = k.ravel()
        k = full
    elif kind == "grouped":  # (c_in / g, c_out) -> block diagonal (c_in, c_out)
        g = layout.groups
        cig, c_out = k.shape
        cog = c_out // g
        full = np.zeros((cig * g, c_out))
        for i in range(g):
            full[i * cig:(i + 1) * cig, i * cog:(i + 1) * cog] = k[:, i * cog:(i + 1) * cog]
        k = full
    elif kind == "transpose":
        k = k.T
    if scale is not None:
        k = k * np.abs(scale)[None, :]
    return k


def graph_from_spec(spec: GraphSpec, kernels: dict[str, np.ndarray] | None = None) -> WeightGraph:
    """Build the sparse symmetric adjacency; ``kernels`` may replace the spec's (shuffled controls).

    Edges between two node layers form one dense block (parallel paths summed); the CSR matrix is
    assembled row layer by row layer from those blocks, already in canonical order (sorted column
    indices, no duplicates), without a COO of every edge twice.
    """
    kernels = spec.kernels if kernels is None else kernels
    sizes = [int(s) for s in spec.layer_sizes]
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    index = {n: i for i, n in enumerate(spec.layer_names)}
    pairs: dict[tuple[int, int], np.ndarray] = {}  # (producer index, consumer index) -> dense edges
    mags: dict[str, np.ndarray] = {}  # one per consumer, however many producers reach it
    for block in spec.blocks:
        mag = mags.get(block.consumer)
        if mag is None:
            mag = mags[block.consumer] = kernel_magnitudes(kernels[block.consumer], spec.scales.get(block.consumer),
                                                           spec.layouts.get(block.consumer))
        ok = np.flatnonzero(block.channel_map >= 0)
        sub = mag[ok]  # (n_ok, c_out)
        if block.row_scale is not None:
            sub = sub * np.abs(block.row_scale[ok])[:, None]
        key = (index[block.producer], index[block.consumer])
        dense = pairs.get(key)
        if dense is None:
            dense = pairs[key] = np.zeros((sizes[key[0]], mag.shape[1]))
        units = block.channel_map[ok]
        if len(np.unique(units)) == len(units):
            dense[units] += sub
        else:  # several channels from one unit (a broadcast): their edges add up
            np.add.at(dense, units, sub)
    neighbours: dict[int, list[int]] = {i: [] for i in range(len(sizes))}
    for p, c in pairs:
        neighbours[p].append(c)
        neighbours[c].append(p)
    n = int(offsets[-1])
    itype = np.int32 if 2 * sum(d.size for d in pairs.values()) < np.iinfo(np.int32).max else np.int64
    data, indices, counts = [], [], []
    for i, size in enumerate(sizes):
        near = sorted(set(neighbours[i]))
        if not near or size == 0:
            counts.append(np.zeros(size, dtype=np.int64))
            continue
        row = np.hstack([pairs[(i, j)] if (i, j) in pairs else pairs[(j, i)].T for j in near])
        cols = np.concatenate([np.arange(offsets[j], offsets[j + 1], dtype=itype) for j in near])
        keep = row != 0  # row-major: CSR order
        data.append(row[keep])
        indices.append(np.broadcast_to(cols, row.shape)[keep])
        counts.append(keep.sum(axis=1))
    import scipy.sparse as sp  # here, not at import: the pytest plugin loads this package at start-up

    indptr = np.zeros(n + 1, dtype=itype)
    if n:
        np.cumsum(np.concatenate(counts), out=indptr[1:])
    adjacency = sp.csr_matrix((np.concatenate(data) if data else np.zeros(0),
                               np.concatenate(indices) if indices else np.zeros(0, dtype=itype),
                               indptr), shape=(n, n))
    adjacency.has_canonical_format = True
    return WeightGraph(adjacency, spec.kind, list(spec.layer_names), list(spec.layer_sizes), list(spec.roles))


def build_graph(model) -> WeightGraph:
    """The paper's weighted graph of ``model`` (a native model, a model file or an adapter)."""
    from modtest.frameworks import adapt

    return graph_from_spec(adapt(model).graph_spec())
