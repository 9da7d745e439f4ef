"""Graph -> partition: normalized spectral clustering (Shi & Malik) and sub-clusters, as in A.1.

Nodes of degree zero (dead or pruned units) are kept out of the eigenproblem and get label -1.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from modtest._validation import check_k, check_seed
from modtest.graph import WeightGraph, build_graph
from modtest.results import SubCluster


@dataclass
class Partition:
    """Cluster labels per node (-1 = isolated), the n-cut, and the sub-clusters of hidden layers."""

    labels: np.ndarray
    k: int
    seed: int
    ncut: float
    graph: WeightGraph = field(repr=False)
    subclusters: list[SubCluster] = field(default_factory=list)

    @property
    def n_nodes(self) -> int:
        return len(self.labels)

    def layer_labels(self, layer: str) -> np.ndarray:
        """Labels of the units of ``layer``, shape (layer_size,)."""
        return self.labels[self.graph.layer_slice(layer)]

    def to_dict(self) -> dict:
        g = self.graph
        return {
            "k": self.k, "seed": self.seed, "ncut": float(self.ncut), "n_nodes": self.n_nodes,
            "n_isolated": int((self.labels < 0).sum()),
            "layers": [{"name": n, "units": int(s), "role": r}
                       for n, s, r in zip(g.layer_names, g.layer_sizes, g.roles)],
            "labels": self.labels.tolist(),
            "subclusters": [s.to_dict() for s in self.subclusters],
        }


def ncut(adjacency, labels) -> float:
    """Sum over clusters of cut(X, rest) / vol(X); nodes labelled -1 are ignored. In [0, k]."""
    a = sp.csr_matrix(adjacency)
    labels = np.asarray(labels)
    deg = np.asarray(a.sum(axis=1)).ravel()
    total = 0.0
    for c in np.unique(labels[labels >= 0]):
        mask = labels == c
        vol = deg[mask].sum()
        if vol <= 0:
            continue
        within = a[mask][:, mask].sum()
        total += (vol - within) / vol
    return float(total)


def spectral_labels(adjacency, k: int, seed: int, n_init: int = 25) -> np.ndarray:
    """scikit-learn normalized spectral clustering (ARPACK, k-means) of a connected-degree graph."""
    from sklearn.cluster import SpectralClustering

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        warnings.filterwarnings("ignore", message="Array is not symmetric")
        model = SpectralClustering(n_clusters=k, affinity="precomputed", eigen_solver="arpack",
                                   assign_labels="kmeans", n_init=n_init, random_state=seed)
        return model.fit(adjacency).labels_.astype(np.int64)


def subclusters_of(graph: WeightGraph, labels: np.ndarray) -> list[SubCluster]:
    """Split each cluster by layer: one SubCluster per (hidden layer, cluster) pair that has units."""
    out = []
    for name, size, role in zip(graph.layer_names, graph.layer_sizes, graph.roles):
        if role != "hidden":
            continue
        lab = labels[graph.layer_slice(name)]
        for c in np.unique(lab[lab >= 0]):
            out.append(SubCluster(name, int(c), tuple(int(u) for u in np.flatnonzero(lab == c)), int(size)))
    return out


def cluster(model_or_graph, k: int = 12, seed: int = 0, *, n_init: int = 25) -> Partition:
    """Partition a model's graph into ``k`` clusters and split them into sub-clusters.

    Parameters
    ----------
    model_or_graph : keras.Model, path or WeightGraph
    k : int, number of clusters (2 <= k < number of nodes with an edge)
    seed : int, seeds ARPACK's start vector and k-means, so the same seed gives the same partition
    n_init : int, k-means restarts (the authors used 25 or more)
    """
    graph = model_or_graph if isinstance(model_or_graph, WeightGraph) else build_graph(model_or_graph)
    seed = check_seed(seed)
    usable = np.flatnonzero(graph.degrees > 0)
    k = check_k(k, len(usable))
    sub = graph.adjacency[usable][:, usable].tocsr()
    labels = -np.ones(graph.n_nodes, dtype=np.int64)
    labels[usable] = spectral_labels(sub, k, seed, n_init)
    return Partition(labels, k, seed, ncut(graph.adjacency, labels), graph, subclusters_of(graph, labels))
