"""Double lesions (paper appendix A.10, figure 9): dependencies between important sub-clusters.

For X (earlier layer) and Y: ``damage(X u Y)`` against ``n_random`` random ``X u Y'`` (Y' of size |Y|
from Y's layer) and ``X' u Y``. Y is important given X when the joint damage beats all controls
(p = 1/(n_random+1)) and ``delta(Y, X) = damage(X u Y) - damage(X) > min_drop``; likewise X given Y.
One unit of work per pair.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

from modtest._validation import check_choice, check_data, check_int, check_seed
from modtest.errors import InvalidInput
from modtest.probes.base import Probe, ProbeContext, Unit, run_probe
from modtest.probes.lesion import ENGINES, scores
from modtest.results import ProbeResult, subclusters_of

__all__ = ["double_lesion_study", "DoubleLesionProbe"]


class DoubleLesionProbe(Probe):
    """Units: one pair (X, Y) of important sub-clusters in different layers; value: the joint
    damages of X u Y' and X' u Y (true set first)."""

    name = "double_lesion"

    def identity(self, ctx):
        s = ctx.settings
        return (ctx.model_fp, ctx.data_fp, s["metric"], s["keep_bias"], s["engine"], s["n_random"], s["seed"],
                ctx.model.n_classes, s["base_score"])

    def units(self, ctx):
        units = ctx.settings["units"]
        return [Unit(("pair", xn, yn, units[xn][0], units[xn][1], units[yn][0], units[yn][1]), (xn, yn),
                     work=2 * (ctx.settings["n_random"] + 1)) for xn, yn in ctx.settings["pairs"]]

    def compute(self, ctx, item, progress=None):
        from modtest._random import random_unit_sets

        s = ctx.settings
        eng = ctx.resource("lesion-engine", lambda: ctx.model.lesion_engine(
            ctx.x, engine=s["engine"], keep_bias=s["keep_bias"], batch_size=s["batch_size"]))
        xn, yn = item
        (lx, ux, sx), (ly, uy, sy) = s["units"][xn], s["units"][yn]
        ux, uy = np.asarray(ux, dtype=np.int64), np.asarray(uy, dtype=np.int64)
        mh, n_random, seed = ctx.model_fp, s["n_random"], s["seed"]
        ry = random_unit_sets(sy, len(uy), n_random, mh, "double_lesion", xn, yn, "Y", seed)
        rx = random_unit_sets(sx, len(ux), n_random, mh, "double_lesion", xn, yn, "X", seed)
        n_classes, metric, base = ctx.model.n_classes, s["metric"], s["base_score"]
        lab_y = eng.labels(ly, [uy] + list(ry), fixed=[(lx, ux)], on_progress=progress)
        lab_x = eng.labels(lx, [ux] + list(rx), fixed=[(ly, uy)], on_progress=progress)
        return {"dy": (base - scores(lab_y, ctx.y, n_classes, metric)[0]).tolist(),
                "dx": (base - scores(lab_x, ctx.y, n_classes, metric)[0]).tolist()}

    def combine(self, ctx, values):
        from modtest import stats

        s = ctx.settings
        single, n_random, min_drop = s["single"], s["n_random"], s["min_drop"]
        pairs = []
        for (xn, yn), got in zip(s["pairs"], values):
            lx, ly = s["units"][xn][0], s["units"][yn][0]
            dy, dx = np.asarray(got["dy"]), np.asarray(got["dx"])
            joint = float(dy[0])
            delta_y = joint - single[xn]
            delta_x = joint - single[yn]
            p_y = float(stats.empirical_p(dy[0], dy[1:], side="right", ties="inclusive"))
            p_x = float(stats.empirical_p(dx[0], dx[1:], side="right", ties="inclusive"))
            best = 1.0 / (n_random + 1) + 1e-12
            y_given_x = bool(p_y <= best and delta_y > min_drop)
            x_given_y = bool(p_x <= best and delta_x > min_drop)
            pairs.append({
                "x": xn, "y": yn, "x_layer": lx, "y_layer": ly,
                "damage_x": single[xn], "damage_y": single[yn], "damage_xy": joint,
                "damage_xy_check": float(dx[0]),
                "random_damage_x_yprime": dy[1:].tolist(), "random_damage_xprime_y": dx[1:].tolist(),
                "delta_y_given_x": delta_y, "delta_x_given_y": delta_x,
                "p_y_given_x": p_y, "p_x_given_y": p_x,
                "y_given_x": y_given_x, "x_given_y": x_given_y,
                "case": stats.dependency_case(x_given_y, y_given_x),
            })
        names = s["names"]
        idx = {n: i for i, n in enumerate(names)}
        m = len(names)
        values_ = [[None] * m for _ in range(m)]
        sig = [[None] * m for _ in range(m)]
        for n in names:
            values_[idx[n]][idx[n]] = single[n]
        for p in pairs:
            i, j = idx[p["x"]], idx[p["y"]]
            values_[i][j], sig[i][j] = p["delta_y_given_x"], p["y_given_x"]
            values_[j][i], sig[j][i] = p["delta_x_given_y"], p["x_given_y"]
        return {
            "pairs": pairs,
            "matrix": {"names": names, "values": values_, "significant": sig},
            "settings": {"n_random": n_random, "seed": s["seed"], "min_drop": float(min_drop),
                         "engine": s["engine"], "metric": s["metric"], "keep_bias": s["keep_bias"],
                         "model_hash": ctx.model_fp, "base_accuracy": s["base_score"]},
        }


def double_lesion_study(model, partition, x, y, lesion_result, *, n_random: int = 50, seed: int = 0,
                        min_drop: float = 0.01, engine: str = "fast", batch_size: int = 1024,
                        progress=None, workshare=None, executor=None) -> dict:
    """Pairwise lesions of important sub-clusters in different layers (paper A.10, figure 9).

    Parameters
    ----------
    model, partition, x, y : as for :func:`modtest.lesion_study`
    lesion_result : ProbeResult of :func:`modtest.lesion_study` on the same model and data
    n_random : int, random controls per conditional test
    seed : int
    min_drop : float, smallest extra damage that counts
    engine : "fast" or "reference"
    workshare, executor : where the pairs (one work unit each) run; same result (see lesion_study)

    Returns
    -------
    dict with "pairs" (one dict per pair), "matrix" ({"names", "values", "significant"}: diagonal =
    single damage, ``values[i][j]`` = delta(names[j], names[i]) = extra damage of lesioning j once i
    is lesioned, ``significant[i][j]`` = j important given i; None for same-layer pairs) and
    "settings".
    """
    from modtest import stats
    from modtest.frameworks import adapt
    from modtest.progress import task

    n_random = check_int("n_random", n_random, minimum=1)
    seed = check_seed(seed)
    engine = check_choice("engine", engine, ENGINES)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if isinstance(min_drop, bool) or not isinstance(min_drop, numbers.Real) or math.isnan(min_drop):
        raise InvalidInput(f"min_drop must be a number, got {min_drop!r}")
    if not isinstance(lesion_result, ProbeResult) or lesion_result.probe != "lesion":
        raise InvalidInput("lesion_result must be the ProbeResult of lesion_study")
    adapter = adapt(model)
    x, y = check_data(adapter, x, y)
    mh = adapter.fingerprint()
    if lesion_result.settings.get("model_hash") not in (None, mh):
        raise InvalidInput("lesion_result was computed on a different model (model hash differs)")
    metric = lesion_result.settings.get("metric", "accuracy")
    keep_bias = bool(lesion_result.settings.get("keep_bias", False))
    layers = adapter.unit_layers()
    subs = {s.name: s for s in subclusters_of(partition)}
    important = [r for r in lesion_result.rows if r.get("category") == stats.IMPORTANT]
    important.sort(key=lambda r: (layers.index(r["layer"]) if r["layer"] in layers else 1 << 30, r["cluster"]))
    names = [r["name"] for r in important]
    units = {}
    for r in important:
        s = subs.get(r["name"])
        units[r["name"]] = (r["layer"], [int(u) for u in (r["units"] if s is None else s.units)],
                            int(r["layer_size"] if s is None else s.layer_size))
    settings = {"n_random": n_random, "seed": seed, "min_drop": float(min_drop), "engine": engine,
                "batch_size": batch_size, "metric": metric, "keep_bias": keep_bias, "names": names,
                "units": units, "single": {r["name"]: float(r["drop"]) for r in important},
                "pairs": [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
                          if units[a][0] != units[b][0]]}
    ctx = ProbeContext(adapter, x, y, [], settings)
    eng = ctx.resource("lesion-engine", lambda: adapter.lesion_engine(x, engine=engine, keep_bias=keep_bias,
                                                                       batch_size=batch_size))
    settings["base_score"] = float(scores(eng.base_labels(), y, adapter.n_classes, metric)[0][0])
    if workshare is not None and executor is not None:
        raise InvalidInput("pass workshare or executor, not both")
    with task("double lesion", len(settings["pairs"]) * 2 * (n_random + 1), progress) as bar:
        return run_probe(DoubleLesionProbe(), ctx, workshare if workshare is not None else executor, bar.update)
