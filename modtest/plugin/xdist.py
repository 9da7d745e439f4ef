"""pytest-xdist transport: GPU pinning and ``-n auto``, claims from workers to the controller, idle
workers joining other workers' probes, and what workers send back at the end.

The controller runs no test: it collects the claims that arrive with each worker's test reports and
corrects them together, so ``pytest -n N`` gives the verdicts of a serial run.
"""
from __future__ import annotations

import os

import pytest


def early_environment(backend: str | None) -> None:
    """Pin an xdist worker to its GPU and set KERAS_BACKEND, before anything imports a framework."""
    from modtest.options import BACKENDS

    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and not os.environ.get("_MODTEST_PINNED"):
        from modtest.plugin.gpus import pin_worker

        pin_worker(worker, os.environ)
        os.environ["_MODTEST_PINNED"] = "1"
    if backend and backend in BACKENDS:
        from modtest.frameworks import select_backend

        select_backend(backend)


@pytest.hookimpl(tryfirst=True, optionalhook=True)
def pytest_xdist_auto_num_workers(config):
    """``-n auto`` in a modtest session on a machine with GPUs: one worker per visible GPU (each
    pinned to its own). None, so xdist counts CPUs, for ``-n logical``, without GPUs, when
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` is set, or in a session that sets no modtest option."""
    from modtest.plugin.session import configured_for_modtest

    if config.option.numprocesses != "auto" or os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None
    if not configured_for_modtest(config):
        return None
    from modtest.plugin.gpus import auto_num_workers

    return auto_num_workers()


def warm_up_correction() -> None:
    """Import the multiple-comparison code in a background thread of the idle xdist controller, so
    the session-wide correction at the end does not wait for it (most of a second)."""
    import threading

    def load():
        try:
            import statsmodels.stats.multitest  # noqa: F401
        except Exception:  # noqa: BLE001 - the correction imports it again and reports any error
            pass

    threading.Thread(target=load, name="modtest-warm-up", daemon=True).start()


class WorkerPlugin:
    """On an xdist worker: claims travel with each test report; at the end the worker joins the
    probes other workers are still computing and sends back its probe runs for the report."""

    def __init__(self, session):
        self.session = session
        self.sent = 0

    @pytest.hookimpl(wrapper=True)
    def pytest_runtest_makereport(self, item, call):
        """Each report carries the claims recorded since the last one, so the controller has them as
        soon as the test ends: a worker that crashes later loses none."""
        report = yield
        claims = self.session.context.collector.claims
        if len(claims) > self.sent:
            report.user_properties.append(("modtest_claims", [c.to_dict() for c in claims[self.sent:]]))
            self.sent = len(claims)
        return report

    def pytest_sessionfinish(self, session, exitstatus):
        from modtest.report.build import partition_entries, probe_entries

        s = self.session
        self.help_other_workers()
        store = s.context.store
        if store.helped:
            session.config.workeroutput["modtest_helped"] = dict(store.helped)
        if any(w is not None for w in (s.json_path, s.html_path, s.save_name, s.compare_name)):
            try:
                session.config.workeroutput["modtest_audit"] = {
                    "probes": probe_entries(store), "partitions": partition_entries(s.context.partitions)}
            except Exception:  # noqa: BLE001 - the claims still travel
                pass

    def help_other_workers(self) -> None:
        """Join the probes other workers are still computing (their open jobs in the shared workshare
        folder), when this worker has the model loaded already."""
        s = self.session
        if s._model is None or s.context.store.workshare is None:
            return
        import numpy as np

        model = s.context.adapter(s._model)
        datasets = [(np.zeros(0, np.float32), np.zeros(0, np.int64))]  # what clusterability runs on
        try:
            datasets.append(s.data_for(model))
        except Exception:  # noqa: BLE001 - no usable data: only the weight-only probes can be joined
            pass
        try:
            s.context.store.help(model, datasets)
        except Exception as exc:  # noqa: BLE001 - helping is optional: the job's owner computes and
            # reports; a failure here must not turn into a crashed worker
            import warnings

            warnings.warn(f"modtest: could not join another worker's probe: {type(exc).__name__}: {exc}",
                          stacklevel=1)


class ControllerPlugin:
    """On the xdist controller: collect the claims relayed with worker reports, and at each worker's
    end the units it computed for others and its probe runs; show the workers' probe progress (read
    from the board folder each worker writes to, see :mod:`modtest.progress`)."""

    def __init__(self, session):
        self.session = session
        self.board = None
        self.watcher = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node):
        """Tell each worker where its progress board is (the folder is made with the first worker)."""
        if self.session.progress_mode == "off":
            return
        if self.board is None:
            import tempfile

            from modtest.progress import BoardWatcher, delay_seconds, heartbeat_seconds

            config = self.session.config
            self.board = tempfile.mkdtemp(prefix="modtest-progress-")
            tr = config.pluginmanager.get_plugin("terminalreporter")
            live = self.session.progress_mode == "live" or (
                self.session.progress_mode == "auto" and tr is not None and bool(tr.isatty)
                and config.get_verbosity() >= 0)
            if tr is not None:
                first, every = (delay_seconds(), 10.0) if live else (heartbeat_seconds(), heartbeat_seconds())
                from modtest.plugin.session import line_writer

                self.watcher = BoardWatcher(self.board, line_writer(config), first=first, every=every).start()
        node.workerinput["modtest_progress"] = self.board

    def pytest_sessionfinish(self, session, exitstatus):
        if self.watcher is not None:
            self.watcher.stop()  # one last read: the final line of every task that ran long enough
            self.watcher = None
        if self.board is not None:
            import shutil

            shutil.rmtree(self.board, ignore_errors=True)
            self.board = None

    def pytest_runtest_logreport(self, report):
        if getattr(report, "node", None) is None:  # not a report relayed from a worker
            return
        from modtest.claims import claim_from_dict

        for key, value in getattr(report, "user_properties", ()):
            if key == "modtest_claims":
                self.session.context.collector.claims.extend(claim_from_dict(d) for d in value or ())

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node, error):
        out = getattr(node, "workeroutput", None) or {}
        for probe, n in (out.get("modtest_helped") or {}).items():
            self.session.helped[probe] = self.session.helped.get(probe, 0) + int(n)
        if out.get("modtest_audit"):
            self.session.worker_audits.append(out["modtest_audit"])
