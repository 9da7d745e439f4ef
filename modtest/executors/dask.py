"""Probe work units on a ``dask.distributed`` cluster (``--modtest-scheduler ADDRESS``).

The same ``map(probe, ctx, units, progress) -> values`` as the serial executor and the workshare
folder: every unit runs the probe's own :meth:`~modtest.probes.base.Probe.compute_many` on a Dask
worker, so there is no second copy of the unit logic. What travels:

* the model, once per fingerprint: its bytes (:meth:`ModelAdapter.payload`) or, with
  ``model_path=True``, the path of the file it was read from (every worker must read the same file);
  a worker loads it once (:class:`modtest.frameworks.base.ModelParcel`) and keeps it while the
  executor holds it;
* the probe context (data, settings) without the model, once per context: its per-process resources
  (a lesion engine with its activation cache) are rebuilt on each worker and kept there across units
  and across the rounds of the robust protocol;
* one task per unit, named by the same content key as a workshare unit file, so two clients that
  submit the same unit (two pytest-xdist workers) share one computation.

Both are scattered to every worker (``broadcast``): a killed worker's units are rescheduled by Dask on
the others, which hold everything they need; the values are those of a serial run (random controls
come from counter-based streams keyed on the unit, never on where it ran). A unit runs on a worker
process one at a time (a lesion engine is not thread-safe; TensorFlow and JAX use every core of the
worker's CPU or its GPU themselves), so start workers with ``--nthreads 1`` (one per GPU).
"""
from __future__ import annotations

import os
import re
import threading
import weakref
from collections import OrderedDict
from dataclasses import replace

from modtest.errors import ExecutorError, InvalidInput, ModtestError

__all__ = ["DaskExecutor", "check_address", "CONNECT_TIMEOUT"]

#: seconds to wait for the scheduler and for a first worker before giving up
CONNECT_TIMEOUT = 10.0
#: contexts whose scattered copies (and the engines built from them on the workers) are kept
KEEP_CONTEXTS = 4
#: how often a map is resubmitted after the cluster lost data it had scattered (every worker died)
RESUBMITS = 2
INSTALL_HINT = "install it with pip install 'pytest-modtest[dask]' (the distributed package)"

_ADDRESS = re.compile(r"^(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?(?P<host>\[[0-9a-fA-F:.]+\]|[^\s:/\[\]]+):(?P<port>\d{1,5})$")

#: a worker process runs one unit at a time (lesion engines keep caches; frameworks use every core)
_UNIT_LOCK = threading.Lock()


def check_address(value, flag: str = "scheduler") -> str:
    """A scheduler address ``[scheme://]host:port`` or an existing scheduler file (``.json``), checked
    without importing Dask; a bad one raises :class:`InvalidInput` naming ``flag``."""
    text = str(value).strip()
    if text.lower().endswith(".json"):
        if not os.path.isfile(os.path.expanduser(text)):
            raise InvalidInput(f"{flag}: scheduler file {text} not found (write it with "
                               f"dask scheduler --scheduler-file {text})")
        return text
    m = _ADDRESS.match(text)
    if m is None or not 0 < int(m.group("port")) < 65536:
        raise InvalidInput(f"{flag}: {text!r} is not a scheduler address; give host:port or "
                           f"tcp://host:port (dask scheduler prints it), or a scheduler file (.json)")
    return text if m.group("scheme") else f"tcp://{text}"


def _distributed():
    try:
        import distributed
    except ImportError:
        raise ExecutorError(f"a Dask scheduler was given but dask.distributed is not installed; "
                            f"{INSTALL_HINT}") from None
    return distributed


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _runtime() -> tuple[str, str]:
    """(modtest version, Keras backend) of this process: units are keyed on the version, and the
    last bits of a float depend on the backend (:func:`modtest.frameworks.runtime_signature`)."""
    from modtest.frameworks import runtime_signature

    return runtime_signature()


def _compute_units(probe, shell, parcel, items):
    """On a worker: the values of ``items``, by the probe's own ``compute_many``; the model is opened
    once per worker (``parcel.open``) and the context ``shell`` keeps its resources across units."""
    with _UNIT_LOCK:
        if shell.model is None:
            shell.model = parcel.open()
        return probe.compute_many(shell, list(items))


class DaskExecutor:
    """Probe work units on a ``dask.distributed`` cluster.

    Parameters
    ----------
    scheduler : a scheduler address (``tcp://host:8786``), a scheduler file (``.json``), a
        ``distributed.Client`` or a cluster object (``LocalCluster``, ...); a client or cluster given
        here is used, not closed
    timeout : seconds to wait for the scheduler and for a first worker (then a one-line
        :class:`~modtest.errors.ExecutorError`)
    model_path : send the path of the model file (workers read the same file, e.g. on a shared
        folder) instead of the model's bytes; models not read from a file always go as bytes
    trust : workers may load models whose loading runs code (the client's ``--modtest-trust-model``)
    units_per_task : units computed by one task (more: bigger batched engine calls, less balancing)
    """

    name = "dask"

    def __init__(self, scheduler, *, timeout: float = CONNECT_TIMEOUT, model_path: bool = False,
                 trust: bool = False, units_per_task: int = 1):
        from modtest._validation import check_int

        if isinstance(scheduler, (str, os.PathLike)):
            scheduler = check_address(os.fspath(scheduler))
        self.scheduler = scheduler
        self.timeout = float(timeout)
        if not self.timeout > 0:
            raise InvalidInput(f"timeout must be a positive number of seconds, got {timeout!r}")
        self.model_path = bool(model_path)
        self.trust = bool(trust)
        self.units_per_task = check_int("units_per_task", units_per_task, minimum=1)
        self._client = None
        self._owns_client = False
        self._models: dict[str, object] = {}  # fingerprint -> future of the scattered ModelParcel
        self._contexts: OrderedDict = OrderedDict()  # id(ctx) -> (weakref(ctx), future of its shell)
        #: what this executor did (tasks submitted, values received, resubmissions after data loss)
        self.stats = {"tasks": 0, "units": 0, "resubmitted": 0}

    def __repr__(self) -> str:
        return f"DaskExecutor({self.address!r})"

    @property
    def address(self) -> str:
        s = self.scheduler
        if isinstance(s, str):
            return s
        return str(getattr(s, "scheduler_address", None) or getattr(getattr(s, "scheduler", None), "address", s))

    # -- connection ---------------------------------------------------------------------------------
    @property
    def client(self):
        """The ``distributed.Client``, connected on first use (bounded by ``timeout``)."""
        if self._client is None:
            self.connect()
        return self._client

    def connect(self) -> DaskExecutor:
        """Connect to the scheduler, wait for a worker and check the workers run this modtest; each
        failure is one line (an :class:`ExecutorError`) within about ``timeout`` seconds."""
        if self._client is not None:
            return self
        distributed = _distributed()
        where = self.address
        if isinstance(self.scheduler, distributed.Client):
            client, owns = self.scheduler, False
        else:
            kw = {"timeout": f"{self.timeout}s", "set_as_default": False}
            try:
                if isinstance(self.scheduler, str) and self.scheduler.lower().endswith(".json"):
                    client = distributed.Client(scheduler_file=os.path.expanduser(self.scheduler), **kw)
                elif isinstance(self.scheduler, str):
                    client = distributed.Client(self.scheduler, **kw)
                else:  # a cluster object
                    client = distributed.Client(self.scheduler, **kw)
            except (OSError, TimeoutError, ValueError) as exc:
                raise ExecutorError(f"cannot reach the Dask scheduler at {where} within {self.timeout:g}s "
                                    f"({_first_line(exc)}); start one with `dask scheduler` or fix the "
                                    f"address") from None
            owns = True
        try:
            self._check_workers(client, where)
        except BaseException:
            if owns:
                client.close()
            raise
        self._client, self._owns_client = client, owns
        return self

    def _check_workers(self, client, where: str) -> None:
        try:
            client.wait_for_workers(1, timeout=self.timeout)
        except (TimeoutError, OSError) as exc:
            raise ExecutorError(f"the Dask cluster at {where} has no worker after {self.timeout:g}s "
                                f"({_first_line(exc) or 'timeout'}); start one with `dask worker {where}`") from None
        try:
            runtimes = client.run(_runtime)
        except Exception as exc:  # noqa: BLE001 - a worker without modtest fails to unpickle the function
            raise ExecutorError(f"a Dask worker of {where} cannot run modtest ({type(exc).__name__}: "
                                f"{_first_line(exc)}); install the same modtest on every worker") from None
        here = _runtime()
        for w, (version, backend) in sorted(runtimes.items()):
            if version != here[0]:
                raise ExecutorError(f"Dask worker {w} runs modtest {version}, this process {here[0]}; install "
                                    f"the same version on every worker (units are keyed on it)")
            if backend != here[1]:
                raise ExecutorError(f"Dask worker {w} runs Keras backend {backend}, this process {here[1]}; "
                                    f"start workers with KERAS_BACKEND={here[1]} (results must not depend on "
                                    f"where a unit ran)")

    def close(self) -> None:
        """Release what was scattered and close the client this executor opened."""
        client, self._client = self._client, None
        self._models.clear()
        self._contexts.clear()
        if client is not None and self._owns_client:
            try:
                client.close()
            except Exception:  # noqa: BLE001 - closing a client whose scheduler died
                pass

    def __enter__(self):
        return self.connect()

    def __exit__(self, *exc):
        self.close()

    # -- what travels ---------------------------------------------------------------------------------
    def _model_future(self, adapter):
        fp = adapter.fingerprint()
        fut = self._models.get(fp)
        if fut is None:
            parcel = adapter.parcel(path=self.model_path, trust=self.trust)
            fut = self.client.scatter(parcel, broadcast=True, hash=True)
            self._models[fp] = fut
        return fut

    def _context_future(self, ctx):
        """The context without its model, scattered once per context object (kept for the next
        :data:`KEEP_CONTEXTS` maps: the rounds of the robust protocol reuse the workers' engines)."""
        hit = self._contexts.get(id(ctx))
        if hit is not None and hit[0]() is ctx:
            self._contexts.move_to_end(id(ctx))
            return hit[1]
        shell = replace(ctx, model=None, _resources={})
        fut = self.client.scatter(shell, broadcast=True, hash=False)
        self._contexts[id(ctx)] = (weakref.ref(ctx), fut)
        while len(self._contexts) > KEEP_CONTEXTS:
            self._contexts.popitem(last=False)
        return fut

    def _forget(self, ctx) -> None:
        self._models.pop(ctx.model.fingerprint(), None)
        self._contexts.pop(id(ctx), None)

    # -- the executor interface -------------------------------------------------------------------------
    def map(self, probe, ctx, units, progress=None) -> list:
        """The values of a probe's ``units``, in order, computed on the cluster's workers."""
        from modtest.executors.workshare import unit_key

        units = list(units)
        if not units:
            return []
        client = self.client
        ident = probe.identity(ctx)
        n = self.units_per_task
        groups = [units[i:i + n] for i in range(0, len(units), n)]
        keys = [f"modtest-{probe.name}-" + unit_key(f"{probe.name}-task", ident, [u.key for u in g])
                for g in groups]
        values: list = [None] * len(groups)
        todo = list(range(len(groups)))
        for attempt in range(RESUBMITS + 1):
            try:
                self._run(client, probe, ctx, groups, keys, todo, values, progress)
                break
            except ExecutorError:
                raise
            except Exception as exc:  # noqa: BLE001 - sorted below: lost data is resubmitted, the rest raised
                if not self._lost_data(exc) or attempt == RESUBMITS:
                    raise self._as_error(exc, probe) from None
                self._forget(ctx)  # every copy of what was scattered died with its workers: send it again
                todo = [i for i in todo if values[i] is None]
                self.stats["resubmitted"] += len(todo)
        return [v for group in values for v in group]

    def _run(self, client, probe, ctx, groups, keys, todo, values, progress) -> None:
        distributed = _distributed()
        model_f, ctx_f = self._model_future(ctx.model), self._context_future(ctx)
        futures = {}
        for i in todo:
            fut = client.submit(_compute_units, probe, ctx_f, model_f, [u.item for u in groups[i]], key=keys[i],
                                retries=0)
            futures[fut] = i
        self.stats["tasks"] += len(futures)
        try:
            for fut in distributed.as_completed(list(futures), loop=client.loop):
                i = futures[fut]
                got = fut.result()
                if not isinstance(got, list) or len(got) != len(groups[i]):
                    raise ExecutorError(f"a Dask worker returned {type(got).__name__} for {len(groups[i])} "
                                        f"{probe.name} unit(s); is it running the same modtest?")
                values[i] = got
                self.stats["units"] += len(got)
                if progress is not None:
                    progress(sum(u.work for u in groups[i]))
        finally:
            for fut in futures:
                if values[futures[fut]] is None:
                    fut.cancel()
                fut.release()

    @staticmethod
    def _lost_data(exc: BaseException) -> bool:
        """Whether ``exc`` says the cluster lost scattered inputs (every worker holding them died)."""
        from concurrent.futures import CancelledError

        distributed = _distributed()
        lost = (CancelledError, getattr(distributed.client, "FutureCancelledError", CancelledError))
        return isinstance(exc, lost)

    def _as_error(self, exc: BaseException, probe) -> BaseException:
        """What the user sees: a modtest error or an exception from the probe as it is; the cluster's
        failures (killed workers, a lost scheduler) as one line."""
        if isinstance(exc, ModtestError):
            return exc
        distributed = _distributed()
        if isinstance(exc, distributed.KilledWorker):
            return ExecutorError(f"{probe.name} units killed Dask workers repeatedly ({_first_line(exc)}); "
                                 f"a worker may run out of memory: give workers more memory or smaller batches")
        comm = getattr(distributed.comm, "CommClosedError", OSError)
        if isinstance(exc, (comm, OSError, TimeoutError)):
            return ExecutorError(f"lost the Dask scheduler at {self.address} ({type(exc).__name__}: "
                                 f"{_first_line(exc)})")
        return exc

