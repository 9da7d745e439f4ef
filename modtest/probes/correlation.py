"""Correlation-based visualization (paper 3.1.1, A.3).

A unit is pictured by the Spearman correlation of its post-activation (a conv map: the L1 norm of the
map) with every input pixel across a data set. A sub-cluster is pictured by the mean of its units'
pictures after their signs are aligned (Algorithm 2, after Watanabe 2019), so that two strongly
anti-correlated units do not cancel out.
"""
from __future__ import annotations

import numpy as np

from modtest.errors import DataError, InvalidInput

__all__ = ["spearman_matrix", "correlation_visualization", "align_signs", "subcluster_visualization"]


def _ranks(a: np.ndarray) -> np.ndarray:
    """Average ranks of each column of ``a`` (N, M) over its rows."""
    from scipy.stats import rankdata

    return rankdata(a, axis=0, method="average").astype(np.float64)


def _standardized(r: np.ndarray) -> np.ndarray:
    """Columns centred and scaled to unit norm; a constant column becomes all zeros (not NaN)."""
    r = r - r.mean(axis=0, keepdims=True)
    norm = np.sqrt((r * r).sum(axis=0, keepdims=True))
    const = norm <= 1e-12 * max(1.0, float(r.shape[0]))
    return np.where(const, 0.0, r / np.where(const, 1.0, norm))


def spearman_matrix(a, b) -> np.ndarray:
    """Spearman correlation of every column of ``a`` with every column of ``b``.

    Parameters
    ----------
    a : array_like, shape (N, P)
    b : array_like, shape (N, Q)

    Returns
    -------
    ndarray, shape (P, Q)
        Correlations in [-1, 1]; 0 where either column is constant.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
        raise InvalidInput(f"spearman_matrix needs (N, P) and (N, Q) arrays, got {a.shape} and {b.shape}")
    return np.clip(_standardized(_ranks(a)).T @ _standardized(_ranks(b)), -1.0, 1.0)


def correlation_visualization(model, layer_name: str, x, *, batch_size: int = 256,
                              resolve: bool = True) -> np.ndarray:
    """Spearman correlation of each unit of ``layer_name`` with each input pixel over ``x``.

    Parameters
    ----------
    model : a model or adapter (see :func:`modtest.frameworks.adapt`)
    layer_name : str
        A unit layer; its post-activation is read (the ReLU after it when it has no built-in one).
    x : ndarray, shape (N, *input_shape)
        The data (the paper uses the test set).

    Returns
    -------
    ndarray, shape (n_units, *input_shape)
        Correlations; 0 where a unit or a pixel is constant over ``x`` (e.g. a dead unit, a blank
        border pixel).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or len(x) < 2:
        raise DataError(f"correlation_visualization needs at least 2 examples, got x of shape {x.shape}")
    from modtest.frameworks import adapt

    acts = adapt(model).visualizer().post_activations(layer_name, x, batch_size=batch_size, resolve=resolve)
    corr = spearman_matrix(acts, x.reshape(len(x), -1))
    return corr.reshape((acts.shape[1],) + x.shape[1:])


def align_signs(vis, n_iter: int = 20, *, return_signs: bool = False):
    """Algorithm 2: flip unit visualizations whose summed cosine with the others is negative.

    For ``n_iter`` sweeps (stopping early when a sweep flips nothing), for each unit ``i`` in turn,
    ``c = sum_{j != i} cos(v_i, v_j)`` with the current signs; if ``c < 0``, ``v_i`` is negated.

    Parameters
    ----------
    vis : array_like, shape (n, ...)
        One visualization per unit; all-zero ones have cosine 0 with everything.
    n_iter : int
        Sweeps over the units (paper: 20).
    return_signs : bool
        Also return the signs applied, shape (n,), values +-1.

    Returns
    -------
    ndarray, shape like ``vis`` (and signs)
    """
    v = np.asarray(vis, dtype=np.float64)
    n = v.shape[0] if v.ndim else 0
    flat = v.reshape(n, -1)
    norms = np.linalg.norm(flat, axis=1)
    unit = flat / np.where(norms > 0, norms, 1.0)[:, None]
    cos = unit @ unit.T
    np.fill_diagonal(cos, 0.0)
    signs = np.ones(n)
    for _ in range(int(n_iter)):
        flipped = False
        for i in range(n):
            c = signs[i] * float(cos[i] @ signs)
            if c < 0:
                signs[i] = -signs[i]
                flipped = True
        if not flipped:
            break
    out = v * signs.reshape((n,) + (1,) * (v.ndim - 1))
    return (out, signs) if return_signs else out


def subcluster_visualization(vis, units, n_iter: int = 20) -> np.ndarray:
    """Mean of the sign-aligned visualizations of ``units``.

    Parameters
    ----------
    vis : array_like, shape (n_units, ...)
        Per-unit visualizations of one layer (:func:`correlation_visualization`).
    units : sequence of int
        The sub-cluster's units.

    Returns
    -------
    ndarray, shape ``vis.shape[1:]``
    """
    vis = np.asarray(vis)
    units = np.asarray(list(units), dtype=np.int64)
    if units.size == 0:
        raise InvalidInput("subcluster_visualization needs at least one unit")
    if units.min() < 0 or units.max() >= len(vis):
        raise InvalidInput(f"units {units.tolist()} are outside 0..{len(vis) - 1}")
    return align_signs(vis[units], n_iter=n_iter).mean(axis=0)
