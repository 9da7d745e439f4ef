"""The report's figures as PNG bytes, drawn on matplotlib's Agg canvas (no pyplot, no global state).

* :func:`partition_figure`   cluster sizes per layer (stacked bars)
* :func:`clusterability_figure`  the n-cut against shuffled networks' n-cuts
* :func:`scatter_figure`     paper Figure 2: fraction of layer vs accuracy drop, by category
* :func:`profiles_figure`    paper Figure 6: class-wise drops, true (red) vs random (grey)
* :func:`dependency_figure`  paper Figure 9: double-lesion dependency heatmap
"""
from __future__ import annotations

import io
import math

from modtest.taxonomy import COLORS as CATEGORY_COLORS


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def _num(v, default=float("nan")) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return default


def partition_figure(summary: dict) -> bytes:
    """Stacked bars: one bar per layer, one segment per cluster (isolated units hatched grey)."""
    return _png(partition_fig(summary))


def partition_fig(summary: dict):
    """The figure of :func:`partition_figure`: a legend in 9-point type beside the bars (one column
    up to 12 entries, two beyond), the figure widened to hold it."""
    import numpy as np

    layers = summary.get("layers") or []
    labels = sorted({int(c) for layer in layers for c in (layer.get("cluster_sizes") or {})})
    ncol = 1 if len(labels) <= 12 else 2
    fig = _figure(max(5.0, 0.9 * len(layers) + 2.5) + 1.3 * ncol, max(3.6, 0.2 * len(labels) / ncol + 1.2))
    ax = fig.add_subplot(1, 1, 1)
    cmap = __import__("matplotlib").colormaps["tab20"]
    bottom = np.zeros(len(layers))
    x = np.arange(len(layers))
    for c in labels:
        h = np.array([float((layer.get("cluster_sizes") or {}).get(str(c), 0)) for layer in layers])
        if c < 0:
            ax.bar(x, h, bottom=bottom, color="#dddddd", hatch="//", edgecolor="#999999", label="isolated")
        else:
            ax.bar(x, h, bottom=bottom, color=cmap(c % 20), edgecolor="white", linewidth=0.5, label=f"cluster {c}")
        bottom += h
    ax.set_xticks(x, [layer.get("name", "?") for layer in layers], rotation=30, ha="right", fontsize=9)
    ax.set_ylabel("units")
    ax.set_title(f"partition: k={summary.get('k')}, n-cut={_num(summary.get('ncut')):.3f}", fontsize=10)
    legend = ax.legend(fontsize=9, ncol=ncol, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False,
                       handlelength=1.2, columnspacing=1.0)
    fig.tight_layout()
    _fit_artist(fig, legend)
    return fig


def _fit_artist(fig, artist) -> None:
    """Shrink the axes until ``artist`` (a legend outside them) lies inside the figure."""
    renderer = fig.canvas.get_renderer()
    for _ in range(20):
        box, width = artist.get_window_extent(renderer), fig.bbox.width
        if box.x1 <= width - 2:
            return
        shift = (box.x1 - width + 4) / width
        for ax in fig.axes:
            pos = ax.get_position()
            ax.set_position([pos.x0, pos.y0, max(0.1, pos.width - shift), pos.height])


def clusterability_figure(ncut: float, shuffled) -> bytes:
    """Histogram of shuffled networks' n-cuts with the true n-cut as a red line."""
    fig = _figure(5.0, 3.0)
    ax = fig.add_subplot(1, 1, 1)
    vals = [_num(v) for v in shuffled if not math.isnan(_num(v))]
    if vals:
        ax.hist(vals, bins=min(20, max(5, len(vals) // 2)), color="#999999", label="shuffled weights")
    ax.axvline(_num(ncut), color="#d62728", linewidth=2, label="trained network")
    ax.set_xlabel("n-cut (lower = more clusterable)")
    ax.set_ylabel("networks")
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return _png(fig)


_DECISION_COLORS = {"below": "#1a7f37", "above": "#cf222e", "undecided": "#bf8700"}


def ensemble_figure(networks: dict, alpha: float) -> bytes:
    """A claim's p-value in each partition of the robust protocol's ensemble (one panel per measure):
    the estimate with its Monte Carlo interval, coloured by its decision against the merged level
    ``alpha * quorum / R`` (dashed); the title says how many partitions it holds and fails in."""
    items = [(m, n) for m, n in networks.items() if isinstance(n, dict) and n.get("partitions")]
    fig = _figure(6.5, 2.6 * max(1, len(items)))
    for i, (measure, net) in enumerate(items):
        ax = fig.add_subplot(len(items), 1, i + 1)
        parts = net["partitions"]
        for j, e in enumerate(parts):
            p, lo, hi = (max(_num(e.get(k)), 1e-12) for k in ("p", "p_low", "p_high"))
            color = _DECISION_COLORS.get(e.get("decision"), "black")
            ax.plot([j, j], [lo, hi], color=color, linewidth=2, alpha=0.6)
            ax.plot([j], [p], "o", color=color, markersize=5)
        ax.axhline(_num(net.get("threshold"), alpha), color="#555555", linestyle="--", linewidth=1)
        ax.set_yscale("log")
        ax.set_xticks(range(len(parts)), [str(e.get("seed")) for e in parts], rotation=30, ha="right", fontsize=6)
        ax.set_ylabel("p (log)", fontsize=8)
        h, f = net.get("holds"), net.get("fails")
        u = len(parts) - h - f if isinstance(h, int) and isinstance(f, int) else 0
        ax.set_title(f"{measure}: holds in {h}, fails in {f}" + (f", undecided in {u}" if u else "")
                     + f" of {len(parts)} partitions (quorum {net.get('quorum')}): {net.get('verdict')}", fontsize=9)
    if items:
        fig.axes[-1].set_xlabel("partition (clustering seed)", fontsize=8)
    fig.tight_layout()
    return _png(fig)


def scatter_figure(rows: list, max_labels: int = 8) -> bytes:
    """Paper Figure 2: fraction of its layer (x) vs accuracy drop (y), coloured by category; the
    ``max_labels`` important sub-clusters with the largest drops labelled ``layer-cluster``."""
    return _png(scatter_fig(rows, max_labels)[0])


#: label positions tried around a point (offsets in points, alignment), in order of preference
_LABEL_SPOTS = ((4, 4, "left", "bottom"), (4, -4, "left", "top"), (-4, 4, "right", "bottom"),
                (-4, -4, "right", "top"), (0, 7, "center", "bottom"), (0, -7, "center", "top"),
                (9, 0, "left", "center"), (-9, 0, "right", "center"), (14, 10, "left", "bottom"),
                (-14, 10, "right", "bottom"), (14, -10, "left", "top"), (-14, -10, "right", "top"))


def scatter_fig(rows: list, max_labels: int = 8):
    """``(figure, labels)`` of :func:`scatter_figure`; ``labels`` are the placed text artists. A label
    goes to the first spot around its point that stays inside the axes and overlaps no other label,
    point or the legend; a label with no free spot is left out (the table lists every sub-cluster)."""
    fig = _figure(6.5, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    by_cat: dict[str, list] = {}
    for r in rows:
        by_cat.setdefault(r.get("category") or "other", []).append(r)
    for cat in list(CATEGORY_COLORS) + sorted(set(by_cat) - set(CATEGORY_COLORS)):
        rs = by_cat.get(cat)
        if not rs:
            continue
        ax.scatter([_num(r.get("fraction")) for r in rs], [_num(r.get("drop")) for r in rs],
                   s=28, color=CATEGORY_COLORS.get(cat, "black"), label=f"{cat} ({len(rs)})",
                   edgecolor="black", linewidth=0.3, zorder=3)
    ax.axhline(0.0, color="#bbbbbb", linewidth=0.8, zorder=1)
    ax.margins(0.08)
    ax.set_xlabel("fraction of layer")
    ax.set_ylabel("accuracy drop when lesioned")
    ax.set_title("sub-cluster importance (paper Fig. 2)" + (
        f"; labels: the {max_labels} largest important drops" if len(by_cat.get("important", [])) > max_labels
        else ""), fontsize=10)
    legend = ax.legend(fontsize=8, frameon=True, framealpha=0.9, loc="best")
    fig.tight_layout()
    # pin the legend where "best" put it among the points: the labels placed next must not move it
    corner = ax.transAxes.inverted().transform(legend.get_window_extent(fig.canvas.get_renderer()))[0]
    legend.set_loc((float(corner[0]), float(corner[1])))
    top = sorted(by_cat.get("important", []), key=lambda r: -_num(r.get("drop"), 0.0))[:max_labels]
    labels = _place_labels(fig, ax, [((_num(r.get("fraction")), _num(r.get("drop"))),
                                      r.get("name") or f"{r.get('layer')}-{r.get('cluster')}") for r in top],
                           [(_num(r.get("fraction")), _num(r.get("drop"))) for r in rows], legend)
    return fig, labels


def _place_labels(fig, ax, items, points, legend) -> list:
    """Greedy placement of ``items`` (``((x, y), text)``) in display space (see :func:`scatter_fig`)."""
    renderer = fig.canvas.get_renderer()
    inside = ax.get_window_extent(renderer).padded(-2)
    taken = [legend.get_window_extent(renderer)] if legend is not None else []
    r = 4.0 * fig.dpi / 72  # a marker's radius in pixels (s=28 points^2), with a margin
    for px, py in ax.transData.transform([p for p in points if all(v == v for v in p)]):
        taken.append(type(inside).from_extents(px - r, py - r, px + r, py + r))
    placed = []
    for (x, y), text in items:
        if x != x or y != y:
            continue
        for dx, dy, ha, va in _LABEL_SPOTS:
            ann = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                              fontsize=7, zorder=4)
            box = ann.get_window_extent(renderer)
            if (box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y0 >= inside.y0 and box.y1 <= inside.y1
                    and not any(box.overlaps(t) for t in taken)):
                taken.append(box)
                placed.append(ann)
                break
            ann.remove()
    return placed


def top_rows(rows: list, n: int = 6) -> list:
    """The ``n`` sub-clusters with the largest accuracy drops (important ones first)."""
    return sorted(rows, key=lambda r: (r.get("category") != "important", -_num(r.get("drop"), 0.0)))[:n]


def profiles_figure(rows: list, n: int = 6) -> bytes:
    """Paper Figure 6: per-class accuracy drops of the top sub-clusters; red = the sub-cluster,
    grey = its random same-layer controls."""
    top = [r for r in top_rows(rows, n) if r.get("class_drops") is not None]
    if not top:
        raise ValueError("no class-wise drops to draw (check has_profiles first)")
    cols = min(3, max(1, len(top)))
    nrows = max(1, math.ceil(len(top) / cols))
    fig = _figure(3.2 * cols, 2.4 * nrows)
    for i, r in enumerate(top):
        ax = fig.add_subplot(nrows, cols, i + 1)
        true = [_num(v) for v in r["class_drops"]]
        classes = list(range(len(true)))
        for rd in r.get("random_class_drops") or []:
            ax.plot(classes, [_num(v) for v in rd], color="#999999", linewidth=0.8, alpha=0.6)
        ax.plot(classes, true, color="#d62728", linewidth=2, marker="o", markersize=3)
        ax.axhline(0.0, color="#cccccc", linewidth=0.6)
        name = r.get("name") or f"{r.get('layer')}-{r.get('cluster')}"
        ax.set_title(f"{name} ({r.get('category')}, drop {_num(r.get('drop')):.3f})", fontsize=8)
        ax.set_xticks(classes)
        ax.tick_params(labelsize=6)
        if i % cols == 0:
            ax.set_ylabel("class accuracy drop", fontsize=7)
        if i >= (nrows - 1) * cols:
            ax.set_xlabel("class", fontsize=7)
    fig.tight_layout()
    return _png(fig)


def has_profiles(rows: list) -> bool:
    """Whether :func:`profiles_figure` has anything to draw."""
    return any(r.get("class_drops") is not None for r in rows)


def has_pairs(matrix: dict) -> bool:
    """Whether a double-lesion matrix has a pair (an off-diagonal value): else Figure 9 is not drawn."""
    values = (matrix or {}).get("values") or []
    return any(i != j and _num(v) == _num(v) for i, row in enumerate(values) for j, v in enumerate(row or []))


def dependency_figure(matrix: dict) -> bytes:
    """Paper Figure 9: ``values[i][j]`` = extra damage of lesioning column j once row i is
    lesioned (diagonal: single damage); significant cells starred; same-layer pairs blank."""
    import numpy as np

    names = list(matrix.get("names") or [])
    m = len(names)
    vals = np.full((m, m), np.nan)
    for i, row in enumerate(matrix.get("values") or []):
        for j, v in enumerate(row):
            vals[i, j] = _num(v)
    if not has_pairs(matrix):
        raise ValueError("no pairs to draw (check has_pairs first)")
    side = max(3.5, 0.45 * m + 2.0)
    fig = _figure(side + 1.0, side)
    ax = fig.add_subplot(1, 1, 1)
    masked = np.ma.masked_invalid(vals)
    cmap = __import__("matplotlib").colormaps["viridis"].with_extremes(bad="#eeeeee")
    im = ax.imshow(masked, cmap=cmap, interpolation="nearest")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="accuracy drop (diagonal: alone; cell: extra)")
    sig = matrix.get("significant") or []
    for i in range(m):
        for j in range(m):
            s = sig[i][j] if i < len(sig) and j < len(sig[i]) else None
            if s:
                ax.text(j, i, "*", ha="center", va="center", color="white", fontsize=10, fontweight="bold")
    ax.set_xticks(range(m), names, rotation=90, fontsize=6)
    ax.set_yticks(range(m), names, fontsize=6)
    ax.set_xlabel("lesioned second (j)")
    ax.set_ylabel("lesioned first (i)")
    ax.set_title("double-lesion dependencies (paper Fig. 9)", fontsize=10)
    fig.tight_layout()
    return _png(fig)
