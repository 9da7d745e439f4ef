"""Claim collection and session-wide multiple-comparison correction (paper A.7).

Every modtest assertion made in a session is one hypothesis. Assertions record their
:class:`~modtest.results.Claim` in the active :class:`ClaimCollector`; at the end of the session
:func:`correct_claims` applies :func:`modtest.stats.correct` to all raw p-values together, and a
claim whose corrected p exceeds its alpha becomes a failure. No pytest import here: the plugin
does the wiring, and the same code serves scripts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

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
    """Set ``p_corrected``, ``correction`` and ``passed`` on every claim, in place; return them.

    The correction runs over all claims with a finite raw p (one family). A claim passes when its
    corrected p is <= its own alpha and it did not already fail (a claim recorded with
    ``passed=False`` - raw p above alpha, nothing testable - stays failed). Corrected p-values do
    not depend on alpha for holm, fdr_bh and bonferroni, so claims may carry different alphas.
    """
    import numpy as np

    from modtest.stats import CORRECTION_METHODS, correct

    if method not in CORRECTION_METHODS:
        from modtest.errors import InvalidInput

        raise InvalidInput(f"unknown correction {method!r}; choose one of {', '.join(CORRECTION_METHODS)}")
    p = np.array([float("nan") if _nan(c.p_raw) else float(c.p_raw) for c in claims], dtype=float)
    if len(claims):
        _, adj = correct(p, method=method, alpha=0.05)
    else:
        adj = p
    for c, a in zip(claims, adj):
        c.correction = method
        c.p_corrected = float(a)
        ok = (not math.isnan(a)) and a <= c.alpha and c.passed is not False
        c.passed = bool(ok)
    return claims


@dataclass
class SessionDefaults:
    """What an assertion uses when it is not told: k, alpha, seed, data, trust."""

    k: int = 12
    alpha: float = 0.05
    seed: int = 0
    data: Callable[[Any], tuple] | None = None  # model -> (x, y), checked against that model
    trust: bool = False
    settings: dict = field(default_factory=dict)  # per probe: {"lesion": {...}, ...}


class ClaimCollector:
    """The claims of one session (or one xdist worker) and their correction."""

    def __init__(self, method: str = "holm", defaults: SessionDefaults | None = None):
        self.method = method
        self.defaults = defaults or SessionDefaults()
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
        return [c for c in self.claims if c.passed is False]

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
            d["verdict"] = "pass" if c.passed else "fail"
            claims.append(d)
        return {"correction": self.method, "alpha": self.defaults.alpha, "k": self.defaults.k,
                "seed": self.defaults.seed, "n_claims": len(self.claims),
                "n_failed": len(self.failures()), "claims": claims}


_ACTIVE: ClaimCollector | None = None


def active() -> ClaimCollector | None:
    """The collector of the running session, or None outside one."""
    return _ACTIVE


def activate(collector: ClaimCollector | None) -> ClaimCollector | None:
    """Install ``collector`` (None to deactivate); returns the previous one."""
    global _ACTIVE
    old, _ACTIVE = _ACTIVE, collector
    return old


def failure_message(c: Claim) -> str:
    """One paragraph for a claim that failed after correction."""
    return (f"{c.measure} not shown after {c.correction} correction: corrected p={c.p_corrected:.3g} > "
            f"alpha={c.alpha:g} (raw p={c.p_raw:.3g}, {c.method} over {c.n_subclusters} "
            f"sub-clusters){'; ' + c.detail if c.detail else ''}")
