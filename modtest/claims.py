"""Claim collection and session-wide multiple-comparison correction (paper A.7).

Every modtest assertion made in a session is one hypothesis. Assertions record their
:class:`~modtest.results.Claim` in the active :class:`ClaimCollector`; at the end of the session
:func:`correct_claims` applies :func:`modtest.stats.correct` to all raw p-values together, and a
claim whose corrected p exceeds its alpha becomes a failure. No pytest import here: the plugin
does the wiring, and the same code serves scripts.
"""
from __future__ import annotations

import math

from modtest.results import Claim


def claim_from_dict(d: dict) -> Claim:
    """Inverse of ``Claim.to_dict`` (JSON turns NaN into None; turn it back)."""
    d = dict(d)
    for key in ("statistic", "p_raw"):
        if d.get(key) is None:
            d[key] = float("nan")
    return Claim.from_dict(d)


def _nan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def correct_claims(claims: list[Claim], method: str = "holm") -> list[Claim]:
    """Set ``p_corrected``, ``correction``, ``outcome`` and ``passed`` on every claim, in place.

    The correction runs over all claims with a finite raw p (one family), on the p-values and on both
    ends of their noise bounds (every correction here is monotone in each p-value, so the corrected
    ends bound the corrected p). A claim passes when its corrected upper end is <= its alpha, fails
    when its corrected lower end is > alpha or it already failed (raw p above alpha, nothing
    testable), and is inconclusive otherwise. Without noise bounds (the paper's protocol) that is
    pass or fail on the corrected p. Corrected p-values do not depend on alpha for holm, fdr_bh and
    bonferroni, so claims may carry different alphas.
    """
    import numpy as np

    from modtest._validation import check_choice
    from modtest.options import CORRECTION_METHODS
    from modtest.stats import correct

    check_choice("correction", method, CORRECTION_METHODS)

    def adjusted(values):
        p = np.array([float("nan") if _nan(v) else float(v) for v in values], dtype=float)
        return correct(p, method=method, alpha=0.05)[1] if len(p) else p

    adj = adjusted([c.p_raw for c in claims])
    adj_lo = adjusted([c.bounds[0] for c in claims])
    adj_hi = adjusted([c.bounds[1] for c in claims])
    for c, a, lo, hi in zip(claims, adj, adj_lo, adj_hi):
        c.correction = method
        c.p_corrected, c.p_low_corrected, c.p_high_corrected = float(a), float(lo), float(hi)
        if c.passed is False or math.isnan(a) or lo > c.alpha:
            c.outcome = "fail"
        elif hi <= c.alpha:
            c.outcome = "pass"
        else:
            c.outcome = "inconclusive"
        c.passed = c.outcome == "pass"
    return claims


class ClaimCollector:
    """The claims of one session (or one xdist worker) and their correction."""

    def __init__(self, method: str = "holm"):
        self.method = method
        self.claims: list[Claim] = []
        self.current_nodeid: str = ""
        self.finalized = False

    def record(self, claim: Claim) -> Claim:
        if not claim.nodeid:
            claim.nodeid = self.current_nodeid
        self.claims.append(claim)
        return claim

    def extend_dicts(self, dicts) -> None:
        """Add claims sent by an xdist worker (``Claim.to_dict`` output)."""
        for d in dicts or ():
            self.claims.append(claim_from_dict(d))

    def to_dicts(self) -> list[dict]:
        return [c.to_dict() for c in self.claims]

    def finalize(self) -> list[Claim]:
        """Sort claims (node id, then recording order within a node) and correct them."""
        order = {id(c): i for i, c in enumerate(self.claims)}
        self.claims.sort(key=lambda c: (c.nodeid, order[id(c)]))
        correct_claims(self.claims, self.method)
        self.finalized = True
        return self.claims

    def failures(self) -> list[Claim]:
        return [c for c in self.claims if c.outcome == "fail" or (c.outcome is None and c.passed is False)]

    def inconclusive(self) -> list[Claim]:
        return [c for c in self.claims if c.outcome == "inconclusive"]

    def inconclusive_nodeids(self) -> dict[str, list[Claim]]:
        out: dict[str, list[Claim]] = {}
        for c in self.inconclusive():
            out.setdefault(c.nodeid, []).append(c)
        return out

    def failed_nodeids(self) -> dict[str, list[Claim]]:
        out: dict[str, list[Claim]] = {}
        for c in self.failures():
            out.setdefault(c.nodeid, []).append(c)
        return out

    def report(self) -> dict:
        """The JSON report: settings and every claim with raw/corrected p and verdict."""
        claims = []
        for c in self.claims:
            d = c.to_dict()
            d["verdict"] = c.outcome or ("pass" if c.passed else "fail")
            claims.append(d)
        return {"correction": self.method, "n_claims": len(self.claims),
                "n_failed": len(self.failures()), "claims": claims}


def failure_message(c: Claim) -> str:
    """One paragraph for a claim that failed, or stayed inconclusive, after correction (with its
    hints: why nothing could be shown and what to try)."""
    detail = f"; {c.detail}" if c.detail else ""
    detail += "".join(f"; {h}" for h in (c.hints or ()))
    if c.outcome == "inconclusive":
        return (f"{c.measure} inconclusive after {c.correction} correction: corrected p in "
                f"[{c.p_low_corrected:.3g}, {c.p_high_corrected:.3g}] straddles alpha={c.alpha:g} "
                f"(raw p={c.p_raw:.3g} in [{c.bounds[0]:.3g}, {c.bounds[1]:.3g}], {c.method} over "
                f"{c.n_subclusters} sub-clusters){detail}; the evidence stays within seed noise: raise "
                f"--modtest-max-random or --modtest-ensemble, or accept it as not shown")
    return (f"{c.measure} not shown after {c.correction} correction: corrected p={c.p_corrected:.3g} > "
            f"alpha={c.alpha:g} (raw p={c.p_raw:.3g}, {c.method} over {c.n_subclusters} "
            f"sub-clusters){detail}")
