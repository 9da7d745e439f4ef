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
from modtest.errors import NoTestableSubclusters
from modtest.results import ProbeResult, SubCluster, subclusters_of, within_size_limits

__all__ = ["visualization_study", "filter_subclusters", "untrained_control"]

MEASURES = ("input_coherence", "output_coherence", "activational_variance")


def filter_subclusters(partition, *, min_size: int = 3, max_fraction: float = 0.8) -> list[SubCluster]:
    """Sub-clusters with at least ``min_size`` units and at most ``max_fraction`` of their layer."""
    return [s for s in subclusters_of(partition) if within_size_limits(s, min_size, max_fraction)]


def visualization_study(model, partition, *, n_random: int = 9, seed: int = 0, min_size: int = 3,
                        max_fraction: float = 0.8, steps: int = 256, lr: float = 0.05,
                        param: str = "pixel", transforms="auto", batch_size: int = 128,
                        value_range=(0.0, 1.0), image_shape=None, return_images: bool = False,
                        workshare=None):
    """Input/output coherence and activational variance of sub-clusters by feature visualization.

    Parameters
    ----------
    model : keras.Model
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
        Passed to :func:`modtest.visualize.render`.
    return_images : bool
        Also return the images: ``{sub-cluster name: ndarray (1 + n_random, H, W, C)}``, row 0 the
        true set, rows 1.. its random controls.
    workshare : None, a folder path or a :class:`modtest.workshare.WorkShare`
        Share the work with other processes using the same folder: one unit per chunk of
        ``batch_size`` images, so the result is the same whoever computes which chunk (ignored with
        ``return_images``: images are not published).

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
    from modtest import visualize
    from modtest.model import model_hash
    from modtest.workshare import as_workshare
    from modtest.stats import combine_pvalues, empirical_p

    n_random = check_int("n_random", n_random, minimum=1)
    seed = check_seed(seed)
    min_size = check_int("min_size", min_size, minimum=1)
    max_fraction = check_fraction("max_fraction", max_fraction)
    subs = subclusters_of(partition)
    tested = _canonical_order(model, filter_subclusters(subs, min_size=min_size, max_fraction=max_fraction))
    if not tested:
        raise NoTestableSubclusters(
            f"none of the {len(subs)} sub-clusters has >= {min_size} units and <= "
            f"{max_fraction:.0%} of its layer")
    t0 = time.perf_counter()
    mhash = model_hash(model)
    objectives, keys, sets = [], [], []
    for s in tested:
        randoms = random_unit_sets(s.layer_size, s.size, n_random, mhash, "visualization", s.layer, s.cluster)
        unit_sets = [np.asarray(s.units, dtype=np.int64)] + [r for r in randoms]
        sets.append(unit_sets)
        for r, units in enumerate(unit_sets):
            objectives.append((s.layer, units))
            keys.append((seed, "visualization", s.layer, s.cluster, r))
    layers = list(dict.fromkeys(s.layer for s in tested))
    render_kw = dict(steps=steps, lr=lr, param=param, transforms=transforms, batch_size=batch_size,
                     value_range=value_range, image_shape=image_shape)
    all_images = [] if return_images else None

    def chunk_stats(lo):
        """Per-image statistics of objectives[lo:lo + batch_size]: one work unit. Every chunk is
        rendered and read with the same compiled step and layer list, so a chunk's numbers do not
        depend on which process computes it, nor on the other chunks."""
        objs = objectives[lo:lo + batch_size]
        images, scores = visualize.render(model, objs, seed=keys[lo:lo + batch_size], layers=layers,
                                          **render_kw)
        acts, probs = visualize._forward(model, images, layers, with_output=True, batch_size=batch_size)
        if all_images is not None:
            all_images.append(images)
        picked = [acts[layer][i, units] for i, (layer, units) in enumerate(objs)]
        return {"score": [float(v) for v in scores],
                "entropy": [float(v) for v in visualize.entropy(probs)],
                "variance": [float(a.var()) for a in picked],
                "cov": [_cov(a) for a in picked]}

    starts = list(range(0, len(objectives), batch_size))
    share = None if return_images else as_workshare(workshare)
    if share is None:
        parts = [chunk_stats(lo) for lo in starts]
    else:
        from modtest.workshare import unit_key

        fixed = {**render_kw, "transforms": _settings_transforms(transforms), "n_random": n_random,
                 "seed": seed, "backend": _backend()}
        items = [(unit_key("visualization-unit", mhash, fixed, layers,
                           [[layer, units.tolist()] for layer, units in objectives[lo:lo + batch_size]],
                           keys[lo:lo + batch_size]), lo) for lo in starts]
        got = share.run(items, chunk_stats)
        parts = [got[key] for key, _ in items]
    stat = {name: np.array([v for part in parts for v in part[name]], dtype=np.float64)
            for name in ("score", "entropy", "variance", "cov")}
    scores, ent = stat["score"], stat["entropy"]
    per = n_random + 1
    rows, covs = [], []
    for j, s in enumerate(tested):
        idx = slice(j * per, (j + 1) * per)
        var = stat["variance"][idx]
        cov = float(stat["cov"][j * per])
        covs.append(cov)
        sc, en = scores[idx], ent[idx]
        rows.append({
            "layer": s.layer, "cluster": s.cluster, "units": list(s.units), "size": s.size,
            "fraction": s.fraction,
            "score": float(sc[0]), "random_scores": sc[1:].tolist(),
            "entropy": float(en[0]), "random_entropies": en[1:].tolist(),
            "p_input": float(empirical_p(sc[0], sc[1:], side="right")),
            "p_output": float(empirical_p(en[0], en[1:], side="left")),
            "variance": float(var[0]), "random_variances": var[1:].tolist(),
            "p_variance": float(empirical_p(var[0], var[1:], side="left")),
            "cov": cov,
        })
    # tie-broken ranks for the chi-squared test (dead sub-clusters tie with their controls at 0)
    from modtest._random import keyed_rng
    from modtest.stats import rank_p

    network = {}
    for measure, key, stat, side in (("input_coherence", "p_input", "score", "right"),
                                     ("output_coherence", "p_output", "entropy", "left"),
                                     ("activational_variance", "p_variance", "variance", "left")):
        rand_key = {"score": "random_scores", "entropy": "random_entropies",
                    "variance": "random_variances"}[stat]
        ranks = rank_p(np.array([r[stat] for r in rows]), np.array([r[rand_key] for r in rows]),
                       keyed_rng(mhash, "visualization-ties", measure, seed), side=side)
        for r, pr in zip(rows, ranks):
            r[key + "_rank"] = float(pr)
        network[measure] = combine_pvalues([r[key] for r in rows], n_random, ranks)
    finite = np.asarray([c for c in covs if np.isfinite(c)])
    quart = np.percentile(finite, [25, 50, 75]).tolist() if finite.size else [float("nan")] * 3
    settings = {
        "n_random": n_random, "seed": seed, "min_size": min_size, "max_fraction": max_fraction,
        "steps": steps, "lr": lr, "param": param,
        "transforms": _settings_transforms(transforms),
        "batch_size": batch_size, "value_range": list(value_range) if value_range is not None else None,
        "engine": f"modtest.visualize/keras-{_backend()}", "model_hash": mhash,
    }
    extras = {
        "cov_quartiles": quart, "n_subclusters": len(subs), "n_tested": len(tested),
        "n_skipped": len(subs) - len(tested), "n_images": len(objectives),
        "seconds": time.perf_counter() - t0,
    }
    result = ProbeResult(probe="visualization", rows=rows, network=network, settings=settings, extras=extras)
    if return_images:
        images = np.concatenate(all_images)
        out = {s.name: images[j * per:(j + 1) * per] for j, s in enumerate(tested)}
        return result, out
    return result


def _canonical_order(model, subs: list[SubCluster]) -> list[SubCluster]:
    """``subs`` in model layer order, then by cluster: the objectives' batch positions (and with them
    the last bits of every float a batched kernel computes) do not depend on the order given."""
    position = {layer.name: i for i, layer in enumerate(model.layers)}
    return sorted(subs, key=lambda s: (position.get(s.layer, len(position)), s.layer, s.cluster, s.units))


def _cov(act) -> float:
    """Coefficient of variation std / mean of a unit set's activations (NaN when the mean is <= 0)."""
    mean = float(act.mean())
    return float(act.std() / mean) if mean > 0 else float("nan")


def _settings_transforms(transforms):
    """``transforms`` as a JSON value: a name, None, or the reprs of Transform objects."""
    return transforms if isinstance(transforms, str) or transforms is None else [repr(t) for t in transforms]


def _backend() -> str:
    import keras

    return keras.backend.backend()


def untrained_control(model, seed: int = 0):
    """A re-initialised copy of ``model`` (same architecture, fresh seeded weights), for A.5.

    Every initializer that takes a seed gets one derived from ``seed``, the layer's position and the
    initializer's name, so the copy is a pure function of (architecture, seed) and leaves Keras'
    global random state alone.
    """
    import keras

    seed = check_seed(seed)
    positions = {layer.name: i for i, layer in enumerate(model.layers)}

    def reseed(cfg, layer_name):
        for key, value in list(cfg.items()):
            if key.endswith("_initializer") and isinstance(value, dict):
                inner = value.get("config")
                if isinstance(inner, dict) and "seed" in inner:
                    value = dict(value)
                    value["config"] = dict(inner)
                    value["config"]["seed"] = int(keyed_rng("untrained_control", seed,
                                                            positions.get(layer_name, -1), layer_name,
                                                            key).integers(0, 2**31 - 1))
                    cfg[key] = value
        return cfg

    def clone_layer(layer):
        cfg = reseed(layer.get_config(), layer.name)
        return layer.__class__.from_config(cfg)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    if not clone.built:
        clone.build(model.inputs[0].shape)
    return clone
