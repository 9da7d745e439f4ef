"""The paper's parallelizable tasks (3.1.1, A.3): halves-same/diff and stack-same/diff.

``halves``: two images, each resized to half the width, side by side (the MLP task).
``stack``: two images stacked along the channel axis (the CNN task: max pooling makes location moot).
``same``: both images of one class, labelled with it. ``diff``: two random images, labelled with the
sum of their labels modulo 10.
"""
from __future__ import annotations

import numpy as np

from modtest._random import keyed_rng
from modtest.errors import DataError, InvalidInput

__all__ = ["halves", "stack", "pairs", "resize_width"]


def _check(x, y):
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim not in (3, 4):
        raise DataError(f"x must be (N, H, W) or (N, H, W, C) images, got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"y must be (N,) integer labels for {len(x)} images, got shape {y.shape}")
    if len(x) < 2:
        raise DataError(f"need at least 2 images, got {len(x)}")
    if not np.issubdtype(y.dtype, np.integer):
        if np.all(np.asarray(y) == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError("y must hold integer class labels")
    return x, y.astype(np.int64)


def pairs(y, same: bool, seed: int = 0, n: int | None = None) -> np.ndarray:
    """Index pairs (n, 2): ``same`` -> two distinct images of one class (class of a random image);
    otherwise two independent random images."""
    y = np.asarray(y, dtype=np.int64)
    n = len(y) if n is None else int(n)
    if n < 0:
        raise InvalidInput(f"n must be >= 0, got {n}")
    rng = keyed_rng("modtest.datasets.pairs", int(seed), bool(same))
    first = rng.integers(0, len(y), size=n)
    if not same:
        return np.stack([first, rng.integers(0, len(y), size=n)], axis=1)
    by_class = {c: np.flatnonzero(y == c) for c in np.unique(y)}
    second = np.empty(n, dtype=np.int64)
    for i, a in enumerate(first):
        pool = by_class[y[a]]
        if len(pool) == 1:
            second[i] = a
            continue
        j = pool[rng.integers(0, len(pool) - 1)]
        second[i] = j if j != a else pool[-1]  # uniform over the class minus ``a``
    return np.stack([first, second], axis=1)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) box-filter resampling: output pixel k averages input over [k, k+1) * n_in/n_out."""
    m = np.zeros((n_out, n_in))
    step = n_in / n_out
    for k in range(n_out):
        lo, hi = k * step, (k + 1) * step
        for j in range(int(np.floor(lo)), int(np.ceil(hi))):
            m[k, j] = max(0.0, min(hi, j + 1) - max(lo, j))
        m[k] /= m[k].sum()
    return m


def resize_width(x, width: int) -> np.ndarray:
    """Area-resize images (N, H, W[, C]) to ``width`` columns (exact pair averaging for W = 2 width)."""
    x = np.asarray(x)
    m = _area_matrix(x.shape[2], int(width))
    out = np.einsum("kw,nhw...->nhk...", m, x.astype(np.float64))
    return out.astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float32)


def _labels(y, idx, same: bool, modulus: int):
    a, b = y[idx[:, 0]], y[idx[:, 1]]
    return a.copy() if same else (a + b) % modulus


def halves(x, y, same: bool = True, seed: int = 0, n: int | None = None, *, modulus: int = 10,
           return_pairs: bool = False):
    """Halves-same / halves-diff: two images squeezed to half width, left and right.

    Parameters
    ----------
    x : ndarray, shape (N, H, W) or (N, H, W, C)
    y : ndarray, shape (N,)
        Integer class labels.
    same : bool
        True: both halves of one class, label that class. False: two random images, label
        ``(y_left + y_right) % modulus``.
    seed : int
    n : int or None
        Number of composite images (default N).
    modulus : int
        The modulus of the diff label (paper: 10 classes).
    return_pairs : bool
        Also return the (n, 2) indices of the left and right images.

    Returns
    -------
    x_new : ndarray, shape like ``x`` with n images
        Left half = left image resized to W // 2 columns, right half = right image resized to
        W - W // 2 columns.
    y_new : ndarray, shape (n,)
    """
    x, y = _check(x, y)
    idx = pairs(y, same, seed, n)
    w = x.shape[2]
    left = resize_width(x[idx[:, 0]], w // 2)
    right = resize_width(x[idx[:, 1]], w - w // 2)
    out = np.concatenate([left, right], axis=2)
    y_new = _labels(y, idx, same, modulus)
    return (out, y_new, idx) if return_pairs else (out, y_new)


def stack(x, y, same: bool = True, seed: int = 0, n: int | None = None, *, modulus: int = 10,
          return_pairs: bool = False):
    """Stack-same / stack-diff: two images as channels of one.

    Parameters
    ----------
    x : ndarray, shape (N, H, W) or (N, H, W, C)
    y, same, seed, n, modulus, return_pairs
        As in :func:`halves`.

    Returns
    -------
    x_new : ndarray, shape (n, H, W, 2) for (N, H, W) input, (n, H, W, 2C) otherwise
        Channels ``[:C]`` from the first image, ``[C:]`` from the second.
    y_new : ndarray, shape (n,)
    """
    x, y = _check(x, y)
    if x.ndim == 3:
        x = x[..., None]
    idx = pairs(y, same, seed, n)
    out = np.concatenate([x[idx[:, 0]], x[idx[:, 1]]], axis=-1)
    y_new = _labels(y, idx, same, modulus)
    return (out, y_new, idx) if return_pairs else (out, y_new)
