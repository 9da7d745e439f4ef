"""Graph -> partition: normalized spectral clustering (Shi & Malik) and sub-clusters, as in A.1.

Nodes of degree zero (dead or pruned units) are kept out of the eigenproblem and get label -1.
"""
from __future__ import annotations

import functools
import os
import warnings
from dataclasses import dataclass, field

import numpy as np

from modtest._validation import check_choice, check_k, check_seed
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
    #: wall seconds :func:`cluster` took (graph included when it built it); None when not measured
    seconds: float | None = field(default=None, compare=False, repr=False)

    def __repr__(self) -> str:  # short: pytest prints a failing test's arguments (the partition fixture)
        return (f"Partition(k={self.k}, seed={self.seed}, ncut={self.ncut:.4g}, {len(self.labels)} nodes, "
                f"{len(self.subclusters)} sub-clusters)")

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
    """Sum over clusters of cut(X, rest) / vol(X); nodes labelled -1 are ignored. In [0, k].

    A cluster's inner weight is the sum of the stored entries with both ends in it, taken in CSR
    order: the same numbers, summed in the same order, as ``a[mask][:, mask].sum()`` (which copies
    the sub-matrix: slow on graphs with tens of millions of edges).
    """
    import scipy.sparse as sp

    a = sp.csr_matrix(adjacency)
    if not a.has_canonical_format:
        a = a.copy()
        a.sum_duplicates()
    labels = np.asarray(labels)
    deg = np.asarray(a.sum(axis=1)).ravel()
    small = labels.size and labels.min() >= -1 and labels.max() < 2**15
    lab = labels.astype(np.int16 if small else np.int64)  # int16: a radix sort below
    row_label = np.repeat(lab, np.diff(a.indptr))
    inner = np.flatnonzero(row_label == lab[a.indices])
    inner_label = row_label[inner]
    del row_label
    order = np.argsort(inner_label, kind="stable")  # by cluster, CSR order kept within each
    values, sorted_label = a.data[inner[order]], inner_label[order]
    clusters = np.unique(labels[labels >= 0])
    bounds = zip(np.searchsorted(sorted_label, clusters, side="left"),
                 np.searchsorted(sorted_label, clusters, side="right"))
    total = 0.0
    for c, (lo, hi) in zip(clusters, bounds):
        mask = labels == c
        vol = deg[mask].sum()
        if vol <= 0:
            continue
        within = values[lo:hi].sum()
        total += (vol - within) / vol
    return float(total)


@functools.lru_cache(maxsize=1)
def _threadpools():
    """One ThreadpoolController per process (creating one scans the loaded libraries: ~5 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _one_openmp_thread():
    """k-means on a few thousand low-dimensional points: OpenMP threads only add contention
    (measured 18x slower on 2 busy cores), and the labels are the same either way."""
    import sklearn.cluster  # noqa: F401 - its OpenMP runtime is loaded before the controller scans

    return _threadpools().limit(limits=1, user_api="openmp")


def spectral_labels(adjacency, k: int, seed: int, n_init: int = 25) -> np.ndarray:
    """scikit-learn normalized spectral clustering (ARPACK, k-means) of a connected-degree graph."""
    from sklearn.cluster import SpectralClustering

    with warnings.catch_warnings(), _one_openmp_thread():
        warnings.filterwarnings("ignore", message="Graph is not fully connected")
        warnings.filterwarnings("ignore", message="Array is not symmetric")
        model = SpectralClustering(n_clusters=k, affinity="precomputed", eigen_solver="arpack",
                                   assign_labels="kmeans", n_init=n_init, random_state=seed)
        return model.fit(adjacency).labels_.astype(np.int64)


#: Above this many nodes the shift-invert ARPACK path (a sparse LU of the Laplacian) runs out of
#: memory on ResNet-sized graphs; the large-graph path needs only sparse matrix-vector products.
LARGE_GRAPH_NODES = 6000
#: Above this many stored entries the factorisation is slow however few the nodes (VGG-16's 4224
#: maps with 3.3M entries: 8.8 s of CPU against 5.6 s without it, the same labels).
LARGE_GRAPH_ENTRIES = 1_000_000
SOLVERS = ("auto", "arpack", "lanczos")


def _sign_flip(u: np.ndarray) -> np.ndarray:
    """Make each row's largest-magnitude entry positive (sklearn's deterministic sign flip)."""
    idx = np.argmax(np.abs(u), axis=1)
    return u * np.sign(u[np.arange(u.shape[0]), idx])[:, None]


#: Graphs with at least this many stored entries get their matrix-vector products on several threads.
THREADED_MATVEC_NNZ = 2_000_000
#: Lanczos basis size of the large-graph solver. ARPACK checks convergence after each full basis:
#: at k=12 the keras.applications graphs converge within 65-81 products (ResNet50, Xception,
#: ConvNeXtTiny) where scikit-learn's default basis (2k+1 = 25) restarts to 89-217 products.
LANCZOS_BASIS = 80


def _threads() -> int:
    try:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    except AttributeError:  # not on Linux
        return max(1, min(4, os.cpu_count() or 1))


def _row_blocks_operator(m, threads: int, pool):
    """``m`` as a LinearOperator whose product runs on ``threads`` row blocks at once (scipy's sparse
    product releases the GIL). Every row is summed exactly as in ``m @ x``: the same vector."""
    import scipy.sparse as sp
    from scipy.sparse.linalg import LinearOperator

    n = m.shape[0]
    cuts = np.searchsorted(m.indptr, np.linspace(0, m.nnz, threads + 1)[1:-1]).tolist()
    bounds = [0, *cuts, n]
    # row blocks that view m's arrays (slicing m[lo:hi] would copy tens of millions of entries)
    blocks = [(lo, hi, sp.csr_matrix((m.data[m.indptr[lo]:m.indptr[hi]], m.indices[m.indptr[lo]:m.indptr[hi]],
                                      m.indptr[lo:hi + 1] - m.indptr[lo]), shape=(hi - lo, n), copy=False))
              for lo, hi in zip(bounds[:-1], bounds[1:]) if hi > lo]

    def matvec(x):
        x = np.asarray(x, dtype=np.float64).ravel()
        y = np.empty(n)

        def run(block):
            lo, hi, rows = block
            y[lo:hi] = rows @ x

        list(pool.map(run, blocks))
        return y

    return LinearOperator(m.shape, matvec=matvec, dtype=np.float64)


def spectral_labels_large(adjacency, k: int, seed: int, n_init: int = 25, *, threads: int | None = None) -> np.ndarray:
    """The same algorithm as :func:`spectral_labels` without factorising the Laplacian.

    The k smallest eigenvectors of L_sym = I - D^-1/2 A D^-1/2 are the k largest of
    D^-1/2 A D^-1/2, which ARPACK finds from matrix-vector products alone. Embedding, sign flip,
    random stream and k-means follow scikit-learn step by step, so labels equal its ARPACK path.
    ``threads`` (default: up to 4 usable cores on graphs of ``THREADED_MATVEC_NNZ`` entries or more)
    splits each product by rows; the labels are the same for any number.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh
    from sklearn.cluster import k_means
    from sklearn.utils import check_random_state

    a = sp.csr_matrix(adjacency, dtype=np.float64)
    rs = check_random_state(seed)
    v0 = rs.uniform(-1, 1, a.shape[0])  # sklearn's _init_arpack_v0: same draw, same order
    dd = np.sqrt(np.asarray(a.sum(axis=1)).ravel())
    inv = 1.0 / dd
    # D^-1/2 A D^-1/2 entry by entry, the products in the order of inv @ a @ inv (no matrix products)
    data = np.repeat(inv, np.diff(a.indptr))
    data *= a.data
    data *= inv[a.indices]
    m = sp.csr_matrix((data, a.indices, a.indptr), shape=a.shape, copy=False)
    ncv = min(a.shape[0], max(2 * k + 1, LANCZOS_BASIS))  # ARPACK: k < ncv <= n
    if threads is None:
        threads = _threads() if m.nnz >= THREADED_MATVEC_NNZ else 1
    if threads > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(threads) as pool:
            vals, vecs = eigsh(_row_blocks_operator(m, threads, pool), k=k, which="LA", v0=v0, tol=0,
                               ncv=ncv)
    else:
        vals, vecs = eigsh(m, k=k, which="LA", v0=v0, tol=0, ncv=ncv)
    vecs = vecs[:, np.argsort(-vals)]  # ascending Laplacian eigenvalues
    maps = _sign_flip(vecs.T / dd).T
    with _one_openmp_thread():
        _, labels, _ = k_means(maps, k, random_state=rs, n_init=n_init)
    return labels.astype(np.int64)


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


def cluster(model_or_graph, k: int = 12, seed: int = 0, *, n_init: int = 25, solver: str = "auto") -> Partition:
    """Partition a model's graph into ``k`` clusters and split them into sub-clusters.

    Parameters
    ----------
    model_or_graph : keras.Model, path or WeightGraph
    k : int, number of clusters (2 <= k < number of nodes with an edge)
    seed : int, seeds ARPACK's start vector and k-means, so the same seed gives the same partition
    n_init : int, k-means restarts (the authors used 25 or more)
    solver : "arpack" (scikit-learn, shift-invert), "lanczos" (no factorisation, for large graphs)
        or "auto" (lanczos above LARGE_GRAPH_NODES nodes or LARGE_GRAPH_ENTRIES stored entries); both
        give the same labels
    """
    import time

    t0 = time.perf_counter()
    check_choice("solver", solver, SOLVERS)
    graph = model_or_graph if isinstance(model_or_graph, WeightGraph) else build_graph(model_or_graph)
    seed = check_seed(seed)
    usable = np.flatnonzero(graph.degrees > 0)
    k = check_k(k, len(usable))
    sub = graph.adjacency if len(usable) == graph.n_nodes else graph.adjacency[usable][:, usable].tocsr()
    labels = -np.ones(graph.n_nodes, dtype=np.int64)
    large = solver == "lanczos" or (solver == "auto" and (len(usable) > LARGE_GRAPH_NODES
                                                         or sub.nnz > LARGE_GRAPH_ENTRIES))
    labels[usable] = (spectral_labels_large if large else spectral_labels)(sub, k, seed, n_init)
    return Partition(labels, k, seed, ncut(graph.adjacency, labels), graph, subclusters_of(graph, labels),
                     seconds=time.perf_counter() - t0)
