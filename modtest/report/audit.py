"""Run a whole audit outside pytest (``modtest audit``, scripts): cluster, lesion study, optional
clusterability and double lesions, claims corrected together; returns a :class:`Report`."""
from __future__ import annotations

import time

from modtest.report.schema import Report, _jsonable, claim_entry, partition_summary, probe_entry


def run_audit(model, x, y, *, k: int = 12, seed: int = 0, n_random: int = 20, alpha: float = 0.05,
              correction: str = "holm", clusterability: int = 0, double_lesion: bool = False,
              double_n_random: int = 20, model_path=None, data_path=None, progress=None) -> tuple[Report, object, object]:
    """Audit ``model`` on ``(x, y)``; returns ``(report, partition, lesion_result)``.

    Claims: importance and output coherence (Fisher), plus clusterability when ``clusterability``
    (the number of weight shuffles) is > 0; corrected together with ``correction``.
    """
    from modtest._validation import check_data
    from modtest.cache import data_hash
    from modtest.cluster import cluster
    from modtest.lesion import double_lesion_study, lesion_study
    from modtest.model import load_model, model_hash
    from modtest.results import Claim
    from modtest.session import correct_claims

    t_start = time.perf_counter()
    model = load_model(model)
    x, y = check_data(model, x, y)
    mh, dh = model_hash(model), data_hash(x, y)
    timings = {}
    t = time.perf_counter()
    part = cluster(model, k=k, seed=seed)
    timings["cluster"] = time.perf_counter() - t
    t = time.perf_counter()
    res = lesion_study(model, part, x, y, n_random=n_random, seed=seed, progress=progress)
    timings["lesion"] = time.perf_counter() - t
    entries = [probe_entry(res, k=k, seed=seed, model_hash=mh, data_hash=dh,
                           settings={"n_random": n_random}, seconds=timings["lesion"])]
    claims = []
    for measure in ("importance", "output_coherence"):
        net = res.network[measure]
        claims.append(Claim(name=f"{measure}[k={k},seed={seed}]", measure=measure, method="fisher",
                            statistic=float(net["fisher_stat"]), p_raw=float(net["fisher_p"]),
                            alpha=alpha, n_subclusters=int(net["n"]), nodeid=f"modtest audit::{measure}",
                            probe_seconds=timings["lesion"]))
    if clusterability:
        from modtest.clusterability import clusterability as run_clusterability

        t = time.perf_counter()
        cr = run_clusterability(model, k=k, n_shuffles=int(clusterability), seed=seed)
        timings["clusterability"] = time.perf_counter() - t
        net = {"p": cr.p_value, "fisher_p": cr.p_value, "chi2_p": cr.p_value, "statistic": cr.z_score,
               "ncut": cr.ncut, "z_score": cr.z_score, "n": len(cr.shuffled_ncuts), "n_excluded": 0}
        from modtest.results import ProbeResult

        pr = ProbeResult("clusterability", [], {"clusterability": net},
                         {"k": k, "seed": seed, "n_shuffles": int(clusterability)},
                         {"shuffled_ncuts": list(cr.shuffled_ncuts)})
        entries.append(probe_entry(pr, k=k, seed=seed, model_hash=mh,
                                   settings={"n_shuffles": int(clusterability)},
                                   seconds=timings["clusterability"]))
        claims.append(Claim(name=f"clusterability[k={k},seed={seed}]", measure="clusterability",
                            method="shuffle", statistic=cr.z_score, p_raw=cr.p_value, alpha=alpha,
                            n_subclusters=0, nodeid="modtest audit::clusterability",
                            detail=f"n-cut {cr.ncut:.3g} vs {len(cr.shuffled_ncuts)} within-layer shuffles",
                            probe_seconds=timings["clusterability"]))
    for c in claims:
        if c.p_raw != c.p_raw or c.p_raw > c.alpha:
            c.passed = False
    correct_claims(claims, correction)
    dl = None
    if double_lesion:
        t = time.perf_counter()
        dl = double_lesion_study(model, part, x, y, res, n_random=double_n_random, seed=seed,
                                 progress=progress)
        timings["double_lesion"] = time.perf_counter() - t
    timings = {"total_seconds": time.perf_counter() - t_start, "probes": dict(timings)}
    report = Report.new(
        source="cli",
        model={"path": None if model_path is None else str(model_path),
               "name": getattr(model, "name", None), "hash": mh},
        data={"path": None if data_path is None else str(data_path), "hash": dh, "n_examples": int(len(x))},
        k=int(k), seed=int(seed), alpha=float(alpha), correction=correction,
        partitions=[partition_summary(part, mh)], probes=entries,
        claims=[claim_entry(c) for c in claims], double_lesion=None if dl is None else _jsonable(dl),
        timings=timings,
    )
    return report, part, res
