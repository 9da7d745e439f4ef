"""Run a whole audit outside pytest (``modtest audit``, scripts): the claims importance and output
coherence (plus clusterability and double lesions on request), judged and corrected together exactly
as a pytest session judges them; returns a :class:`Report`."""
from __future__ import annotations

import time

from modtest.options import DEFAULTS
from modtest.report.schema import Report, _jsonable

#: the lesion probe's measures: what ``modtest audit`` claims by default (with the measures of any
#: probe declared with ``audit=True``, see :meth:`modtest.probes.Registry.audit_measures`)
MEASURES = ("importance", "output_coherence")
#: ``clusterability="auto"`` runs the n-cut-vs-shuffles comparison (descriptive, not a claim) when the
#: graph has at most this many edges: 20 re-clusterings cost seconds there (the digits models: under
#: 0.1 s each), and minutes on a VGG-16 (1.6M edges, 3 s each)
CHEAP_EDGES = 250_000
AUTO_SHUFFLES = 20


def run_audit(model, x, y, *, k: int = DEFAULTS["k"], seed: int = DEFAULTS["seed"],
              n_random: int = DEFAULTS["n_random"], alpha: float = DEFAULTS["alpha"],
              correction: str = DEFAULTS["correction"], clusterability=0, double_lesion: bool = False,
              double_n_random: int = 20, model_path=None, data_path=None, progress=None,
              protocol: str = DEFAULTS["protocol"], ensemble: int = DEFAULTS["ensemble"],
              max_random: int = DEFAULTS["max_random"], executor=None,
              claims=None) -> tuple[Report, object, object]:
    """Audit ``model`` on ``(x, y)``; returns ``(report, partition, lesion_result)``.

    Claims: ``claims`` (default: every measure of a probe declared with ``audit=True`` in the active
    registry: importance and output coherence, plus those of probes declared there, see
    ``docs/extending.md``; Fisher; the lesion study computes both of its measures whichever are
    claimed; any registered measure may be named), plus clusterability when ``clusterability`` (the number of
    weight shuffles) is > 0, corrected together with ``correction``. With ``clusterability="auto"``
    the n-cut is compared with 20 shuffles for the report only (not a claim) when the graph has at most
    :data:`CHEAP_EDGES` edges; ``report.extra["notes"]`` says when it was skipped. ``protocol``
    "robust" judges the claims over ``ensemble`` partitions with controls added up to ``max_random``
    where a decision is within Monte Carlo error; "paper" uses one partition and ``n_random``
    controls. ``progress``: a :class:`modtest.progress.Reporter`, False (none) or None (live lines on
    a terminal). ``partition``/``lesion_result`` are those of the first partition (``lesion_result`` is None when
    no lesion measure was claimed).
    ``executor`` runs the probes' work units (None: here; a :class:`~modtest.executors.dask.DaskExecutor`
    or ``distributed.Client``: on a Dask cluster; same results).
    """
    from modtest._validation import check_choice, check_data, check_int
    from modtest.assertions import _assert_measure
    from modtest.claims import ClaimCollector
    from modtest.context import AuditContext, Defaults, current, using
    from modtest.frameworks import adapt
    from modtest.options import PROTOCOLS
    from modtest.probes.store import ProbeStore
    from modtest.progress import NullReporter
    from modtest.report.build import build_report
    from modtest.store import data_hash

    t_start = time.perf_counter()
    protocol = check_choice("protocol", protocol, PROTOCOLS)
    registry = current().registry
    claims = registry.audit_measures() if claims is None else claims
    claims = [check_choice("claim", c, registry.measures) for c in claims]
    if not claims:
        from modtest.errors import InvalidInput

        raise InvalidInput(f"claims must name at least one of {', '.join(registry.audit_measures())}")
    auto_clusterability = clusterability == "auto"
    if not auto_clusterability:
        clusterability = check_int("clusterability", clusterability, minimum=0)
    if executor is not None:  # one executor for every probe (a Dask client: the model is sent once)
        from modtest.executors import as_executor

        executor = as_executor(executor)
    adapter = adapt(model)
    x, y = check_data(adapter, x, y)
    defaults = Defaults(k=k, alpha=alpha, seed=seed, data=lambda _m: (x, y), protocol=protocol,
                        ensemble=ensemble, max_random=max_random, settings={"lesion": {"n_random": n_random}})
    reporter = NullReporter() if progress is False else (None if progress in (None, True) else progress)
    context = AuditContext(defaults, ClaimCollector(correction), ProbeStore(executor=executor, registry=registry),
                           progress=reporter, registry=registry)
    wanted = [(m, {}) for m in claims]
    if clusterability and not auto_clusterability:
        wanted.append(("clusterability", {"n_shuffles": int(clusterability)}))
    notes = []
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
        lesion = next((r.result for r in context.store.memory.values() if r.result.probe == "lesion"), None)
        part = context.partition(adapter, k, seed)
        if auto_clusterability:
            n_edges = int(part.graph.adjacency.nnz // 2)
            if n_edges <= CHEAP_EDGES:
                import numpy as np

                context.store.run("clusterability", adapter, np.zeros(0, np.float32), np.zeros(0, np.int64), k,
                                  seed, {"n_shuffles": AUTO_SHUFFLES})
            else:
                notes.append(f"clusterability skipped: the graph has {n_edges:,} edges (more than {CHEAP_EDGES:,}); "
                             f"--clusterability N compares the n-cut with N shuffles")
        dl = None
        if double_lesion and lesion is not None:
            from modtest.probes.double_lesion import double_lesion_study

            t = time.perf_counter()
            dl = double_lesion_study(adapter, part, x, y, lesion, n_random=double_n_random, seed=seed,
                                     progress=context.progress, executor=executor)
            dl["seconds"] = time.perf_counter() - t
    report = build_report(
        source="cli", context=context,
        model={"path": None if model_path is None else str(model_path), "name": adapter.name,
               "hash": adapter.fingerprint()},
        data={"path": None if data_path is None else str(data_path), "hash": data_hash(x, y),
              "n_examples": int(len(x))},
        k=int(k), seed=int(seed), alpha=float(alpha), started=t_start, backend=adapter.backend)
    if notes:
        report.extra["notes"] = notes
    if dl is not None:
        report.double_lesion = _jsonable(dl)
        report.timings["probes"]["double_lesion"] = dl["seconds"]
    return report, part, lesion
