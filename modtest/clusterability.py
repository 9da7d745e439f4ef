"""Clusterability: the model's n-cut against networks whose weights are shuffled within each layer.

The authors' companion method: a trained network is clusterable when its n-cut is lower than that of
networks with the same weight distribution per layer but shuffled positions.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from modtest._random import keyed_rng
from modtest._validation import check_int, check_seed
from modtest.cluster import cluster
from modtest.graph import extract_spec, graph_from_spec


@dataclass(frozen=True)
class ClusterabilityResult:
    """n-cut of the model, n-cuts of its shuffles, one-sided p (low n-cut = clusterable), z-score."""

    k: int
    seed: int
    ncut: float
    shuffled_ncuts: tuple[float, ...]
    p_value: float
    z_score: float

    def to_dict(self) -> dict:
        return asdict(self)


def shuffle_kernels(kernels: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Permute every kernel's entries within its layer (same weight distribution, no structure)."""
    return {n: rng.permutation(k.ravel()).reshape(k.shape) for n, k in kernels.items()}


def clusterability(model, k: int = 12, n_shuffles: int = 20, seed: int = 0, *,
                   workshare=None) -> ClusterabilityResult:
    """Compare the n-cut of ``model`` with ``n_shuffles`` within-layer weight shuffles.

    p = (1 + #{shuffled n-cut <= true n-cut}) / (n_shuffles + 1); z = (true - mean) / std.
    Each shuffle is a pure function of (seed, its index), so with ``workshare`` (a folder or
    :class:`modtest.workshare.WorkShare`) several processes share the re-clusterings as work units and
    all get the same result.
    """
    from modtest.workshare import as_workshare, unit_key

    n_shuffles = check_int("n_shuffles", n_shuffles, minimum=1)
    seed = check_seed(seed)
    share = as_workshare(workshare)
    spec = extract_spec(model)

    def ncut_of(i):  # i = -1: the model itself
        kernels = None if i < 0 else shuffle_kernels(spec.kernels, keyed_rng("clusterability", seed, i))
        return cluster(graph_from_spec(spec, kernels), k=k, seed=seed).ncut

    if share is None:
        ncuts = [ncut_of(i) for i in range(-1, n_shuffles)]
    else:
        from modtest.model import model_hash

        mh = model_hash(model)
        items = [(unit_key("clusterability-unit", mh, k, seed, i), i) for i in range(-1, n_shuffles)]
        got = share.run(items, ncut_of)
        ncuts = [float(got[key]) for key, _ in items]
    true, arr = float(ncuts[0]), np.asarray(ncuts[1:], dtype=np.float64)
    p = (1 + int((arr <= true).sum())) / (n_shuffles + 1)
    sd = arr.std(ddof=1) if n_shuffles > 1 else 0.0
    z = float((true - arr.mean()) / sd) if sd > 0 else float("nan")
    return ClusterabilityResult(k, seed, true, tuple(float(v) for v in arr), float(p), z)
