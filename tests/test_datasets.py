"""halves-same/diff and stack-same/diff datasets (paper 3.1.1, A.3)."""
from __future__ import annotations

import numpy as np
import pytest

from modtest.datasets import halves, pairs, resize_width, stack
from modtest.errors import DataError

# six 2x4 images: image i is filled with columns [10i, 10i+1, 10i+2, 10i+3] in every row
X = np.stack([np.tile(10.0 * i + np.arange(4), (2, 1)) for i in range(6)]).astype("float32")
Y = np.array([0, 1, 0, 1, 2, 2])


def test_resize_width_averages_column_pairs_and_handles_odd_widths():
    out = resize_width(X[:1], 2)
    np.testing.assert_array_equal(out[0], [[0.5, 2.5], [0.5, 2.5]])
    odd = resize_width(np.arange(3, dtype="float32").reshape(1, 1, 3), 2)  # box filter of width 1.5
    np.testing.assert_allclose(odd[0, 0], [(0 + 0.5 * 1) / 1.5, (0.5 * 1 + 2) / 1.5])
    assert resize_width(np.ones((2, 3, 4, 3)), 2).shape == (2, 3, 2, 3)


def test_halves_same_composition_and_labels():
    out, y, idx = halves(X, Y, same=True, seed=0, n=50, return_pairs=True)
    assert out.shape == (50, 2, 4) and y.shape == (50,)
    assert (Y[idx[:, 0]] == Y[idx[:, 1]]).all() and (idx[:, 0] != idx[:, 1]).all()
    assert (y == Y[idx[:, 0]]).all()
    for k in range(50):
        a, b = idx[k]
        np.testing.assert_array_equal(out[k, :, :2], [[10 * a + 0.5, 10 * a + 2.5]] * 2)
        np.testing.assert_array_equal(out[k, :, 2:], [[10 * b + 0.5, 10 * b + 2.5]] * 2)


def test_halves_diff_labels_are_the_modular_sum():
    out, y, idx = halves(X, Y, same=False, seed=1, n=200, return_pairs=True)
    assert ((Y[idx[:, 0]] + Y[idx[:, 1]]) % 10 == y).all()
    assert (Y[idx[:, 0]] != Y[idx[:, 1]]).any()  # pairs are not restricted to one class
    big = np.array([7, 8, 9, 9, 3, 4])
    _, y2, idx2 = halves(X, big, same=False, seed=1, n=20, return_pairs=True)
    assert ((big[idx2[:, 0]] + big[idx2[:, 1]]) % 10 == y2).all() and y2.max() < 10


def test_halves_keep_channels_and_default_size():
    x = np.repeat(X[..., None], 3, axis=-1)
    out, y = halves(x, Y, same=True)
    assert out.shape == (6, 2, 4, 3) and y.shape == (6,)


def test_stack_composition_and_shapes():
    out, y, idx = stack(X, Y, same=False, seed=2, n=30, return_pairs=True)
    assert out.shape == (30, 2, 4, 2)
    for k in range(30):
        np.testing.assert_array_equal(out[k, ..., 0], X[idx[k, 0]])
        np.testing.assert_array_equal(out[k, ..., 1], X[idx[k, 1]])
    assert ((Y[idx[:, 0]] + Y[idx[:, 1]]) % 10 == y).all()
    out3, y3 = stack(np.repeat(X[..., None], 3, axis=-1), Y, same=True, n=4)
    assert out3.shape == (4, 2, 4, 6)


def test_pairs_are_seeded_and_same_pairs_cover_the_class():
    a = pairs(Y, True, seed=3, n=400)
    np.testing.assert_array_equal(a, pairs(Y, True, seed=3, n=400))
    assert not np.array_equal(a, pairs(Y, True, seed=4, n=400))
    # class 0 has images 0 and 2: a same pair starting at 0 must end at 2
    assert (a[a[:, 0] == 0, 1] == 2).all()


def test_works_on_sklearn_digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    x, y = halves(d.images, d.target, same=False, n=100)
    assert x.shape == (100, 8, 8) and y.max() <= 9
    x, y = stack(d.images, d.target, same=True, n=100)
    assert x.shape == (100, 8, 8, 2)


def test_rejects_bad_inputs():
    with pytest.raises(DataError, match="images"):
        halves(np.zeros((4, 8)), np.zeros(4, int))
    with pytest.raises(DataError, match="labels"):
        stack(X, Y[:3])
