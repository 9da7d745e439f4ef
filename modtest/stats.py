"""Statistics of the importance/coherence tests: empirical p-values, their network-level combination,
multiple-comparison correction, the lesion taxonomy (paper 3.2, A.9) and the double-lesion cases (A.10).

Each true sub-cluster is compared with ``n_random`` random sub-clusters of the same size from the same
layer.  Its empirical p-value ``(1 + #{random at least as extreme}) / (n_random + 1)`` lies on the grid
``{1/(n+1), ..., 1}`` and, when the true statistic is exchangeable with its controls (the null), is
uniform on that grid -- or stochastically larger when there are ties, because ties count against
significance by default.  So each per-sub-cluster test is valid at every level.

The network-level p-values combine the sub-cluster p-values two ways (paper 3.1.2 and A.4):

* Fisher's method on *centred* p-values ``p' = p - 1/(2(n+1))``: each grid value is moved to the
  middle of its bin, so that ``p'`` is a granular stand-in for a Uniform(0, 1) variable and the
  smallest value ``1/(n+1)`` does not get an unbounded ``-log``.  The test is **conservative**
  (paper A.4): ``p'`` is the conditional mean of a continuous uniform ``U`` given its bin, and since
  ``-log`` is convex, Jensen's inequality gives ``-log p' <= E[-log U | bin]`` -- the discretised
  statistic ``-2 sum log p'`` has a smaller mean (1.967 instead of 2 per sub-cluster for 20 controls)
  and a smaller spread than the chi-squared(2n) law it is referred to.  In words: the smallest p-values
  pull the statistic toward the heavy tail less than continuous ones would, while the largest pull it
  toward zero.  Its right tail is therefore lighter, and the size at alpha = 0.05 is about 0.03 for
  30 sub-clusters with 20 controls each.
* Pearson's chi-squared test of the counts of the p-values over their ``n+1`` grid values against
  equal expected counts (``n`` degrees of freedom).  It detects any non-uniformity (high p-values,
  U shapes), not only small p-values.  It is asymptotic: with one or two expected counts per bin
  (30 sub-clusters over 21 bins) its size at 0.05 is about 0.054, slightly above nominal.  And it is
  only valid for statistics without ties: tied controls make the p-values non-uniform on the grid
  even under the null, which this test reads as a departure (Fisher's test with inclusive ties only
  becomes more conservative).

Nothing here imports Keras or pytest; only numpy, scipy and statsmodels.
"""
from __future__ import annotations

import functools
import math
import numbers
from collections.abc import Iterable, Mapping

import numpy as np

from modtest.errors import InvalidInput


def _scipy_stats():
    """scipy.stats, imported on first use: it takes most of a second, and the pytest plugin (loaded
    by every pytest run where modtest is installed) reads this module's constants at start-up."""
    from scipy import stats

    return stats

__all__ = [
    "empirical_p", "fisher_centered", "chi2_categorical", "combine_pvalues", "correct",
    "CORRECTION_METHODS", "categorize", "categorize_rows", "category_counts", "CATEGORIES",
    "IMPORTANT", "SIG_NOT_DIFF", "DIFF_NOT_SIG", "PRUNABLE", "COMPLETE", "SMALL", "OTHER",
    "dependency_case", "DEPENDENCY_CASES", "DEPENDENCY_READINGS",
    "NEITHER", "Y_GIVEN_X", "X_GIVEN_Y", "BOTH", "binomial_interval", "entropy",
]

_SIDES = ("right", "left")
_TIES = ("inclusive", "strict")
_GRID_TOL = 1e-9
_BEATS_ALL_TOL = 1e-12


# --------------------------------------------------------------------------- helpers

def _check_n_random(n_random) -> int:
    """``n_random`` as a positive int, or a one-line InvalidInput."""
    if isinstance(n_random, bool) or not isinstance(n_random, numbers.Integral) or n_random < 1:
        raise InvalidInput(f"n_random must be a positive integer, got {n_random!r}")
    return int(n_random)


def _as_float_array(x, name: str) -> np.ndarray:
    """``x`` as a float ndarray, or a one-line InvalidInput naming ``name``."""
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{name} must be numeric, got {type(x).__name__}: {exc}") from None


def _as_pvalues(p, name: str = "p") -> np.ndarray:
    """A 1-D float array of p-values (NaN not allowed; use combine_pvalues to drop NaNs)."""
    arr = _as_float_array(p, name).ravel()
    if np.isnan(arr).any():
        raise InvalidInput(f"{name} contains NaN at index {int(np.flatnonzero(np.isnan(arr))[0])}; "
                           "drop NaNs first (combine_pvalues does)")
    return arr


# --------------------------------------------------------------------------- per-sub-cluster p

_UNDEFINED = ("nan", "against")


def empirical_p(true, random, side: str = "right", ties: str = "inclusive", undefined: str = "nan"):
    """Empirical one-sided p-value of a true statistic against its random controls.

    ``p = (1 + #{random at least as extreme as true}) / (n_random + 1)``, so ``p`` lies on the grid
    ``k / (n_random + 1)``, ``k = 1..n_random+1``, and is never 0.

    Parameters
    ----------
    true : float or array_like, shape (n,)
        Statistic of the true sub-cluster(s).
    random : array_like, shape (r,) or (n, r)
        Statistics of the ``r`` random controls: 1-D for a scalar ``true``, one row per true value
        otherwise.
    side : {"right", "left"}
        ``"right"``: large values are extreme (``random >= true`` counts); ``"left"``: small values
        are extreme (``random <= true`` counts).
    ties : {"inclusive", "strict"}
        ``"inclusive"`` (default) counts controls equal to ``true`` as at least as extreme, so ties
        count against significance and the test stays valid with discrete statistics.
        ``"strict"`` counts only strictly more extreme controls (``random > true`` / ``random <
        true``), as the authors' code does; it is anti-conservative when ties are common.
    undefined : {"nan", "against"}
        What a NaN control (a statistic undefined for that random set) does: ``"nan"`` makes the
        p-value NaN; ``"against"`` counts it as at least as extreme as ``true``. That keeps p on the
        grid and valid: it is never below the p-value ranked among the defined controls only, which
        is exact under exchangeability (tested in ``tests/test_calibration.py``).

    Returns
    -------
    float or ndarray, shape (n,)
        The p-value(s).  NaN where ``true`` is NaN, or (``undefined="nan"``) a control is NaN.
    """
    if side not in _SIDES:
        raise InvalidInput(f"side must be one of {_SIDES}, got {side!r}")
    if ties not in _TIES:
        raise InvalidInput(f"ties must be one of {_TIES}, got {ties!r}")
    if undefined not in _UNDEFINED:
        raise InvalidInput(f"undefined must be one of {_UNDEFINED}, got {undefined!r}")
    t = _as_float_array(true, "true")
    r = _as_float_array(random, "random")
    if t.ndim == 0:
        if r.ndim != 1:
            raise InvalidInput(f"random must be 1-D for a scalar true, got shape {r.shape}")
    elif t.ndim == 1:
        if r.ndim != 2 or r.shape[0] != t.shape[0]:
            raise InvalidInput(f"random must have shape ({t.shape[0]}, r) for true of shape {t.shape}, "
                               f"got {r.shape}")
    else:
        raise InvalidInput(f"true must be a scalar or 1-D, got shape {t.shape}")
    n_random = r.shape[-1]
    if n_random < 1:
        raise InvalidInput("random must hold at least one control, got 0")
    tt = t[..., None]
    if side == "right":
        extreme = (r >= tt) if ties == "inclusive" else (r > tt)
    else:
        extreme = (r <= tt) if ties == "inclusive" else (r < tt)
    if undefined == "against":
        extreme = extreme | np.isnan(r)
        bad = np.isnan(t)
    else:
        bad = np.isnan(t) | np.isnan(r).any(axis=-1)
    p = (1.0 + extreme.sum(axis=-1)) / (n_random + 1.0)
    p = np.where(bad, np.nan, p)
    return float(p) if t.ndim == 0 else p


# --------------------------------------------------------------------------- network-level combination

def fisher_centered(p, n_random) -> tuple[float, float]:
    """Fisher's method on empirical p-values centred by half a grid step (paper A.4); conservative.

    Parameters
    ----------
    p : array_like, shape (m,)
        Empirical p-values of ``m`` sub-clusters, each from ``n_random`` controls; no NaN.
    n_random : int
        Number of random controls behind each p-value (the grid is ``k / (n_random + 1)``).

    Returns
    -------
    (stat, pvalue) : tuple of float
        ``stat = -2 sum log(p - 1/(2(n_random+1)))`` and its right tail under chi-squared with
        ``2m`` degrees of freedom; ``(nan, nan)`` for empty ``p``.
    """
    n_random = _check_n_random(n_random)
    arr = _as_pvalues(p)
    if arr.size == 0:
        return math.nan, math.nan
    half = 0.5 / (n_random + 1)
    bad = (arr <= half) | (arr > 1.0 + _GRID_TOL)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInput(f"p[{i}]={arr[i]!r} is outside ({half:.6g}, 1] and cannot be an empirical "
                           f"p-value from n_random={n_random} controls")
    centred = np.minimum(arr, 1.0) - half
    stat = float(-2.0 * np.log(centred).sum())
    return stat, float(_scipy_stats().chi2.sf(stat, 2 * arr.size))


#: Below this expected count per grid value the chi-squared law is a poor approximation (the
#: textbook rule of 5); the test then takes its p-value from simulated uniform counts instead.
CHI2_MIN_EXPECTED = 5.0
CHI2_SIMULATIONS = 20_000


def chi2_categorical(p, n_random, method: str = "auto") -> tuple[float, float]:
    """Pearson chi-squared test that empirical p-values are uniform over their grid (paper A.4).

    ``method="asymptotic"`` compares the statistic with chi2(n_random), as the paper does; with few
    sub-clusters per grid value that is liberal (9% rejections of a true null at alpha 0.05 with 7
    sub-clusters and 21 values). ``"monte_carlo"`` takes p = (1 + #{simulated >= observed}) /
    (N + 1) from ``CHI2_SIMULATIONS`` multinomial draws under uniformity (a fixed seed: the same
    input always gives the same p). ``"auto"`` (default) simulates when the expected count per
    value is below ``CHI2_MIN_EXPECTED``.
    It tests uniformity on the grid, which only holds under the null for statistics without ties:
    ties (e.g. many lesions that change no prediction) make inclusive p-values pile up high and the
    test rejects even when true and random sub-clusters are exchangeable.

    Parameters
    ----------
    p : array_like, shape (m,)
        Empirical p-values, each on the grid ``k / (n_random + 1)`` within 1e-9; no NaN.
    n_random : int
        Number of random controls behind each p-value; the test has ``n_random + 1`` categories
        and ``n_random`` degrees of freedom.

    Returns
    -------
    (stat, pvalue) : tuple of float
        ``sum (count - m/(n+1))^2 / (m/(n+1))`` over the ``n+1`` grid values and its right tail
        under chi-squared with ``n_random`` degrees of freedom; ``(nan, nan)`` for empty ``p``.
    """
    n_random = _check_n_random(n_random)
    arr = _as_pvalues(p)
    if arr.size == 0:
        return math.nan, math.nan
    n_bins = n_random + 1
    k = np.rint(arr * n_bins)
    bad = (np.abs(arr - k / n_bins) > _GRID_TOL) | (k < 1) | (k > n_bins)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidInput(f"p[{i}]={arr[i]!r} is not on the grid k/{n_bins}, k=1..{n_bins} "
                           f"(n_random={n_random})")
    if method not in ("auto", "asymptotic", "monte_carlo"):
        raise InvalidInput(f"method must be auto, asymptotic or monte_carlo, got {method!r}")
    counts = np.bincount(k.astype(np.int64) - 1, minlength=n_bins)
    expected = arr.size / n_bins
    stat = float(((counts - expected) ** 2 / expected).sum())
    if method == "asymptotic" or (method == "auto" and expected >= CHI2_MIN_EXPECTED):
        return stat, float(_scipy_stats().chi2.sf(stat, n_random))
    sim_stats = _chi2_null(int(arr.size), n_bins)
    n_at_least = sim_stats.size - np.searchsorted(sim_stats, stat - 1e-9, side="left")
    return stat, float((1 + n_at_least) / (sim_stats.size + 1))


@functools.lru_cache(maxsize=256)
def _chi2_null(m: int, n_bins: int) -> np.ndarray:
    """Sorted chi-squared statistics of uniform multinomial counts (m draws, n_bins values)."""
    rng = np.random.default_rng(20210101)
    sims = rng.multinomial(m, np.full(n_bins, 1.0 / n_bins), size=CHI2_SIMULATIONS)
    expected = m / n_bins
    return np.sort(((sims - expected) ** 2 / expected).sum(axis=1))


def rank_p(true, random, rng: np.random.Generator, side: str = "right"):
    """Empirical p with ties broken at random: exactly uniform on the grid under exchangeability.

    p = (1 + #{random more extreme} + B) / (n_random + 1) with B uniform on {0, ..., #ties}.
    The chi-squared categorical test needs this: with inclusive ties (many lesions change no
    prediction) p-values pile up at the top of the grid even under a true null, and the test of
    uniformity would reject it. NaN controls (undefined statistics) are placed at uniformly random
    positions of the ordering, which keeps the result exactly uniform. Shapes as
    :func:`empirical_p`; ``rng`` makes it reproducible. NaN where ``true`` is NaN.
    """
    if side not in _SIDES:
        raise InvalidInput(f"side must be one of {', '.join(_SIDES)}, got {side!r}")
    t = np.asarray(true, dtype=float)
    r = np.asarray(random, dtype=float)
    scalar = t.ndim == 0
    t2 = np.atleast_1d(t)
    r2 = r[None, :] if r.ndim == 1 else r
    n_random = r2.shape[1]
    defined = ~np.isnan(r2)
    with np.errstate(invalid="ignore"):
        more = ((r2 > t2[:, None]) if side == "right" else (r2 < t2[:, None])) & defined
        ties = (r2 == t2[:, None]) & defined
    rank = 1 + more.sum(axis=1) + np.floor(rng.random(len(t2)) * (ties.sum(axis=1) + 1)).astype(int)
    n_defined = defined.sum(axis=1)
    out = np.empty(len(t2))
    for i in range(len(t2)):
        if n_defined[i] == n_random:
            out[i] = rank[i]
        else:  # the true set's place among all n_random + 1 when undefined ones fall anywhere
            slots = np.sort(rng.choice(n_random + 1, size=n_defined[i] + 1, replace=False))
            out[i] = slots[rank[i] - 1] + 1
    out = out / (n_random + 1)
    out = np.where(np.isnan(t2), np.nan, out)
    return float(out[0]) if scalar else out


def combine_pvalues(p, n_random, p_chi2=None) -> dict:
    """Both network-level combinations of sub-cluster p-values, NaNs dropped and counted.

    Parameters
    ----------
    p : array_like, shape (m,)
        Empirical p-values of the sub-clusters; NaN marks a sub-cluster that could not be tested.
    n_random : int
        Number of random controls behind each p-value.
    p_chi2 : array_like, shape (m,), optional
        Tie-broken p-values (:func:`rank_p`) for the chi-squared categorical test; without them
        the test uses ``p``, which is only valid when the statistics cannot tie.

    Returns
    -------
    dict
        ``fisher_stat, fisher_p, chi2_stat, chi2_p`` (floats, NaN when nothing is left),
        ``n`` (p-values combined) and ``n_excluded`` (NaNs dropped).
    """
    arr = _as_float_array(p, "p").ravel()
    keep = ~np.isnan(arr)
    kept = arr[keep]
    fisher_stat, fisher_p = fisher_centered(kept, n_random)
    chi2_in = kept if p_chi2 is None else _as_float_array(p_chi2, "p_chi2").ravel()[keep]
    chi2_stat, chi2_p = chi2_categorical(chi2_in, n_random)
    return {"fisher_stat": fisher_stat, "fisher_p": fisher_p, "chi2_stat": chi2_stat,
            "chi2_p": chi2_p, "n": int(kept.size), "n_excluded": int(arr.size - kept.size)}


# --------------------------------------------------------------------------- multiple comparisons

from modtest.options import CORRECTION_METHODS  # noqa: E402 - one list for API, CLI and pytest


def correct(pvalues, method: str = "holm", alpha: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """Correct p-values of several claims for multiple comparisons (paper A.7).

    Holm controls the family-wise error rate, Benjamini-Hochberg (``"fdr_bh"``) the false discovery
    rate, Bonferroni the family-wise rate more crudely; ``"none"`` leaves them as they are.

    Parameters
    ----------
    pvalues : array_like, shape (k,) (any shape; kept)
        Raw p-values in [0, 1].  NaNs are left out of the correction and come back as NaN, not
        rejected.
    method : {"holm", "fdr_bh", "bonferroni", "none"}
    alpha : float
        Family-wise error rate (or false discovery rate for ``"fdr_bh"``), in (0, 1).

    Returns
    -------
    (reject, p_adjusted) : tuple of ndarray, shape like ``pvalues``
        ``reject`` (bool) where the hypothesis is rejected at ``alpha``; ``p_adjusted`` (float).
    """
    if method not in CORRECTION_METHODS:
        raise InvalidInput(f"correction method {method!r} is unknown; allowed: {', '.join(CORRECTION_METHODS)}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 < float(alpha) < 1.0:
        raise InvalidInput(f"alpha must be a number in (0, 1), got {alpha!r}")
    arr = _as_float_array(pvalues, "pvalues")
    flat = arr.ravel()
    keep = ~np.isnan(flat)
    if ((flat[keep] < 0) | (flat[keep] > 1)).any():
        i = int(np.flatnonzero(keep & ((flat < 0) | (flat > 1)))[0])
        raise InvalidInput(f"pvalues[{i}]={flat[i]!r} is outside [0, 1]")
    reject = np.zeros(flat.shape, dtype=bool)
    adjusted = np.full(flat.shape, np.nan)
    if keep.any():
        raw = flat[keep]
        if method == "none":
            rej, adj = raw <= alpha, raw.copy()
        else:
            from statsmodels.stats.multitest import multipletests

            rej, adj, _, _ = multipletests(raw, alpha=float(alpha), method=method)
        reject[keep] = rej
        adjusted[keep] = adj
    return reject.reshape(arr.shape), adjusted.reshape(arr.shape)


# --------------------------------------------------------------------------- lesion taxonomy

from modtest.taxonomy import (  # noqa: E402 - the names live in one place
    CATEGORIES,
    COMPLETE,
    DIFF_NOT_SIG,
    IMPORTANT,
    OTHER,
    PRUNABLE,
    SIG_NOT_DIFF,
    SMALL,
)


def _beats_all(p, n_random: int) -> bool:
    """Whether an empirical p-value is the smallest possible, 1/(n_random+1)."""
    return bool(p <= 1.0 / (n_random + 1) + _BEATS_ALL_TOL)


def categorize(fraction, drop, p_right, p_left, n_random, *, min_fraction=0.05, min_drop=0.01,
               significance=None) -> str:
    """The paper's descriptive category of a lesioned sub-cluster (section 3.2, appendix A.9).

    Rules, first match wins: ``complete`` (the whole layer), ``small`` (under ``min_fraction`` of the
    layer), ``important`` (significant and drop > ``min_drop``), ``sig-but-not-diff`` (significant,
    drop <= ``min_drop``), ``diff-but-not-sig`` (not significant, drop > ``min_drop``), ``prunable``
    (drop smaller than every control and < ``min_drop``), ``other``.  A NaN drop or p-value is
    neither significant nor different, so lands in ``other``.

    Parameters
    ----------
    fraction : float
        Sub-cluster size over layer size, in [0, 1].
    drop : float
        Accuracy drop as a fraction (0.02 = 2 percentage points); positive means damage.
    p_right : float
        Right-sided empirical p-value of the drop (large drop = extreme).
    p_left : float
        Left-sided empirical p-value of the drop; ``1/(n_random+1)`` means (with inclusive ties)
        that the true drop is strictly smaller than every control's.
    n_random : int
        Number of random controls behind the p-values.
    min_fraction : float
        Smallest fraction of the layer that is not ``small`` (paper: 5%).
    min_drop : float
        Drop that is practically different (paper: 1 percentage point).
    significance : float or None
        ``p_right <= significance`` is significant; None (the paper's rule) means the true drop beats
        all controls, ``p_right <= 1/(n_random+1)``.  ``prunable`` always needs ``p_left`` to be
        ``1/(n_random+1)``, whatever ``significance`` is.

    Returns
    -------
    str
        One of ``CATEGORIES``.
    """
    n_random = _check_n_random(n_random)
    fraction, drop = float(fraction), float(drop)
    p_right, p_left = float(p_right), float(p_left)
    if math.isnan(fraction) or fraction < 0 or fraction > 1 + _GRID_TOL:
        raise InvalidInput(f"fraction must be in [0, 1], got {fraction!r}")
    if significance is not None and not 0 < float(significance) <= 1:
        raise InvalidInput(f"significance must be in (0, 1] or None, got {significance!r}")
    if fraction >= 1.0:
        return COMPLETE
    if fraction < min_fraction:
        return SMALL
    if significance is None:
        significant = _beats_all(p_right, n_random)
    else:
        significant = bool(p_right <= float(significance))
    if significant and drop > min_drop:
        return IMPORTANT
    if significant and drop <= min_drop:
        return SIG_NOT_DIFF
    if not significant and drop > min_drop:
        return DIFF_NOT_SIG
    if _beats_all(p_left, n_random) and drop < min_drop:
        return PRUNABLE
    return OTHER


_ROW_KEYS = ("fraction", "drop", "p_importance", "p_importance_left")
_THRESHOLDS = ("min_fraction", "min_drop", "significance")


def categorize_rows(rows: Iterable[Mapping], n_random, **thresholds) -> list[str]:
    """``categorize`` over result rows (dicts with fraction, drop, p_importance, p_importance_left).

    A value of None (how NaN comes back from JSON) is read as NaN.

    Parameters
    ----------
    rows : iterable of mapping, length m
        Rows of a lesion probe result.
    n_random : int
        Number of random controls behind the p-values.
    **thresholds
        ``min_fraction``, ``min_drop``, ``significance``, passed on to ``categorize``.

    Returns
    -------
    list of str, length m
    """
    unknown = sorted(set(thresholds) - set(_THRESHOLDS))
    if unknown:
        raise InvalidInput(f"unknown threshold {unknown[0]!r}; allowed: {', '.join(_THRESHOLDS)}")
    out = []
    for i, row in enumerate(rows):
        missing = [k for k in _ROW_KEYS if k not in row]
        if missing:
            raise InvalidInput(f"row {i} lacks key {missing[0]!r} (needs {', '.join(_ROW_KEYS)})")
        vals = [math.nan if row[k] is None else row[k] for k in _ROW_KEYS]
        out.append(categorize(*vals, n_random, **thresholds))
    return out


def category_counts(categories: Iterable[str]) -> dict[str, int]:
    """How many sub-clusters fall in each category; every category is a key, in ``CATEGORIES`` order."""
    counts = dict.fromkeys(CATEGORIES, 0)
    for c in categories:
        if c not in counts:
            raise InvalidInput(f"unknown category {c!r}; allowed: {', '.join(CATEGORIES)}")
        counts[c] += 1
    return counts


# --------------------------------------------------------------------------- double lesion (A.10)

NEITHER = "neither"
Y_GIVEN_X = "y_given_x"
X_GIVEN_Y = "x_given_y"
BOTH = "both"
DEPENDENCY_CASES = (NEITHER, Y_GIVEN_X, X_GIVEN_Y, BOTH)
DEPENDENCY_READINGS = {
    NEITHER: "all of X's information goes to Y, and Y receives information only via X",
    Y_GIVEN_X: "X sends information to Y and also to other sub-clusters",
    X_GIVEN_Y: "Y receives information from X and also from other sub-clusters",
    BOTH: "no conclusion",
}


def dependency_case(x_given_y: bool, y_given_x: bool) -> str:
    """Which of the paper's four double-lesion cases (appendix A.10, figure 7) a pair falls in.

    X and Y are individually important sub-clusters, X in an earlier layer.  ``x_given_y``: X is
    still important once Y is lesioned (the joint lesion beats lesions of Y plus random sets of |X|
    units, and the extra damage exceeds the threshold); ``y_given_x`` likewise for Y given X.
    The paper's readings (also in ``DEPENDENCY_READINGS``):

    * ``"neither"`` (X|Y no, Y|X no): all of X's information is sent to Y (else lesioning X would
      still hurt with Y lesioned) and Y receives information only via X.
    * ``"y_given_x"`` (X|Y no, Y|X yes): X sends information to Y and also to other sub-clusters.
    * ``"x_given_y"`` (X|Y yes, Y|X no): Y receives information from X and from other sub-clusters.
    * ``"both"`` (X|Y yes, Y|X yes): no conclusion can be drawn.

    Parameters
    ----------
    x_given_y : bool
        Whether X is important conditioned on Y being lesioned.
    y_given_x : bool
        Whether Y is important conditioned on X being lesioned.

    Returns
    -------
    str
        One of ``DEPENDENCY_CASES``.
    """
    for name, v in (("x_given_y", x_given_y), ("y_given_x", y_given_x)):
        if not isinstance(v, (bool, np.bool_)):
            raise InvalidInput(f"{name} must be a bool, got {v!r}")
    if x_given_y and y_given_x:
        return BOTH
    if x_given_y:
        return X_GIVEN_Y
    if y_given_x:
        return Y_GIVEN_X
    return NEITHER


#: the quantiles of sub-cluster accuracy drops that audits report and comparisons read
DROP_QUANTILES = (10, 25, 50, 75, 90)


# --------------------------------------------------------------------------- visualization outputs

def softmax(logits) -> np.ndarray:
    """Row-wise softmax of ``(N, C)`` logits, shifted by each row's maximum (no overflow)."""
    z = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def entropy(probs) -> np.ndarray:
    """Entropy in nats of each row of ``probs`` (B, K); 0 log 0 = 0."""
    p = np.clip(np.asarray(probs, dtype="float64"), 0.0, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(np.where(p > 0, p, 1.0)), 0.0)
    return terms.sum(axis=-1)


# --------------------------------------------------------------------------- calibration reports

def binomial_interval(k, n, level: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson (exact) confidence interval for a rate of ``k`` successes in ``n`` trials.

    Used to report rejection rates in calibration runs with their uncertainty.

    Parameters
    ----------
    k : int
        Successes, ``0 <= k <= n``.
    n : int
        Trials, ``n >= 1``.
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    (lo, hi) : tuple of float
    """
    for name, v in (("k", k), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise InvalidInput(f"{name} must be an integer, got {v!r}")
    if n < 1 or not 0 <= k <= n:
        raise InvalidInput(f"need 0 <= k <= n and n >= 1, got k={k!r}, n={n!r}")
    if isinstance(level, bool) or not isinstance(level, numbers.Real) or not 0 < level < 1:
        raise InvalidInput(f"level must be in (0, 1), got {level!r}")
    ci = _scipy_stats().binomtest(int(k), int(n)).proportion_ci(confidence_level=float(level), method="exact")
    return float(ci.low), float(ci.high)
