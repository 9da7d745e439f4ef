"""Compare two audits (:class:`modtest.report.Report`): what got worse, and whether that fails.

Pure logic, no pytest. Sub-clusters of two trainings are not the same units, so only network-level
statistics and distributions are compared, never sub-clusters by id:

* every claim (matched by test node id, name and method) that held in the baseline must still hold;
* metrics: network-level p-values (``lesion[k=12].importance.fisher_p``, ...), taxonomy counts
  (``lesion[k=12].important``, ...), quantiles of the sub-clusters' accuracy drops
  (``lesion[k=12].drop_q50``), base accuracy, n-cuts;
* rules (``--modtest-compare-fail`` / ``modtest compare --fail``), comma-separated:

  ``p:10x``          fail when any network-level p grew more than 10-fold
  ``NAME:-D``        fail when metric NAME fell by D or more (``important:-2``, ``drop_q50:-0.01``)
  ``NAME:+D``        fail when metric NAME rose by D or more (``prunable:+3``)

  NAME is a metric's last part: ``important``, ``sig-but-not-diff``, ``diff-but-not-sig``,
  ``prunable``, ``complete``, ``small``, ``other``, ``drop_q10`` ... ``drop_q90``, ``drop_mean``,
  ``base_accuracy``, ``ncut``, ``n_tested``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from modtest.errors import InvalidInput

QUANTILES = (10, 25, 50, 75, 90)
CATEGORY_NAMES = ("important", "sig-but-not-diff", "diff-but-not-sig", "prunable", "complete", "small",
                  "other")
METRIC_NAMES = ("p",) + CATEGORY_NAMES + tuple(f"drop_q{q}" for q in QUANTILES) + (
    "drop_mean", "base_accuracy", "ncut", "n_tested")
_P_FLOOR = 1e-300


class CompareError(InvalidInput):
    """An unusable comparison rule."""


@dataclass(frozen=True)
class Rule:
    """``name`` (a metric's last part, or ``p``); ``op``: ``"x"`` (ratio), ``"-"`` or ``"+"``."""

    text: str
    name: str
    op: str
    amount: float

    def check(self, base: float, cur: float) -> bool:
        """Whether going from ``base`` to ``cur`` breaks this rule."""
        if base is None or cur is None:
            return False
        if self.op == "x":
            return max(cur, _P_FLOOR) > self.amount * max(base, _P_FLOOR)
        if self.op == "-":
            return cur - base <= -self.amount + 1e-12
        return cur - base >= self.amount - 1e-12


_RULE = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*:\s*([+-]?)\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(x?)\s*$")


def parse_rules(expr) -> list[Rule]:
    """Parse ``"p:10x,important:-2"``; raise :class:`CompareError` (one line) on a bad rule."""
    if expr is None:
        return []
    rules = []
    for part in str(expr).split(","):
        if not part.strip():
            continue
        m = _RULE.match(part)
        if not m:
            raise CompareError(f"bad compare-fail rule {part.strip()!r}: expected NAME:-D, NAME:+D or p:Fx "
                               f"(e.g. p:10x,important:-2)")
        name, sign, num, x = m.group(1), m.group(2), float(m.group(3)), m.group(4)
        if name not in METRIC_NAMES:
            raise CompareError(f"unknown compare-fail rule {part.strip()!r}: unknown metric {name!r}; "
                               f"known: {', '.join(METRIC_NAMES)}")
        if name == "p":
            if not x or sign:
                raise CompareError(f"bad compare-fail rule {part.strip()!r}: p takes a factor, e.g. p:10x")
            if num <= 1:
                raise CompareError(f"bad compare-fail rule {part.strip()!r}: the factor must be > 1")
            rules.append(Rule(part.strip(), name, "x", num))
        else:
            if x or not sign:
                raise CompareError(f"bad compare-fail rule {part.strip()!r}: {name} takes a signed change, "
                                   f"e.g. {name}:-2 or {name}:+2")
            if num <= 0:
                raise CompareError(f"bad compare-fail rule {part.strip()!r}: the change must be > 0")
            rules.append(Rule(part.strip(), name, sign, num))
    return rules


def _f(v):
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) or math.isinf(f) else f


def metrics(report) -> dict[str, dict]:
    """``{metric: {"value", "kind", "short"}}`` of one report; kind is "p", "count" or "value"."""
    import numpy as np

    out: dict[str, dict] = {}

    def put(name, short, value, kind):
        out[name] = {"value": _f(value), "kind": kind, "short": short}

    for part in report.partitions or []:
        put(f"partition[k={part.get('k')}].ncut", "ncut", part.get("ncut"), "value")
    seen = set()
    for p in report.probes or []:
        probe = p.get("probe")
        tag = f"{probe}[k={p.get('k')}]"
        if tag in seen:  # the same probe with other settings: number them
            i = 2
            while f"{tag}#{i}" in seen:
                i += 1
            tag = f"{tag}#{i}"
        seen.add(tag)
        for measure, net in sorted((p.get("network") or {}).items()):
            if not isinstance(net, dict):
                continue
            keys = ["p"] if "p" in net else [key for key in ("fisher_p", "chi2_p") if key in net]
            for key in keys:
                put(f"{tag}.{measure}.{key}", "p", net.get(key), "p")
            if "ncut" in net:
                put(f"{tag}.ncut", "ncut", net.get("ncut"), "value")
        extras = p.get("extras") or {}
        tax = extras.get("taxonomy")
        if isinstance(tax, dict):
            for cat in CATEGORY_NAMES:
                if cat in tax:
                    put(f"{tag}.{cat}", cat, tax[cat], "count")
        if "base_accuracy" in extras:
            put(f"{tag}.base_accuracy", "base_accuracy", extras["base_accuracy"], "value")
        rows = [r for r in p.get("rows") or [] if isinstance(r, dict)]
        drops = [d for d in (_f(r.get("drop")) for r in rows) if d is not None]
        if probe == "lesion" and rows:
            put(f"{tag}.n_tested", "n_tested", len(rows), "count")
        if probe == "lesion" and drops:
            qs = np.percentile(np.asarray(drops), QUANTILES)
            for q, v in zip(QUANTILES, qs):
                put(f"{tag}.drop_q{q}", f"drop_q{q}", float(v), "value")
            put(f"{tag}.drop_mean", "drop_mean", float(np.mean(drops)), "value")
    return out


def _claim_key(c: dict) -> tuple:
    return (c.get("nodeid", ""), c.get("name", ""), c.get("method", ""))


@dataclass
class Comparison:
    """What changed from ``baseline`` to ``current``; ``failures`` empty means the comparison passes."""

    rows: list = field(default_factory=list)
    failures: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    baseline_name: str = "baseline"
    current_name: str = "current"

    @property
    def ok(self) -> bool:
        return not self.failures

    def table(self) -> str:
        """A plain-text table: metric, baseline, current, change, status."""
        def fmt(v, kind):
            if v is None:
                return "-"
            if isinstance(v, str):
                return v
            if kind == "count":
                return f"{v:g}"
            return f"{v:.3g}"

        head = ("metric", self.baseline_name, self.current_name, "change", "status")
        body = [(r["metric"], fmt(r["baseline"], r["kind"]), fmt(r["current"], r["kind"]),
                 r["change"], r["status"]) for r in self.rows]
        widths = [max(len(str(x[i])) for x in [head] + body) for i in range(5)]
        lines = ["  ".join(str(x[i]).ljust(widths[i]) if i == 0 else str(x[i]).rjust(widths[i])
                           for i in range(5)) for x in [head] + body]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def summary(self) -> str:
        if self.ok:
            return f"modtest compare: no rule failed ({len(self.rows)} metrics compared)"
        return f"modtest compare: {len(self.failures)} regression(s): " + "; ".join(self.failures)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "rows": self.rows, "failures": self.failures, "notes": self.notes,
                "baseline": self.baseline_name, "current": self.current_name}


def _change(base, cur, kind) -> str:
    if base is None or cur is None:
        return "-"
    if kind == "p":
        if base <= 0 and cur <= 0:
            return "x1"
        return f"x{max(cur, _P_FLOOR) / max(base, _P_FLOOR):.3g}"
    d = cur - base
    return f"{d:+g}" if kind == "count" else f"{d:+.3g}"


def compare_reports(baseline, current, rules=(), *, baseline_name: str = "baseline",
                    current_name: str = "current") -> Comparison:
    """Compare two reports under ``rules`` (:func:`parse_rules` output or an expression string)."""
    if isinstance(rules, str):
        rules = parse_rules(rules)
    cmp = Comparison(baseline_name=baseline_name, current_name=current_name)
    for what, key in (("model", "hash"), ("data", "hash")):
        b, c = (baseline.model if what == "model" else baseline.data).get(key), \
            (current.model if what == "model" else current.data).get(key)
        if b and c and b != c:
            cmp.notes.append(f"{what} differs ({what} hash {b} -> {c})")
    if baseline.k != current.k:
        cmp.notes.append(f"k differs ({baseline.k} -> {current.k})")

    # claims
    cur_claims = {_claim_key(c): c for c in current.claims}
    for bc in baseline.claims:
        key = _claim_key(bc)
        label = f"claim {bc.get('name')} ({bc.get('method')})" + (f" [{bc.get('nodeid')}]" if bc.get("nodeid") else "")
        cc = cur_claims.pop(key, None)
        b_ok = bc.get("verdict") == "pass"
        row = {"metric": label, "kind": "p", "baseline": "pass" if b_ok else "fail"}
        if cc is None:
            row.update(current="absent", change="-", status="missing")
            cmp.notes.append(f"{label} is not in the current audit")
        else:
            c_ok = cc.get("verdict") == "pass"
            row.update(current="pass" if c_ok else "fail",
                       change=_change(_f(bc.get("p_corrected")), _f(cc.get("p_corrected")), "p"),
                       status="ok" if c_ok or not b_ok else "FAIL")
            if b_ok and not c_ok:
                cmp.failures.append(
                    f"{label} held in {baseline_name} (corrected p={_fmt(bc.get('p_corrected'))}) but fails "
                    f"now (corrected p={_fmt(cc.get('p_corrected'))}, alpha={_fmt(cc.get('alpha'))})")
        cmp.rows.append(row)
    for key, cc in cur_claims.items():
        cmp.rows.append({"metric": f"claim {cc.get('name')} ({cc.get('method')})", "kind": "p",
                         "baseline": "absent", "current": cc.get("verdict"), "change": "-", "status": "new"})

    # metrics
    bm, cm = metrics(baseline), metrics(current)
    for name in list(dict.fromkeys(list(bm) + list(cm))):
        b, c = bm.get(name), cm.get(name)
        info = b or c
        bv = None if b is None else b["value"]
        cv = None if c is None else c["value"]
        broken = []
        for r in rules:
            applies = (r.name == "p" and info["kind"] == "p") or (r.name != "p" and r.name == info["short"])
            if applies and r.check(bv, cv):
                broken.append(r.text)
        status = "ok"
        if b is None or c is None:
            status = "missing" if c is None else "new"
        if broken:
            status = "FAIL"
            cmp.failures.append(f"{name} got worse: {_fmt(bv, info['kind'])} -> {_fmt(cv, info['kind'])} "
                                f"({_change(bv, cv, info['kind'])}; rule {', '.join(broken)})")
        cmp.rows.append({"metric": name, "kind": info["kind"], "baseline": bv, "current": cv,
                         "change": _change(bv, cv, info["kind"]), "status": status})
    return cmp


def _fmt(v, kind="p") -> str:
    f = _f(v)
    if f is None:
        return "-"
    return f"{f:g}" if kind == "count" else f"{f:.3g}"
