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


def clusterability(model, k: int = 12, n_shuffles: int = 20, seed: int = 0) -> ClusterabilityResult:
    """Compare the n-cut of ``model`` with ``n_shuffles`` within-layer weight shuffles.

    p = (1 + #{shuffled n-cut <= true n-cut}) / (n_shuffles + 1); z = (true - mean) / std.
    """
    n_shuffles = check_int("n_shuffles", n_shuffles, minimum=1)
    seed = check_seed(seed)
    spec = extract_spec(model)
    true = cluster(graph_from_spec(spec), k=k, seed=seed).ncut
    shuffled = []
    for i in range(n_shuffles):
        kernels = shuffle_kernels(spec.kernels, keyed_rng("clusterability", seed, i))
        shuffled.append(cluster(graph_from_spec(spec, kernels), k=k, seed=seed).ncut)
    arr = np.asarray(shuffled)
    p = (1 + int((arr <= true).sum())) / (n_shuffles + 1)
    sd = arr.std(ddof=1) if n_shuffles > 1 else 0.0
    z = float((true - arr.mean()) / sd) if sd > 0 else float("nan")
    return ClusterabilityResult(k, seed, float(true), tuple(float(v) for v in arr), float(p), z)
