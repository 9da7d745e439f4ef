"""Robust verdicts: a claim judged with its Monte Carlo error under control, over an ensemble of
partitions, with three outcomes (pass, fail, inconclusive). Pure numpy/scipy.

Two sources of seed noise move a claim's p-value (docs/statistics.md has the measurements):

* **the random controls.** An empirical p-value ``(1 + b) / (1 + n)`` from ``n`` controls estimates
  the exact p-value ``p`` (the probability that a random same-size set is at least as extreme) with
  Monte Carlo error. Here every sub-cluster's exceedance count ``b`` gets a Jeffreys posterior
  ``p ~ Beta(b + 1/2, n - b + 1/2)``; draws of the network-level Fisher p-value from those posteriors
  give a credible interval for the *ideal* network p-value (every exact ``p``, floored at
  ``1 / (cap + 1)``, combined by Fisher's method). Where the interval straddles the threshold the
  decision is within Monte Carlo error, and controls are added, from the same counter-based stream,
  to the sub-clusters that carry most of the interval's width (their posterior variance of ``log
  p``), doubling their count each round up to ``cap``. A sub-cluster with many exceedances has a
  precise p-value and is not extended (Besag & Clifford 1991's sequential p-values stop at ``h``
  exceedances for the same reason). This is the idea of Gandy (2009): keep sampling while the
  decision is uncertain, stop as soon as it is not; the bound on the resampling risk (the chance
  that the verdict differs from the one of infinitely many controls) is the credible level,
  ``risk`` per look, about ``looks * risk`` in all; it is Bayesian, not Gandy's uniform bound, and
  ``tests/test_robust.py`` checks by simulation that it holds.
* **the partition.** Spectral clustering's k-means seed changes the partition (equally good n-cuts,
  different sub-clusters). A claim is judged over ``R`` partitions (seeds drawn from the user's seed)
  and the per-partition p-values are merged by quantile merging (Vovk & Wang 2020; Rüschendorf
  1982): ``p = (R / c) * P_(c)``, the ``c``-th smallest p-value times ``R / c``, is a valid p-value
  under *any* dependence between the partitions (P(p <= a) <= a). With ``c`` the smallest count
  for which ``P(Binomial(R, 1/2) >= c) <= ensemble_risk``, a pass needs the claim to hold in ``c`` of
  the ``R`` partitions at level ``alpha * c / R``, and a fail needs it to fail in ``c`` of them:
  neither happens by the luck of the ensemble draw when the population of partitions is split.

Outcome: **pass** when the upper end of the claim's interval is <= alpha, **fail** when its lower
end is > alpha, **inconclusive** otherwise (the evidence stays within noise of alpha after the cap).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from modtest.errors import InvalidInput

#: credible level of each Monte Carlo decision (two-sided, per look)
RISK = 1e-3
#: probability that the ensemble's verdict is not the verdict of the population of partitions
ENSEMBLE_RISK = 0.05
#: posterior draws per Monte Carlo interval
DRAWS = 4000
BELOW, ABOVE, UNDECIDED = "below", "above", "undecided"
PASS, FAIL, INCONCLUSIVE = "pass", "fail", "inconclusive"
VERDICTS = (PASS, FAIL, INCONCLUSIVE)


def centred_p(b, n) -> np.ndarray:
    """The paper's centred empirical p-value at each sub-cluster's own control count:
    ``(1 + b) / (1 + n) - 1 / (2 (1 + n)) = (b + 1/2) / (n + 1)`` (A.4; equal to it for a fixed n)."""
    b, n = np.asarray(b, dtype=float), np.asarray(n, dtype=float)
    return (b + 0.5) / (n + 1.0)


def fisher_p(p, floor: float = 0.0) -> float:
    """Fisher's combination of p-values (each floored at ``floor``): chi2(2m) tail of -2 sum log p."""
    from scipy.stats import chi2

    p = np.maximum(np.asarray(p, dtype=float), floor)
    if p.size == 0:
        return math.nan
    return float(chi2.sf(-2.0 * np.log(p).sum(), 2 * p.size))


@dataclass(frozen=True)
class MonteCarloP:
    """A network-level p-value from exceedance counts: the estimate and its credible interval."""

    p: float
    low: float
    high: float
    n_controls: int

    def decision(self, threshold: float) -> str:
        """``below`` (interval <= threshold), ``above`` (interval > threshold) or ``undecided``."""
        if self.high <= threshold:
            return BELOW
        if self.low > threshold:
            return ABOVE
        return UNDECIDED


def fisher_interval(b, n, *, cap: int, rng: np.random.Generator, risk: float = RISK,
                    draws: int = DRAWS) -> MonteCarloP:
    """Estimate and ``1 - risk`` credible interval of the ideal Fisher p-value of sub-clusters with
    ``b[i]`` controls at least as extreme as the true set out of ``n[i]``.

    The estimate is Fisher's method on :func:`centred_p` (the paper's statistic when every n is the
    same); the interval comes from Jeffreys posteriors of the exact p-values, floored at
    ``1 / (cap + 1)``, the finest p-value ``cap`` controls resolve.
    """
    b, n = np.asarray(b, dtype=float), np.asarray(n, dtype=float)
    if b.shape != n.shape or b.ndim != 1:
        raise InvalidInput(f"b and n must be 1-D of the same length, got {b.shape} and {n.shape}")
    if b.size == 0:
        return MonteCarloP(math.nan, math.nan, math.nan, 0)
    if (b < 0).any() or (b > n).any() or (n < 1).any():
        raise InvalidInput("need 0 <= b <= n and n >= 1 for every sub-cluster")
    floor = 1.0 / (cap + 1)
    post = rng.beta(b + 0.5, n - b + 0.5, size=(draws, b.size))
    from scipy.stats import chi2

    stats_ = -2.0 * np.log(np.maximum(post, floor)).sum(axis=1)
    f = chi2.sf(stats_, 2 * b.size)
    low, high = np.quantile(f, [risk / 2, 1 - risk / 2])
    est = fisher_p(centred_p(b, n))
    return MonteCarloP(est, float(min(low, est)), float(max(high, est)), int(n.sum()))


def binomial_interval_p(b: int, n: int, *, risk: float = RISK) -> MonteCarloP:
    """One Monte Carlo p-value (``b`` of ``n`` replicates at least as extreme): the estimate
    ``(1 + b) / (1 + n)`` and the Clopper-Pearson ``1 - risk`` interval of the exact p."""
    from scipy.stats import beta

    lo = 0.0 if b == 0 else float(beta.ppf(risk / 2, b, n - b + 1))
    hi = 1.0 if b == n else float(beta.ppf(1 - risk / 2, b + 1, n - b))
    est = (1.0 + b) / (1.0 + n)
    return MonteCarloP(est, min(lo, est), max(hi, est), int(n))


def log_p_variance(b, n) -> np.ndarray:
    """Posterior variance of ``log p`` per sub-cluster (Jeffreys Beta): what each one adds to the
    Monte Carlo width of Fisher's statistic."""
    from scipy.special import polygamma

    b, n = np.asarray(b, dtype=float), np.asarray(n, dtype=float)
    return polygamma(1, b + 0.5) - polygamma(1, n + 1.0)


#: Besag & Clifford (1991): a sub-cluster whose controls already hold this many exceedances is never
#: given more (its p-value is known to a relative error of about 1 / sqrt(H); see :func:`to_extend`)
H = 10


def to_extend(b, n, cap: int, share: float = 0.8, h: int | None = H) -> np.ndarray:
    """Indices of the sub-clusters to give more controls: those below ``cap`` with fewer than ``h``
    exceedances (Besag & Clifford's sequential rule: stop at ``h``; None: no such stop) that carry the
    largest posterior variances of ``log p``, together at least ``share`` of the extendable total.

    Stopping a sub-cluster at ``h`` exceedances never makes a verdict wrong: its posterior (the
    same whatever the stopping rule) stays in every later interval, which is only wider for it."""
    var = log_p_variance(b, n)
    n = np.asarray(n)
    keep = n < cap
    if h is not None:
        keep &= np.asarray(b) < h
    open_ = np.flatnonzero(keep)
    if open_.size == 0:
        return open_
    order = open_[np.argsort(-var[open_], kind="stable")]
    cum = np.cumsum(var[order])
    k = int(np.searchsorted(cum, share * cum[-1]) + 1)
    return np.sort(order[:k])


# --------------------------------------------------------------------------- the ensemble

def ensemble_quorum(r: int, risk: float = ENSEMBLE_RISK) -> int:
    """The smallest ``c > r / 2`` with ``P(Binomial(r, 1/2) >= c) <= risk``: how many of ``r``
    partitions must agree for a verdict (1 for a single partition). The binomial tail is summed
    exactly (integers), so checking an option needs no scipy import."""
    from fractions import Fraction

    if r == 1:
        return 1
    tail = 0  # sum of comb(r, i) for i >= c, built from the top
    tails = {}
    for c in range(r, r // 2, -1):
        tail += math.comb(r, c)
        tails[c] = tail
    for c in range(r // 2 + 1, r + 1):
        if Fraction(tails[c], 2 ** r) <= Fraction(risk):
            return c
    raise InvalidInput(f"an ensemble of {r} partitions cannot give a verdict at ensemble risk {risk:g}: "
                       f"use at least {_min_ensemble(risk)} partitions")


def _min_ensemble(risk: float) -> int:
    return int(math.ceil(math.log2(1 / risk)))


def merge(values, c: int) -> float:
    """Quantile merging ``(R / c) * P_(c)`` of ``R`` per-partition p-values (valid under any dependence)."""
    v = np.sort(np.asarray(values, dtype=float))
    r = len(v)
    return float(min(1.0, r / c * v[c - 1]))


@dataclass(frozen=True)
class EnsembleP:
    """A claim's merged p-value over partitions, its interval, the quorum and the outcome."""

    p: float
    low: float
    high: float
    quorum: int
    holds: int    # partitions whose whole interval is below the merged threshold
    fails: int    # partitions whose whole interval is above it
    verdict: str

    def to_dict(self) -> dict:
        return {"p": self.p, "p_low": self.low, "p_high": self.high, "quorum": self.quorum,
                "holds": self.holds, "fails": self.fails, "verdict": self.verdict}


def partition_counts(holds, fails, total) -> str:
    """"holds in H, fails in F and is undecided in U of R partitions": every partition counted (an
    undecided one's Monte Carlo interval straddles the per-partition threshold)."""
    try:
        h, f, r = int(holds), int(fails), int(total)
    except (TypeError, ValueError):
        return f"holds in {holds} and fails in {fails} of {total} partitions"
    u = r - h - f
    return (f"holds in {h}, fails in {f}" + (f" and is undecided in {u}" if u else "") + f" of {r} partitions"
            + (" (undecided: its Monte Carlo interval straddles the threshold)" if u == 1 else
               " (undecided: their Monte Carlo intervals straddle the threshold)" if u else ""))


def merge_ensemble(parts: list[MonteCarloP], alpha: float, risk: float = ENSEMBLE_RISK) -> EnsembleP:
    """Merge per-partition Monte Carlo p-values into the claim's p, interval and verdict."""
    r = len(parts)
    c = ensemble_quorum(r, risk)
    p = merge([m.p for m in parts], c)
    high = merge([m.high for m in parts], c)
    # fail <=> c partitions lie wholly above alpha * c / r <=> the (r - c + 1)-th smallest low does
    low = float(min(1.0, r / c * np.sort([m.low for m in parts])[r - c]))
    threshold = alpha * c / r
    holds = sum(m.decision(threshold) == BELOW for m in parts)
    fails = sum(m.decision(threshold) == ABOVE for m in parts)
    return EnsembleP(p, low, high, c, holds, fails, verdict(low, high, alpha))


def verdict(low: float, high: float, alpha: float) -> str:
    """pass (interval <= alpha), fail (interval > alpha) or inconclusive."""
    if high <= alpha:
        return PASS
    if low > alpha:
        return FAIL
    return INCONCLUSIVE


# --------------------------------------------------------------------------- the sequential loop

#: a pass is sharpened until its upper bound is below ``AIM * alpha`` (or the cap is reached), so
#: that it survives a session-wide correction over a few claims (Holm multiplies the smallest p by
#: the number of claims)
AIM = 0.25


def decide(counts, extend, *, ensemble: int, measures, alpha: float, cap: int, risk: float = RISK,
           ensemble_risk: float = ENSEMBLE_RISK, key=(), aim: float = AIM, h: int | None = H) -> dict:
    """Add controls where a measure's verdict is within Monte Carlo error, until every verdict is
    settled or can no longer change; return ``{measure: (EnsembleP, [MonteCarloP per partition])}``.

    A fail settles at once; a pass settles once its upper bound is below ``aim * alpha`` (room for a
    correction over several claims) or nothing can be extended.

    ``counts(r, measure)`` gives partition ``r``'s ``(b, n, ids)`` (exceedances, controls, one id per
    sub-cluster) or None when nothing is testable there; ``extend({(r, id): new_n})`` computes the
    requested controls (all measures read the same controls). ``key`` seeds the posterior draws;
    ``h``: a sub-cluster with ``h`` exceedances is not extended (:func:`to_extend`).
    """
    from modtest._random import keyed_rng

    quorum = ensemble_quorum(ensemble, ensemble_risk)
    threshold = alpha * quorum / ensemble

    memo: dict = {}

    def judge(measure):
        mcs, rows = [], []
        for r in range(ensemble):
            got = counts(r, measure)
            if got is None or len(got[0]) == 0:
                mcs.append(MonteCarloP(1.0, 1.0, 1.0, 0))  # nothing testable: it cannot hold here
                rows.append(None)
                continue
            b, n, ids = got
            state = (measure, r, tuple(int(v) for v in b), tuple(int(v) for v in n))
            if state not in memo:
                rng = keyed_rng(*key, "robust-interval", *state)
                memo[state] = fisher_interval(b, n, cap=cap, rng=rng, risk=risk)
            mcs.append(memo[state])
            rows.append((np.asarray(b), np.asarray(n), list(ids)))
        return mcs, rows

    settled = set()
    while True:
        wants: dict = {}
        for measure in measures:
            if measure in settled:
                continue
            mcs, rows = judge(measure)
            ens = merge_ensemble(mcs, alpha, ensemble_risk)
            decisions = [m.decision(threshold) for m in mcs]
            undecided = decisions.count(UNDECIDED)
            can_pass = ens.holds + undecided >= quorum
            can_fail = ens.fails + undecided >= quorum
            if ens.verdict == FAIL or (ens.verdict == PASS and ens.high <= aim * alpha) \
                    or not (can_pass or can_fail):
                settled.add(measure)
                continue
            # an inconclusive verdict: extend the undecided partitions; a pass near alpha: sharpen
            # the partitions whose upper bound is above the aim
            target = threshold if ens.verdict == INCONCLUSIVE else aim * threshold
            asked = 0
            for r, m in enumerate(mcs):
                if rows[r] is None or m.decision(target) != UNDECIDED:
                    continue
                b, n, ids = rows[r]
                for i in to_extend(b, n, cap, h=h):
                    wants[(r, ids[i])] = max(wants.get((r, ids[i]), 0), min(2 * int(n[i]), cap))
                    asked += 1
            if not asked:
                settled.add(measure)
        if not wants:
            break
        extend(wants)
    out = {}
    for measure in measures:
        mcs, _rows = judge(measure)
        out[measure] = (merge_ensemble(mcs, alpha, ensemble_risk), mcs)
    return out

