"""One self-contained HTML file per audit: verdicts, partition, figures (PNG as base64 data URIs).

Sections (``<section id=...>``): ``summary``, ``claims``, ``comparison`` (when a baseline was
compared), ``partition``, ``clusterability`` (when it ran), ``importance`` (paper Fig. 2),
``profiles`` (Fig. 6), ``dependencies`` (Fig. 9, when double lesions ran), ``visualizations``
(when present), ``network`` (all network-level statistics), ``details`` (versions, timings).
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from modtest.report import figures
from modtest.report.schema import Report

_CSS = """
body{font-family:-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1100px;
color:#222;line-height:1.4}
h1{font-size:1.6em;margin-bottom:0}h2{border-bottom:1px solid #ddd;padding-bottom:4px;margin-top:32px}
table{border-collapse:collapse;font-size:0.85em;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.pass{color:#1a7f37;font-weight:bold}.fail{color:#cf222e;font-weight:bold}
.inconclusive{color:#9a6700;font-weight:bold}
.banner{padding:10px 14px;border-radius:6px;margin:12px 0;font-size:1.1em}
.banner.pass{background:#dafbe1}.banner.fail{background:#ffebe9}.banner.inconclusive{background:#fff8c5}
img{max-width:100%;height:auto;border:1px solid #eee;margin:6px 0;box-sizing:border-box}
.muted{color:#777;font-size:0.85em}.wide{overflow-x:auto;max-width:100%}
body{padding:0 12px}td{overflow-wrap:anywhere}
"""


def _e(v) -> str:
    return html.escape("" if v is None else str(v))


def _seconds(v) -> str:
    """A duration as people read it: ``0.42 s``, ``12.3 s``, ``1,710 s (28.5 min)``."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    if math.isnan(f):
        return "-"
    if f < 10:
        return f"{f:.2f} s"
    if f < 600:
        return f"{f:.1f} s"
    return f"{f:,.0f} s ({f / 60:.1f} min)"


def _p(v) -> str:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return "-"
    return "-" if math.isnan(f) else f"{f:.3g}"


def _img(png: bytes, alt: str, ident: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img id="{_e(ident)}" alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _range(lo, hi) -> str:
    if lo is None or hi is None:
        return "-"
    return f"[{_p(lo)}, {_p(hi)}]"


def _table(head, rows) -> str:
    out = ['<div class="wide"><table><thead><tr>' + "".join(f"<th>{_e(h)}</th>" for h in head)
           + "</tr></thead><tbody>"]
    for r in rows:
        out.append("<tr>" + "".join(c if isinstance(c, _Raw) else f"<td>{_e(c)}</td>" for c in r) + "</tr>")
    out.append("</tbody></table></div>")  # a wide table scrolls by itself, not the page
    return "".join(out)


class _Raw(str):
    """A cell already rendered as ``<td>...</td>``."""


def _verdict_cell(v) -> _Raw:
    cls = v if v in ("pass", "inconclusive") else "fail"
    return _Raw(f'<td class="{cls}">{_e(v)}</td>')


def _section(ident: str, title: str, body: str) -> str:
    return f'<section id="{ident}"><h2>{_e(title)}</h2>{body}</section>'


def _claimed_k(report: Report):
    """The k the claims ran at (a test may pass its own), else the audit's."""
    ks = sorted({int(c["k"]) for c in report.claims if c.get("k") is not None})
    return ", ".join(map(str, ks)) if ks else report.k


def render_html(report: Report, comparison=None) -> str:
    """The report as one HTML document (a string; nothing is written)."""
    parts = []
    model = report.model or {}
    path = model.get("path")  # the file the user named, not the model's internal name ("sequential")
    title = f"modtest audit: {Path(str(path)).name if path else model.get('name') or 'model'}"
    ok = report.n_failed == 0 and (comparison is None or comparison.ok)
    verdict = "FAIL" if not ok else ("INCONCLUSIVE" if report.n_inconclusive else "PASS")
    lesion = report.lesion
    summary = [f'<div class="banner {verdict.lower()}">{verdict}: {report.n_claims} claim(s), '
               f'{report.n_failed} failed'
               + (f", {report.n_inconclusive} inconclusive" if report.n_inconclusive else "")
               + ("" if comparison is None else
                  f"; comparison with {_e(comparison.baseline_name)}: "
                  f"{'no regression' if comparison.ok else f'{len(comparison.failures)} regression(s)'}")
               + "</div>"]
    facts = [("model", model.get("path") or model.get("name")), ("model hash", model.get("hash")),
             ("data", (report.data or {}).get("path")), ("data hash", (report.data or {}).get("hash")),
             ("examples", (report.data or {}).get("n_examples")), ("k", _claimed_k(report)), ("seed", report.seed),
             ("alpha", report.alpha), ("correction", report.correction), ("protocol", report.protocol),
             ("created", report.created),
             ("source", report.source)]
    if lesion is not None:
        ex = lesion.get("extras") or {}
        facts.append(("base accuracy", _p(ex.get("base_accuracy"))))
        tax = ex.get("taxonomy") or {}
        if tax:
            facts.append(("taxonomy", ", ".join(f"{k}: {v}" for k, v in tax.items() if v)))
    summary.append(_table(("", "value"), [(k, v) for k, v in facts if v is not None]))
    parts.append(_section("summary", "Summary", "".join(summary)))

    if report.claims:
        rows = [(c.get("nodeid") or "", c.get("measure"), c.get("method"), _p(c.get("p_raw")),
                 _range(c.get("p_low"), c.get("p_high")), _p(c.get("p_corrected")),
                 _range(c.get("p_low_corrected"), c.get("p_high_corrected")), _p(c.get("alpha")),
                 _verdict_cell(c.get("verdict"))) for c in report.claims]
        body = _table(("test", "measure", "method", "raw p", "noise bounds", "corrected p", "corrected bounds",
                       "alpha", "verdict"), rows)
        body += ('<p class="muted">Noise bounds: the range the p-value could take with other random controls '
                 'and other equally good partitions (robust protocol); a claim passes when the whole range is '
                 '&lt;= alpha, fails when it is &gt; alpha, and is inconclusive otherwise.</p>')
        hints = [h for c in report.claims if c.get("verdict") != "pass" for h in (c.get("hints") or [])]
        if hints:
            body += ('<p><b>Why claims could not be shown:</b></p><ul>'
                     + "".join(f"<li>{_e(h)}</li>" for h in dict.fromkeys(hints)) + "</ul>")
    else:
        body = '<p class="muted">no assertions in this audit</p>'
    parts.append(_section("claims", "Claims", body))

    if comparison is not None:
        rows = [(r["metric"], r["baseline"] if isinstance(r["baseline"], str) else _p(r["baseline"]),
                 r["current"] if isinstance(r["current"], str) else _p(r["current"]), r["change"],
                 _Raw(f'<td class="{"fail" if r["status"] == "FAIL" else ""}">{_e(r["status"])}</td>'))
                for r in comparison.rows]
        body = "".join(f'<p class="fail">{_e(f)}</p>' for f in comparison.failures)
        body += "".join(f'<p class="muted">{_e(n)}</p>' for n in comparison.notes)
        body += _table(("metric", comparison.baseline_name, comparison.current_name, "change", "status"), rows)
        parts.append(_section("comparison", f"Comparison with {comparison.baseline_name}", body))

    part = report.partition
    if part is not None:
        body = _img(figures.partition_figure(part), "cluster sizes per layer", "fig-partition")
        labels = sorted({int(c) for layer in part.get("layers", []) for c in layer.get("cluster_sizes", {})})
        rows = [[layer.get("name"), layer.get("units")] + [layer.get("cluster_sizes", {}).get(str(c), 0)
                                                           for c in labels] for layer in part.get("layers", [])]
        body += _table(["layer", "units"] + ["isolated" if c < 0 else f"c{c}" for c in labels], rows)
        body += f'<p class="muted">n-cut {_p(part.get("ncut"))}, {part.get("n_isolated", 0)} isolated units</p>'
        parts.append(_section("partition", f"Partition (k={part.get('k')})", body))

    cl = report.probe("clusterability")
    if cl is not None:
        net = (cl.get("network") or {}).get("clusterability", {})
        shuffled = (cl.get("extras") or {}).get("shuffled_ncuts", [])
        body = _img(figures.clusterability_figure(net.get("ncut"), shuffled), "n-cut vs shuffled networks",
                    "fig-clusterability") if shuffled else '<p class="muted">no shuffled networks in this report</p>'
        body += f'<p>n-cut {_p(net.get("ncut"))}, p={_p(net.get("p"))}, z={_p(net.get("z_score"))} ' \
                f'(k={_e(cl.get("k"))}, {net.get("n", 0)} shuffles)</p>'
        if not any(c.get("measure") == "clusterability" for c in report.claims):
            body += ('<p class="muted">Shown for reference, not a claim (it is not in the correction); '
                     '<code>modtest audit --clusterability N</code> or <code>assert_clusterable</code> claims it.</p>')
        parts.append(_section("clusterability", "Clusterability", body))
    for note in (report.extra or {}).get("notes", []):
        parts.append(f'<p class="muted">note: {_e(note)}</p>')

    if lesion is not None and any(isinstance(n, dict) and n.get("partitions")
                                  for n in (lesion.get("network") or {}).values()):
        nets = {m: n for m, n in lesion["network"].items() if isinstance(n, dict) and n.get("partitions")}
        body = _img(figures.ensemble_figure(nets, report.alpha or 0.05), "p-value in each partition", "fig-ensemble")
        first = next(iter(nets.values()))
        rows = []
        for j, e in enumerate(first["partitions"]):
            rows.append([e.get("seed"), _p(e.get("ncut")), e.get("important")]
                        + [f"{_p(n['partitions'][j].get('p'))} [{_p(n['partitions'][j].get('p_low'))}, "
                           f"{_p(n['partitions'][j].get('p_high'))}] {n['partitions'][j].get('decision')}"
                           for n in nets.values()])
        body += _table(["seed", "n-cut", "important"] + [f"{m} p [bounds] decision" for m in nets], rows)
        body += ('<p class="muted">Each partition is spectral clustering at another seed (equally good n-cuts). '
                 'A claim holds when it holds in a quorum of partitions at level alpha x quorum / R '
                 '(quantile merging, valid under any dependence between partitions).</p>')
        parts.append(_section("ensemble", "Partitions (robust protocol)", body))

    if lesion is not None and lesion.get("rows"):
        rows = lesion["rows"]
        body = _img(figures.scatter_figure(rows), "fraction of layer vs accuracy drop", "fig-importance")
        body += '<p class="muted">Each point is a sub-cluster; important ones (beat all random controls and ' \
                'drop &gt; 1 point) are coloured as such, and the ones with the largest drops are labelled ' \
                'layer-cluster.</p>'
        parts.append(_section("importance", "Importance (Figure 2)", body))
        if figures.has_profiles(rows):
            body = _img(figures.profiles_figure(rows), "class-wise drop profiles", "fig-profiles")
            body += '<p class="muted">Red: the sub-cluster; grey: random same-layer sets of the same size.</p>'
        else:
            body = '<p class="muted">no class-wise drops in this report</p>'
        parts.append(_section("profiles", "Class-wise drops (Figure 6)", body))

    dl = report.double_lesion
    if dl and dl.get("matrix") is not None:
        if figures.has_pairs(dl["matrix"]):
            body = _img(figures.dependency_figure(dl["matrix"]), "double-lesion dependency heatmap",
                        "fig-dependencies")
        else:
            n = len(dl["matrix"].get("names") or [])
            body = (f'<p class="muted">no pairs: double lesions need two important sub-clusters in different '
                    f'layers, and this audit has {n} important sub-cluster(s)'
                    + (" all in one layer" if n > 1 else "") + '.</p>')
        pairs = dl.get("pairs") or []
        if pairs:
            body += _table(("X", "Y", "damage X", "damage Y", "damage XY", "case"),
                           [(p.get("x"), p.get("y"), _p(p.get("damage_x")), _p(p.get("damage_y")),
                             _p(p.get("damage_xy")), p.get("case")) for p in pairs])
        parts.append(_section("dependencies", "Dependencies (Figure 9)", body))

    if report.visualizations:
        body = ""
        for i, v in enumerate(report.visualizations):
            png = base64.b64decode(v.get("png") or "")
            body += (f"<h3>{_e(v.get('title', f'grid {i + 1}'))}</h3>"
                     + _img(png, v.get("title", "grid"), f"fig-vis-{i}"))
        parts.append(_section("visualizations", "Visualizations", body))

    rows = []
    for p in report.probes:
        for measure, net in sorted((p.get("network") or {}).items()):
            if not isinstance(net, dict):
                continue
            name = f"{p.get('probe')} (k={p.get('k')})"
            if p.get("probe") == "clusterability":  # its own statistic: n-cut vs shuffles
                stat = f"shuffle p {_p(net.get('p'))}, z {_p(net.get('z_score'))}, n-cut {_p(net.get('ncut'))}"
                rows.append((name, measure, stat, _range(net.get("p_low"), net.get("p_high")), "-",
                             net.get("n", "-"), "-", net.get("verdict", "-")))
            else:
                rows.append((name, measure, f"Fisher p {_p(net.get('fisher_p'))}",
                             _range(net.get("p_low"), net.get("p_high")), _p(net.get("chi2_p")),
                             net.get("n", "-"), net.get("n_excluded", "-"), net.get("verdict", "-")))
    parts.append(_section("network", "Network-level statistics",
                          _table(("probe", "measure", "statistic", "noise bounds", "chi2 p", "n", "excluded",
                                  "verdict"), rows)
                          if rows else '<p class="muted">no probes</p>'))

    from modtest.report.build import claim_costs

    costs = claim_costs(report)
    if report.cost or any(c[3] is not None for c in costs):  # reports before the counters: no section
        fmt = lambda v: "-" if v is None else f"{int(v):,}"  # noqa: E731
        tot = report.cost or {}
        body = _table(("claim", "protocol", "probe", "lesioned networks", "lesioned examples", "probe run"),
                      [(m, pr, pb, fmt(n), fmt(e), how) for m, pr, pb, n, e, how in costs])
        if tot:
            body += (f'<p class="muted">the audit evaluated {fmt(tot.get("lesioned_networks"))} lesioned networks '
                     f'({fmt(tot.get("lesioned_examples"))} lesioned examples) and rendered '
                     f'{fmt(tot.get("images"))} images, each probe run counted once</p>')
        parts.append(_section("cost", "Cost", body))

    vers = report.versions or {}
    timings = report.timings or {}
    body = _table(("library", "version"), [(k, v) for k, v in vers.items() if v is not None])
    trows = [("total", _seconds(timings.get("total_seconds")))] + [
        (k, _seconds(v)) for k, v in (timings.get("probes") or {}).items()] + [
        (f"phase: {k}", _seconds(v)) for k, v in (timings.get("phases") or {}).items()]
    body += _table(("timing", "seconds"), trows)
    parts.append(_section("details", "Versions and timings", body))

    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
            f"<h1>{_e(title)}</h1><p class=\"muted\">modtest report, schema version {report.schema_version}</p>"
            + "".join(parts) + "</body></html>\n")


def write_html(report: Report, path, comparison=None):
    """Render and write atomically (nothing is written when rendering fails)."""
    from pathlib import Path

    from modtest._io import atomic_write_text

    text = render_html(report, comparison)
    atomic_write_text(path, text)
    return Path(path)
