"""The robust lesion study: importance and output coherence judged over an ensemble of partitions,
with random controls added in rounds where a decision is within Monte Carlo error (see :mod:`modtest.robust`).

Round 0 gives every sub-cluster of every partition ``n_random`` controls; each later round doubles
the controls of the sub-clusters that carry the Monte Carlo width of an undecided partition, up to
``max_random``, until every measure's verdict is settled or can no longer change.

The controls are shared across the ensemble, not across sub-clusters: a control's lesion depends
only on its layer and unit set, so the ``o``-th sub-cluster of a given layer and size in each
partition reads one control stream keyed by (layer, size, o). Within a partition the sub-clusters'
controls stay independent (the Fisher and chi-squared combinations assume it); partitions share
them (the quantile merge across partitions is valid under any dependence). Every distinct lesion
(true set or control) is computed once per study, in work units of at most :data:`CHUNK` lesions
of one layer that run on any executor.
"""
from __future__ import annotations

import time

import numpy as np

from modtest import robust
from modtest._random import keyed_rng
from modtest._validation import check_alpha, check_data, check_int, check_seed
from modtest.errors import NoTestableSubclusters
from modtest.probes.base import ProbeContext, Unit
from modtest.probes.lesion import LesionProbe, coherence, lesion_context, lesion_result
from modtest.results import ProbeResult
from modtest.stats import empirical_p

__all__ = ["robust_lesion_study", "partition_seeds", "MEASURES"]

MEASURES = ("importance", "output_coherence")


def partition_seeds(seed: int, ensemble: int) -> list[int]:
    """The ensemble's clustering seeds: the user's seed first, then seeds drawn from it."""
    return [int(seed)] + [int(keyed_rng("partition-ensemble", int(seed), r).integers(0, 2**31 - 1))
                          for r in range(1, ensemble)]


#: at most this many lesions in one work unit (units are what executors spread over workers)
CHUNK = 32


class LesionSetsProbe(LesionProbe):
    """Units: given unit sets of one layer, each lesioned once (the robust protocol's shared lesions).

    ``requests``: ``[(layer, [unit set, ...]), ...]``. A unit's value is the lesion probe's (scores
    and class recalls of its sets, in order), a pure function of the layer and the sets, so it does
    not matter which executor computed it, nor in which unit a set came.
    """

    def __init__(self, requests: list | None = None):
        super().__init__(None)
        self.sets_requests = list(requests or [])

    def units(self, ctx):
        out = []
        for layer, sets in self.sets_requests:
            sets = [[int(u) for u in st] for st in sets]
            out.append(Unit(("lesion-sets", layer, sets), {"layer": layer, "sets": sets}, work=len(sets)))
        return out

    def _sets(self, ctx, item) -> list:
        return [np.asarray(st, dtype=np.int64) for st in item["sets"]]

    def combine(self, ctx, values):  # the robust study reads the values itself
        raise NotImplementedError("LesionSetsProbe values are read by robust_lesion_study")


def control_streams(tags) -> dict:
    """The control stream of every tagged sub-cluster: ``(layer, layer_size, size, occurrence)``, the
    occurrence counting the partition's earlier sub-clusters of the same layer and size.

    Two sub-clusters of one partition never share a stream (their controls stay independent, as the
    Fisher and chi-squared combinations within a partition assume); the ``o``-th sub-cluster of a
    given layer and size shares its stream with the ``o``-th of every other partition (the quantile
    merge across partitions is valid under any dependence)."""
    out = {}
    for tagged in tags:
        seen: dict = {}
        for tag, sub in tagged:
            o = seen.get((sub.layer, sub.size), 0)
            seen[(sub.layer, sub.size)] = o + 1
            out[tag] = (sub.layer, int(sub.layer_size), int(sub.size), o)
    return out


class SharedControls:
    """The controls of each stream, drawn once: control ``j`` of stream ``(layer, layer_size, size, o)``
    depends only on the key, the stream and ``j`` (counter-based), so more controls later extend it."""

    def __init__(self, ckey, seed: int):
        self.ckey, self.seed = ckey, int(seed)
        self.drawn: dict = {}

    def sets(self, stream, hi: int) -> np.ndarray:
        """Controls ``0 .. hi - 1`` of ``stream``, shape (hi, size)."""
        from modtest._random import random_unit_sets

        layer, layer_size, size, o = stream
        have = self.drawn.get(stream)
        if have is None:
            have = np.zeros((0, size), dtype=np.int64)
        if len(have) < hi:
            more = random_unit_sets(layer_size, size, hi - len(have), self.ckey, "lesion-shared", layer, size, o,
                                    self.seed, start=len(have))
            have = np.concatenate([have, more])
            self.drawn[stream] = have
        return have[:hi]


class SharedLesions:
    """Every distinct lesion of a study, ``(layer, unit set) -> (score, class recalls)``, computed once
    on ``run`` (an executor), whichever sub-clusters of whichever partitions ask for it."""

    def __init__(self, ctx, run, progress=None, chunk: int = CHUNK):
        self.ctx, self.run, self.progress, self.chunk = ctx, run, progress, int(chunk)
        self.values: dict = {}

    def ensure(self, wanted) -> int:
        """Compute the lesions of ``wanted`` (``(layer, tuple of units)``, in a fixed order) not known
        yet; returns how many were computed."""
        by_layer: dict = {}
        for layer, units in wanted:
            key = (layer, units)
            if key not in self.values and units not in by_layer.setdefault(layer, {}):
                by_layer[layer][units] = None
        requests = []
        for layer, sets in by_layer.items():
            sets = list(sets)
            requests += [(layer, sets[i:i + self.chunk]) for i in range(0, len(sets), self.chunk)]
        if not requests:
            return 0
        probe = LesionSetsProbe(requests)
        values = self.run.map(probe, self.ctx, probe.units(self.ctx), self.progress)
        n = 0
        for (layer, sets), v in zip(requests, values):
            rec = np.asarray(v["recall"], dtype=float).reshape(len(v["score"]), -1)
            for units, sc, rc in zip(sets, v["score"], rec):
                self.values[(layer, units)] = (float(sc), rc)
                n += 1
        return n

    def __getitem__(self, key):
        return self.values[key]

    def __len__(self) -> int:
        return len(self.values)


class _Tally:
    """Per tagged sub-cluster: its scores, class recalls and control sets so far (true set first)."""

    def __init__(self):
        self.scores: dict[str, list] = {}
        self.recalls: dict[str, list] = {}
        self.controls: dict[str, list] = {}

    def add(self, tag: str, values, controls) -> None:
        self.scores.setdefault(tag, []).extend(v[0] for v in values)
        self.recalls.setdefault(tag, []).extend(v[1] for v in values)
        self.controls.setdefault(tag, []).extend(controls)

    def n(self, tag: str) -> int:
        return len(self.scores[tag]) - 1 if tag in self.scores else -1


def _exceedances(tally: _Tally, tag: str, base_score: float, base_recall: np.ndarray, ties: str):
    """(b_importance, b_coherence or None when undefined for the true set, n) of one sub-cluster."""
    sc = np.asarray(tally.scores[tag], dtype=float)
    drops = base_score - sc
    rand = drops[1:]
    b_imp = int((rand >= drops[0]).sum() if ties == "inclusive" else (rand > drops[0]).sum())
    coh = coherence(base_recall[None, :] - np.asarray(tally.recalls[tag], dtype=float))
    if np.isnan(coh[0]):
        b_coh = None
    else:
        rc = coh[1:]
        ext = (rc >= coh[0]) if ties == "inclusive" else (rc > coh[0])
        b_coh = int((ext | np.isnan(rc)).sum())
    return b_imp, b_coh, len(rand)


def robust_lesion_study(model, x, y, *, k: int = 12, seed: int = 0, alpha: float = 0.05, ensemble: int = 10,
                        n_random: int = 20, max_random: int = 320, risk: float = robust.RISK,
                        ensemble_risk: float = robust.ENSEMBLE_RISK, partitions=None, executor=None,
                        progress=None, h: int | None = robust.H, **lesion_kw) -> ProbeResult:
    """Importance and output coherence of ``model`` over ``ensemble`` partitions at ``k``.

    The controls are shared across the ensemble: the ``o``-th sub-cluster of a given layer and size
    in each partition reads the same control stream (:func:`control_streams`), so two sub-clusters
    of one partition never share a control while partitions do; every distinct lesion (a true set or
    a control: a layer and a unit set) is computed once per study (:class:`SharedLesions`), in the
    first round and in every extension round.

    Parameters
    ----------
    model, x, y : as for :func:`modtest.lesion_study`
    k, seed : clusters, and the seed the ensemble's clustering seeds and the controls are drawn from
    alpha : the claims' level (the Monte Carlo decisions aim at it)
    ensemble : number of partitions R
    n_random, max_random : controls per sub-cluster in round 0, and the most any sub-cluster gets
    risk, ensemble_risk : see :mod:`modtest.robust`
    partitions : callable (model, k, seed) -> Partition (the session's, memoized), or None
    executor : where the work units run (None: here; a workshare folder; a Dask executor)
    h : a sub-cluster whose controls hold ``h`` exceedances (of the measure being sharpened) gets no
        more (Besag & Clifford 1991); None: extend by posterior variance alone
    **lesion_kw : min_size, max_fraction, metric, ties, keep_bias, engine, batch_size, ...

    Returns
    -------
    ProbeResult (probe="lesion"): ``rows`` of the first partition (the user's seed), ``network`` with
    per measure the merged p, its interval, the verdict and one entry per partition; ``extras["cost"]``
    the lesioned networks computed (distinct lesions) and referenced (summed over partitions).
    """
    from modtest.cluster import cluster
    from modtest.executors import as_executor
    from modtest.frameworks import adapt
    from modtest.probes.lesion import lesion_cost

    seed = check_seed(seed)
    alpha = check_alpha(alpha)
    ensemble = check_int("ensemble", ensemble, minimum=1)
    n_random = check_int("n_random", n_random, minimum=1)
    max_random = check_int("max_random", max_random, minimum=1)
    if max_random < n_random:
        from modtest.errors import InvalidInput

        raise InvalidInput(f"max_random ({max_random}) must be >= n_random ({n_random})")
    if h is not None:
        h = check_int("h", h, minimum=1)
    quorum = robust.ensemble_quorum(ensemble, ensemble_risk)
    adapter = adapt(model)
    x, y = check_data(adapter, x, y)  # once for the ensemble, not once per partition
    seeds = partition_seeds(seed, ensemble)
    parts = [(partitions or (lambda m, kk, s: cluster(m, k=kk, seed=s)))(adapter, k, s) for s in seeds]
    t0 = time.perf_counter()  # the clustering is the partitions' own time (Partition.seconds)
    ctxs, why = [], None
    for part in parts:
        try:
            ctxs.append(lesion_context(adapter, part, x, y, n_random=n_random, seed=seed, data_checked=True,
                                       **lesion_kw))
        except NoTestableSubclusters as exc:
            why = why or str(exc)
            ctxs.append(None)
    if all(c is None for c in ctxs):
        raise NoTestableSubclusters(f"{why} (in each of the {ensemble} partitions)")
    first = next(c for c in ctxs if c is not None)
    ctx = ProbeContext(adapter, first.x, first.y, [], dict(first.settings))
    probe = LesionProbe()
    base_score, base_recall = probe.base(ctx)
    ties = ctx.settings["ties"]
    ckey = ctx.settings.get("control_key") or adapter.fingerprint()  # keys every random draw
    tags = [[(f"{r}/{sub.name}", sub) for sub in (c.subclusters if c is not None else [])]
            for r, c in enumerate(ctxs)]
    from modtest.progress import task

    tally = _Tally()
    streams = control_streams(tags)
    controls = SharedControls(ckey, seed)
    by_tag = {tag: (r, sub) for r in range(ensemble) for tag, sub in tags[r]}
    rounds = 0
    bar = task("lesion (ensemble)", 0, progress)
    lesions = SharedLesions(ctx, as_executor(executor), bar.update)

    def compute(requests):
        """Give each ``(tag, hi)`` its true set (first time) and controls up to ``hi``."""
        nonlocal rounds
        plan, wanted = [], []
        for tag, hi in requests:
            _r, sub = by_tag[tag]
            have = tally.n(tag)  # controls 0 .. have - 1 are in (-1: not even the true set)
            sets = [tuple(int(u) for u in st) for st in controls.sets(streams[tag], hi)[max(have, 0):hi]]
            if have < 0:
                sets.insert(0, tuple(sorted(int(u) for u in sub.units)))
            plan.append((tag, sub.layer, sets, have < 0))
            wanted += [(sub.layer, st) for st in sets]
        new = dict.fromkeys(w for w in wanted if w not in lesions.values)
        bar.add_total(len(new))
        lesions.ensure(list(new))
        for tag, layer, sets, with_true in plan:
            tally.add(tag, [lesions[(layer, st)] for st in sets], sets[1:] if with_true else sets)
        rounds += 1

    def counts(r, measure):
        b, n, ids = [], [], []
        for tag, _sub in tags[r]:
            b_imp, b_coh, nn = _exceedances(tally, tag, base_score, base_recall, ties)
            bb = b_imp if measure == "importance" else b_coh
            if bb is not None:
                b.append(bb)
                n.append(nn)
                ids.append(tag)
        return (b, n, ids) if b else None

    def extend(wants):
        compute([(tag, hi) for (_r, tag), hi in wants.items()])

    with bar:
        compute([(tag, n_random) for r in range(ensemble) for tag, _sub in tags[r]])
        decided = robust.decide(counts, extend, ensemble=ensemble, measures=MEASURES, alpha=alpha, cap=max_random,
                                risk=risk, ensemble_risk=ensemble_risk, key=(ckey, seed), h=h)
    network = {}
    threshold = alpha * quorum / ensemble
    for measure in MEASURES:
        ens, mcs = decided[measure]
        chi2 = _chi2_ps(tally, tags, measure, base_score, base_recall, n_random, ckey, seed)
        chi2_ens = robust.merge_ensemble([robust.MonteCarloP(v, v, v, 0) for v in chi2], alpha, ensemble_risk)
        included = [counts(r, measure) for r in range(ensemble)]
        network[measure] = {
            **ens.to_dict(), "fisher_p": ens.p, "fisher_stat": None, "method": "fisher",
            "chi2_p": chi2_ens.p, "chi2": chi2_ens.to_dict(), "ensemble": ensemble, "threshold": threshold,
            "n": int(np.median([len(c[0]) if c else 0 for c in included])),
            "n_excluded": int(np.median([len(tags[r]) - (len(c[0]) if c else 0) for r, c in enumerate(included)])),
            "partitions": [{"seed": seeds[r], "ncut": float(parts[r].ncut), "p": m.p, "p_low": m.low,
                            "p_high": m.high, "decision": m.decision(threshold), "chi2_p": chi2[r],
                            "n_subclusters": len(tags[r]), "n_controls": m.n_controls}
                           for r, m in enumerate(mcs)],
        }
    result = _first_partition_result(ctxs, tally, probe, (base_score, base_recall))
    result.network.update(network)
    n_sub = len(parts[0].subclusters)
    result.network["n_subclusters"] = n_sub
    result.network["n_filtered"] = n_sub - len(tags[0])
    result.settings.update({"protocol": "robust", "alpha": alpha, "ensemble": ensemble, "max_random": max_random,
                            "risk": risk, "ensemble_risk": ensemble_risk, "partition_seeds": seeds, "h": h})
    summaries = [dict(seed=seeds[r], ncut=float(parts[r].ncut),
                      **_partition_summary(tally, tags[r], base_score, ties)) for r in range(ensemble)]
    for measure in MEASURES:
        for entry, summ in zip(result.network[measure]["partitions"], summaries):
            entry["important"] = summ["taxonomy"]["important"]
    referenced = int(sum(len(v) for v in tally.scores.values()))
    result.extras.update({"partitions": summaries, "rounds": rounds, "n_lesions": len(lesions),
                          "cost": lesion_cost(len(lesions), len(ctx.x), lesions_referenced=referenced,
                                              control_streams=len(set(streams.values())),
                                              subclusters=len(streams), rounds=rounds),
                          "seconds": time.perf_counter() - t0})
    return result


def _chi2_ps(tally, tags, measure, base_score, base_recall, n0, mh, seed) -> list[float]:
    """Per partition: the chi-squared categorical test of tie-broken ranks among the first ``n0``
    controls (a fixed grid, as the test needs); 1.0 where nothing is testable."""
    from modtest import stats

    out = []
    for r, tagged in enumerate(tags):
        true, rand = [], []
        for tag, _sub in tagged:
            sc = np.asarray(tally.scores[tag][:n0 + 1], dtype=float)
            if measure == "importance":
                v = base_score - sc
            else:
                v = coherence(base_recall[None, :] - np.asarray(tally.recalls[tag][:n0 + 1], dtype=float))
                if np.isnan(v[0]):
                    continue
            true.append(v[0])
            rand.append(v[1:])
        if not true:
            out.append(1.0)
            continue
        ranks = stats.rank_p(np.asarray(true), np.asarray(rand), keyed_rng(mh, "robust-ties", measure, seed, r))
        out.append(float(stats.chi2_categorical(ranks, n0)[1]))
    return out


def _partition_summary(tally, tagged, base_score, ties) -> dict:
    """One partition's taxonomy counts and accuracy-drop quantiles (what comparisons read)."""
    from modtest import stats
    from modtest.stats import DROP_QUANTILES as QUANTILES

    cats, drops = [], []
    for tag, sub in tagged:
        sc = np.asarray(tally.scores[tag], dtype=float)
        d = base_score - sc
        p_right = stats.empirical_p(d[0], d[1:], side="right", ties=ties)
        p_left = stats.empirical_p(d[0], d[1:], side="left", ties=ties)
        cats.append(stats.categorize(sub.fraction, d[0], p_right, p_left, len(d) - 1))
        drops.append(d[0])
    out = {"taxonomy": stats.category_counts(cats), "n_tested": len(tagged)}
    if drops:
        out.update({f"drop_q{q}": float(v) for q, v in zip(QUANTILES, np.percentile(drops, QUANTILES))})
        out["drop_mean"] = float(np.mean(drops))
    return out


def _first_partition_result(ctxs, tally, probe, base) -> ProbeResult:
    """The lesion rows of the first partition with a testable sub-cluster (its taxonomy, figures)."""
    r, ctx = next((r, c) for r, c in enumerate(ctxs) if c is not None)
    per_sub = {}
    for sub in ctx.subclusters:
        tag = f"{r}/{sub.name}"
        per_sub[sub.name] = (np.asarray(tally.scores[tag], dtype=float),
                             np.asarray(tally.recalls[tag], dtype=float), [],
                             np.asarray(tally.controls[tag], dtype=np.int64).reshape(-1, sub.size))
    ctx._resources["lesion-base"] = base
    return lesion_result(ctx, probe, per_sub)


# --------------------------------------------------------------------------------------------
# Feature visualization
# --------------------------------------------------------------------------------------------

VIS_MEASURES = {  # measure -> (statistic, side): which way is extreme
    "input_coherence": ("score", "right"),
    "output_coherence": ("entropy", "left"),
    "activational_variance": ("variance", "left"),
}


def robust_visualization_study(model, *, k: int = 12, seed: int = 0, alpha: float = 0.05, ensemble: int = 10,
                               n_random: int = 9, max_random: int = 36, risk: float = robust.RISK,
                               ensemble_risk: float = robust.ENSEMBLE_RISK, partitions=None, executor=None,
                               min_size: int = 3, max_fraction: float = 0.8, steps: int = 256, lr: float = 0.05,
                               param: str = "pixel", transforms="auto", batch_size: int = 128,
                               value_range=(0.0, 1.0), image_shape=None) -> ProbeResult:
    """Input and output coherence and activational variance over ``ensemble`` partitions, images for
    more random controls rendered where a decision is within Monte Carlo error (up to ``max_random``).

    Every objective (a sub-cluster or one of its controls in one partition) is an image of its own,
    keyed by (seed, layer, cluster, replicate, partition seed), so a result does not depend on which
    process rendered it; the rows are the first partition's, ``network`` as in
    :func:`robust_lesion_study`.
    """
    from modtest._random import random_unit_sets
    from modtest._validation import check_fraction
    from modtest.cluster import cluster
    from modtest.executors import as_executor
    from modtest.frameworks import adapt
    from modtest.probes.visualization import VisualizationProbe, _canonical_order, filter_subclusters

    t0 = time.perf_counter()
    seed, alpha = check_seed(seed), check_alpha(alpha)
    ensemble = check_int("ensemble", ensemble, minimum=1)
    n_random = check_int("n_random", n_random, minimum=1)
    max_random = max(check_int("max_random", max_random, minimum=1), n_random)
    min_size = check_int("min_size", min_size, minimum=1)
    max_fraction = check_fraction("max_fraction", max_fraction)
    quorum = robust.ensemble_quorum(ensemble, ensemble_risk)
    adapter = adapt(model)
    mh = adapter.fingerprint()
    seeds = partition_seeds(seed, ensemble)
    parts = [(partitions or (lambda m, kk, s: cluster(m, k=kk, seed=s)))(adapter, k, s) for s in seeds]
    tested = [_canonical_order(adapter, filter_subclusters(p, min_size=min_size, max_fraction=max_fraction))
              for p in parts]
    if not any(tested):
        raise NoTestableSubclusters(f"none of the sub-clusters has >= {min_size} units and <= {max_fraction:.0%} "
                                    f"of its layer (in each of the {ensemble} partitions)")
    vis = adapter.visualizer()
    settings = {"seed": seed, "batch_size": batch_size, "transforms": transforms, "backend": vis.backend,
                "layers": sorted({s.layer for subs in tested for s in subs}, key=adapter.layer_positions().get),
                "render": {"steps": steps, "lr": lr, "param": param, "batch_size": batch_size,
                           "value_range": list(value_range) if value_range is not None else None,
                           "image_shape": image_shape}}
    ctx = ProbeContext(adapter, None, None, [], settings)
    ctx._resources["visualizer"] = vis
    run = as_executor(executor)
    stats: dict[str, dict[str, list]] = {}  # tag -> statistic -> values (true set first)
    tags = [[(f"{r}/{s.name}", s) for s in subs] for r, subs in enumerate(tested)]
    by_tag = {tag: (r, s) for r in range(ensemble) for tag, s in tags[r]}

    def render(requests):
        """Images for (tag, lo, hi): the true set (lo == 0) and controls lo .. hi - 1."""
        objectives, keys, owners = [], [], []
        for tag, lo, hi in requests:
            r, sub = by_tag[tag]
            sets = list(random_unit_sets(sub.layer_size, sub.size, hi - lo, mh, "visualization", sub.layer,
                                         sub.cluster, "ensemble", seeds[r], start=lo))
            if lo == 0:
                sets.insert(0, np.asarray(sub.units, dtype=np.int64))
            first = 0 if lo == 0 else lo + 1
            for j, units in enumerate(sets):
                objectives.append((sub.layer, [int(u) for u in units]))
                keys.append([seed, "visualization", sub.layer, sub.cluster, first + j, "ensemble", seeds[r]])
                owners.append(tag)
        probe = VisualizationProbe(objectives, keys)
        parts_ = run.map(probe, ctx, probe.units(ctx))
        values = {name: [v for p in parts_ for v in p[name]] for name in ("score", "entropy", "variance", "cov")}
        for i, tag in enumerate(owners):
            got = stats.setdefault(tag, {name: [] for name in values})
            for name, vals in values.items():
                got[name].append(vals[i])

    def counts(r, measure):
        stat, side = VIS_MEASURES[measure]
        b, n, ids = [], [], []
        for tag, _s in tags[r]:
            v = np.asarray(stats[tag][stat], dtype=float)
            ext = (v[1:] >= v[0]) if side == "right" else (v[1:] <= v[0])
            b.append(int(ext.sum()))
            n.append(len(v) - 1)
            ids.append(tag)
        return (b, n, ids) if b else None

    def extend(wants):
        render([(tag, len(stats[tag]["score"]) - 1, hi) for (_r, tag), hi in wants.items()])

    render([(tag, 0, n_random) for r in range(ensemble) for tag, _s in tags[r]])
    decided = robust.decide(counts, extend, ensemble=ensemble, measures=tuple(VIS_MEASURES), alpha=alpha,
                            cap=max_random, risk=risk, ensemble_risk=ensemble_risk, key=(mh, seed, "visualization"),
                            h=None)  # its extension rule as before (issue 26 measured the lesion study only)
    threshold = alpha * quorum / ensemble
    network = {}
    for measure, (ens, mcs) in decided.items():
        network[measure] = {
            **ens.to_dict(), "fisher_p": ens.p, "fisher_stat": None, "method": "fisher", "chi2_p": None,
            "ensemble": ensemble, "threshold": threshold, "n": len(tags[0]), "n_excluded": 0,
            "partitions": [{"seed": seeds[r], "ncut": float(parts[r].ncut), "p": m.p, "p_low": m.low,
                            "p_high": m.high, "decision": m.decision(threshold), "n_subclusters": len(tags[r]),
                            "n_controls": m.n_controls} for r, m in enumerate(mcs)],
        }
    rows = []
    for tag, sub in tags[0]:
        st = stats[tag]
        row = {"layer": sub.layer, "cluster": sub.cluster, "units": list(sub.units), "size": sub.size,
               "fraction": sub.fraction, "n_random": len(st["score"]) - 1}
        for measure, (stat, side) in VIS_MEASURES.items():
            v = np.asarray(st[stat], dtype=float)
            row[stat] = float(v[0])
            row[{"score": "random_scores", "entropy": "random_entropies", "variance": "random_variances"}[stat]] = \
                v[1:].tolist()
            key = {"input_coherence": "p_input", "output_coherence": "p_output",
                   "activational_variance": "p_variance"}[measure]
            row[key] = float(empirical_p(v[0], v[1:], side=side))
        row["cov"] = float(st["cov"][0])
        rows.append(row)
    settings_out = {"protocol": "robust", "alpha": alpha, "ensemble": ensemble, "n_random": n_random,
                    "max_random": max_random, "seed": seed, "partition_seeds": seeds, "min_size": min_size,
                    "max_fraction": max_fraction, "steps": steps, "lr": lr, "param": param,
                    "batch_size": batch_size, "engine": f"modtest.visualize/{adapter.framework}-{vis.backend}",
                    "model_hash": mh}
    covs = np.asarray([r["cov"] for r in rows if np.isfinite(r["cov"])])
    extras = {"cov_quartiles": np.percentile(covs, [25, 50, 75]).tolist() if covs.size else [float("nan")] * 3,
              "n_tested": len(rows), "n_images": int(sum(len(v["score"]) for v in stats.values())),
              "seconds": time.perf_counter() - t0}
    return ProbeResult(probe="visualization", rows=rows, network=network, settings=settings_out, extras=extras)
