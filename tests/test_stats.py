"""Tests of modtest.stats: empirical p-values, combinations, corrections, taxonomy, calibration."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from statsmodels.stats.multitest import multipletests

from modtest import stats as S
from modtest.errors import InvalidInput
from modtest.stats import binomial_interval, combine_pvalues, empirical_p

N20 = 20  # the paper's number of random controls for lesion tests


def _chi2_sf_even(x: float, df: int) -> float:
    """Chi-squared survival function for even df, by the closed form (no scipy):
    sf(x; 2k) = exp(-x/2) * sum_{j<k} (x/2)^j / j!."""
    assert df % 2 == 0
    h = x / 2.0
    return math.exp(-h) * sum(h**j / math.factorial(j) for j in range(df // 2))


# --------------------------------------------------------------------------- empirical_p

class TestEmpiricalP:
    R = [1.0, 2.0, 3.0, 2.0, 0.0]  # five controls; true = 2 ties with two of them

    def test_right_inclusive_counts_ties_against(self):
        # random >= 2: {2, 3, 2} -> 3; p = (1 + 3) / 6
        assert S.empirical_p(2.0, self.R) == pytest.approx(4 / 6)

    def test_right_strict(self):
        # random > 2: {3} -> 1; p = 2 / 6
        assert S.empirical_p(2.0, self.R, ties="strict") == pytest.approx(2 / 6)

    def test_left_inclusive(self):
        # random <= 2: {1, 2, 2, 0} -> 4; p = 5 / 6
        assert S.empirical_p(2.0, self.R, side="left") == pytest.approx(5 / 6)

    def test_left_strict(self):
        # random < 2: {1, 0} -> 2; p = 3 / 6
        assert S.empirical_p(2.0, self.R, side="left", ties="strict") == pytest.approx(3 / 6)

    def test_extremes(self):
        assert S.empirical_p(10.0, self.R) == pytest.approx(1 / 6)  # beats all
        assert S.empirical_p(-1.0, self.R) == pytest.approx(1.0)  # beaten by all
        assert S.empirical_p(-1.0, self.R, side="left") == pytest.approx(1 / 6)

    def test_returns_python_float_for_scalar(self):
        assert isinstance(S.empirical_p(2.0, self.R), float)

    @pytest.mark.parametrize("side", ["right", "left"])
    @pytest.mark.parametrize("ties", ["inclusive", "strict"])
    def test_vectorized_equals_scalar_loop(self, side, ties):
        rng = np.random.default_rng(3)
        true = rng.integers(0, 6, size=40).astype(float)  # small integers: many ties
        rand = rng.integers(0, 6, size=(40, 9)).astype(float)
        vec = S.empirical_p(true, rand, side=side, ties=ties)
        assert vec.shape == (40,)
        loop = [S.empirical_p(t, r, side=side, ties=ties) for t, r in zip(true, rand)]
        np.testing.assert_array_equal(vec, loop)

    def test_nan_true_gives_nan(self):
        p = S.empirical_p(np.array([np.nan, 5.0]), np.zeros((2, 4)))
        assert math.isnan(p[0]) and p[1] == pytest.approx(1 / 5)
        assert math.isnan(S.empirical_p(float("nan"), [1.0, 2.0]))

    def test_nan_control_gives_nan(self):
        assert math.isnan(S.empirical_p(1.0, [0.0, np.nan]))

    @pytest.mark.parametrize("kw, word", [({"side": "both"}, "side"), ({"ties": "mid"}, "ties")])
    def test_invalid_option_message(self, kw, word):
        with pytest.raises(InvalidInput) as ei:
            S.empirical_p(1.0, [0.0], **kw)
        msg = str(ei.value)
        assert word in msg and repr(next(iter(kw.values()))) in msg and "\n" not in msg

    @pytest.mark.parametrize("true, rand", [(1.0, [[0.0]]), ([1.0, 2.0], [[0.0]]), ([1.0], [0.0]),
                                            (1.0, [])])
    def test_shape_errors(self, true, rand):
        with pytest.raises(InvalidInput):
            S.empirical_p(true, rand)


@settings(max_examples=150, deadline=None)
@given(true=st.floats(-1e6, 1e6), random=st.lists(st.floats(-1e6, 1e6), min_size=1, max_size=30),
       delta=st.floats(0, 1e6), side=st.sampled_from(["right", "left"]),
       ties=st.sampled_from(["inclusive", "strict"]))
def test_empirical_p_properties(true, random, delta, side, ties):
    n = len(random)
    p = S.empirical_p(true, random, side=side, ties=ties)
    assert 1 / (n + 1) - 1e-12 <= p <= 1 + 1e-12
    k = p * (n + 1)
    assert abs(k - round(k)) < 1e-9  # on the grid k/(n+1)
    raised = S.empirical_p(true + delta, random, side=side, ties=ties)
    if side == "right":
        assert raised <= p  # raising true never raises the right-sided p
    else:
        assert raised >= p


# --------------------------------------------------------------------------- combinations

def test_fisher_centered_by_hand():
    # p = [1/21, 1/21, 11/21, 21/21]; centred by 1/42: [1/42, 1/42, 21/42, 41/42]
    p = [1 / 21, 1 / 21, 11 / 21, 1.0]
    stat_hand = -2 * (math.log(1 / 42) + math.log(1 / 42) + math.log(1 / 2) + math.log(41 / 42))
    # = 4 log 42 + 2 log 2 + 2 log(42/41) = 16.3852...
    assert stat_hand == pytest.approx(4 * math.log(42) + 2 * math.log(2) + 2 * math.log(42 / 41))
    pval_hand = _chi2_sf_even(stat_hand, 8)  # 2n = 8 degrees of freedom
    stat, pval = S.fisher_centered(p, N20)
    assert stat == pytest.approx(stat_hand, rel=1e-12)
    assert pval == pytest.approx(pval_hand, rel=1e-10)
    assert pval == pytest.approx(0.0371875, abs=1e-6)


def test_fisher_centered_nine_controls():
    # the paper's feature-visualisation setting: 9 controls, subtract 0.05
    p = [0.1, 0.1, 0.1, 0.5, 1.0]
    stat_hand = -2 * (3 * math.log(0.05) + math.log(0.45) + math.log(0.95))
    stat, pval = S.fisher_centered(p, 9)
    assert stat == pytest.approx(stat_hand)
    assert pval == pytest.approx(_chi2_sf_even(stat_hand, 10))


def test_chi2_categorical_by_hand():
    # 4 controls -> grid {0.2, 0.4, 0.6, 0.8, 1.0}; counts 5, 1, 1, 1, 2; expected 10/5 = 2 each
    p = [0.2, 0.2, 0.2, 0.2, 0.4, 1.0, 1.0, 0.6, 0.2, 0.8]
    stat_hand = ((5 - 2) ** 2 + (1 - 2) ** 2 + (1 - 2) ** 2 + (1 - 2) ** 2 + (2 - 2) ** 2) / 2  # = 6
    assert stat_hand == 6.0
    pval_hand = math.exp(-3) * (1 + 3)  # sf(6; df=4) = e^{-3}(1 + 3)
    stat, pval = S.chi2_categorical(p, 4, method="asymptotic")
    assert stat == pytest.approx(stat_hand)
    assert pval == pytest.approx(pval_hand, rel=1e-10)


def test_chi2_categorical_twenty_controls_by_hand():
    # counts over 21 bins: bin 1 -> 2, bin 11 -> 1, bin 21 -> 1, 18 empty bins; expected 4/21
    p = [1 / 21, 1 / 21, 11 / 21, 1.0]
    mu = 4 / 21
    stat_hand = ((2 - mu) ** 2 + 2 * (1 - mu) ** 2 + 18 * mu**2) / mu  # = 27.5
    assert stat_hand == pytest.approx(27.5)
    stat, pval = S.chi2_categorical(p, N20, method="asymptotic")
    assert stat == pytest.approx(stat_hand)
    assert pval == pytest.approx(_chi2_sf_even(stat_hand, 20), rel=1e-10)


def test_chi2_categorical_rounds_to_grid_and_rejects_off_grid():
    a = S.chi2_categorical([1 / 21 + 5e-10, 2 / 21], N20)
    b = S.chi2_categorical([1 / 21, 2 / 21], N20)
    assert a == b
    with pytest.raises(InvalidInput, match="grid"):
        S.chi2_categorical([0.048], N20)  # the paper's rounded 1/21
    with pytest.raises(InvalidInput):
        S.chi2_categorical([0.0], N20)


def test_fisher_rejects_impossible_p():
    with pytest.raises(InvalidInput):
        S.fisher_centered([0.01], N20)  # below half a step: centring would go negative
    with pytest.raises(InvalidInput):
        S.fisher_centered([1.5], N20)


@pytest.mark.parametrize("fn", [S.fisher_centered, S.chi2_categorical])
def test_empty_gives_nan(fn):
    stat, pval = fn([], N20)
    assert math.isnan(stat) and math.isnan(pval)


@pytest.mark.parametrize("fn", [S.fisher_centered, S.chi2_categorical])
def test_nan_is_refused_directly(fn):
    with pytest.raises(InvalidInput, match="NaN"):
        fn([1 / 21, np.nan], N20)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "20"])
def test_n_random_validated(bad):
    with pytest.raises(InvalidInput, match="n_random"):
        S.fisher_centered([1.0], bad)


def test_combine_pvalues_drops_and_counts_nans():
    p = [1 / 21, np.nan, 1 / 21, 11 / 21, 1.0, np.nan]
    res = S.combine_pvalues(p, N20)
    assert res["n"] == 4 and res["n_excluded"] == 2
    f = S.fisher_centered([1 / 21, 1 / 21, 11 / 21, 1.0], N20)
    c = S.chi2_categorical([1 / 21, 1 / 21, 11 / 21, 1.0], N20)
    assert (res["fisher_stat"], res["fisher_p"]) == f
    assert (res["chi2_stat"], res["chi2_p"]) == c


def test_combine_pvalues_all_nan():
    res = S.combine_pvalues([np.nan, np.nan], N20)
    assert res["n"] == 0 and res["n_excluded"] == 2
    assert all(math.isnan(res[k]) for k in ("fisher_stat", "fisher_p", "chi2_stat", "chi2_p"))


@settings(max_examples=100, deadline=None)
@given(data=st.data(), n_random=st.integers(1, 50))
def test_combine_properties(data, n_random):
    ks = data.draw(st.lists(st.integers(1, n_random + 1), min_size=1, max_size=60))
    res = S.combine_pvalues([k / (n_random + 1) for k in ks], n_random)
    assert 0.0 <= res["fisher_p"] <= 1.0 and 0.0 <= res["chi2_p"] <= 1.0
    assert res["fisher_stat"] >= 0 and res["chi2_stat"] >= 0
    assert res["n"] == len(ks) and res["n_excluded"] == 0


@pytest.mark.parametrize("n_random", [1, 9, 20, 50, 1000])
def test_centring_makes_fisher_mean_below_two(n_random):
    """The Jensen argument of the module docstring: under the null, E[-2 log p'] < 2 = chi2(2) mean."""
    k = np.arange(1, n_random + 2)
    mean = float(np.mean(-2 * np.log((k - 0.5) / (n_random + 1))))
    assert mean < 2.0


# --------------------------------------------------------------------------- correction

P_FIXED = [
    np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.5, 1.0]),
    np.array([0.01, 0.02, 0.03, 0.04, 0.05]),
    np.array([0.3]),
]


@pytest.mark.parametrize("method", ["holm", "fdr_bh", "bonferroni"])
@pytest.mark.parametrize("p", P_FIXED)
def test_correct_equals_statsmodels(method, p):
    reject, adj = S.correct(p, method=method, alpha=0.05)
    ref_reject, ref_adj, _, _ = multipletests(p, alpha=0.05, method=method)
    np.testing.assert_array_equal(reject, ref_reject)
    np.testing.assert_allclose(adj, ref_adj)
    assert reject.dtype == bool


def test_correct_known_values():
    # Holm by hand on [0.01, 0.04, 0.03]: sorted 0.01*3, 0.03*2, 0.04*1 -> 0.03, 0.06, 0.06 (monotone)
    reject, adj = S.correct([0.01, 0.04, 0.03], "holm", 0.05)
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06])
    np.testing.assert_array_equal(reject, [True, False, False])


def test_correct_none_is_raw():
    p = P_FIXED[0]
    reject, adj = S.correct(p, "none", 0.05)
    np.testing.assert_array_equal(adj, p)
    np.testing.assert_array_equal(reject, p <= 0.05)
    # p == alpha is rejected, as statsmodels does for the other methods (e.g. Bonferroni 0.025 * 2)
    np.testing.assert_array_equal(S.correct([0.05, 0.0501], "none", 0.05)[0], [True, False])
    np.testing.assert_array_equal(S.correct([0.025, 0.025], "bonferroni", 0.05)[0], [True, True])


def test_correct_unknown_method():
    with pytest.raises(InvalidInput) as ei:
        S.correct([0.1], "sidak")
    msg = str(ei.value)
    assert "'sidak'" in msg and all(m in msg for m in S.CORRECTION_METHODS)


def test_correct_empty_and_nan():
    reject, adj = S.correct([], "holm")
    assert reject.shape == (0,) and adj.shape == (0,) and reject.dtype == bool
    reject, adj = S.correct([0.01, np.nan, 0.02], "bonferroni")
    np.testing.assert_allclose(adj, [0.02, np.nan, 0.04])  # NaN left out: m = 2
    np.testing.assert_array_equal(reject, [True, False, True])


def test_correct_validates():
    with pytest.raises(InvalidInput):
        S.correct([1.2], "holm")
    with pytest.raises(InvalidInput, match="alpha"):
        S.correct([0.1], "holm", alpha=1.5)


@settings(max_examples=60, deadline=None)
@given(p=st.lists(st.floats(0, 1), min_size=1, max_size=40), method=st.sampled_from(S.CORRECTION_METHODS))
def test_correct_properties(p, method):
    raw = np.array(p)
    reject, adj = S.correct(raw, method)
    assert np.all(adj >= raw - 1e-12)
    assert np.all((adj >= 0) & (adj <= 1))
    assert reject.shape == raw.shape


# --------------------------------------------------------------------------- taxonomy

def _row(fraction, drop, p, p_left):
    return {"fraction": fraction, "drop": drop, "p_importance": p, "p_importance_left": p_left}


# (row, expected): p values are the paper's rounded ones turned back into k/21; drop = -Acc. diff.
TAXONOMY_CASES = [
    (_row(0.404, 0.2484, 1 / 21, 1.0), S.IMPORTANT),  # Table 7, 1-1
    (_row(0.113, 0.006, 1 / 21, 1.0), S.SIG_NOT_DIFF),  # Table 7, 2-3
    (_row(0.563, 0.0379, 3 / 21, 18 / 21), S.DIFF_NOT_SIG),  # Table 7, 4-0
    (_row(0.191, -0.0014, 1.0, 1 / 21), S.PRUNABLE),  # Table 7, 2-7 (accuracy rose)
    (_row(1.0, 0.8043, 1 / 21, 1.0), S.COMPLETE),  # Table 8, 1-7
    (_row(0.005, 0.0, 10 / 21, 1.0), S.SMALL),  # Table 7, 1-0
    (_row(0.111, 0.0016, 9 / 21, 13 / 21), S.OTHER),  # Table 7, 1-3
    (_row(0.027, 0.0023, 1 / 21, 1.0), S.SMALL),  # Table 7, 2-2: small wins over significant
    (_row(0.113, 0.0017, 2 / 21, 1.0), S.OTHER),  # Table 7, 4-4
    (_row(0.984, 0.8043, 3 / 21, 1.0), S.DIFF_NOT_SIG),  # Table 8, 2-7
    (_row(0.383, 0.0, 1.0, 1 / 21), S.PRUNABLE),  # Table 8, 7-5
]


@pytest.mark.parametrize("row, expected", TAXONOMY_CASES)
def test_categorize_paper_rows(row, expected):
    got = S.categorize(row["fraction"], row["drop"], row["p_importance"], row["p_importance_left"], N20)
    assert got == expected


def test_every_category_covered_by_paper_rows():
    assert {e for _, e in TAXONOMY_CASES} == set(S.CATEGORIES)


def test_categories_constants():
    assert S.CATEGORIES == ("important", "sig-but-not-diff", "diff-but-not-sig", "prunable",
                            "complete", "small", "other")


@pytest.mark.parametrize("args, kw, expected", [
    ((0.2, 0.01, 1 / 21, 1.0), {}, S.SIG_NOT_DIFF),  # drop exactly 1 pp is not "> 1 pp"
    ((0.2, 0.0101, 1 / 21, 1.0), {}, S.IMPORTANT),
    ((0.05, 0.5, 1 / 21, 1.0), {}, S.IMPORTANT),  # exactly 5% is not small
    ((0.0499, 0.5, 1 / 21, 1.0), {}, S.SMALL),
    ((0.2, 0.01, 1.0, 1 / 21), {}, S.OTHER),  # prunable needs drop strictly < min_drop
    ((0.2, 0.0, 1.0, 2 / 21), {}, S.OTHER),  # not below *all* controls
    ((0.2, 0.5, 2 / 21, 1.0), {}, S.DIFF_NOT_SIG),
    ((0.2, 0.5, 2 / 21, 1.0), {"significance": 0.1}, S.IMPORTANT),
    ((0.2, 0.5, 2 / 21, 1.0), {"min_drop": 0.6}, S.OTHER),
    ((0.03, 0.5, 1 / 21, 1.0), {"min_fraction": 0.02}, S.IMPORTANT),
    ((0.2, np.nan, np.nan, np.nan), {}, S.OTHER),
])
def test_categorize_thresholds(args, kw, expected):
    assert S.categorize(*args, N20, **kw) == expected


def test_categorize_significance_uses_n_random():
    # 1/10 beats all of 9 controls but not of 20
    assert S.categorize(0.2, 0.5, 0.1, 1.0, 9) == S.IMPORTANT
    assert S.categorize(0.2, 0.5, 0.1, 1.0, N20) == S.DIFF_NOT_SIG


def test_categorize_rejects_bad_fraction():
    with pytest.raises(InvalidInput, match="fraction"):
        S.categorize(1.5, 0.0, 1.0, 1.0, N20)
    with pytest.raises(InvalidInput, match="fraction"):
        S.categorize(np.nan, 0.0, 1.0, 1.0, N20)


def test_categorize_rows_and_counts():
    rows = [r for r, _ in TAXONOMY_CASES]
    cats = S.categorize_rows(rows, N20)
    assert cats == [e for _, e in TAXONOMY_CASES]
    counts = S.category_counts(cats)
    assert list(counts) == list(S.CATEGORIES)
    assert counts == {"important": 1, "sig-but-not-diff": 1, "diff-but-not-sig": 2, "prunable": 2,
                      "complete": 1, "small": 2, "other": 2}


def test_categorize_rows_thresholds_and_none():
    rows = [_row(0.2, 0.5, 2 / 21, 1.0), _row(0.2, None, None, None)]
    assert S.categorize_rows(rows, N20, significance=0.1) == [S.IMPORTANT, S.OTHER]
    with pytest.raises(InvalidInput, match="min_dorp"):
        S.categorize_rows(rows, N20, min_dorp=0.1)
    with pytest.raises(InvalidInput, match="p_importance_left"):
        S.categorize_rows([{"fraction": 0.2, "drop": 0.1, "p_importance": 0.5}], N20)


def test_category_counts_zeros_and_unknown():
    assert S.category_counts([]) == dict.fromkeys(S.CATEGORIES, 0)
    with pytest.raises(InvalidInput, match="'huge'"):
        S.category_counts(["huge"])


# --------------------------------------------------------------------------- double lesion

@pytest.mark.parametrize("x_given_y, y_given_x, expected", [
    (False, False, S.NEITHER),  # Table 9, 2-0 / 3-0
    (False, True, S.Y_GIVEN_X),
    (True, False, S.X_GIVEN_Y),  # Table 9, 1-1 / 3-7
    (True, True, S.BOTH),  # Table 9, 1-1 / 2-0
])
def test_dependency_case(x_given_y, y_given_x, expected):
    assert S.dependency_case(x_given_y, y_given_x) == expected
    assert S.dependency_case(np.bool_(x_given_y), np.bool_(y_given_x)) == expected
    assert expected in S.DEPENDENCY_READINGS


def test_dependency_constants_and_validation():
    assert S.DEPENDENCY_CASES == ("neither", "y_given_x", "x_given_y", "both")
    with pytest.raises(InvalidInput, match="x_given_y"):
        S.dependency_case("yes", False)


# --------------------------------------------------------------------------- binomial interval

def test_binomial_interval_edges_by_hand():
    # Clopper-Pearson: k = 0 -> (0, 1 - (a/2)^(1/n)); k = n -> ((a/2)^(1/n), 1)
    lo, hi = S.binomial_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1 - 0.025 ** (1 / 10))
    lo, hi = S.binomial_interval(10, 10, level=0.9)
    assert lo == pytest.approx(0.05 ** (1 / 10)) and hi == 1.0


def test_binomial_interval_beta_quantiles():
    from scipy.stats import beta

    lo, hi = S.binomial_interval(7, 50)
    assert lo == pytest.approx(beta.ppf(0.025, 7, 44), rel=1e-6)
    assert hi == pytest.approx(beta.ppf(0.975, 8, 43), rel=1e-6)


@pytest.mark.parametrize("k, n, level", [(3, 2, 0.95), (1, 0, 0.95), (1, 5, 1.0), (1.5, 5, 0.95)])
def test_binomial_interval_validation(k, n, level):
    with pytest.raises(InvalidInput):
        S.binomial_interval(k, n, level)


# --------------------------------------------------------------------------- calibration and power

N_NETWORKS, N_SUB, ALPHA = 2000, 30, 0.05


def _null_pvalues(rng, n_networks=N_NETWORKS, discrete=False, ties="inclusive"):
    """Per-network sub-cluster p-values when the true statistic is exchangeable with its controls."""
    shape = (n_networks * N_SUB, N20 + 1)
    x = rng.integers(0, 5, size=shape).astype(float) if discrete else rng.standard_normal(shape)
    p = S.empirical_p(x[:, 0], x[:, 1:], ties=ties)
    return p.reshape(n_networks, N_SUB)


def _rejection_counts(pvals):
    res = [S.combine_pvalues(row, N20) for row in pvals]
    return (sum(r["fisher_p"] < ALPHA for r in res), sum(r["chi2_p"] < ALPHA for r in res))


def test_calibration_under_null():
    pvals = _null_pvalues(np.random.default_rng(20210101))
    k_fisher, k_chi2 = _rejection_counts(pvals)
    lo_f, hi_f = S.binomial_interval(k_fisher, N_NETWORKS)
    lo_c, hi_c = S.binomial_interval(k_chi2, N_NETWORKS)
    # neither test rejects significantly more often than alpha
    assert lo_f <= ALPHA, (k_fisher, lo_f, hi_f)
    assert lo_c <= ALPHA, (k_chi2, lo_c, hi_c)
    # the centred Fisher test is conservative: even the upper end of its rate's interval is < alpha
    assert hi_f < ALPHA, (k_fisher, lo_f, hi_f)


def test_fisher_inclusive_ties_stay_valid_strict_do_not():
    """Heavily tied statistics (5 values): inclusive ties keep Fisher valid, strict ties do not."""
    rng = np.random.default_rng(7)
    k_incl, _ = _rejection_counts(_null_pvalues(rng, 500, discrete=True, ties="inclusive"))
    k_strict, _ = _rejection_counts(_null_pvalues(rng, 500, discrete=True, ties="strict"))
    assert S.binomial_interval(k_incl, 500)[0] <= ALPHA
    assert S.binomial_interval(k_strict, 500)[0] > ALPHA


def test_power_when_30_percent_beat_all_controls():
    rng = np.random.default_rng(11)
    n_networks = 1000
    shape = (n_networks, N_SUB, N20 + 1)
    x = rng.standard_normal(shape)
    n_effect = int(0.3 * N_SUB)
    x[:, :n_effect, 0] = x[:, :n_effect, 1:].max(axis=-1) + 1.0  # true beats all its controls
    p = S.empirical_p(x[..., 0].ravel(), x[..., 1:].reshape(-1, N20)).reshape(n_networks, N_SUB)
    assert np.all(p[:, :n_effect] == pytest.approx(1 / 21))
    k_fisher, _ = _rejection_counts(p)
    assert k_fisher / n_networks >= 0.95


def test_rank_p_makes_chi2_valid_under_ties():
    """Heavily tied null statistics: inclusive p breaks the chi2 test, tie-broken ranks keep it at alpha."""
    from modtest.stats import rank_p

    rng = np.random.default_rng(123)
    n_sim, rej_rank, rej_plain = 600, 0, 0
    for _ in range(n_sim):
        t = rng.integers(0, 5, 30).astype(float)
        r = rng.integers(0, 5, (30, 20)).astype(float)
        p = empirical_p(t, r)
        pr = rank_p(t, r, rng)
        assert np.all(pr <= p + 1e-12)  # breaking ties can only lower an inclusive p
        rej_rank += combine_pvalues(p, 20, pr)["chi2_p"] < 0.05
        rej_plain += combine_pvalues(p, 20)["chi2_p"] < 0.05
    lo, hi = binomial_interval(rej_rank, n_sim)
    assert lo <= 0.05  # consistent with nominal
    assert rej_plain / n_sim > 0.3  # the reason rank_p exists


def test_rank_p_without_ties_equals_empirical_p():
    from modtest.stats import rank_p

    rng = np.random.default_rng(5)
    t = rng.normal(size=50)
    r = rng.normal(size=(50, 20))
    np.testing.assert_allclose(rank_p(t, r, rng), empirical_p(t, r))
    np.testing.assert_allclose(rank_p(t, r, rng, side="left"), empirical_p(t, r, side="left"))


def test_chi2_monte_carlo_calibrated_with_few_subclusters():
    """7 sub-clusters over 21 grid values: the asymptotic chi2 law is liberal, the simulated one is not."""
    rng = np.random.default_rng(11)
    n_sim, rej_auto, rej_asym = 3000, 0, 0
    for _ in range(n_sim):
        p = rng.integers(1, 22, 7) / 21
        rej_auto += S.chi2_categorical(p, 20)[1] <= 0.05
        rej_asym += S.chi2_categorical(p, 20, method="asymptotic")[1] <= 0.05
    lo, _ = binomial_interval(rej_auto, n_sim)
    assert lo <= 0.05  # the simulated test keeps its level
    assert binomial_interval(rej_asym, n_sim)[0] > 0.05  # the reason it exists
    # deterministic, and the same as asymptotic once expected counts are large
    p = rng.integers(1, 22, 7) / 21
    assert S.chi2_categorical(p, 20) == S.chi2_categorical(p, 20)
    big = rng.integers(1, 22, 21 * 6) / 21
    assert S.chi2_categorical(big, 20) == S.chi2_categorical(big, 20, method="asymptotic")


def test_undefined_controls_counted_against_keep_the_level():
    """Output coherence is undefined (NaN) for lesions with no net damage. Under a true null, with the
    true set defined, counting undefined controls as at least as extreme keeps the level; giving them
    the smallest value (0) does not, and tie-broken ranks stay exactly uniform."""
    from modtest.stats import rank_p

    rng = np.random.default_rng(7)
    m, n = 4000, 20
    vals = rng.exponential(size=(m, n + 1))
    vals[rng.random((m, n + 1)) < 0.6] = np.nan  # 60% of lesions change nothing
    vals = vals[~np.isnan(vals[:, 0])]  # the true set is tested only when defined
    t, r = vals[:, 0], vals[:, 1:]
    p_against = empirical_p(t, r, undefined="against")
    p_zero = empirical_p(t, np.nan_to_num(r, nan=0.0))
    assert not np.isnan(p_against).any()
    k = len(t)
    assert binomial_interval(int((p_against <= 0.05).sum()), k)[0] <= 0.05
    assert binomial_interval(int((p_zero <= 0.05).sum()), k)[0] > 0.05  # the old, anti-conservative way
    ranks = rank_p(t, r, rng)
    counts = np.bincount(np.rint(ranks * 21).astype(int) - 1, minlength=21)
    from scipy.stats import chisquare

    assert chisquare(counts).pvalue > 0.001  # uniform on the grid
    assert np.all(ranks <= p_against + 1e-12)
