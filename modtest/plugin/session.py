"""The modtest side of one pytest session: its settings, its audit context, the session-wide
correction, rewriting the outcome of tests whose claims failed after correction, the outputs (JSON,
HTML, baselines) and the ``modtest`` section of the terminal summary.

Registered as a plugin object by :func:`modtest.plugin.pytest_configure` (like pytest-xdist's
``DSession``); nothing here imports a framework until a test needs the model.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from modtest.claims import ClaimCollector, failure_message
from modtest.errors import InvalidInput, ModtestError
from modtest.options import BY_DEST, COMPARE_HELP, OPTIONS  # noqa: F401 - COMPARE_HELP: its old home
from modtest.settings import Settings, raw_option


class SessionScope:
    """What one pytest session owns from before its conftest files are imported to its end: an
    audit context with its own registry of measures (a copy of the one active when it opened) and
    the adapters registered meanwhile. :meth:`close` puts back what was active before, so a session
    run inside another process (pytester, ``pytest.main``) leaves that process as it found it."""

    def __init__(self, context, previous, adapters):
        self.context = context
        self.previous = previous
        self._adapters = adapters
        self._mine = {id(context)}

    @classmethod
    def open(cls) -> SessionScope:
        from modtest import context as _context
        from modtest.frameworks import adapter_registrations

        ctx = _context.AuditContext(registry=_context.current().registry.copy())
        return cls(ctx, _context.activate(ctx), adapter_registrations())

    @property
    def registry(self):
        return self.context.registry

    def install(self, context) -> None:
        """Make ``context`` (the session's full context, on this scope's registry) the active one."""
        from modtest import context as _context

        self._mine.add(id(context))
        _context.activate(context)

    def close(self) -> None:
        from modtest import context as _context
        from modtest.frameworks import restore_adapter_registrations

        if id(_context.current_or_none()) in self._mine:
            _context.activate(self.previous)
        restore_adapter_registrations(self._adapters)


def configured_for_modtest(config) -> bool:
    """Whether this session names a model, data or any modtest option (command line or ini)."""
    return any(raw_option(config, o.dest, o.kind)[1] for o in OPTIONS)


class ModtestSession:
    """Settings and state of one pytest session (on the controller, a worker, or alone)."""

    def __init__(self, config, scope: SessionScope):
        self.config = config
        self.scope = scope
        self.worker = os.environ.get("PYTEST_XDIST_WORKER")
        self.is_worker = hasattr(config, "workerinput")
        self._parse(config)
        self.started = 0.0
        self.baseline = None
        self.baseline_name: str | None = None
        self.comparison = None
        self.saved_path: Path | None = None
        self.output_errors: list[str] = []
        self.helped: dict[str, int] = {}  # probe -> units idle xdist workers computed for others
        self.worker_audits: list[dict] = []
        self._model = None
        self._raw = None
        self._data: dict[int, tuple] = {}  # id(adapter) -> (adapter, x, y): checked, subsampled
        self.data_notice: str | None = None
        self.progress_dir: Path | None = None  # xdist: the workers' progress boards
        self._watcher = None

    # ------------------------------------------------------------------ settings
    def _parse(self, config) -> None:
        from modtest._examples import EXAMPLE_DATA, EXAMPLE_MODEL

        try:
            self.settings = st = Settings.from_pytest(config)
        except InvalidInput as exc:
            raise pytest.UsageError(str(exc)) from None
        self.model_path = Path(st.model) if st.model is not None else EXAMPLE_MODEL
        self.model_explicit = st.given("model")
        self.data_path = Path(st.data) if st.data is not None else EXAMPLE_DATA
        self.data_explicit = st.given("data")
        #: ``--data none``: a session that checks weights only (clusterability) on a model the shipped
        #: data does not fit; a test that needs data fails with one line
        self.no_data = st.data is not None and str(st.data).strip().lower() == "none"
        self.max_examples = st.max_examples
        self.progress_mode = st.progress
        self.k = st.k
        self.k_explicit = st.given("modtest_k")
        self.alpha = st.alpha
        self.seed = st.seed
        self.correction = st.correction
        self.protocol = st.protocol
        self.ensemble = st.ensemble
        self.max_random = st.max_random
        self.inconclusive = st.inconclusive
        self.cache_dir = Path(st.cache) if st.cache is not None else config.rootpath / ".modtest" / "cache"
        self.trust = st.trust_model
        self.json_path = None if st.json is None else Path(st.json)
        self.backend = st.backend
        self.html_path = None if st.html is None else Path(st.html)
        self.storage_dir = (Path(st.storage) if st.storage is not None
                            else config.rootpath / ".modtest" / "baselines")
        self.probe_modules = self._load_probes(st.probes or ())
        self.prefetch = self._prefetch_probes(st.prefetch or ())
        self.scheduler = st.scheduler
        self.scheduler_timeout = st.scheduler_timeout
        self.executor = None  # the DaskExecutor of --modtest-scheduler, connected at session start
        self.save_name = st.save
        self.compare_fail = st.compare_fail
        self.compare_rules = list(st.compare_rules)
        self.compare_name = st.compare

    def _load_probes(self, specs) -> tuple:
        """--modtest-probes: the declared probes of each module, added to this session's registry."""
        from modtest.probes import load_probes

        for spec in specs:
            try:
                load_probes(spec, self.scope.registry)
            except ModtestError as exc:
                raise pytest.UsageError(f"--modtest-probes: {exc}") from None
        return tuple(specs)

    def _prefetch_probes(self, names) -> tuple:
        """--modtest-prefetch: the probes of ``names`` that every process joins at session start, those
        declared with ``prefetch=True`` (clusterability is not: its n_shuffles comes from each
        assertion, so a session-wide prefetch would compute another cache entry)."""
        MEASURES = self.scope.registry.measures  # noqa: N806 - the session's registry
        out = []
        for name in names:
            if name not in MEASURES:
                raise pytest.UsageError(f"--modtest-prefetch: unknown measure {name!r}; choose from "
                                        f"{', '.join(sorted(MEASURES))}")
            probe = MEASURES[name].probe
            declaration = self.scope.registry.declarations.get(probe)
            if declaration is None or not declaration.prefetch:
                supported = [d.name for d in self.scope.registry.declarations.values() if d.prefetch]
                raise pytest.UsageError(f"--modtest-prefetch: measure {name!r} (probe {probe!r}) cannot "
                                        f"be prefetched; supported probes: {', '.join(supported)}")
            if probe not in out:
                out.append(probe)
        return tuple(out)

    @property
    def is_controller(self) -> bool:
        """The pytest-xdist controller (runs no test); known once xdist has configured itself."""
        return self.config.pluginmanager.hasplugin("dsession")

    @property
    def explicit(self) -> bool:
        return self.model_explicit or self.data_explicit

    # ------------------------------------------------------------------ model and data
    def get_model(self):
        """The native model, loaded once (the framework is imported here, not at start-up)."""
        if self._model is None:
            from modtest.frameworks import adapt, check_model_file

            check_model_file(self.model_path, trust=self.trust)  # before the slow framework import
            self._model = adapt(self.model_path, trust=self.trust).model
        return self._model

    def raw_data(self):
        """``(x, y)`` of an ``--data`` .npz file, read once (a folder is read per model input size)."""
        if self._raw is None:
            from modtest._validation import load_data

            self._raw = load_data(self.data_path)
        return self._raw

    def data_for(self, model):
        """``(x, y)`` for ``model``: ``--data`` (an .npz, or a folder of images read at the model's input
        size), else the shipped data when it fits the model (a one-line error saying to pass --data
        when not); checked, and subsampled to ``--modtest-max-examples``. Computed once per model."""
        adapter = self.context.adapter(model)
        hit = self._data.get(id(adapter))
        if hit is not None and hit[0] is adapter:
            return hit[1]
        from modtest.audit import bind_data

        if self.no_data:
            from modtest.errors import DataError

            raise DataError("this session has no evaluation data (--data none): pass --data PATH for tests "
                            "that lesion or evaluate the model")
        if not self.data_explicit:
            data = bind_data(adapter, None, max_examples=self.max_examples)
        elif self.data_path.is_dir():
            data = bind_data(adapter, self.data_path, max_examples=self.max_examples)
        else:
            data = bind_data(adapter, self.data_path, max_examples=self.max_examples, preloaded=self.raw_data())
        self._data[id(adapter)] = (adapter, data)
        return data

    # ------------------------------------------------------------------ hooks
    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config):
        from modtest.context import AuditContext, Defaults
        from modtest.probes.store import ProbeStore
        from modtest.store import ProbeCache

        share = None
        if self.scheduler is not None:  # the cluster runs every process's units (xdist workers too)
            from modtest.executors.dask import DaskExecutor

            self.executor = DaskExecutor(self.scheduler, timeout=self.scheduler_timeout, trust=self.trust)
        elif self.is_worker:  # xdist worker: splittable probes share units with the others
            from modtest.executors.workshare import WorkShare

            share = WorkShare(self.cache_dir / "workshare")
        defaults = Defaults(k=self.k, alpha=self.alpha, seed=self.seed, data=self.data_for, trust=self.trust,
                            protocol=self.protocol, ensemble=self.ensemble, max_random=self.max_random)
        self.context = AuditContext(defaults, ClaimCollector(self.correction),
                                    ProbeStore(ProbeCache(self.cache_dir), workshare=share, executor=self.executor,
                                               registry=self.scope.registry),
                                    progress=self._progress_reporter(config), registry=self.scope.registry)
        if self.compare_name is not None and not self.is_worker:
            from modtest.report.storage import BaselineStorage

            try:
                storage = BaselineStorage(self.storage_dir)
                self.baseline_name, _path = storage.resolve(self.compare_name)
                self.baseline = storage.load(self.baseline_name)
            except ModtestError as exc:
                raise pytest.UsageError(f"--modtest-compare: {exc}") from None
        self.scope.install(self.context)

    def _progress_reporter(self, config):
        """Where probes report progress: nothing (``--modtest-progress off``), the controller's board
        (an xdist worker), or the terminal (live lines or heartbeats, see :mod:`modtest.progress`)."""
        from modtest.progress import BoardReporter, NullReporter

        if self.progress_mode == "off":
            return NullReporter()
        if self.is_worker:
            folder = config.workerinput.get("modtest_progress")
            return BoardReporter(folder, self.worker or "gw") if folder else NullReporter()
        return TerminalProgress(config, self.progress_mode)

    def pytest_unconfigure(self, config):
        # the context goes back to the previous one when the config is cleaned up (SessionScope)
        if self.executor is not None:
            self.executor.close()

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session):
        """With --model/--data given, check them before any test runs (usage error, exit 4).

        ``--data`` is checked against the model (``--model`` or the example); with ``--model`` and no
        ``--data`` the shipped data is used only when it fits the model (a notice in the header),
        otherwise the session stops with a usage error saying to pass ``--data``. The files are
        checked before any framework import; the xdist controller reads the model's input shape and
        output width from its config and imports no framework at all. Output paths are checked first;
        a model modtest cannot audit, and an explicit ``--modtest-k`` too large for it, are usage
        errors here (the example model's too, when only ``--modtest-k`` is given).
        """
        self.started = time.perf_counter()
        if self.is_controller:
            from modtest.plugin.xdist import warm_up_correction

            warm_up_correction()
        if not self.is_worker:
            self._check_outputs()
        if self.executor is not None:
            self._connect_scheduler()
        if self.is_worker or not (self.explicit or self.k_explicit):  # --modtest-k alone: checked on the example
            return
        try:
            from modtest.frameworks import check_model_file

            if self.data_explicit and not self.no_data:  # a bad .npz or folder: found without a framework import
                if self.data_path.is_dir():
                    from modtest.data import image_folder_index

                    image_folder_index(self.data_path)
                else:
                    self.raw_data()
            check_model_file(self.model_path, trust=self.trust, auditable=True)
            if self.is_controller:
                if not self.no_data:
                    self._check_signature()
                return
            model = self.get_model()
            self._check_auditable(model)
            if self.no_data or not self.explicit:
                return
            x, y = self.data_for(model)
            if not self.data_explicit:
                self.data_notice = _shipped_notice(len(x))
            self._note_coverage(y, self.context.adapter(model).n_classes)
        except ModtestError as exc:
            from modtest._validation import for_interface

            raise pytest.UsageError(f"modtest: {for_interface(exc, 'pytest')}") from None

    def _check_outputs(self) -> None:
        """Output paths that cannot be written are a usage error before any test runs (not a line at
        the end); missing parent folders are created when the files are written."""
        from modtest._validation import check_output_path

        try:
            if self.json_path is not None:
                check_output_path(BY_DEST["modtest_json"].flag, self.json_path)
            if self.html_path is not None:
                check_output_path(BY_DEST["modtest_html"].flag, self.html_path)
            if self.save_name is not None:
                check_output_path(BY_DEST["modtest_storage"].flag + " (for --modtest-save)", self.storage_dir,
                                  folder=True)
        except ModtestError as exc:
            raise pytest.UsageError(f"modtest: {exc}") from None

    def _check_auditable(self, model) -> None:
        """The model's graph description, read once before any test: a model modtest cannot audit (two
        outputs, an LSTM, no dense or conv layer) is a usage error here, not an error in every test; an
        explicit ``--modtest-k`` is checked against its size (a test passing its own k would not read
        it; k must also stay below the nodes with edges, which clustering checks). Needs no scipy: an
        inner pytester session must not import it (pytester would drop it from sys.modules)."""
        if getattr(self, "_auditable_checked", None) is model:
            return
        self._auditable_checked = model
        adapter = self.context.adapter(model)
        try:
            spec = adapter.graph_spec()
        except ModtestError:
            raise
        except Exception:  # noqa: BLE001 - an adapter without a graph (a test stub): its tests say so
            return
        if self.k_explicit:
            from modtest._validation import check_k_fits

            check_k_fits(BY_DEST["modtest_k"].flag, self.k, int(sum(spec.layer_sizes)))

    def _check_signature(self) -> None:
        """The xdist controller's data check, from the model file's config (no framework import)."""
        from modtest.frameworks import file_signature

        sig = file_signature(self.model_path)
        if sig is None:
            return
        from modtest._validation import check_data_fits
        from modtest.data import image_folder_index, shipped_data_for

        shape, n_classes = sig
        if not self.data_explicit:
            x, _y = shipped_data_for(shape, n_classes)
            self.data_notice = _shipped_notice(len(x))
        elif self.data_path.is_dir():
            _files, _labels, classes = image_folder_index(self.data_path)
            if n_classes is not None and len(classes) > n_classes:
                from modtest.errors import DataError

                raise DataError(f"data folder {self.data_path} has {len(classes)} class subfolders but the model "
                                f"has {n_classes} outputs")
        else:
            from modtest._validation import check_two_classes

            _x, y = check_data_fits(shape, n_classes, *self.raw_data())
            check_two_classes(y, n_classes)
            self._note_coverage(y, n_classes)

    def _note_coverage(self, y, n_classes) -> None:
        """The header's note when the data lacks some of the model's classes."""
        from modtest._validation import class_coverage

        note = class_coverage(y, n_classes)
        self.coverage_notice = f"modtest: note: {note}" if note else None

    def pytest_report_header(self, config):
        lines = [n for n in (self.data_notice, getattr(self, "coverage_notice", None)) if n]
        return lines or None

    def _connect_scheduler(self) -> None:
        """--modtest-scheduler: reach the cluster before any test runs (a usage error, exit 4, within
        about --modtest-scheduler-timeout seconds). The xdist controller, which runs no probe, only
        checks that it can, before its workers start."""
        from modtest.options import BY_DEST

        try:
            self.executor.connect()
        except ModtestError as exc:
            raise pytest.UsageError(f"modtest: {BY_DEST['modtest_scheduler'].flag}: {exc}") from None
        if self.is_controller:
            self.executor.close()

    def pytest_collection_finish(self, session):
        """--modtest-prefetch: every process (each xdist worker, or the single process) joins the
        computation of the session's shared probes before its first test, so ``pytest -n N`` on one
        big audit keeps all N workers busy; the assertions then find the result in the cache. Runs
        at the session's default k and seed with the settings an assertion would use."""
        if not self.prefetch or not session.items or session.config.option.collectonly:
            return
        import warnings

        try:
            model = self.context.adapter(self.get_model())
            x, y = self.data_for(model)
            for probe in self.prefetch:
                settings = self.context.defaults.probe_settings(probe, self.alpha, self.context.registry)
                if self.executor is not None:  # the cluster shares the units; the cache shares the result
                    self.context.store.run(probe, model, x, y, self.k, self.seed, settings)
                    continue
                self.context.store.prefetch(probe, model, x, y, self.k, self.seed, settings,
                                            workshare=self.cache_dir / "workshare")
        except ModtestError as exc:  # the tests report it themselves; do not crash the worker
            warnings.warn(f"modtest: --modtest-prefetch skipped: {exc}", stacklevel=1)

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        self.context.collector.current_nodeid = item.nodeid
        try:
            return (yield)
        finally:
            self.context.collector.current_nodeid = ""

    def pytest_sessionfinish(self, session, exitstatus):
        if self.is_worker:  # the controller corrects (claims went with each test report)
            return
        col = self.context.collector
        if not col.claims and not self.context.store.memory and not self.worker_audits:
            return
        col.finalize()
        failed = col.failed_nodeids()
        newly = {nid: cs for nid, cs in failed.items()
                 if any(c.p_raw is not None and c.p_raw == c.p_raw and c.bounds[0] <= c.alpha for c in cs)}
        unsure = {nid: cs for nid, cs in col.inconclusive_nodeids().items() if nid not in failed}
        ok_status = (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED)
        rewritten = self._fail_reports(newly)
        if self.inconclusive == "fail":
            rewritten = self._fail_reports(unsure) or rewritten
        else:
            self._move_reports(unsure, "inconclusive")
        if rewritten and session.exitstatus in ok_status:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if self._write_outputs() and session.exitstatus in ok_status:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    # ------------------------------------------------------------------ outcomes
    def _fail_reports(self, failed: dict) -> bool:
        """Turn the passing call reports of tests whose claims failed after correction into failures.

        Returns whether the session must fail: a converted report, or a claim whose report is not
        found (no terminal reporter). Tests marked xfail (xfailed/xpassed) do not fail the session.
        """
        if not failed:
            return False
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None:
            return True
        where = {}
        for cat, reps in tr.stats.items():
            for rep in reps:
                if getattr(rep, "when", None) == "call" and getattr(rep, "nodeid", None) in failed:
                    where[rep.nodeid] = (cat, rep)
        fail = False
        for nid, claims in failed.items():
            cat, rep = where.get(nid, (None, None))
            if cat == "passed":
                rep.outcome = "failed"
                rep.longrepr = "\n".join(failure_message(c) for c in claims)
                tr.stats["passed"].remove(rep)
                tr.stats.setdefault("failed", []).append(rep)
                fail = True
            elif cat not in ("xfailed", "xpassed", "failed"):
                fail = True
        if "passed" in tr.stats and not tr.stats["passed"]:
            del tr.stats["passed"]
        return fail

    def _move_reports(self, claims_by_node: dict, category: str) -> None:
        """Show the passing tests of these claims under ``category`` in the terminal summary (pytest
        counts it: "3 passed, 1 inconclusive"); the session's exit status is left alone."""
        tr = self.config.pluginmanager.get_plugin("terminalreporter")
        if tr is None or not claims_by_node:
            return
        for rep in list(tr.stats.get("passed", ())):
            if getattr(rep, "when", None) == "call" and getattr(rep, "nodeid", None) in claims_by_node:
                tr.stats["passed"].remove(rep)
                tr.stats.setdefault(category, []).append(rep)
        if "passed" in tr.stats and not tr.stats["passed"]:
            del tr.stats["passed"]

    # ------------------------------------------------------------------ outputs
    def identity(self) -> tuple[dict, dict]:
        """``model`` and ``data`` of the report; hashes only for what this session loaded."""
        model = {"path": str(self.model_path), "name": None, "hash": None}
        data = {"path": str(self.data_path), "hash": None, "n_examples": None}
        if self._model is not None:
            try:
                adapter = self.context.adapter(self._model)
                model["name"] = adapter.name
                model["hash"] = adapter.fingerprint()
                if id(adapter) in self._data:
                    from modtest.store import data_hash

                    x, y = self.data_for(adapter)
                    data["hash"], data["n_examples"] = data_hash(x, y), int(len(x))
            except Exception:  # noqa: BLE001 - identity is informative only
                pass
        return model, data

    def build_report(self):
        from modtest.report.build import build_report

        model, data = self.identity()
        return build_report(source="pytest", context=self.context, model=model, data=data, k=self.k,
                            seed=self.seed, alpha=self.alpha, started=self.started,
                            extra_audits=self.worker_audits, backend=self._backend())

    def _backend(self) -> str | None:
        """What ran the session's model: its adapter's backend, or where it was not loaded in this
        process (the xdist controller) the one its file's framework would use."""
        from modtest.frameworks import file_backend

        try:
            if self._model is not None:
                return self.context.adapter(self._model).backend
            return file_backend(self.model_path) if self.model_path is not None else None
        except Exception:  # noqa: BLE001 - identity is informative only
            return None

    def _write_outputs(self) -> bool:
        """JSON, HTML, comparison and baseline of the session; returns whether the session must fail."""
        wanted = (self.json_path, self.html_path, self.save_name, self.compare_name)
        if all(w is None for w in wanted):
            return False
        report = self.build_report()
        if not report.claims and not report.probes:
            return False
        fail = False
        if self.baseline is not None:
            from modtest.report.compare import compare_reports

            self.comparison = compare_reports(self.baseline, report, self.compare_rules,
                                              baseline_name=self.baseline_name, current_name="current")
            fail = not self.comparison.ok
        from modtest._io import atomic_write_text

        out = report.to_dict()
        if self.comparison is not None:
            out["comparison"] = self.comparison.to_dict()
        jobs = []
        if self.json_path is not None:
            jobs.append(("--modtest-json", lambda: atomic_write_text(self.json_path, json.dumps(out, indent=2))))
        if self.html_path is not None:
            from modtest.report.html import write_html

            jobs.append(("--modtest-html", lambda: write_html(report, self.html_path, self.comparison)))
        if self.save_name is not None:
            from modtest.report.storage import BaselineStorage

            def save():
                self.saved_path = BaselineStorage(self.storage_dir).save(self.save_name, report)

            jobs.append(("--modtest-save", save))
        for what, job in jobs:
            try:
                job()
            except Exception as exc:  # noqa: BLE001 - reported in the summary, the session fails
                first = str(exc).splitlines()[0] if str(exc) else ""
                self.output_errors.append(f"{what}: {type(exc).__name__}: {first}")
                fail = True
        return fail

    # ------------------------------------------------------------------ terminal summary
    def pytest_terminal_summary(self, terminalreporter, exitstatus, config):
        tr = terminalreporter
        col = self.context.collector
        if not col.claims:
            if self.comparison is not None or self.output_errors:
                tr.section("modtest")
                self._summary_outputs(tr)
            return
        xfailed = {getattr(rep, "nodeid", None)  # tests marked xfail: their failing claims are expected
                   for cat in ("xfailed", "xpassed") for rep in tr.stats.get(cat, ())}
        expected = [c for c in col.failures() + col.inconclusive() if c.nodeid in xfailed]
        unsure = [c for c in col.inconclusive() if c.nodeid not in xfailed]
        tr.section("modtest")
        if self.helped:
            tr.write_line("work units computed by idle xdist workers for others' probes: "
                          + ", ".join(f"{p} {n}" for p, n in sorted(self.helped.items())))
        tr.write_line(f"{len(col.claims)} assertion(s), {self.protocol} protocol, {col.method} correction, "
                      f"{len([c for c in col.failures() if c.nodeid not in xfailed])} failed"
                      + (f", {len(unsure)} inconclusive" if unsure else "")
                      + (f", {len(expected)} expected to fail (xfail)" if expected else "")
                      + " (probe: wall time in this session, ~0 when cached)")
        for c in col.claims:
            verdict = (c.outcome or ("pass" if c.passed else "fail")).upper()
            if c.nodeid in xfailed and verdict != "PASS":
                verdict = "XFAIL"
            span = f" in [{_p(c.p_low_corrected)}, {_p(c.p_high_corrected)}]" if c.p_low is not None else ""
            tr.write_line(f"{verdict} {c.nodeid} {c.measure} ({c.method}) statistic={_p(c.statistic)} "
                          f"raw p={_p(c.p_raw)} corrected p={_p(c.p_corrected)}{span} alpha={c.alpha:g} "
                          f"probe {c.probe_seconds:.1f}s", yellow=verdict == "INCONCLUSIVE")
        newly = [c for c in col.failures() if c.p_raw == c.p_raw and c.bounds[0] <= c.alpha]
        if newly:
            tr.write_line(f"failed only after {col.method} correction:", red=True)
            for c in newly:
                tr.write_line(f"  {c.nodeid}: {failure_message(c)}", red=True)
        if unsure:
            what = "fail their tests" if self.inconclusive == "fail" else \
                "are reported, not failed (--modtest-inconclusive=fail fails them)"
            tr.write_line(f"inconclusive claims {what}:", yellow=True)
            for c in unsure:
                tr.write_line(f"  {c.nodeid}: {failure_message(c)}", yellow=True)
        self._summary_outputs(tr)

    def _summary_outputs(self, tr) -> None:
        cmp = self.comparison
        if cmp is not None:
            tr.write_line(f"compared with baseline {self.baseline_name!r}: "
                          + ("no regression" if cmp.ok else f"{len(cmp.failures)} regression(s)"),
                          red=not cmp.ok, green=cmp.ok)
            for f in cmp.failures:
                tr.write_line(f"  REGRESSION {f}", red=True)
            for n in cmp.notes:
                tr.write_line(f"  note: {n}")
        for e in self.output_errors:
            tr.write_line(f"modtest: could not write {e}", red=True)
        if self.json_path is not None and self.json_path.exists():
            tr.write_line(f"modtest JSON report: {self.json_path}")
        if self.html_path is not None and self.html_path.exists():
            tr.write_line(f"modtest HTML report: {self.html_path}")
        if self.saved_path is not None:
            tr.write_line(f"modtest baseline saved: {self.saved_path}")


class _TerminalFile:
    """What rich draws on under pytest: the terminal reporter's writer (a file-like object)."""

    def __init__(self, tr):
        self.tr = tr

    def write(self, text: str) -> int:
        self.tr.write(text)
        return len(text)

    def flush(self) -> None:
        self.tr.flush()

    def isatty(self) -> bool:
        return True


def line_writer(config):
    """``write(text)``: ``text`` on a line of its own in pytest's terminal output (after the test
    file's name or xdist's progress dots, which do not end their line)."""
    tr = config.pluginmanager.get_plugin("terminalreporter")
    tw = config.get_terminal_writer()

    def write(text: str) -> None:
        tr.ensure_newline()  # pytest writes the file name again before the next result
        if tw.width_of_current_line:
            tw.line()
        tw.line(text)

    return write


class TerminalProgress:
    """Probe progress through pytest's terminal reporter, with capture suspended while it writes
    (probes run inside tests). ``auto``: live lines on a terminal, heartbeat lines otherwise or
    with ``-q``. Made on first use: the terminal reporter registers after modtest's configure."""

    def __init__(self, config, mode: str):
        self.config, self.mode = config, mode
        self._inner = None

    def _console(self):
        if self._inner is None:
            import contextlib

            from modtest.progress import ConsoleReporter, NullReporter

            tr = self.config.pluginmanager.get_plugin("terminalreporter")
            if tr is None:
                self._inner = NullReporter()
                return self._inner
            capman = self.config.pluginmanager.get_plugin("capturemanager")
            mode = self.mode
            if mode == "auto":
                mode = "live" if bool(tr.isatty) and self.config.get_verbosity() >= 0 else "heartbeat"
            self._inner = ConsoleReporter(
                mode, file=_TerminalFile(tr), write=line_writer(self.config), before_live=tr.ensure_newline,
                guard=capman.global_and_fixture_disabled if capman is not None else contextlib.nullcontext,
                width=self.config.get_terminal_writer().fullwidth)
        return self._inner

    def task(self, name: str, total: int):
        return self._console().task(name, total)


def _shipped_notice(n: int) -> str:
    return (f"modtest: no --data given: using the shipped digits data ({n} examples), which fits the model "
            f"(pass --data PATH for your own)")


def _p(v) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:.3g}"
