"""The feature-visualization probe (paper 3.1.2, A.4, A.5, A.8): input and output coherence of
sub-clusters, and the activational variance of their units, against random same-layer controls.

For every testable sub-cluster one image is optimised for the true unit set and one for each of
``n_random`` random sets of the same size from the same layer, all in one batch. Per sub-cluster:

* input coherence: the score (objective value) of the true image against its controls, right-sided;
* output coherence: the entropy (nats) of the model's softmax output on the image, left-sided;
* activational variance: the variance of the set's unit activations on its own image, left-sided;
* coefficient of variation (std / mean) of the true set's activations, summarised by quartiles.
"""
from __future__ import annotations

import time

import numpy as np

from modtest._random import keyed_rng, random_unit_sets
from modtest._validation import check_fraction, check_int, check_seed
from modtest.errors import InvalidInput, NoTestableSubclusters
from modtest.probes.base import Probe, ProbeContext, Unit, run_probe
from modtest.results import ProbeResult, SubCluster, subclusters_of, within_size_limits
from modtest.stats import combine_pvalues, empirical_p, entropy, rank_p

__all__ = ["visualization_study", "VisualizationProbe", "filter_subclusters", "untrained_control"]

MEASURES = ("input_coherence", "output_coherence", "activational_variance")


def filter_subclusters(partition, *, min_size: int = 3, max_fraction: float = 0.8) -> list[SubCluster]:
    """Sub-clusters with at least ``min_size`` units and at most ``max_fraction`` of their layer."""
    return [s for s in subclusters_of(partition) if within_size_limits(s, min_size, max_fraction)]


class VisualizationProbe(Probe):
    """Units: one chunk of ``batch_size`` objectives (a sub-cluster and its controls, in layer order);
    value: the chunk's per-image score, entropy, activation variance and CoV."""

    name = "visualization"

    def __init__(self, objectives: list | None = None, keys: list | None = None):
        #: the objectives ``(layer, units)`` to render and their seed keys; default: the context's
        self.objectives, self.keys = objectives, keys

    def identity(self, ctx):
        s = ctx.settings
        return (ctx.model_fp, s["render"], _settings_transforms(s["transforms"]), s["seed"], s["backend"],
                s["layers"])

    def units(self, ctx):
        s = ctx.settings
        objectives = s["objectives"] if self.objectives is None else self.objectives
        keys = s["keys"] if self.keys is None else self.keys
        bs = s["batch_size"]
        out = []
        for lo in range(0, len(objectives), bs):
            chunk = {"objectives": [[layer, [int(u) for u in units]] for layer, units in objectives[lo:lo + bs]],
                     "keys": [list(k) for k in keys[lo:lo + bs]]}
            out.append(Unit(("chunk", chunk["objectives"], chunk["keys"]), chunk, work=len(chunk["keys"])))
        return out

    def compute(self, ctx, item, progress=None):
        """Every chunk is rendered and read with the same compiled step and layer list, so a chunk's
        numbers do not depend on which process computes it, nor on the other chunks."""
        s = ctx.settings
        vis = ctx.resource("visualizer", ctx.model.visualizer)
        bs = s["batch_size"]
        objs = [(layer, np.asarray(units, dtype=np.int64)) for layer, units in item["objectives"]]
        render_kw = dict(s["render"], transforms=s["transforms"])
        images, scores = vis.render(objs, seed=[tuple(k) for k in item["keys"]], layers=s["layers"],
                                    **render_kw)
        acts, probs = vis.forward(images, s["layers"], with_output=True, batch_size=bs)
        if "images" in ctx._resources:
            ctx._resources["images"].append(images)
        picked = [acts[layer][i, units] for i, (layer, units) in enumerate(objs)]
        if progress is not None:
            progress(len(objs))
        return {"score": [float(v) for v in scores],
                "entropy": [float(v) for v in entropy(probs)],
                "variance": [float(a.var()) for a in picked],
                "cov": [_cov(a) for a in picked]}

    def combine(self, ctx, parts):
        s = ctx.settings
        n_random, seed, tested, mhash = s["n_random"], s["seed"], ctx.subclusters, ctx.model_fp
        stat = {name: np.array([v for part in parts for v in part[name]], dtype=np.float64)
                for name in ("score", "entropy", "variance", "cov")}
        scores, ent = stat["score"], stat["entropy"]
        per = n_random + 1
        rows, covs = [], []
        for j, sub in enumerate(tested):
            idx = slice(j * per, (j + 1) * per)
            var = stat["variance"][idx]
            cov = float(stat["cov"][j * per])
            covs.append(cov)
            sc, en = scores[idx], ent[idx]
            rows.append({
                "layer": sub.layer, "cluster": sub.cluster, "units": list(sub.units), "size": sub.size,
                "fraction": sub.fraction,
                "score": float(sc[0]), "random_scores": sc[1:].tolist(),
                "entropy": float(en[0]), "random_entropies": en[1:].tolist(),
                "p_input": float(empirical_p(sc[0], sc[1:], side="right")),
                "p_output": float(empirical_p(en[0], en[1:], side="left")),
                "variance": float(var[0]), "random_variances": var[1:].tolist(),
                "p_variance": float(empirical_p(var[0], var[1:], side="left")),
                "cov": cov,
            })
        # tie-broken ranks for the chi-squared test (dead sub-clusters tie with their controls at 0)
        network = {}
        for measure, key, name, side in (("input_coherence", "p_input", "score", "right"),
                                         ("output_coherence", "p_output", "entropy", "left"),
                                         ("activational_variance", "p_variance", "variance", "left")):
            rand_key = {"score": "random_scores", "entropy": "random_entropies",
                        "variance": "random_variances"}[name]
            ranks = rank_p(np.array([r[name] for r in rows]), np.array([r[rand_key] for r in rows]),
                           keyed_rng(mhash, "visualization-ties", measure, seed), side=side)
            for r, pr in zip(rows, ranks):
                r[key + "_rank"] = float(pr)
            network[measure] = combine_pvalues([r[key] for r in rows], n_random, ranks)
        finite = np.asarray([c for c in covs if np.isfinite(c)])
        quart = np.percentile(finite, [25, 50, 75]).tolist() if finite.size else [float("nan")] * 3
        r = s["render"]
        settings = {
            "n_random": n_random, "seed": seed, "min_size": s["min_size"], "max_fraction": s["max_fraction"],
            "steps": r["steps"], "lr": r["lr"], "param": r["param"],
            "transforms": _settings_transforms(s["transforms"]),
            "batch_size": s["batch_size"], "value_range": r["value_range"],
            "engine": f"modtest.visualize/{ctx.model.framework}-{s['backend']}", "model_hash": mhash,
        }
        extras = {
            "cov_quartiles": quart, "n_subclusters": s["n_subclusters"], "n_tested": len(tested),
            "n_skipped": s["n_subclusters"] - len(tested), "n_images": len(s["objectives"]),
        }
        return ProbeResult(probe="visualization", rows=rows, network=network, settings=settings, extras=extras)


def visualization_study(model, partition, *, n_random: int = 9, seed: int = 0, min_size: int = 3,
                        max_fraction: float = 0.8, steps: int = 256, lr: float = 0.05,
                        param: str = "pixel", transforms="auto", batch_size: int = 128,
                        value_range=(0.0, 1.0), image_shape=None, return_images: bool = False,
                        workshare=None, executor=None):
    """Input/output coherence and activational variance of sub-clusters by feature visualization.

    Parameters
    ----------
    model : a model, model file or adapter with a visualization engine (Keras)
    partition : Partition or list of SubCluster
        Anything with ``.subclusters``; each sub-cluster's ``layer`` is a unit layer of ``model``.
    n_random : int
        Random controls per sub-cluster (paper: 9, so p-values lie on the grid k/10).
    seed : int
        Seeds the image initialisations and transform draws (keyed per sub-cluster and replicate;
        objectives are batched in model layer order, so a result does not depend on the order of
        the sub-clusters, to the last bit). Random unit sets are keyed on
        the model hash, the layer and the cluster, as in every probe.
    min_size, max_fraction : int, float
        Sub-clusters smaller than ``min_size`` units or larger than ``max_fraction`` of their layer
        are not tested (paper: 3 and 0.8).
    steps, lr, param, transforms, batch_size, value_range, image_shape
        Passed to :func:`modtest.frameworks.keras.visualize.render`.
    return_images : bool
        Also return the images: ``{sub-cluster name: ndarray (1 + n_random, H, W, C)}``, row 0 the
        true set, rows 1.. its random controls.
    workshare, executor : where the work units (one chunk of ``batch_size`` images) run: None (here),
        a workshare folder or :class:`modtest.executors.workshare.WorkShare`, or any executor; the
        result is the same whoever computes which chunk (ignored with ``return_images``: images are
        not published).

    Returns
    -------
    ProbeResult (probe="visualization") or (ProbeResult, dict)
        One row per tested sub-cluster (model layer order, then cluster) with ``layer, cluster,
        units, size, fraction, score, random_scores, entropy, random_entropies, p_input, p_output,
        variance, random_variances, p_variance, cov``; ``network`` has ``input_coherence``,
        ``output_coherence`` and ``activational_variance`` (see :func:`modtest.stats.combine_pvalues`);
        ``extras["cov_quartiles"]`` is ``[q1, median, q3]`` of the true sub-clusters' CoVs (a row's
        ``cov`` is NaN, and left out of the quartiles, when all its units are silent on its image).

    Raises
    ------
    NoTestableSubclusters
        When no sub-cluster passes the size limits.
    """
    from modtest.frameworks import adapt

    n_random = check_int("n_random", n_random, minimum=1)
    seed = check_seed(seed)
    min_size = check_int("min_size", min_size, minimum=1)
    max_fraction = check_fraction("max_fraction", max_fraction)
    adapter = adapt(model)
    subs = subclusters_of(partition)
    tested = _canonical_order(adapter, filter_subclusters(subs, min_size=min_size, max_fraction=max_fraction))
    if not tested:
        raise NoTestableSubclusters(
            f"none of the {len(subs)} sub-clusters has >= {min_size} units and <= "
            f"{max_fraction:.0%} of its layer")
    t0 = time.perf_counter()
    mhash = adapter.fingerprint()
    objectives, keys = [], []
    for sub in tested:
        randoms = random_unit_sets(sub.layer_size, sub.size, n_random, mhash, "visualization", sub.layer, sub.cluster)
        for r, units in enumerate([np.asarray(sub.units, dtype=np.int64)] + list(randoms)):
            objectives.append((sub.layer, [int(u) for u in units]))
            keys.append([seed, "visualization", sub.layer, sub.cluster, r])
    vis = adapter.visualizer()
    settings = {
        "n_random": n_random, "seed": seed, "min_size": min_size, "max_fraction": max_fraction,
        "batch_size": batch_size, "transforms": transforms, "objectives": objectives, "keys": keys,
        "layers": list(dict.fromkeys(sub.layer for sub in tested)), "backend": vis.backend,
        "n_subclusters": len(subs),
        "render": {"steps": steps, "lr": lr, "param": param, "batch_size": batch_size,
                   "value_range": list(value_range) if value_range is not None else None,
                   "image_shape": image_shape},
    }
    ctx = ProbeContext(adapter, None, None, tested, settings)
    ctx._resources["visualizer"] = vis
    probe = VisualizationProbe()
    from modtest.progress import task

    if workshare is not None and executor is not None and not return_images:
        raise InvalidInput("pass workshare or executor, not both")
    with task("visualization", len(objectives)) as bar:
        if return_images:
            ctx._resources["images"] = []
            result = run_probe(probe, ctx, progress=bar.update)
        else:
            result = run_probe(probe, ctx, workshare if workshare is not None else executor, bar.update)
    result.extras["seconds"] = time.perf_counter() - t0
    if return_images:
        images = np.concatenate(ctx._resources["images"])
        per = n_random + 1
        return result, {sub.name: images[j * per:(j + 1) * per] for j, sub in enumerate(tested)}
    return result


def _canonical_order(adapter, subs: list[SubCluster]) -> list[SubCluster]:
    """``subs`` in model layer order, then by cluster: the objectives' batch positions (and with them
    the last bits of every float a batched kernel computes) do not depend on the order given."""
    position = adapter.layer_positions()
    return sorted(subs, key=lambda s: (position.get(s.layer, len(position)), s.layer, s.cluster, s.units))


def _cov(act) -> float:
    """Coefficient of variation std / mean of a unit set's activations (NaN when the mean is <= 0)."""
    mean = float(act.mean())
    return float(act.std() / mean) if mean > 0 else float("nan")


def _settings_transforms(transforms):
    """``transforms`` as a JSON value: a name, None, or the reprs of Transform objects."""
    return transforms if isinstance(transforms, str) or transforms is None else [repr(t) for t in transforms]


def untrained_control(model, seed: int = 0):
    """A re-initialised copy of ``model`` (same architecture, fresh seeded weights), for A.5.

    Every initializer that takes a seed gets one derived from ``seed``, the layer's position and the
    initializer's name, so the copy is a pure function of (architecture, seed).
    """
    from modtest.frameworks import adapt

    return adapt(model).untrained_control(check_seed(seed))
