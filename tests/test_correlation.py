"""Correlation-based visualization and sign alignment (paper 3.1.1, A.3), and the halves-diff check."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest
from scipy.stats import spearmanr

from modtest.errors import InvalidInput
from modtest.probes.correlation import (
    align_signs,
    correlation_visualization,
    spearman_matrix,
    subcluster_visualization,
)


def test_spearman_matrix_matches_scipy_and_constant_columns_give_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(40, 3))
    a[:, 2] = 5.0  # constant unit
    b = np.column_stack([a[:, 0] ** 3, rng.integers(0, 3, 40), np.zeros(40), -a[:, 1]])
    got = spearman_matrix(a, b)
    assert got.shape == (3, 4)
    for i in range(2):
        for j in (0, 1, 3):
            assert got[i, j] == pytest.approx(spearmanr(a[:, i], b[:, j])[0], abs=1e-10)
    assert got[0, 0] == pytest.approx(1.0)  # monotone, nonlinear
    assert got[1, 3] == pytest.approx(-1.0)
    assert (got[2] == 0).all() and (got[:, 2] == 0).all()
    assert np.isfinite(got).all()


def test_correlation_visualization_of_known_units():
    keras = pytest.importorskip("keras")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(3, activation="relu", name="h"),
                              keras.layers.Dense(2, name="out")])
    w = np.zeros((6, 3), "float32")
    w[0, 0] = 1.0  # unit 0 = relu(pixel 0): monotone in pixel 0 only
    w[4, 1] = -1.0  # unit 1 = relu(-pixel 4) = 0 on positive data: constant (dead)
    w[5, 2] = 2.0
    model.get_layer("h").set_weights([w, np.zeros(3, "float32")])
    x = np.random.default_rng(1).random((200, 2, 3)).astype("float32")
    x[:, 1, 1] = 0.3  # a constant pixel
    vis = correlation_visualization(model, "h", x)
    assert vis.shape == (3, 2, 3)
    assert vis[0, 0, 0] == pytest.approx(1.0)
    assert vis[2, 1, 2] == pytest.approx(1.0)
    assert np.abs(vis[0].ravel()[1:]).max() < 0.3
    assert (vis[1] == 0).all() and (vis[:, 1, 1] == 0).all()


def test_correlation_visualization_uses_l1_norm_of_conv_maps():
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 1, name="c"),
                              keras.layers.ReLU(name="r"), keras.layers.Flatten(),
                              keras.layers.Dense(2, name="out")])
    model.get_layer("c").set_weights([np.array([[[[1.0, -1.0]]]], "float32"), np.zeros(2, "float32")])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 4, 4, 1)).astype("float32")
    vis = correlation_visualization(model, "c", x)  # reads the ReLU after the conv
    assert vis.shape == (2, 4, 4, 1)
    l1 = np.maximum(x, 0).reshape(100, -1).sum(1)
    want = [spearmanr(l1, x.reshape(100, -1)[:, k])[0] for k in range(16)]
    np.testing.assert_allclose(vis[0].ravel(), want, atol=1e-10)


def test_align_signs_recovers_a_pattern_from_anticorrelated_copies():
    rng = np.random.default_rng(0)
    pattern = rng.normal(size=(6, 6))
    signs = np.array([1, -1, 1, -1, -1, 1, -1, 1])  # balanced: the naive mean is noise
    vis = signs[:, None, None] * (pattern + 0.3 * rng.normal(size=(8, 6, 6)))
    assert abs(np.corrcoef(vis.mean(0).ravel(), pattern.ravel())[0, 1]) < 0.5  # naive mean cancels
    aligned, got = align_signs(vis, return_signs=True)
    assert len(set(got * signs)) == 1  # every copy flipped to one common sign
    mean = subcluster_visualization(vis, range(8))
    cos = mean.ravel() @ pattern.ravel() / (np.linalg.norm(mean) * np.linalg.norm(pattern))
    assert abs(cos) > 0.98
    np.testing.assert_allclose(mean, aligned.mean(0))


def test_align_signs_by_hand_and_zero_vectors():
    vis = np.array([[1.0, 0.0], [-1.0, 0.1], [0.0, 0.0]])
    out, s = align_signs(vis, n_iter=1, return_signs=True)
    # unit 0: cos with unit 1 is about -0.995 -> flipped; unit 1 then agrees; zero vector untouched
    assert s.tolist() == [-1.0, 1.0, 1.0]
    np.testing.assert_array_equal(out[2], [0.0, 0.0])
    assert align_signs(vis, n_iter=0).tolist() == vis.tolist()


def test_subcluster_visualization_rejects_bad_units():
    with pytest.raises(InvalidInput, match="outside"):
        subcluster_visualization(np.zeros((3, 2)), [0, 3])
    with pytest.raises(InvalidInput, match="at least one unit"):
        subcluster_visualization(np.zeros((3, 2)), [])


# ------------------------------------------------------------------------------- halves-diff


def _half_selectivity(v, width):
    a = np.abs(np.asarray(v))  # (H, W): one picture
    left, right = a[..., : width // 2].sum(), a[..., width // 2:].sum()
    return abs(left - right) / (left + right + 1e-12)


def _halves_experiment(same: bool, seed: int, n_train: int = 20000, epochs: int = 6, k: int = 8):
    """Train a small seeded MLP on halves-same/diff digits; compare how selective to one half the
    correlation visualizations of first-layer sub-clusters are, against random same-size sets."""
    keras = pytest.importorskip("keras")
    from sklearn.datasets import load_digits

    from modtest.cluster import cluster
    from modtest.datasets import halves

    d = load_digits()
    x0, y0 = (d.images / 16.0).astype("float32"), d.target
    train = np.arange(len(x0)) < 1400
    xtr, ytr = halves(x0[train], y0[train], same=same, seed=seed, n=n_train)
    xte, yte = halves(x0[~train], y0[~train], same=same, seed=seed + 1, n=2000)
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8, 8)), keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu", name="h1"),
        keras.layers.Dense(64, activation="relu", name="h2"),
        keras.layers.Dense(64, activation="relu", name="h3"),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(keras.optimizers.Adam(0.003), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(xtr, ytr, epochs=epochs, batch_size=128, verbose=0)
    acc = float(model.evaluate(xte, yte, verbose=0)[1])
    vis = correlation_visualization(model, "h1", xte)
    subs = [s for s in cluster(model, k=k, seed=0).subclusters if s.layer == "h1" and s.size >= 3]
    rng = np.random.default_rng(seed)
    true = np.array([_half_selectivity(subcluster_visualization(vis, s.units), 8) for s in subs])
    rand = np.array([[_half_selectivity(subcluster_visualization(vis, rng.choice(64, s.size, replace=False)), 8)
                      for _ in range(20)] for s in subs])
    units = np.array([_half_selectivity(v, 8) for v in vis])
    return {"acc": acc, "true": true, "random": rand, "units": units,
            "frac_true_above_random": float((true[:, None] > rand).mean())}


def test_halves_diff_first_layer_units_are_one_sided():
    """Fast, robust part of the halves check: first-layer units of a halves-diff MLP are far more
    one-sided than those of a halves-same MLP (measured, seeds 0-3: mean selectivity 0.13-0.20
    against 0.027-0.035). The sub-cluster-vs-random comparison is the slow report below."""
    diff = _halves_experiment(same=False, seed=0, n_train=6000, epochs=5)
    same = _halves_experiment(same=True, seed=0, n_train=6000, epochs=5)
    assert same["acc"] > 0.8 and diff["acc"] > 0.25  # chance is 0.1
    assert diff["units"].mean() > 3 * same["units"].mean(), (diff["units"].mean(), same["units"].mean())


@pytest.mark.slow
def test_halves_diff_subclusters_are_selective_to_one_half_report():
    """Paper 3.1.1: on halves-diff, first-layer true sub-clusters tend to be selective to one half.

    Kept as a slow, printed report (run with ``-m slow -s``) because the effect is not robust per
    seed: with the settings below, P(true sub-cluster more one-sided than a random same-size set) on
    halves-diff was 0.77, 0.92, 0.42, 0.82, 0.84, 0.65 for seeds 0-5 (seed 2: no effect), against
    0.33-0.75 on halves-same (where every picture is two-sided: selectivity ~0.02 against ~0.3).
    Only the effect pooled over the six seeds is asserted.
    """
    rows = {False: [], True: []}
    for seed in range(6):
        for same in (False, True):
            r = _halves_experiment(same=same, seed=seed)
            rows[same].append(r)
            print(f"halves-{'same' if same else 'diff'} seed={seed} acc={r['acc']:.3f} "
                  f"unit selectivity={r['units'].mean():.3f} true sub-clusters={np.round(r['true'], 2)} "
                  f"random mean={r['random'].mean():.3f} P(true > random)={r['frac_true_above_random']:.2f}")
    diff = np.mean([r["frac_true_above_random"] for r in rows[False]])
    same = np.mean([r["frac_true_above_random"] for r in rows[True]])
    gap = np.mean([r["true"].mean() - r["random"].mean() for r in rows[False]])
    gap_same = np.mean([r["true"].mean() - r["random"].mean() for r in rows[True]])
    print(f"pooled P(true > random): halves-diff {diff:.2f}, halves-same {same:.2f}; mean selectivity "
          f"gap true - random: halves-diff {gap:.3f}, halves-same {gap_same:.3f}")
    # measured: 0.74 vs 0.51; gaps 0.175 vs about 0.0 (halves-same pictures are barely one-sided)
    assert diff > 0.6 and gap > 0.05 and gap > gap_same + 0.05
