"""The network families of the replication, trained seeded on digits (paper A.2, A.3).

Every family is trained on the same stratified split of scikit-learn's digits (1,257 training and 540
test images, split seed 0); replicate ``r`` differs only in its training seed. The parallelizable
tasks (halves-same/diff for MLPs, stack-same/diff for CNNs) are built by :mod:`modtest.datasets`
from the training and the test images separately, so no test digit is seen in training.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from examples.digits import build_cnn, digits_split, train, train_cnn, train_mlp

__all__ = ["Family", "FAMILIES", "MLP_FAMILIES", "family_data", "train_family"]


@dataclass(frozen=True)
class Family:
    """One training condition: architecture, task and regularisation."""

    name: str
    label: str
    arch: str  # "mlp" or "cnn"
    task: str = "digits"  # "digits", "halves" or "stack"
    same: bool = True  # for halves / stack: same-class pair (True) or label sum mod 10 (False)
    dropout: float = 0.0
    prune: bool = False


FAMILIES = {f.name: f for f in [
    Family("mlp", "MLP", "mlp"),
    Family("mlp_dropout", "MLP + dropout", "mlp", dropout=0.5),
    Family("mlp_pruned", "MLP + pruning", "mlp", prune=True),
    Family("cnn", "CNN (BN)", "cnn"),
    # the paper's halves MLPs: dropout for halves-same, none for halves-diff (modulo arithmetic),
    # both pruned like the paper's small MLPs
    Family("halves_same", "MLP halves-same", "mlp", "halves", True, dropout=0.5, prune=True),
    Family("halves_diff", "MLP halves-diff", "mlp", "halves", False, dropout=0.0, prune=True),
    Family("stack_same", "CNN stack-same", "cnn", "stack", True),
    Family("stack_diff", "CNN stack-diff", "cnn", "stack", False),
]}

MLP_FAMILIES = [n for n, f in FAMILIES.items() if f.arch == "mlp"]

#: Composite training sets hold this many times the 1,257 training images (pairs are drawn anew).
PAIR_FACTOR = 2


def family_data(family: Family, split_seed: int = 0):
    """(x_train, y_train, x_test, y_test) for ``family``; test sets always hold 540 examples."""
    from modtest import datasets

    xtr, ytr, xte, yte = digits_split(split_seed)
    if family.task == "digits":
        return xtr, ytr, xte, yte
    make = datasets.halves if family.task == "halves" else datasets.stack
    a, b = make(xtr, ytr, same=family.same, seed=split_seed, n=PAIR_FACTOR * len(xtr))
    c, d = make(xte, yte, same=family.same, seed=split_seed + 1)
    return a.astype(np.float32), b, c.astype(np.float32), d


def train_family(family: Family, xtr, ytr, seed: int, *, epochs_scale: float = 1.0):
    """Train one replicate of ``family`` (seeded); ``epochs_scale`` < 1 shortens training (tests)."""
    import keras

    e = lambda n: max(1, int(round(n * epochs_scale)))  # noqa: E731
    if family.arch == "mlp":
        return train_mlp(xtr, ytr, seed=seed, epochs=e(20), prune_epochs=e(20) if family.prune else 0,
                         sparsity=0.9, dropout=family.dropout)
    if xtr.shape[-1] == 1:
        return train_cnn(xtr, ytr, seed=seed, epochs=e(15))
    keras.utils.set_random_seed(seed)
    model = build_cnn(input_shape=tuple(xtr.shape[1:]), name=f"digits_cnn_{family.name}")
    return train(model, xtr, ytr, epochs=e(15), batch_size=64, seed=seed)
