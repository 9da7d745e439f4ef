"""Fast calibration checks (the full run with >= 200 replicates is benchmarks/calibration.py).

1. Lesion importance/coherence under the null: the sub-clusters of a real partition are replaced by
   random unit sets of the same sizes (so they are exchangeable with their random controls), many
   replicates are lesioned in one lesion_study call, and the rejection rate of the Fisher and chi2
   network tests at alpha = 0.05 must be consistent with <= 0.05 (the exact binomial interval's lower
   end is <= 0.05). Seeds are fixed, so the test is deterministic.
2. The session-wide correction over many null claims keeps the family-wise rejection rate <= alpha.
"""
from __future__ import annotations

import numpy as np
import pytest
from _models import tiny_mlp

from modtest import claims as session
from modtest import stats
from modtest._random import random_unit_sets
from modtest.cluster import cluster
from modtest.probes.lesion import lesion_study
from modtest.results import Claim, SubCluster

ALPHA = 0.05
N_RANDOM = 20


def _random_partitions(subclusters, n_rep):
    """``n_rep`` copies of ``subclusters`` with random units of the same sizes (cluster r*1000+c)."""
    out = []
    for r in range(n_rep):
        for s in subclusters:
            u = random_unit_sets(s.layer_size, s.size, 1, "null-partition", s.layer, s.cluster, r)[0]
            out.append(SubCluster(s.layer, r * 1000 + s.cluster, tuple(int(v) for v in u), s.layer_size))
    return out


def _per_replicate(rows, p_key, rank_key):
    reps = {}
    for r in rows:
        reps.setdefault(r["cluster"] // 1000, []).append(r)
    nan = float("nan")
    out = []
    for rep in sorted(reps):
        rs = reps[rep]
        p = [nan if r[p_key] is None else r[p_key] for r in rs]
        pr = [nan if r[rank_key] is None else r[rank_key] for r in rs]
        out.append(stats.combine_pvalues(p, N_RANDOM, pr))
    return out


def _rate_ok(pvals):
    p = np.array([v for v in pvals if v == v])
    k, n = int((p <= ALPHA).sum()), len(p)
    lo, hi = stats.binomial_interval(k, n)
    return k, n, lo, hi


@pytest.fixture(scope="module")
def null_lesions():
    # ~20 sub-clusters per replicate, like a real audit (with fewer than 5 expected per grid value the
    # chi2 p-value is simulated: the asymptotic law gave ~9% at alpha=0.05 with 7 sub-clusters)
    model = tiny_mlp(seed=11, widths=(32, 32))
    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 6)).astype("float32")
    y = model.predict(x, verbose=0).argmax(1)
    flip = rng.random(len(y)) < 0.3
    y[flip] = rng.integers(0, 4, flip.sum())
    template = cluster(model, k=10, seed=0).subclusters
    assert len(template) >= 15
    subs = _random_partitions(template, 150)
    res = lesion_study(model, subs, x, y, n_random=N_RANDOM, seed=0, progress=False)
    return res


@pytest.mark.parametrize("measure, p_key, rank_key", [
    ("importance", "p_importance", "p_importance_rank"),
    ("output_coherence", "p_coherence", "p_coherence_rank"),
])
@pytest.mark.parametrize("test", ["fisher_p", "chi2_p"])
def test_null_rejection_rate_at_most_alpha(null_lesions, measure, p_key, rank_key, test):
    nets = _per_replicate(null_lesions.rows, p_key, rank_key)
    assert len(nets) == 150
    k, n, lo, hi = _rate_ok([d[test] for d in nets])
    print(f"{measure} {test}: {k}/{n} = {k / n:.3f}, 95% CI [{lo:.3f}, {hi:.3f}]")
    assert lo <= ALPHA, f"{measure} {test} rejects {k}/{n} null replicates: above alpha={ALPHA}"
    assert k / n <= ALPHA + 0.05  # and not grossly above (a broken test rejects far more often)


def test_null_subcluster_pvalues_uniform_on_grid(null_lesions):
    """Tie-broken (rank) p-values are uniform on the 1/21 grid; inclusive ones are no smaller."""
    p_rank = np.array([r["p_importance_rank"] for r in null_lesions.rows])
    p_incl = np.array([r["p_importance"] for r in null_lesions.rows])
    assert np.all(p_incl >= p_rank - 1e-12)
    _stat, p = stats.chi2_categorical(p_rank, N_RANDOM)
    assert p > 0.001  # uniform on the grid (a gross failure would be p ~ 0)
    k, n, lo, _hi = _rate_ok(p_rank)
    assert lo <= 1 / 21 <= _hi or k / n <= 1 / 21


# --------------------------------------------------------------------------- the session correction

@pytest.fixture
def fast_multipletests(monkeypatch):
    """statsmodels' multipletests calls gc.collect() on every call (~30 ms with Keras loaded):
    harmless once per session, too slow for thousands of simulated sessions."""
    import gc

    monkeypatch.setattr(gc, "collect", lambda *a, **k: 0)  # multipletests imports gc locally

def _claims(pvals):
    return [Claim(name=f"c{i}", measure="importance", method="fisher", statistic=1.0, p_raw=float(p),
                  alpha=ALPHA, n_subclusters=5, nodeid=f"t::{i}", passed=None) for i, p in enumerate(pvals)]


@pytest.mark.parametrize("method", ["holm", "bonferroni", "fdr_bh"])
@pytest.mark.parametrize("grid, m", [(21, 1), (21, 3), (1001, 5), (None, 8)])
def test_familywise_rate_under_global_null(fast_multipletests, method, grid, m):
    """Null p-values (on the k/grid grid, or continuous): P(any claim passes) <= alpha + margin.

    Under the global null the false discovery rate equals the family-wise rate, so fdr_bh is held
    to the same bound.
    """
    rng = np.random.default_rng([len(method), grid or 0, m])
    n_fam = 1500
    any_pass = 0
    for _ in range(n_fam):
        p = rng.integers(1, grid + 1, m) / grid if grid else rng.random(m)
        claims = session.correct_claims(_claims(p), method)
        assert all(c.p_corrected >= c.p_raw - 1e-15 for c in claims)
        any_pass += any(c.passed for c in claims)
    lo, hi = stats.binomial_interval(any_pass, n_fam)
    assert lo <= ALPHA and any_pass / n_fam <= ALPHA + 0.015, (any_pass, n_fam, lo, hi)


def test_correction_none_is_per_claim_rate(fast_multipletests):
    """Without correction the family-wise rate grows with m: the correction is what bounds it."""
    rng = np.random.default_rng(0)
    fam = [any(c.passed for c in session.correct_claims(_claims(rng.random(8)), "none")) for _ in range(500)]
    assert np.mean(fam) > 0.25  # 1 - 0.95**8 = 0.34
