"""The front door: a model and its data are loaded, checked and bound once.

``Audit.open(model, data, ...)`` turns raw input (a model file, a native model or an adapter; a data
file, a folder of images, ``(x, y)`` or None for the shipped data) into checked objects exactly once:
the model's adapter (one load, one fingerprint) and an :class:`~modtest.data.EvalData` checked
against it. The audit owns the context its claims run in (defaults, claim collector, probe store,
registry, executor, progress) and :meth:`Audit.run` judges claims into a report. The CLI
(``modtest audit``), :func:`modtest.report.run_audit` and the pytest session's data
(:func:`bind_data`) go through here; below it, code takes the adapter and the checked data and does
not check them again (:func:`modtest.assertions.resolve_data` passes checked data through).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modtest._validation import check_choice, check_data, check_int, check_two_classes, class_coverage, load_data
from modtest.claims import ClaimCollector
from modtest.context import AuditContext, Defaults, current, using
from modtest.data import EvalData, read_data, shipped_data_for, stratified_subsample
from modtest.errors import InvalidInput
from modtest.frameworks import ModelAdapter, adapt
from modtest.options import DEFAULTS, PROTOCOLS
from modtest.probes.store import ProbeStore
from modtest.progress import NullReporter
from modtest.store import data_hash

__all__ = ["Audit", "bind_data", "CHEAP_EDGES", "AUTO_SHUFFLES"]

#: ``clusterability="auto"`` runs the n-cut-vs-shuffles comparison (descriptive, not a claim) when the
#: graph has at most this many edges: 20 re-clusterings cost seconds there (the digits models: under
#: 0.1 s each), and minutes on a VGG-16 (1.6M edges, 3 s each)
CHEAP_EDGES = 250_000
AUTO_SHUFFLES = 20


def bind_data(adapter: ModelAdapter, source=None, *, max_examples: int | None = None,
              preloaded=None) -> EvalData:
    """The evaluation data of ``adapter``, checked once: ``source`` None (the shipped digits data,
    when it fits the model: else a one-line error saying to pass data), a folder of class subfolders
    of images (read at the model's input size), an ``.npz`` path (``preloaded``: its arrays, already
    read), or ``(x, y)``; then a stratified subsample of ``max_examples``. Data already checked for
    this model (an :class:`EvalData` of the same fingerprint) is returned as it is. Given data must
    hold at least two classes (one line otherwise)."""
    fp = adapter.fingerprint()
    if isinstance(source, EvalData) and source.checked_for == fp and max_examples is None:
        return source
    if source is None:
        x, y = shipped_data_for(adapter.input_shape, adapter.n_classes)
    elif isinstance(source, (tuple, list)) and len(source) == 2:
        x, y = check_data(adapter, source[0], source[1])
    elif isinstance(source, (str, Path)) and Path(source).is_dir():
        x, y = check_data(adapter, *read_data(Path(source), adapter.input_shape, adapter.layout,
                                              adapter.n_classes))
    elif isinstance(source, (str, Path)):
        x, y = check_data(adapter, *(preloaded if preloaded is not None else load_data(source)))
    else:
        raise InvalidInput(f"data must be (x, y), an .npz path, a folder of images or None, "
                           f"got {type(source).__name__}")
    if source is not None:  # given data: of at least two classes (one cannot show a lesion's effect)
        check_two_classes(y, adapter.n_classes)
    if max_examples is not None and max_examples < len(x):
        x, y = stratified_subsample(x, y, max_examples)
    return EvalData(x, y, fp)


@dataclass
class Audit:
    """A model's adapter, its checked data, and the context its claims run in (see the module)."""

    adapter: ModelAdapter
    data: EvalData
    context: AuditContext

    @classmethod
    def open(cls, model, data=None, *, trust: bool = False, max_examples: int | None = None, preloaded=None,
             k: int = DEFAULTS["k"], seed: int = DEFAULTS["seed"], alpha: float = DEFAULTS["alpha"],
             n_random: int = DEFAULTS["n_random"], correction: str = DEFAULTS["correction"],
             protocol: str = DEFAULTS["protocol"], ensemble: int = DEFAULTS["ensemble"],
             max_random: int = DEFAULTS["max_random"], executor=None, progress=None,
             registry=None) -> Audit:
        """Load and adapt ``model`` once, check and bind ``data`` once (:func:`bind_data`), and make
        the audit's context: a claim collector with ``correction``, a probe store (on ``executor``:
        None here, a Dask executor or client), the registry (default: the active context's) and
        ``progress`` (a reporter, False for none, None for live lines on a terminal)."""
        protocol = check_choice("protocol", protocol, PROTOCOLS)
        adapter = model if isinstance(model, ModelAdapter) else adapt(model, trust=trust)
        bound = bind_data(adapter, data, max_examples=max_examples, preloaded=preloaded)
        if executor is not None:  # one executor for every probe (a Dask client: the model is sent once)
            from modtest.executors import as_executor

            executor = as_executor(executor)
        registry = registry if registry is not None else current().registry
        defaults = Defaults(k=k, alpha=alpha, seed=seed, data=lambda _m: bound, protocol=protocol,
                            ensemble=ensemble, max_random=max_random, trust=trust,
                            settings={"lesion": {"n_random": n_random}})
        reporter = NullReporter() if progress is False else (None if progress in (None, True) else progress)
        context = AuditContext(defaults, ClaimCollector(correction), ProbeStore(executor=executor, registry=registry),
                               progress=reporter, registry=registry)
        return cls(adapter, bound, context)

    @property
    def x(self) -> np.ndarray:
        return self.data[0]

    @property
    def y(self) -> np.ndarray:
        return self.data[1]

    def partition(self, k: int | None = None, seed: int | None = None):
        """The audit's partition at ``k`` and ``seed`` (its defaults), computed once."""
        d = self.context.defaults
        return self.context.partition(self.adapter, d.k if k is None else k, d.seed if seed is None else seed)

    def run(self, claims=None, *, clusterability=0, double_lesion: bool = False, double_n_random: int = 20,
            model_path=None, data_path=None):
        """Judge ``claims`` (default: the measures of probes declared with ``audit=True``), plus
        clusterability when ``clusterability`` (the number of weight shuffles) is > 0, corrected
        together; ``"auto"``: the n-cut against :data:`AUTO_SHUFFLES` shuffles for the report only
        when the graph has at most :data:`CHEAP_EDGES` edges. Returns ``(report, partition,
        lesion_result)`` (the first partition's; ``lesion_result`` None when no lesion measure was
        claimed). See :func:`modtest.report.run_audit`."""
        from modtest.assertions import _assert_measure
        from modtest.report.build import build_report
        from modtest.report.schema import _jsonable

        t_start = time.perf_counter()
        context, adapter, d = self.context, self.adapter, self.context.defaults
        registry = context.registry
        claims = registry.audit_measures() if claims is None else claims
        claims = [check_choice("claim", c, registry.measures) for c in claims]
        if not claims:
            raise InvalidInput(f"claims must name at least one of {', '.join(registry.audit_measures())}")
        auto_clusterability = clusterability == "auto"
        if not auto_clusterability:
            clusterability = check_int("clusterability", clusterability, minimum=0)
        wanted = [(m, {}) for m in claims]
        if clusterability and not auto_clusterability:
            wanted.append(("clusterability", {"n_shuffles": int(clusterability)}))
        notes = []
        with using(context):
            for measure, extra in wanted:
                context.collector.current_nodeid = f"modtest audit::{measure}"
                method = "shuffle" if measure == "clusterability" else "fisher"
                try:
                    _assert_measure(measure, adapter, d.k, d.alpha, None, d.seed, method, extra)  # data: bound
                except AssertionError:
                    pass  # recorded as a failure (or inconclusive) in the collector
            context.collector.current_nodeid = ""
            context.collector.finalize()
            lesion = next((r.result for r in context.store.memory.values() if r.result.probe == "lesion"), None)
            part = self.partition()
            if auto_clusterability:
                n_edges = int(part.graph.adjacency.nnz // 2)
                if n_edges <= CHEAP_EDGES:
                    context.store.run("clusterability", adapter, np.zeros(0, np.float32), np.zeros(0, np.int64),
                                      d.k, d.seed, {"n_shuffles": AUTO_SHUFFLES})
                else:
                    notes.append(f"clusterability skipped: the graph has {n_edges:,} edges (more than "
                                 f"{CHEAP_EDGES:,}); --clusterability N compares the n-cut with N shuffles")
            dl = None
            if double_lesion and lesion is not None:
                from modtest.probes.double_lesion import double_lesion_study

                t = time.perf_counter()
                dl = double_lesion_study(adapter, part, self.x, self.y, lesion, n_random=double_n_random,
                                         seed=d.seed, progress=context.progress, executor=context.store.executor)
                dl["seconds"] = time.perf_counter() - t
        report = build_report(
            source="cli", context=context,
            model={"path": None if model_path is None else str(model_path), "name": adapter.name,
                   "hash": adapter.fingerprint()},
            data={"path": None if data_path is None else str(data_path), "hash": data_hash(self.x, self.y),
                  "n_examples": int(len(self.x))},
            k=int(d.k), seed=int(d.seed), alpha=float(d.alpha), started=t_start, backend=adapter.backend)
        if notes:
            report.extra["notes"] = notes
        if dl is not None:
            report.double_lesion = _jsonable(dl)
            report.timings["probes"]["double_lesion"] = dl["seconds"]
        return report, part, lesion


def coverage_note(audit: Audit) -> str | None:
    """The note on classes of the model that the data lacks (None when every class occurs)."""
    return class_coverage(audit.y, audit.adapter.n_classes)
