"""Table-1-style tables: medians over replicates and the multiple-comparison marks of Tables 4/5.

A *cell* is the median, over a family's replicates, of one network-level p-value (Fisher combined or
chi-squared categorical) of one measure. Marks (paper A.7):

* ``B`` -- significant under Benjamini-Hochberg at FDR 0.05, run per column (one measure and one
  combination method) across all rows of the table, as Table 4 groups its tests;
* ``H`` -- significant under Holm-Bonferroni at FWER 0.05, run once over every cell of the table,
  as Table 5.

Cells below 0.05 are bold, as in Table 1. Medians of p-values are not themselves p-values (the paper
says so too); the corrections are applied to them as the paper does.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["MEASURES", "LESION_MEASURES", "COLUMNS", "median_cells", "marks", "fmt_p",
           "markdown_table", "cov_of_median_network"]

#: (key, header) of the measures, in table order; keys index a replicate's ``measures`` dict.
MEASURES = [
    ("vis_input_coherence", "Input coherence (vis. score)"),
    ("vis_output_coherence", "Output coherence (softmax entropy)"),
    ("lesion_importance", "Importance (accuracy drop)"),
    ("lesion_output_coherence", "Output coherence (class-wise range)"),
    ("vis_activational_variance", "Activational variance"),
]
LESION_MEASURES = MEASURES[2:4]
COLUMNS = [(m, t) for m, _ in MEASURES for t in ("fisher_p", "chi2_p")]


def _nanmedian(vals) -> float:
    a = np.asarray([np.nan if v is None else float(v) for v in vals], dtype=float)
    a = a[~np.isnan(a)]
    return float(np.median(a)) if a.size else math.nan


def median_cells(replicates: list[dict], measures=MEASURES) -> dict:
    """{(measure, "fisher_p"|"chi2_p"): median over replicates}; a replicate is ``{"measures": {...}}``."""
    cells = {}
    for m, _ in measures:
        for t in ("fisher_p", "chi2_p"):
            cells[(m, t)] = _nanmedian([(r["measures"].get(m) or {}).get(t) for r in replicates])
    return cells


def marks(rows: list[dict], columns, alpha: float = 0.05) -> tuple[dict, dict]:
    """BH per column and Holm over the whole table.

    Parameters
    ----------
    rows : list of {column: p} (NaN / missing cells are left out of both corrections)
    columns : list of column keys

    Returns
    -------
    (bh, holm): each ``{(row index, column): bool}``
    """
    from modtest.stats import correct

    bh, holm = {}, {}
    for c in columns:
        p = np.array([rows[i].get(c, math.nan) for i in range(len(rows))], dtype=float)
        rej, _ = correct(p, "fdr_bh", alpha)
        for i in range(len(rows)):
            bh[(i, c)] = bool(rej[i])
    keys = [(i, c) for i in range(len(rows)) for c in columns]
    p = np.array([rows[i].get(c, math.nan) for i, c in keys], dtype=float)
    rej, _ = correct(p, "holm", alpha)
    for k, r in zip(keys, rej):
        holm[k] = bool(r)
    return bh, holm


def fmt_p(p: float) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "--"
    if p == 0:
        return "0"
    if p < 1e-3:
        m, e = f"{p:.2e}".split("e")
        return f"{m}e{int(e)}"
    return f"{p:.3f}"


def _cell(p, bh, holm, alpha=0.05) -> str:
    s = fmt_p(p)
    if p is not None and not (isinstance(p, float) and math.isnan(p)) and p < alpha:
        s = f"**{s}**"
    tag = ("B" if bh else "") + ("H" if holm else "")
    return f"{s} {tag}" if tag else s


def markdown_table(labels: list[str], rows: list[dict], measures=MEASURES, *, extra_cols=None,
                   alpha: float = 0.05) -> str:
    """A markdown table: one row per label, two columns (Fisher, chi2) per measure, with marks.

    ``extra_cols``: optional ``(headers, [list of str per row])`` appended unmarked (e.g. accuracy).
    """
    columns = [(m, t) for m, _ in measures for t in ("fisher_p", "chi2_p")]
    bh, holm = marks(rows, columns, alpha)
    head = ["Network"] + [f"{h}: {'Fisher' if t == 'fisher_p' else 'chi2'}"
                          for m, h in measures for t in ("fisher_p", "chi2_p")]
    if extra_cols:
        head += list(extra_cols[0])
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, (lab, row) in enumerate(zip(labels, rows)):
        cells = [_cell(row.get(c, math.nan), bh[(i, c)], holm[(i, c)], alpha) for c in columns]
        if extra_cols:
            cells += list(extra_cols[1][i])
        out.append("| " + " | ".join([lab] + cells) + " |")
    return "\n".join(out)


def cov_of_median_network(replicates: list[dict]) -> list[float]:
    """CoV quartiles of the replicate whose median CoV is the median (paper A.8, Table 6)."""
    qs = [r.get("cov_quartiles") for r in replicates if r.get("cov_quartiles") is not None]
    qs = [q for q in qs if q[1] is not None and not math.isnan(q[1])]
    if not qs:
        return [math.nan] * 3
    qs.sort(key=lambda q: q[1])
    return list(qs[(len(qs) - 1) // 2])
