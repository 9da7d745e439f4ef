"""Counter-based randomness for random controls.

A control set is drawn from a Philox generator keyed on (model hash, probe, sub-cluster, replicate),
so results never depend on worker count, work order or cache state.
"""
from __future__ import annotations

import hashlib

import numpy as np


def keyed_rng(*key) -> np.random.Generator:
    """A generator whose stream is a pure function of ``key`` (any reprable values)."""
    digest = hashlib.sha256(repr(tuple(key)).encode("utf-8")).digest()
    return np.random.Generator(np.random.Philox(key=int.from_bytes(digest[:16], "little")))


def random_unit_sets(layer_size: int, size: int, n: int, *key, start: int = 0) -> np.ndarray:
    """Random sets ``start .. start + n - 1`` of ``size`` distinct units out of ``layer_size``.

    Returns an int array of shape (n, size), each row sorted; replicate ``i`` depends only on
    ``key + (i,)``, so replicates can be drawn anywhere, in any order, in any number of batches
    (more controls later: ``start=n``) with the same result.
    """
    if not 0 <= size <= layer_size:
        raise ValueError(f"cannot draw {size} units out of a layer of {layer_size}")
    out = np.empty((n, size), dtype=np.int64)
    for j in range(n):
        out[j] = np.sort(keyed_rng(*key, start + j).choice(layer_size, size=size, replace=False))
    return out
