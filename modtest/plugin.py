"""The modtest pytest plugin (entry point ``pytest11: modtest = modtest.plugin``).

Wiring only: options and ini keys, session fixtures (``model``, ``eval_data``, ``partition``,
``modtest_probes``), the claim collector, the session-wide correction at the end, xdist transport
of claims from workers to the controller, GPU pinning of workers, the ``modtest`` terminal section
and the JSON report. Heavy libraries (keras) are imported inside hooks and fixtures only, and only
when the session uses modtest.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from modtest import session as _session

BACKENDS = ("tensorflow", "jax", "torch")

# (flag, dest, kind, default, help); the ini key is dest.
_OPTIONS = (
    ("--model", "model", "path", None, "model under test (.keras/.h5); default: the shipped example MLP"),
    ("--data", "data", "path", None, "evaluation data: .npz with arrays x and y; default: shipped digits"),
    ("--modtest-k", "modtest_k", "int", "12", "number of clusters k (default 12)"),
    ("--modtest-alpha", "modtest_alpha", "float", "0.05", "significance level (default 0.05)"),
    ("--modtest-seed", "modtest_seed", "int", "0", "seed for clustering and random controls (default 0)"),
    ("--modtest-correction", "modtest_correction", "str", "holm",
     "session-wide multiple-comparison correction: holm, fdr_bh, bonferroni, none (default holm)"),
    ("--modtest-cache", "modtest_cache", "path", None, "probe cache folder (default .modtest/cache)"),
    ("--modtest-trust-model", "modtest_trust_model", "bool", False,
     "allow models whose loading runs code (Lambda layers, custom objects)"),
    ("--modtest-json", "modtest_json", "path", None, "write every assertion's raw/corrected p and verdict here"),
    ("--modtest-backend", "modtest_backend", "str", None, "Keras backend: tensorflow, jax or torch"),
    ("--modtest-html", "modtest_html", "path", None, "write the self-contained HTML report of the audit here"),
    ("--modtest-save", "modtest_save", "str", None,
     "save the session's audit as baseline NAME (in --modtest-storage)"),
    ("--modtest-storage", "modtest_storage", "path", None, "baseline folder (default .modtest/baselines)"),
    ("--modtest-compare-fail", "modtest_compare_fail", "str", None,
     "comma-separated regression rules for --modtest-compare, e.g. p:10x,important:-2"),
    ("--modtest-prefetch", "modtest_prefetch", "str", None,
     "comma-separated measures (e.g. importance,output_coherence) whose probe every process (each "
     "xdist worker) joins at session start, sharing its work units through <cache>/workshare"),
)
#: probes that --modtest-prefetch can compute cooperatively (split into work units)
#: (clusterability is not: its n_shuffles comes from each assertion, so a session-wide prefetch
#: would compute another cache entry; idle xdist workers still join it, see ProbeStore.help)
_PREFETCHABLE = ("lesion", "visualization")
_COMPARE_HELP = ("compare the audit with baseline NAME (no NAME, or the ini value 'latest': the most "
                 "recent); fail the session when a claim that held no longer holds or a "
                 "--modtest-compare-fail rule breaks. Write --modtest-compare=NAME")


def pytest_addoption(parser):
    group = parser.getgroup("modtest", "modularity audits of trained networks (modtest)")
    for flag, dest, kind, _default, help_ in _OPTIONS:
        if kind == "bool":
            group.addoption(flag, dest=dest, action="store_true", default=None, help=help_)
            parser.addini(dest, help_, type="bool", default=False)
        else:
            group.addoption(flag, dest=dest, action="store", default=None, metavar=dest.split("_")[-1].upper(),
                            help=help_)
            parser.addini(dest, help_, default="")
    group.addoption("--modtest-compare", dest="modtest_compare", action="store", nargs="?", const="latest",
                    default=None, metavar="NAME", help=_COMPARE_HELP)
    parser.addini("modtest_compare", _COMPARE_HELP, default="")


@dataclass
class ModtestState:
    """The parsed options of one session and what was loaded lazily from them."""

    model_path: Path
    model_explicit: bool
    data_path: Path
    data_explicit: bool
    k: int
    alpha: float
    seed: int
    correction: str
    cache_dir: Path
    trust: bool
    json_path: Path | None
    backend: str | None
    worker: str | None
    prefetch: tuple = ()
    html_path: Path | None = None
    save_name: str | None = None
    storage_dir: Path | None = None
    compare_name: str | None = None  # "latest" = the most recent baseline
    compare_fail: str | None = None
    compare_rules: list = field(default_factory=list)
    baseline: object = None  # the Report compared with (loaded at configure time)
    baseline_name: str | None = None
    comparison: object = None
    saved_path: Path | None = None
    output_errors: list = field(default_factory=list)
    started: float = 0.0
    collector: _session.ClaimCollector = None
    store: object = None
    helped: dict = field(default_factory=dict)  # probe -> units idle xdist workers computed for others
    _model: object = field(default=None, repr=False)
    _raw: tuple | None = field(default=None, repr=False)

    @property
    def explicit(self) -> bool:
        return self.model_explicit or self.data_explicit

    def get_model(self):
        if self._model is None:
            from modtest.assertions import resolve_model
            from modtest.errors import ModelLoadError

            if not self.model_path.exists():  # before the slow keras import
                raise ModelLoadError(f"model file not found: {self.model_path}")
            from modtest._runtime import import_keras

            import_keras()

            self._model = resolve_model(self.model_path, trust=self.trust)
        return self._model

    def raw_data(self):
        if self._raw is None:
            from modtest._validation import load_data

            self._raw = load_data(self.data_path)
        return self._raw

    def data_for(self, model):
        from modtest._validation import check_data

        return check_data(model, *self.raw_data())


_KEY = pytest.StashKey[ModtestState]()


def _raw_option(config, dest, kind):
    """(value, explicit, from_cmdline): the command line wins over the ini key."""
    v = config.getoption(dest, default=None)
    if v is not None:
        return v, True, True
    try:
        iv = config.getini(dest)
    except (ValueError, KeyError):
        iv = None
    if kind == "bool":
        return bool(iv), bool(iv), False
    if iv not in (None, "", []):
        return iv, True, False
    return None, False, False


def _parse_state(config) -> ModtestState:
    from modtest._examples import EXAMPLE_DATA, EXAMPLE_MODEL

    vals = {}
    for flag, dest, kind, default, _h in _OPTIONS:
        v, explicit, cmdline = _raw_option(config, dest, kind)
        if kind == "path" and v is not None:
            p = Path(str(v)).expanduser()
            if not p.is_absolute():
                p = (Path.cwd() if cmdline else config.rootpath) / p
            v = p
        vals[dest] = (v if v is not None else default, explicit, flag)

    def num(dest, conv, minimum=None, lo=None, hi=None):
        v, _e, flag = vals[dest]
        try:
            x = conv(str(v).strip())
        except ValueError:
            raise pytest.UsageError(f"{flag} must be {'an integer' if conv is int else 'a number'}, "
                                    f"got {v!r}") from None
        if minimum is not None and x < minimum:
            raise pytest.UsageError(f"{flag} must be >= {minimum}, got {x}")
        if lo is not None and not lo < x < hi:
            raise pytest.UsageError(f"{flag} must lie in ({lo:g}, {hi:g}), got {x}")
        return x

    from modtest.stats import CORRECTION_METHODS

    correction = str(vals["modtest_correction"][0]).strip()
    if correction not in CORRECTION_METHODS:
        raise pytest.UsageError(f"--modtest-correction: unknown method {correction!r}; choose one of "
                                f"{', '.join(CORRECTION_METHODS)}")
    backend = vals["modtest_backend"][0]
    if backend is not None:
        backend = str(backend).strip()
        if backend not in BACKENDS:
            raise pytest.UsageError(f"--modtest-backend: unknown backend {backend!r}; choose one of "
                                    f"{', '.join(BACKENDS)}")
    prefetch = []
    if vals["modtest_prefetch"][0]:
        from modtest.probes import MEASURES

        for name in (p.strip() for p in str(vals["modtest_prefetch"][0]).split(",")):
            if not name:
                continue
            if name not in MEASURES:
                raise pytest.UsageError(f"--modtest-prefetch: unknown measure {name!r}; choose from "
                                        f"{', '.join(sorted(MEASURES))}")
            probe = MEASURES[name].probe
            if probe not in _PREFETCHABLE:
                raise pytest.UsageError(f"--modtest-prefetch: measure {name!r} (probe {probe!r}) cannot "
                                        f"be prefetched; supported probes: {', '.join(_PREFETCHABLE)}")
            if probe not in prefetch:
                prefetch.append(probe)
    cache = vals["modtest_cache"][0] or (config.rootpath / ".modtest" / "cache")
    storage = vals["modtest_storage"][0] or (config.rootpath / ".modtest" / "baselines")
    compare, _e, _c = _raw_option(config, "modtest_compare", "str")
    save = vals["modtest_save"][0]
    if save is not None:
        from modtest.storage import StorageError, check_name

        try:
            save = check_name(str(save).strip())
        except StorageError as exc:
            raise pytest.UsageError(f"--modtest-save: {exc}") from None
    compare_fail = vals["modtest_compare_fail"][0]
    rules = []
    if compare_fail is not None:
        from modtest.compare import CompareError, parse_rules

        try:
            rules = parse_rules(compare_fail)
        except CompareError as exc:
            raise pytest.UsageError(f"--modtest-compare-fail: {exc}") from None
    return ModtestState(
        model_path=vals["model"][0] or EXAMPLE_MODEL, model_explicit=vals["model"][1],
        data_path=vals["data"][0] or EXAMPLE_DATA, data_explicit=vals["data"][1],
        k=num("modtest_k", int, minimum=2), alpha=num("modtest_alpha", float, lo=0.0, hi=1.0),
        seed=num("modtest_seed", int, minimum=0), correction=correction, cache_dir=Path(cache),
        trust=bool(vals["modtest_trust_model"][0]), json_path=vals["modtest_json"][0],
        backend=backend, worker=os.environ.get("PYTEST_XDIST_WORKER"), prefetch=tuple(prefetch),
        html_path=vals["modtest_html"][0], save_name=save, storage_dir=Path(storage),
        compare_name=None if compare is None else (str(compare).strip() or "latest"),
        compare_fail=compare_fail, compare_rules=rules,
    )


def _state(config) -> ModtestState:
    return config.stash[_KEY]


def _early_environment(backend) -> None:
    """Pin an xdist worker to its GPU and set KERAS_BACKEND, before anything imports keras."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and not os.environ.get("_MODTEST_PINNED"):
        from modtest.gpus import pin_worker

        pin_worker(worker, os.environ)
        os.environ["_MODTEST_PINNED"] = "1"
    if backend and backend in BACKENDS:
        import sys
        import warnings

        keras = sys.modules.get("keras")
        if keras is not None and os.environ.get("KERAS_BACKEND", "tensorflow") != backend:
            warnings.warn(f"modtest: keras was imported before --modtest-backend={backend} could take "
                          f"effect (import keras inside tests or fixtures, not in conftest.py)")
        os.environ["KERAS_BACKEND"] = backend


def _configured_for_modtest(config) -> bool:
    """Whether this session names a model, data or any modtest option (command line or ini)."""
    for _flag, dest, kind, _default, _help in _OPTIONS:
        if _raw_option(config, dest, kind)[1]:
            return True
    return _raw_option(config, "modtest_compare", "str")[1]


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` in a modtest session on a machine with GPUs: one worker per visible GPU (each
    pinned to its own). None, so xdist counts CPUs, for ``-n logical``, without GPUs, when
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` is set, or in a session that sets no modtest option."""
    if config.option.numprocesses != "auto" or os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    if not _configured_for_modtest(config):
        return None
    from modtest.gpus import auto_num_workers

    return auto_num_workers()


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Runs before conftest.py files are imported: the earliest point to set the environment."""
    backend = getattr(early_config.known_args_namespace, "modtest_backend", None)
    if backend is None:
        try:
            backend = early_config.getini("modtest_backend") or None
        except (ValueError, KeyError):
            backend = None
    _early_environment(str(backend).strip() if backend else None)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    state = _parse_state(config)
    _early_environment(state.backend)
    from modtest.cache import ProbeCache
    from modtest.probes import ProbeStore, set_default_store

    defaults = _session.SessionDefaults(k=state.k, alpha=state.alpha, seed=state.seed,
                                        data=state.data_for, trust=state.trust)
    state.collector = _session.ClaimCollector(state.correction, defaults)
    share = None
    if hasattr(config, "workerinput"):  # xdist worker: splittable probes share units with the others
        from modtest.workshare import WorkShare

        share = WorkShare(state.cache_dir / "workshare")
    state.store = _recording_store(ProbeStore)(ProbeCache(state.cache_dir), workshare=share)
    if state.compare_name is not None and not hasattr(config, "workerinput"):
        from modtest.storage import BaselineStorage, StorageError

        try:
            storage = BaselineStorage(state.storage_dir)
            state.baseline_name, _path = storage.resolve(state.compare_name)
            state.baseline = storage.load(state.baseline_name)
        except StorageError as exc:
            raise pytest.UsageError(f"--modtest-compare: {exc}") from None
    state._previous = (_session.activate(state.collector), set_default_store(state.store))
    config.stash[_KEY] = state


def pytest_unconfigure(config):
    state = config.stash.get(_KEY, None)
    if state is None:
        return
    prev_collector, prev_store = getattr(state, "_previous", (None, None))
    if _session.active() is state.collector:
        _session.activate(prev_collector)
    from modtest.probes import default_store, set_default_store

    if default_store() is state.store and prev_store is not None:
        set_default_store(prev_store)


def _recording_store(base):
    """A ProbeStore that also remembers, per key, what each probe ran on (k, seed, hashes)."""

    class RecordingStore(base):
        def __init__(self, cache=None, workshare=None):
            super().__init__(cache, workshare)
            self.meta: dict[str, dict] = {}

        def key_of(self, probe, mh, dh, k, seed, settings=None) -> str:
            from modtest.results import _jsonable

            key = super().key_of(probe, mh, dh, k, seed, settings)
            self.meta.setdefault(key, {"probe": probe, "k": int(k), "seed": int(seed), "model_hash": mh,
                                       "data_hash": dh, "settings": _jsonable(dict(settings or {}))})
            return key

    return RecordingStore


def _probe_entries(state) -> list[dict]:
    """The schema's ``probes`` entries for every probe run of this process."""
    from modtest.report.schema import probe_entry

    out = []
    for key, run in list(state.store.memory.items()):
        meta = getattr(state.store, "meta", {}).get(key, {})
        entry = probe_entry(run.result, k=meta.get("k"), seed=meta.get("seed"),
                            model_hash=meta.get("model_hash"), data_hash=meta.get("data_hash"),
                            settings=meta.get("settings"), source=run.source)
        entry["key"] = key
        entry["wall_seconds"] = float(run.seconds)
        out.append(entry)
    return out


def _partition_entries() -> list[dict]:
    from modtest import probes
    from modtest.report.schema import partition_summary

    out = []
    for (mh, _k, _s), part in list(probes._PARTITIONS.items()):
        try:
            out.append(partition_summary(part, mh))
        except Exception:  # noqa: BLE001 - a summary must never break the session
            continue
    return out


def _identity(state) -> tuple[dict, dict]:
    """``model`` and ``data`` of the schema; hashes only for what this session loaded."""
    model = {"path": str(state.model_path), "name": None, "hash": None}
    data = {"path": str(state.data_path), "hash": None, "n_examples": None}
    if state._model is not None:
        try:
            from modtest.model import model_hash

            model["name"] = getattr(state._model, "name", None)
            model["hash"] = model_hash(state._model)
            if state._raw is not None:
                from modtest.cache import data_hash

                x, y = state.data_for(state._model)
                data["hash"], data["n_examples"] = data_hash(x, y), int(len(x))
        except Exception:  # noqa: BLE001 - identity is informative only
            pass
    return model, data


def _build_report(state, worker_audits):
    import time

    from modtest.report.schema import Report, claim_entry

    probes_, seen = [], set()
    for entry in _probe_entries(state) + [e for w in worker_audits for e in w.get("probes", [])]:
        if entry.get("key") in seen:
            continue
        seen.add(entry.get("key"))
        probes_.append(entry)
    probes_.sort(key=lambda e: (str(e.get("probe")), e.get("k") or 0, str(e.get("key"))))
    parts, pseen = [], set()
    for ps in _partition_entries() + [p for w in worker_audits for p in w.get("partitions", [])]:
        ident = (ps.get("model_hash"), ps.get("k"), ps.get("seed"))
        if ident not in pseen:
            pseen.add(ident)
            parts.append(ps)
    model, data = _identity(state)
    col = state.collector
    total = time.perf_counter() - state.started if state.started else None
    per_probe = {}
    for e in probes_:
        name = f"{e.get('probe')}[k={e.get('k')}]"
        per_probe[name] = per_probe.get(name, 0.0) + float(e.get("wall_seconds") or 0.0)
    return Report.new(source="pytest", model=model, data=data, k=state.k, seed=state.seed,
                      alpha=state.alpha, correction=col.method, partitions=parts, probes=probes_,
                      claims=[claim_entry(c) for c in col.claims],
                      timings={"total_seconds": total, "probes": per_probe})


def _write_outputs(config, state, worker_audits) -> bool:
    """JSON, HTML, comparison and baseline of the session; returns whether the session must fail."""
    wanted = (state.json_path, state.html_path, state.save_name, state.compare_name)
    if all(w is None for w in wanted):
        return False
    report = _build_report(state, worker_audits)
    if not report.claims and not report.probes:
        return False
    fail = False
    if state.baseline is not None:
        from modtest.compare import compare_reports

        state.comparison = compare_reports(state.baseline, report, state.compare_rules,
                                           baseline_name=state.baseline_name, current_name="current")
        fail = not state.comparison.ok
    from modtest._io import atomic_write_text

    out = report.to_dict()
    if state.comparison is not None:
        out["comparison"] = state.comparison.to_dict()
    jobs = []
    if state.json_path is not None:
        jobs.append(("--modtest-json", lambda: atomic_write_text(state.json_path, json.dumps(out, indent=2))))
    if state.html_path is not None:
        from modtest.report.html import write_html

        jobs.append(("--modtest-html", lambda: write_html(report, state.html_path, state.comparison)))
    if state.save_name is not None:
        from modtest.storage import BaselineStorage

        def save():
            state.saved_path = BaselineStorage(state.storage_dir).save(state.save_name, report)

        jobs.append(("--modtest-save", save))
    for what, job in jobs:
        try:
            job()
        except Exception as exc:  # noqa: BLE001 - reported in the summary, the session fails
            first = str(exc).splitlines()[0] if str(exc) else ""
            state.output_errors.append(f"{what}: {type(exc).__name__}: {first}")
            fail = True
    return fail


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """With --model/--data given, check them before any test runs (usage error, exit 4).

    ``--data`` is checked against the model (``--model`` or the example); the default data is
    checked lazily by ``eval_data``, so a model that needs no data (clusterability) can be given alone.
    """
    state = _state(session.config)
    import time

    state.started = time.perf_counter()
    controller = session.config.pluginmanager.hasplugin("dsession")  # pytest-xdist: runs no test
    if controller:
        _warm_up_correction()
    if not state.explicit or hasattr(session.config, "workerinput"):
        return
    from modtest.errors import ModtestError

    try:
        if state.data_explicit:
            state.raw_data()  # unreadable/incomplete .npz: found without importing keras
        if controller:  # check the file without importing Keras (seconds of serial start-up);
            # the workers load the model and report the rest
            from modtest.model import check_model_file

            check_model_file(state.model_path, trust=state.trust, legacy=False)
            return
        model = state.get_model()
        if state.data_explicit:
            state.data_for(model)
    except ModtestError as exc:
        raise pytest.UsageError(f"modtest: {exc}") from None


def _warm_up_correction() -> None:
    """Import the multiple-comparison code in a background thread of the idle xdist controller, so
    the session-wide correction at the end does not wait for it (most of a second)."""
    import threading

    def load():
        try:
            import statsmodels.stats.multitest  # noqa: F401
        except Exception:  # noqa: BLE001 - the correction imports it again and reports any error
            pass

    threading.Thread(target=load, name="modtest-warm-up", daemon=True).start()


def pytest_collection_finish(session):
    """--modtest-prefetch: every process (each xdist worker, or the single process) joins the
    computation of the session's shared probes before its first test, so ``pytest -n N`` on one big
    audit keeps all N workers busy; the assertions then find the result in the cache. Runs at the
    session's default k and seed with the settings an assertion would use (the same cache key)."""
    state = session.config.stash.get(_KEY, None)
    if state is None or not state.prefetch or not session.items or session.config.option.collectonly:
        return
    import warnings

    from modtest.errors import ModtestError
    from modtest.workshare import prefetch

    try:
        model = state.get_model()
        x, y = state.data_for(model)
        for probe in state.prefetch:
            prefetch(state.store, probe, model, x, y, state.k, state.seed,
                     state.collector.defaults.settings.get(probe, {}),
                     workshare=state.cache_dir / "workshare")
    except ModtestError as exc:  # the tests report it themselves; do not crash the worker
        warnings.warn(f"modtest: --modtest-prefetch skipped: {exc}", stacklevel=1)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    state = item.config.stash.get(_KEY, None)
    if state is not None:
        state.collector.current_nodeid = item.nodeid
    try:
        return (yield)
    finally:
        if state is not None:
            state.collector.current_nodeid = ""


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On an xdist worker, each test report carries the claims recorded since the last report, so
    the controller has them as soon as the test ends: a worker that crashes later loses none."""
    report = yield
    state = item.config.stash.get(_KEY, None)
    if state is not None and hasattr(item.config, "workerinput"):
        col = state.collector
        sent = getattr(col, "sent", 0)
        if len(col.claims) > sent:
            report.user_properties.append(("modtest_claims", col.to_dicts()[sent:]))
            col.sent = len(col.claims)
    return report


def pytest_runtest_logreport(report):
    """On the xdist controller: collect the claims that arrive with a worker's test report."""
    if getattr(report, "node", None) is None:  # not a report relayed from a worker
        return
    for key, value in getattr(report, "user_properties", ()):
        if key == "modtest_claims":
            state = report.node.config.stash.get(_KEY, None)
            if state is not None:
                state.collector.extend_dicts(value)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    state = node.config.stash.get(_KEY, None)
    out = getattr(node, "workeroutput", None) or {}
    if state is not None:
        for probe, n in (out.get("modtest_helped") or {}).items():
            state.helped[probe] = state.helped.get(probe, 0) + int(n)
        if out.get("modtest_audit"):
            if not hasattr(state, "_worker_audits"):
                state._worker_audits = []
            state._worker_audits.append(out["modtest_audit"])


def _help_other_workers(state) -> None:
    """An xdist worker out of tests joins the probes other workers are still computing (their open
    jobs in the shared workshare folder), when it has the model loaded already."""
    if state._model is None or state.store.workshare is None:
        return
    import numpy as np

    from modtest.errors import ModtestError

    datasets = [(np.zeros(0, np.float32), np.zeros(0, np.int64))]  # what clusterability runs on
    try:
        datasets.append(state.data_for(state._model))
    except ModtestError:  # no usable data: only the weight-only probes can be joined
        pass
    try:
        state.store.help(state._model, datasets)
    except Exception as exc:  # noqa: BLE001 - helping is optional: the job's owner computes and
        # reports; a failure here must not turn into a crashed worker
        import warnings

        warnings.warn(f"modtest: could not join another worker's probe: {type(exc).__name__}: {exc}",
                      stacklevel=1)


def _fail_reports(config, failed: dict) -> bool:
    """Turn the passing call reports of tests whose claims failed after correction into failures.

    Returns whether the session must fail: a converted report, or a claim whose report is not
    found (no terminal reporter). Tests marked xfail (xfailed/xpassed) do not fail the session.
    """
    if not failed:
        return False
    tr = config.pluginmanager.get_plugin("terminalreporter")
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
            rep.longrepr = "\n".join(_session.failure_message(c) for c in claims)
            tr.stats["passed"].remove(rep)
            tr.stats.setdefault("failed", []).append(rep)
            fail = True
        elif cat not in ("xfailed", "xpassed", "failed"):
            fail = True
    if "passed" in tr.stats and not tr.stats["passed"]:
        del tr.stats["passed"]
    return fail


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    state = config.stash.get(_KEY, None)
    if state is None:
        return
    col = state.collector
    if hasattr(config, "workerinput"):  # xdist worker: the controller corrects (claims went with reports)
        _help_other_workers(state)
        if state.store.helped:
            config.workeroutput["modtest_helped"] = dict(state.store.helped)
        wants = (state.json_path, state.html_path, state.save_name, state.compare_name)
        if any(w is not None for w in wants):
            try:
                config.workeroutput["modtest_audit"] = {"probes": _probe_entries(state),
                                                        "partitions": _partition_entries()}
            except Exception:  # noqa: BLE001 - the claims still travel
                pass
        return
    if not col.claims and not state.store.memory and not getattr(state, "_worker_audits", None):
        return
    col.finalize()
    failed = col.failed_nodeids()
    newly = {nid: cs for nid, cs in failed.items()
             if any(c.p_raw is not None and c.p_raw == c.p_raw and c.p_raw <= c.alpha for c in cs)}
    if _fail_reports(config, newly) and session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    if _write_outputs(config, state, getattr(state, "_worker_audits", [])) and \
            session.exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def _p(v) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:.3g}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = config.stash.get(_KEY, None)
    if state is None:
        return
    tr = terminalreporter
    if not state.collector.claims:
        if state.comparison is not None or state.output_errors:
            tr.section("modtest")
            _summary_outputs(tr, state)
        return
    col = state.collector
    xfailed = {getattr(rep, "nodeid", None)  # tests marked xfail: their failing claims are expected
               for cat in ("xfailed", "xpassed") for rep in tr.stats.get(cat, ())}
    expected = [c for c in col.failures() if c.nodeid in xfailed]
    tr.section("modtest")
    if state.helped:
        tr.write_line("work units computed by idle xdist workers for others' probes: "
                      + ", ".join(f"{p} {n}" for p, n in sorted(state.helped.items())))
    tr.write_line(f"{len(col.claims)} assertion(s), {col.method} correction, "
                  f"{len(col.failures()) - len(expected)} failed"
                  + (f", {len(expected)} expected to fail (xfail)" if expected else "")
                  + " (probe: wall time in this session, ~0 when cached)")
    for c in col.claims:
        verdict = "PASS" if c.passed else ("XFAIL" if c.nodeid in xfailed else "FAIL")
        tr.write_line(f"{verdict} {c.nodeid} {c.measure} ({c.method}) statistic={_p(c.statistic)} "
                      f"raw p={_p(c.p_raw)} corrected p={_p(c.p_corrected)} alpha={c.alpha:g} "
                      f"probe {c.probe_seconds:.1f}s")
    newly = [c for c in col.failures() if c.p_raw == c.p_raw and c.p_raw <= c.alpha]
    if newly:
        tr.write_line(f"failed only after {col.method} correction:", red=True)
        for c in newly:
            tr.write_line(f"  {c.nodeid}: {_session.failure_message(c)}", red=True)
    _summary_outputs(tr, state)


def _summary_outputs(tr, state) -> None:
    cmp = state.comparison
    if cmp is not None:
        tr.write_line(f"compared with baseline {state.baseline_name!r}: "
                      + ("no regression" if cmp.ok else f"{len(cmp.failures)} regression(s)"),
                      red=not cmp.ok, green=cmp.ok)
        for f in cmp.failures:
            tr.write_line(f"  REGRESSION {f}", red=True)
        for n in cmp.notes:
            tr.write_line(f"  note: {n}")
    for e in state.output_errors:
        tr.write_line(f"modtest: could not write {e}", red=True)
    if state.json_path is not None and state.json_path.exists():
        tr.write_line(f"modtest JSON report: {state.json_path}")
    if state.html_path is not None and state.html_path.exists():
        tr.write_line(f"modtest HTML report: {state.html_path}")
    if state.saved_path is not None:
        tr.write_line(f"modtest baseline saved: {state.saved_path}")


# --------------------------------------------------------------------------- fixtures

def _fixture_error(exc) -> None:
    pytest.fail(f"modtest: {exc}", pytrace=False)


@pytest.fixture(scope="session")
def model(request):
    """The model under test (``--model``, default: the shipped example MLP), loaded once."""
    from modtest.errors import ModtestError

    try:
        return _state(request.config).get_model()
    except ModtestError as exc:
        _fixture_error(exc)


@pytest.fixture(scope="session")
def eval_data(request, model):
    """``(x, y)`` from ``--data`` (default: shipped digits), checked against ``model``."""
    from modtest.errors import ModtestError

    try:
        return _state(request.config).data_for(model)
    except ModtestError as exc:
        _fixture_error(exc)


@pytest.fixture(scope="session")
def partition(request, model):
    """``cluster(model, --modtest-k, --modtest-seed)``, computed once per session."""
    from modtest.probes import get_partition

    st = _state(request.config)
    return get_partition(model, st.k, st.seed)


@pytest.fixture(scope="session")
def modtest_probes(request):
    """The session's probe store (in-memory + disk cache); ``.get(probe, model, x, y, k, seed)``."""
    return _state(request.config).store
