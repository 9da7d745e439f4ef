"""Run a whole audit outside pytest (``modtest audit``, scripts): the claims importance and output
coherence (plus clusterability and double lesions on request), judged and corrected together exactly
as a pytest session judges them; returns a :class:`Report`."""
from __future__ import annotations

import time

from modtest.options import DEFAULTS
from modtest.report.schema import Report, _jsonable

MEASURES = ("importance", "output_coherence")


def run_audit(model, x, y, *, k: int = DEFAULTS["k"], seed: int = DEFAULTS["seed"],
              n_random: int = DEFAULTS["n_random"], alpha: float = DEFAULTS["alpha"],
              correction: str = DEFAULTS["correction"], clusterability: int = 0, double_lesion: bool = False,
              double_n_random: int = 20, model_path=None, data_path=None, progress=None,
              protocol: str = DEFAULTS["protocol"], ensemble: int = DEFAULTS["ensemble"],
              max_random: int = DEFAULTS["max_random"], executor=None) -> tuple[Report, object, object]:
    """Audit ``model`` on ``(x, y)``; returns ``(report, partition, lesion_result)``.

    Claims: importance and output coherence (Fisher), plus clusterability when ``clusterability``
    (the number of weight shuffles) is > 0, corrected together with ``correction``. ``protocol``
    "robust" judges them over ``ensemble`` partitions with controls added up to ``max_random`` where
    a decision is within Monte Carlo error; "paper" uses one partition and ``n_random`` controls.
    ``partition``/``lesion_result`` are those of the first partition (the one at ``seed``).
    ``executor`` runs the probes' work units (None: here; a :class:`~modtest.executors.dask.DaskExecutor`
    or ``distributed.Client``: on a Dask cluster; same results).
    """
    from modtest._validation import check_choice, check_data
    from modtest.assertions import _assert_measure
    from modtest.claims import ClaimCollector
    from modtest.context import AuditContext, Defaults, using
    from modtest.frameworks import adapt
    from modtest.options import PROTOCOLS
    from modtest.probes.store import ProbeStore
    from modtest.report.build import build_report
    from modtest.store import data_hash

    t_start = time.perf_counter()
    protocol = check_choice("protocol", protocol, PROTOCOLS)
    if executor is not None:  # one executor for every probe (a Dask client: the model is sent once)
        from modtest.executors import as_executor

        executor = as_executor(executor)
    adapter = adapt(model)
    x, y = check_data(adapter, x, y)
    defaults = Defaults(k=k, alpha=alpha, seed=seed, data=lambda _m: (x, y), protocol=protocol,
                        ensemble=ensemble, max_random=max_random,
                        settings={"lesion": {"n_random": n_random, "progress": progress}})
    context = AuditContext(defaults, ClaimCollector(correction), ProbeStore(executor=executor))
    wanted = [(m, {}) for m in MEASURES]
    if clusterability:
        wanted.append(("clusterability", {"n_shuffles": int(clusterability)}))
    with using(context):
        for measure, extra in wanted:
            context.collector.current_nodeid = f"modtest audit::{measure}"
            method = "shuffle" if measure == "clusterability" else "fisher"
            try:
                _assert_measure(measure, adapter, k, alpha, None, seed, method, extra)
            except AssertionError:
                pass  # recorded as a failure (or inconclusive) in the collector
    context.collector.current_nodeid = ""
    context.collector.finalize()
    lesion = next(r.result for r in context.store.memory.values() if r.result.probe == "lesion")
    part = context.partition(adapter, k, seed)
    dl = None
    if double_lesion:
        from modtest.probes.double_lesion import double_lesion_study

        t = time.perf_counter()
        dl = double_lesion_study(adapter, part, x, y, lesion, n_random=double_n_random, seed=seed,
                                 progress=progress, executor=executor)
        dl["seconds"] = time.perf_counter() - t
    report = build_report(
        source="cli", context=context,
        model={"path": None if model_path is None else str(model_path), "name": adapter.name,
               "hash": adapter.fingerprint()},
        data={"path": None if data_path is None else str(data_path), "hash": data_hash(x, y),
              "n_examples": int(len(x))},
        k=int(k), seed=int(seed), alpha=float(alpha), started=t_start)
    if dl is not None:
        report.double_lesion = _jsonable(dl)
        report.timings["probes"]["double_lesion"] = dl["seconds"]
    return report, part, lesion
