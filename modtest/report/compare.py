"""Compare two audits (:class:`modtest.report.Report`): what got worse, and whether that fails.

Pure logic, no pytest. Sub-clusters of two trainings are not the same units, so only network-level
statistics and distributions are compared, never sub-clusters by id. Comparisons are noise-aware:
a robust audit gives every statistic a range (a p-value's Monte Carlo and partition-ensemble bounds;
a count's or quantile's spread over the ensemble's partitions), and a rule fires only when the
change exceeds both ranges, so two audits of the same model at different seeds compare clean. An
audit of the paper's protocol has point values (each range is one point).

* every claim (matched by test node id, measure, method and k; the seed is a setting, not part of
  a claim's identity) that held in the baseline must not fail now (inconclusive is noted, not a
  regression: it is within seed noise);
* metrics: network-level p-values (``lesion[k=12].importance.fisher_p``, ...), taxonomy counts
  (``lesion[k=12].important``, ...), quantiles of the sub-clusters' accuracy drops
  (``lesion[k=12].drop_q50``), base accuracy, n-cuts;
* rules (``--modtest-compare-fail`` / ``modtest compare --fail``), comma-separated:

  ``p:10x``          fail when any network-level p grew more than 10-fold (its current low end above
                     10 times the baseline's high end)
  ``NAME:-D``        fail when metric NAME fell by D or more (current high end <= baseline low end - D:
                     ``important:-2``, ``drop_q50:-0.01``)
  ``NAME:+D``        fail when metric NAME rose by D or more (``prunable:+3``)

  Without rules (``modtest compare`` with no ``--fail``, ``--modtest-compare`` without
  ``--modtest-compare-fail``) the recommended :data:`DEFAULT_RULES` apply; ``none`` turns them off.

  NAME is a metric's last part: ``important``, ``sig-but-not-diff``, ``diff-but-not-sig``,
  ``prunable``, ``complete``, ``small``, ``other``, ``drop_q10`` ... ``drop_q90``, ``drop_mean``,
  ``base_accuracy``, ``ncut``, ``n_tested``.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from modtest.errors import CompareError
from modtest.stats import DROP_QUANTILES as QUANTILES
from modtest.taxonomy import CATEGORIES as CATEGORY_NAMES

METRIC_NAMES = ("p",) + CATEGORY_NAMES + tuple(f"drop_q{q}" for q in QUANTILES) + (
    "drop_mean", "base_accuracy", "ncut", "n_tested")
#: the rules a comparison applies when it is given none: they do not fire on seed noise (measured:
#: docs/statistics.md) and fire on real changes (a pruned vs a dropout-trained MLP)
DEFAULT_RULES = "p:10x,important:-2"
_P_FLOOR = 1e-300


@dataclass(frozen=True)
class Rule:
    """``name`` (a metric's last part, or ``p``); ``op``: ``"x"`` (ratio), ``"-"`` or ``"+"``."""

    text: str
    name: str
    op: str
    amount: float

    def check(self, base, cur) -> bool:
        """Whether going from ``base`` to ``cur`` breaks this rule. Each is a value or a
        ``(low, high)`` range; the change must exceed both ranges."""
        if base is None or cur is None:
            return False
        b_lo, b_hi = base if isinstance(base, tuple) else (base, base)
        c_lo, c_hi = cur if isinstance(cur, tuple) else (cur, cur)
        if None in (b_lo, b_hi, c_lo, c_hi):
            return False
        if self.op == "x":
            return max(c_lo, _P_FLOOR) > self.amount * max(b_hi, _P_FLOOR)
        if self.op == "-":
            return c_hi - b_lo <= -self.amount + 1e-12
        return c_lo - b_hi >= self.amount - 1e-12


_RULE = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*:\s*([+-]?)\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*(x?)\s*$")


def parse_rules(expr) -> list[Rule]:
    """Parse ``"p:10x,important:-2"`` (None: :data:`DEFAULT_RULES`; ``"none"``: no rule); raise
    :class:`CompareError` (one line) on a bad rule."""
    if expr is None:
        expr = DEFAULT_RULES
    if str(expr).strip().lower() == "none":
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
    """``{metric: {"value", "low", "high", "kind", "short"}}`` of one report; kind is "p", "count" or
    "value"; ``low``/``high`` are the value's noise range (the value itself without one)."""
    import numpy as np

    out: dict[str, dict] = {}

    def put(name, short, value, kind, low=None, high=None):
        v = _f(value)
        out[name] = {"value": v, "kind": kind, "short": short,
                     "low": v if low is None else _f(low), "high": v if high is None else _f(high)}

    def spread(name, short, values, kind):
        vals = [v for v in (_f(x) for x in values) if v is not None]
        if vals:
            put(name, short, float(np.median(vals)), kind, min(vals), max(vals))

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
            if "p_low" in net:  # robust: the claim's p with its noise bounds
                put(f"{tag}.{measure}.p", "p", net.get("p"), "p", net.get("p_low"), net.get("p_high"))
                chi2 = net.get("chi2")
                if isinstance(chi2, dict):
                    put(f"{tag}.{measure}.chi2_p", "p", chi2.get("p"), "p", chi2.get("p_low"), chi2.get("p_high"))
            else:
                keys = ["p"] if "p" in net else [key for key in ("fisher_p", "chi2_p") if key in net]
                for key in keys:
                    put(f"{tag}.{measure}.{key}", "p", net.get(key), "p")
            if "ncut" in net:
                put(f"{tag}.ncut", "ncut", net.get("ncut"), "value")
        extras = p.get("extras") or {}
        ensemble = [e for e in extras.get("partitions") or [] if isinstance(e, dict)]
        if ensemble:  # robust: every count, quantile and n-cut spread over the partitions
            for cat in CATEGORY_NAMES:
                spread(f"{tag}.{cat}", cat, [(e.get("taxonomy") or {}).get(cat) for e in ensemble], "count")
            spread(f"{tag}.n_tested", "n_tested", [e.get("n_tested") for e in ensemble], "count")
            for short in [f"drop_q{q}" for q in QUANTILES] + ["drop_mean", "ncut"]:
                spread(f"{tag}.{short}", short, [e.get(short) for e in ensemble], "value")
        else:
            tax = extras.get("taxonomy")
            if isinstance(tax, dict):
                for cat in CATEGORY_NAMES:
                    if cat in tax:
                        put(f"{tag}.{cat}", cat, tax[cat], "count")
            rows = [r for r in p.get("rows") or [] if isinstance(r, dict)]
            drops = [d for d in (_f(r.get("drop")) for r in rows) if d is not None]
            if probe == "lesion" and rows:
                put(f"{tag}.n_tested", "n_tested", len(rows), "count")
            if probe == "lesion" and drops:
                qs = np.percentile(np.asarray(drops), QUANTILES)
                for q, v in zip(QUANTILES, qs):
                    put(f"{tag}.drop_q{q}", f"drop_q{q}", float(v), "value")
                put(f"{tag}.drop_mean", "drop_mean", float(np.mean(drops)), "value")
        if "base_accuracy" in extras:
            put(f"{tag}.base_accuracy", "base_accuracy", extras["base_accuracy"], "value")
    if not any(m["short"] == "ncut" for m in out.values()):
        for part in report.partitions or []:
            put(f"partition[k={part.get('k')}].ncut", "ncut", part.get("ncut"), "value")
    return out


def _claim_k(c: dict):
    if c.get("k") is not None:
        return c.get("k")
    m = re.search(r"\[k=(\d+)", str(c.get("name", "")))
    return int(m.group(1)) if m else None


def _claim_key(c: dict) -> tuple:
    """A claim's identity across audits: test, measure, method and k (not the seed: a setting)."""
    measure = c.get("measure") or str(c.get("name", "")).split("[")[0]
    return (c.get("nodeid", ""), measure, c.get("method", ""), _claim_k(c))


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
    """Compare two reports under ``rules`` (:func:`parse_rules` output, an expression string, or
    None for :data:`DEFAULT_RULES`)."""
    if rules is None or isinstance(rules, str):
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
        b_verdict = bc.get("verdict") or "fail"
        row = {"metric": label, "kind": "p", "baseline": b_verdict}
        if cc is None:
            row.update(current="absent", change="-", status="missing")
            cmp.notes.append(f"{label} is not in the current audit")
        else:
            c_verdict = cc.get("verdict") or "fail"
            regressed = b_verdict == "pass" and c_verdict == "fail"
            row.update(current=c_verdict,
                       change=_change(_f(bc.get("p_corrected")), _f(cc.get("p_corrected")), "p"),
                       status="FAIL" if regressed else "ok")
            if regressed:
                cmp.failures.append(
                    f"{label} held in {baseline_name} (corrected p={_fmt(bc.get('p_corrected'))}) but fails "
                    f"now (corrected p={_fmt(cc.get('p_corrected'))}, alpha={_fmt(cc.get('alpha'))})")
            elif b_verdict == "pass" and c_verdict == "inconclusive":
                cmp.notes.append(f"{label} held in {baseline_name} and is inconclusive now (within seed "
                                 f"noise of alpha: not a regression)")
        cmp.rows.append(row)
    for cc in cur_claims.values():
        cmp.rows.append({"metric": f"claim {cc.get('name')} ({cc.get('method')})", "kind": "p",
                         "baseline": "absent", "current": cc.get("verdict"), "change": "-", "status": "new"})

    # metrics
    bm, cm = metrics(baseline), metrics(current)
    for name in list(dict.fromkeys(list(bm) + list(cm))):
        b, c = bm.get(name), cm.get(name)
        info = b or c
        bv = None if b is None else b["value"]
        cv = None if c is None else c["value"]
        b_range = None if b is None else (b["low"], b["high"])
        c_range = None if c is None else (c["low"], c["high"])
        broken = []
        for r in rules:
            applies = (r.name == "p" and info["kind"] == "p") or (r.name != "p" and r.name == info["short"])
            if applies and r.check(b_range, c_range):
                broken.append(r.text)
        status = "ok"
        if b is None or c is None:
            status = "missing" if c is None else "new"
        if broken:
            status = "FAIL"
            cmp.failures.append(f"{name} got worse: {_fmt_range(b, info['kind'])} -> {_fmt_range(c, info['kind'])} "
                                f"({_change(bv, cv, info['kind'])}; rule {', '.join(broken)})")
        cmp.rows.append({"metric": name, "kind": info["kind"], "baseline": bv, "current": cv,
                         "baseline_range": list(b_range) if b_range and b_range[0] != b_range[1] else None,
                         "current_range": list(c_range) if c_range and c_range[0] != c_range[1] else None,
                         "change": _change(bv, cv, info["kind"]), "status": status})
    return cmp


def _fmt_range(m: dict, kind: str) -> str:
    """A metric's value, with its noise range when it has one."""
    text = _fmt(m["value"], kind)
    if m["low"] is not None and m["high"] is not None and m["low"] != m["high"]:
        text += f" [{_fmt(m['low'], kind)}, {_fmt(m['high'], kind)}]"
    return text


def _fmt(v, kind="p") -> str:
    f = _f(v)
    if f is None:
        return "-"
    return f"{f:g}" if kind == "count" else f"{f:.3g}"
