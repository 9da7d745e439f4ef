"""The lesion probe (paper section 3.2, appendix A.9): importance and output coherence.

Lesioning a set of units of a layer sets every weight *incoming* to them and their biases to 0
(``keep_bias=True`` keeps the bias). Every testable sub-cluster is lesioned, and so are ``n_random``
random same-layer, same-size unit sets (drawn from a counter-based generator keyed on model hash,
sub-cluster and replicate, so results do not depend on order or worker count). Per sub-cluster: the
accuracy drop, per-class recall drops, the right-sided empirical p of the drop (importance) and of
the class-wise range of the normalised drops (output coherence), and the paper's taxonomy.

Units of work: one sub-cluster with a range of its controls (the true set comes with the first
range). The framework's lesion engine (:meth:`modtest.frameworks.ModelAdapter.lesion_engine`)
computes predicted labels; everything here is numpy.
"""
from __future__ import annotations

import contextlib
from collections import defaultdict

import numpy as np

from modtest._validation import check_choice, check_data, check_fraction_open, check_int, check_seed
from modtest.errors import InvalidInput, NoTestableSubclusters
from modtest.probes.base import Probe, ProbeContext, Unit, run_probe
from modtest.results import ProbeResult, subclusters_of, within_size_limits

__all__ = ["lesion_study", "LesionProbe", "scores", "ENGINES", "METRICS", "TIES"]

ENGINES = ("fast", "reference")
METRICS = ("accuracy", "balanced_accuracy")
TIES = ("inclusive", "strict")
_ZERO_MEAN_TOL = 1e-12


# --------------------------------------------------------------------------------------------
# Scores (numpy)
# --------------------------------------------------------------------------------------------

def scores(labels, y, n_classes: int, metric: str = "accuracy"):
    """Overall score and per-class recall of predicted labels.

    Parameters
    ----------
    labels : int array, shape (V, N) or (N,)
    y : int array, shape (N,)
    n_classes : int
    metric : "accuracy" or "balanced_accuracy" (mean recall over the classes present in ``y``)

    Returns
    -------
    (score, class_recall) : arrays of shape (V,) and (V, n_classes); NaN recall for absent classes
    """
    lab = np.atleast_2d(np.asarray(labels))
    correct = (lab == y[None, :]).astype(np.float64)
    onehot = np.zeros((len(y), n_classes))
    onehot[np.arange(len(y)), y] = 1.0
    counts = onehot.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = (correct @ onehot) / counts
    recall[:, counts == 0] = np.nan
    if metric == "balanced_accuracy":
        score = np.nanmean(recall, axis=1)
    else:
        score = correct.mean(axis=1)
    return score, recall


def coherence(d: np.ndarray) -> np.ndarray:
    """max(d') - min(d') with d' = d / mean(d) over classes (NaN classes ignored), shape (...,).

    NaN where ``|mean(d)| <= 1e-12`` (no net damage: the statistic is undefined).
    """
    with np.errstate(invalid="ignore", divide="ignore"), _quiet_nan_warnings():
        m = np.nanmean(d, axis=-1)
        dn = d / m[..., None]
        coh = np.nanmax(dn, axis=-1) - np.nanmin(dn, axis=-1)
    return np.where(np.abs(m) <= _ZERO_MEAN_TOL, np.nan, coh)


@contextlib.contextmanager
def _quiet_nan_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# --------------------------------------------------------------------------------------------
# The probe
# --------------------------------------------------------------------------------------------

def control_key(ctx: ProbeContext) -> str:
    """What the random controls are keyed on: the model's fingerprint, or the ``control_key`` setting
    (two models given the same key draw the same controls: a Keras model and its torch twin)."""
    return ctx.settings.get("control_key") or ctx.model_fp


def control_sets(ctx: ProbeContext, item: dict) -> np.ndarray:
    """The random unit sets ``item["lo"] .. item["hi"] - 1`` of one sub-cluster, shape (hi - lo, size)."""
    from modtest._random import random_unit_sets

    return random_unit_sets(item["layer_size"], len(item["units"]), item["hi"] - item["lo"], control_key(ctx),
                            "lesion", item["layer"], item["cluster"], ctx.settings["seed"],
                            *item.get("key", ()), start=item["lo"])


class LesionProbe(Probe):
    """Units: one sub-cluster with controls ``lo .. hi - 1`` (the true set when ``lo == 0``).

    A unit's value: ``{"score": [V], "recall": [V][n_classes]}`` of its variants (JSON floats).
    """

    name = "lesion"

    def __init__(self, requests: list | None = None):
        #: the units to compute: ``(tag, sub-cluster, lo, hi, key)``; default: every sub-cluster of
        #: the context with controls ``0 .. n_random`` (the paper's protocol)
        self.requests = requests

    def identity(self, ctx):
        s = ctx.settings
        return (ctx.model_fp, ctx.data_fp, s["metric"], bool(s["keep_bias"]), s["engine"], s["seed"],
                ctx.model.n_classes, control_key(ctx))

    def units(self, ctx):
        requests = self.requests
        if requests is None:
            requests = [(sub.name, sub, 0, ctx.settings["n_random"], ()) for sub in ctx.subclusters]
        out = []
        for tag, sub, lo, hi, key in requests:
            item = {"tag": tag, "layer": sub.layer, "cluster": sub.cluster, "units": list(sub.units),
                    "layer_size": sub.layer_size, "lo": int(lo), "hi": int(hi), "key": list(key)}
            out.append(Unit(("lesion", sub.layer, sub.cluster, sub.layer_size, list(sub.units), int(lo), int(hi),
                             list(key)), item, work=int(hi) - int(lo) + (lo == 0)))
        return out

    def engine(self, ctx):
        s = ctx.settings
        return ctx.resource("lesion-engine", lambda: ctx.model.lesion_engine(
            ctx.x, engine=s["engine"], keep_bias=s["keep_bias"], batch_size=s["batch_size"],
            max_elements=s.get("max_elements"), cache_bytes=s.get("cache_bytes")))

    def base(self, ctx) -> tuple[float, np.ndarray]:
        """Score and per-class recall of the intact model."""
        def compute():
            sc, rec = scores(self.engine(ctx).base_labels(), ctx.y, ctx.model.n_classes, ctx.settings["metric"])
            return float(sc[0]), rec[0]

        return ctx.resource("lesion-base", compute)

    def _sets(self, ctx, item) -> list:
        sets = list(control_sets(ctx, item))
        if item["lo"] == 0:
            sets.insert(0, np.asarray(item["units"], dtype=np.int64))
        return sets

    def _value(self, ctx, labels) -> dict:
        sc, rec = scores(labels, ctx.y, ctx.model.n_classes, ctx.settings["metric"])
        return {"score": sc.tolist(), "recall": rec.tolist()}

    def compute(self, ctx, item, progress=None):
        return self._value(ctx, self.engine(ctx).labels(item["layer"], self._sets(ctx, item),
                                                         on_progress=progress))

    def compute_many(self, ctx, items, progress=None):
        """All units of one layer in one engine call (more variants per batched call)."""
        by_layer = defaultdict(list)
        for i, item in enumerate(items):
            by_layer[item["layer"]].append(i)
        order = [n for n in ctx.model.unit_layers() if n in by_layer]
        order += [n for n in by_layer if n not in order]
        out = [None] * len(items)
        eng = self.engine(ctx)
        for layer in order:
            idx = by_layer[layer]
            sets, bounds = [], []
            for i in idx:
                s = self._sets(ctx, items[i])
                bounds.append((len(sets), len(sets) + len(s)))
                sets.extend(s)
            lab = eng.labels(layer, sets, on_progress=progress)
            sc, rec = scores(lab, ctx.y, ctx.model.n_classes, ctx.settings["metric"])
            for i, (a, b) in zip(idx, bounds):
                out[i] = {"score": sc[a:b].tolist(), "recall": rec[a:b].tolist()}
        return out

    def combine(self, ctx, values):
        per_sub = collect_controls(self.units(ctx), values)
        return lesion_result(ctx, self, per_sub)


def collect_controls(units, values) -> dict:
    """Per unit tag (a sub-cluster's name): (scores (1 + n,), recalls (1 + n, classes), control ranges) from unit
    values, the true set first and control ranges in ``lo`` order."""
    parts = defaultdict(list)
    for u, v in zip(units, values):
        parts[u.item["tag"]].append((u.item["lo"], u.item, v))
    out = {}
    for name, ps in parts.items():
        ps.sort(key=lambda t: t[0])
        out[name] = (np.concatenate([np.asarray(v["score"], dtype=np.float64) for _, _, v in ps]),
                     np.concatenate([np.asarray(v["recall"], dtype=np.float64).reshape(len(v["score"]), -1)
                                     for _, _, v in ps]),
                     [it for _, it, _ in ps])
    return out


def lesion_result(ctx, probe: LesionProbe, per_sub: dict) -> ProbeResult:
    """Rows, network statistics (when every sub-cluster has the same number of controls: the paper's
    protocol), settings and extras of a lesion study. ``per_sub[name]``: (scores, recalls, control
    ranges) as :func:`collect_controls` gives, or with a fourth entry, the control unit sets."""
    from modtest import stats

    s = ctx.settings
    base_score, base_recall = probe.base(ctx)
    rows, true_d, rand_d, true_c, rand_c = [], [], [], [], []
    for sub in ctx.subclusters:
        sc, rec, items = per_sub[sub.name][:3]
        if len(per_sub[sub.name]) > 3:  # the controls given (the robust protocol's shared ones)
            rand = np.asarray(per_sub[sub.name][3], dtype=np.int64).reshape(-1, sub.size)
        else:
            rand = np.concatenate([control_sets(ctx, it) for it in items]) if items else np.zeros((0, sub.size))
        drops = base_score - sc
        class_drops = base_recall[None, :] - rec
        coh = coherence(class_drops)
        rows.append({
            "layer": sub.layer, "cluster": sub.cluster, "name": sub.name, "units": list(sub.units),
            "size": sub.size, "layer_size": sub.layer_size, "fraction": sub.fraction,
            "acc": float(sc[0]), "drop": float(drops[0]), "random_drops": drops[1:].tolist(),
            "random_units": rand.tolist(),
            "class_drops": class_drops[0].tolist(), "random_class_drops": class_drops[1:].tolist(),
            "coherence": None if np.isnan(coh[0]) else float(coh[0]),
            "random_coherence": [None if np.isnan(v) else float(v) for v in coh[1:]],
            **getattr(ctx.model, "layer_info", lambda _layer: {})(sub.layer),  # a transformer: unit_kind, block
        })
        true_d.append(drops[0])
        rand_d.append(drops[1:])
        true_c.append(coh[0])
        rand_c.append(coh[1:])
    counts = {len(r) for r in rand_d}
    network = {"n_subclusters": s["n_subclusters"], "n_filtered": s["n_subclusters"] - len(rows)}
    if len(counts) == 1:  # every sub-cluster has the same controls count: the paper's statistics
        n_random = counts.pop()
        _paper_statistics(ctx, rows, np.array(true_d), np.array(rand_d).reshape(len(rows), n_random),
                          np.array(true_c), np.array(rand_c, dtype=float).reshape(len(rows), n_random),
                          n_random, network)
    else:  # controls added where the decision needed them (robust protocol): per-row p-values
        _row_statistics(ctx, rows, true_d, rand_d, true_c, rand_c)
    settings = {
        "n_random": s["n_random"], "seed": s["seed"], "min_size": s["min_size"],
        "max_fraction": float(s["max_fraction"]), "metric": s["metric"], "ties": s["ties"],
        "keep_bias": bool(s["keep_bias"]), "engine": s["engine"], "batch_size": s["batch_size"],
        "model_hash": ctx.model_fp, "n_examples": int(len(ctx.x)), "k": s.get("k"),
        "partition_seed": s.get("partition_seed"),
    }
    extras = {
        "base_accuracy": base_score, "base_class_accuracy": base_recall.tolist(),
        "figure6": [{"name": r["name"], "base": base_recall.tolist(), "true": r["class_drops"],
                     "random": r["random_class_drops"]} for r in rows],
        "filtered": list(s.get("filtered", [])),
    }
    if "category" in (rows[0] if rows else {}):
        extras["taxonomy"] = stats.category_counts([r["category"] for r in rows])
        extras["figure2"] = [[r["fraction"], r["drop"], r["category"], r["name"]] for r in rows]
    # keep the key order of earlier versions (taxonomy and figure2 first)
    extras = {k: extras[k] for k in ("base_accuracy", "base_class_accuracy", "taxonomy", "figure2", "figure6",
                                     "filtered") if k in extras}
    return ProbeResult(probe="lesion", rows=rows, network=network, settings=settings, extras=extras)


def _paper_statistics(ctx, rows, true_d, rand_d, true_c, rand_c, n_random, network) -> None:
    """Per-row p-values, taxonomy and the network-level Fisher and chi-squared tests (paper A.4)."""
    from modtest import stats
    from modtest._random import keyed_rng

    ties = ctx.settings["ties"]
    p_imp = stats.empirical_p(true_d, rand_d, side="right", ties=ties)
    p_imp_left = stats.empirical_p(true_d, rand_d, side="left", ties=ties)
    p_coh = stats.empirical_p(true_c, rand_c, side="right", ties=ties, undefined="against")
    for r, pi, pl, pc in zip(rows, p_imp, p_imp_left, p_coh):
        r["p_importance"] = float(pi)
        r["p_importance_left"] = float(pl)
        r["p_coherence"] = None if np.isnan(pc) else float(pc)
    for r, c in zip(rows, stats.categorize_rows(rows, n_random)):
        r["category"] = c
    # the chi-squared categorical test needs p-values uniform on the grid under the null: ties
    # (lesions that change no prediction) are broken at random for it, keyed so runs repeat
    if ties == "inclusive":
        mh, seed = control_key(ctx), ctx.settings["seed"]
        p_imp_rank = stats.rank_p(true_d, rand_d, keyed_rng(mh, "lesion-ties", "importance", seed))
        p_coh_rank = stats.rank_p(true_c, rand_c, keyed_rng(mh, "lesion-ties", "coherence", seed))
    else:
        p_imp_rank, p_coh_rank = p_imp, p_coh
    for r, pi, pc in zip(rows, p_imp_rank, p_coh_rank):
        r["p_importance_rank"] = float(pi)
        r["p_coherence_rank"] = None if np.isnan(pc) else float(pc)
    network.update({"importance": stats.combine_pvalues(p_imp, n_random, p_imp_rank),
                    "output_coherence": stats.combine_pvalues(p_coh, n_random, p_coh_rank)})
    # earlier versions put the counts after the measures
    counts = {k: network.pop(k) for k in ("n_subclusters", "n_filtered")}
    network.update(counts)


def _row_statistics(ctx, rows, true_d, rand_d, true_c, rand_c) -> None:
    """Per-row p-values and taxonomy when sub-clusters have different numbers of controls."""
    from modtest import stats

    ties = ctx.settings["ties"]
    for r, td, rd, tc, rc in zip(rows, true_d, rand_d, true_c, rand_c):
        n = len(rd)
        r["n_random"] = n
        r["p_importance"] = float(stats.empirical_p(td, rd, side="right", ties=ties))
        r["p_importance_left"] = float(stats.empirical_p(td, rd, side="left", ties=ties))
        pc = stats.empirical_p(tc, rc, side="right", ties=ties, undefined="against")
        r["p_coherence"] = None if np.isnan(pc) else float(pc)
        r["category"] = stats.categorize(r["fraction"], r["drop"], r["p_importance"], r["p_importance_left"], n)


# --------------------------------------------------------------------------------------------
# The public function
# --------------------------------------------------------------------------------------------

def lesion_context(model, partition, x, y, *, n_random: int = 20, seed: int = 0, min_size: int = 1,
                   max_fraction: float = 0.9, metric: str = "accuracy", ties: str = "inclusive",
                   keep_bias: bool = False, engine: str = "fast", batch_size: int = 1024,
                   max_elements: int | None = None, cache_bytes: int | None = None,
                   control_key: str | None = None, data_checked: bool = False) -> ProbeContext:
    """Check the arguments of :func:`lesion_study` and build its :class:`ProbeContext`.
    ``data_checked``: ``x, y`` were already checked against ``model`` (an adapter), e.g. once for
    the whole partition ensemble of the robust study; they are not checked again."""
    from modtest.frameworks import adapt

    n_random = check_int("n_random", n_random, minimum=1)
    seed = check_seed(seed)
    min_size = check_int("min_size", min_size, minimum=1)
    max_fraction = check_fraction_open("max_fraction", max_fraction)
    metric = check_choice("metric", metric, METRICS)
    ties = check_choice("ties", ties, TIES)
    engine = check_choice("engine", engine, ENGINES)
    batch_size = check_int("batch_size", batch_size, minimum=1)
    for name, v in (("max_elements", max_elements), ("cache_bytes", cache_bytes)):
        if v is not None:
            check_int(name, v, minimum=1)
    adapter = adapt(model)
    if not data_checked:
        x, y = check_data(adapter, x, y)
    subs = subclusters_of(partition)
    layers = adapter.unit_layers()
    testable = [s for s in subs if s.layer in layers and within_size_limits(s, min_size, max_fraction)]
    if not testable:
        raise NoTestableSubclusters(f"no testable sub-clusters: all {len(subs)} were filtered out by "
                                    f"min_size={min_size}, max_fraction={max_fraction}")
    settings = {"n_random": n_random, "seed": seed, "min_size": min_size, "max_fraction": max_fraction,
                "metric": metric, "ties": ties, "keep_bias": bool(keep_bias), "engine": engine,
                "batch_size": batch_size, "max_elements": max_elements, "cache_bytes": cache_bytes,
                "k": getattr(partition, "k", None), "partition_seed": getattr(partition, "seed", None),
                "n_subclusters": len(subs), "filtered": [s.name for s in subs if s not in testable]}
    if control_key is not None:
        settings["control_key"] = str(control_key)
    return ProbeContext(adapter, x, y, testable, settings)


def lesion_study(model, partition, x, y, *, n_random: int = 20, seed: int = 0, min_size: int = 1,
                 max_fraction: float = 0.9, metric: str = "accuracy", ties: str = "inclusive",
                 keep_bias: bool = False, engine: str = "fast", batch_size: int = 1024,
                 progress=None, workshare=None, executor=None, max_elements: int | None = None,
                 cache_bytes: int | None = None, control_key: str | None = None) -> ProbeResult:
    """Lesion every testable sub-cluster and ``n_random`` random same-layer same-size unit sets.

    Importance: the accuracy drop of the true sub-cluster against its random controls (right-sided
    empirical p). Output coherence: the range of the class-wise drops normalised by their mean,
    ``max(d/mean(d)) - min(d/mean(d))``, against the controls (right-sided). When the true set's
    mean class drop is 0 the coherence is undefined: ``p_coherence`` is None and the row is counted
    in ``network["output_coherence"]["n_excluded"]``. A random set with mean 0 has no coherence
    either; it counts as at least as extreme as the true set (``undefined="against"``), which keeps
    the test valid. Giving it coherence 0 instead, the smallest value, made the test reject 10% of
    true nulls at alpha = 0.05 on the digits MLP (benchmarks/calibration.py).

    Parameters
    ----------
    model : a model (``keras.Model``, torch program, ...), a model file, or an adapter
    partition : Partition or list of SubCluster
    x : array, shape (N, *input_shape)
    y : array, shape (N,) int labels (or (N, n_classes) one-hot)
    n_random : int, random controls per sub-cluster
    seed : int, enters the key of the random unit sets (with model hash, layer and cluster)
    min_size : int, smallest sub-cluster size tested
    max_fraction : float, largest fraction of its layer a tested sub-cluster may hold
    metric : "accuracy" or "balanced_accuracy"
    ties : "inclusive" (ties count against significance) or "strict"
    keep_bias : bool, keep the biases of lesioned units (default: zero them too)
    engine : "fast" or "reference" (same labels; the reference is the plain definition)
    batch_size : int
    progress : None/True (the running audit's progress reporter: a live line on a terminal) or False
    workshare, executor : where the work units (one sub-cluster with its controls) run: None (here),
        a workshare folder path or :class:`modtest.executors.workshare.WorkShare` (shared with every
        process using the same folder), or any executor (:mod:`modtest.executors`); same result
    max_elements, cache_bytes : memory bounds of the fast engine; they change how the data is
        chunked, not the result
    control_key : what the random controls are keyed on (default: the model's fingerprint); two
        models given the same key draw the same controls (a model and its twin in another framework)

    Returns
    -------
    ProbeResult with probe="lesion"; rows, network (importance, output_coherence), settings, extras
    """
    from modtest.progress import task

    if progress not in (None, True, False):
        raise InvalidInput(f"progress must be None, True or False, got {progress!r}")
    if workshare is not None and executor is not None:
        raise InvalidInput("pass workshare or executor, not both")
    ctx = lesion_context(model, partition, x, y, n_random=n_random, seed=seed, min_size=min_size,
                         max_fraction=max_fraction, metric=metric, ties=ties, keep_bias=keep_bias,
                         engine=engine, batch_size=batch_size, max_elements=max_elements,
                         cache_bytes=cache_bytes, control_key=control_key)
    probe = LesionProbe()
    import time

    t0 = time.perf_counter()
    probe.base(ctx)
    with task("lesion", len(ctx.subclusters) * (ctx.settings["n_random"] + 1), progress) as bar:
        result = run_probe(probe, ctx, workshare if workshare is not None else executor, bar.update)
    n = sum(1 + len(r["random_drops"]) for r in result.rows)  # the true set and its controls, each row
    result.extras["cost"] = lesion_cost(n, len(ctx.x))
    result.extras["seconds"] = time.perf_counter() - t0
    return result


def lesion_cost(n_networks: int, n_examples: int, **more) -> dict:
    """The ``extras["cost"]`` of a lesion study: lesioned networks evaluated and lesioned examples
    (each lesioned network is evaluated on every example)."""
    return {"lesioned_networks": int(n_networks), "lesioned_examples": int(n_networks) * int(n_examples), **more}
