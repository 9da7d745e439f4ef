"""Image grids of sub-cluster visualizations, laid out like the paper's Figures 1, 4 and 5.

Top row: true sub-clusters; rows below: their random controls; columns in layer order; pixel values
scaled from black to white per column. PNG via matplotlib's Agg canvas directly (no pyplot, no display,
no global backend switch).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from modtest.errors import InvalidInput

__all__ = ["save_grid", "to_display"]


def to_display(img) -> np.ndarray:
    """One image as a 2-D grey or (H, W, 3) RGB array: 1 channel -> grey, 3 -> RGB, any other
    count -> its channels side by side in grey (e.g. the two digits of a stack image)."""
    a = np.asarray(img, dtype=np.float64)
    if a.ndim == 1:
        side = int(round(np.sqrt(a.size)))
        a = a.reshape(side, side) if side * side == a.size else a.reshape(1, -1)
    if a.ndim == 2:
        return a
    if a.ndim != 3:
        raise InvalidInput(f"cannot display an image of shape {a.shape}")
    if a.shape[-1] == 1:
        return a[..., 0]
    if a.shape[-1] == 3:
        return a
    return np.concatenate([a[..., c] for c in range(a.shape[-1])], axis=1)


def save_grid(images_true, images_random, layers, path, *, layer_order=None, titles=None,
              cell_inches: float = 1.0, dpi: int = 100) -> Path:
    """Save a grid: true sub-clusters on the top row, random controls below, columns by layer.

    Parameters
    ----------
    images_true : array_like, shape (n, H, W[, C])
        One visualization per sub-cluster (input construction or correlation-based).
    images_random : array_like, shape (n, r, H, W[, C])
        ``r`` random-control visualizations per sub-cluster (r may be 0).
    layers : sequence of str, length n
        Each column's layer.
    path : str or Path
        PNG file to write (folders are created).
    layer_order : sequence of str or None
        Order of the layers from left to right (default: first appearance in ``layers``); columns of
        one layer keep their given order.
    titles : sequence of str or None
        Column titles (default: the layer names).

    Returns
    -------
    Path
        The file written.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    true = [np.asarray(t) for t in images_true]
    rand = [np.asarray(r) for r in images_random]
    layers = list(layers)
    n = len(true)
    if n == 0:
        raise InvalidInput("save_grid needs at least one column")
    if len(rand) != n or len(layers) != n:
        raise InvalidInput(f"save_grid got {n} true images, {len(rand)} random groups and "
                           f"{len(layers)} layers; they must match")
    n_rand = {len(r) for r in rand}
    if len(n_rand) != 1:
        raise InvalidInput(f"every column needs the same number of random images, got {sorted(n_rand)}")
    n_rand = n_rand.pop()
    order_list = list(dict.fromkeys(layer_order if layer_order is not None else layers))
    missing = [name for name in layers if name not in order_list]
    if missing:
        raise InvalidInput(f"layer {missing[0]!r} is not in layer_order")
    cols = sorted(range(n), key=lambda i: (order_list.index(layers[i]), i))
    titles = list(titles) if titles is not None else layers
    rows = 1 + n_rand
    fig = Figure(figsize=(cell_inches * n, cell_inches * rows))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, n, squeeze=False)
    for c, i in enumerate(cols):
        column = [to_display(true[i])] + [to_display(im) for im in rand[i]]
        lo = min(float(im.min()) for im in column)
        hi = max(float(im.max()) for im in column)
        span = hi - lo if hi > lo else 1.0
        for r, im in enumerate(column):
            ax = axes[r, c]
            scaled = np.clip((im - lo) / span, 0.0, 1.0)
            ax.imshow(scaled, cmap="gray" if scaled.ndim == 2 else None, vmin=0.0, vmax=1.0,
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(str(titles[i]), fontsize=7)
                for spine in ax.spines.values():
                    spine.set_color("tab:red")
    fig.tight_layout(pad=0.2)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, format="png")
    return path
