"""Probe results of one process: computed at most once, kept in memory and in the disk cache.

A probe runs once per (model hash, data hash, probe, k, seed, settings). With a workshare folder
(pytest-xdist workers), a splittable probe computed here is announced as an open job while it runs,
so that processes with nothing left to do can :meth:`ProbeStore.help` with its work units, and
:meth:`ProbeStore.prefetch` lets every process join a probe's units from the start.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from modtest.errors import InvalidInput
from modtest.probes import Registry, Request
from modtest.results import ProbeResult


@dataclass
class ProbeRun:
    """One probe result with how it was obtained: ``source`` is "computed", "memory" or "disk"."""

    result: ProbeResult
    seconds: float
    source: str
    key: str


def model_fingerprint(model) -> str:
    from modtest.frameworks import adapt

    return adapt(model).fingerprint()


def data_fingerprint(x, y) -> str:
    from modtest.store import data_hash

    return data_hash(x, y)


class ProbeStore:
    """An in-memory dict of probe runs in front of an optional disk cache (:class:`modtest.store.ProbeCache`).

    ``meta[key]`` records what each run was computed on (probe, k, seed, hashes, settings): the
    report lists it.
    """

    def __init__(self, cache=None, workshare=None, registry: Registry | None = None, partitions=None,
                 executor=None):
        self.cache = cache
        self.workshare = workshare
        #: where splittable probes run their units when no workshare is set (None: here; a Dask executor)
        self.executor = executor
        #: the measures' compute functions (None: the active audit context's, looked up on use)
        self.own_registry = registry
        #: callable (model, k, seed) -> Partition, shared with the session (None: cluster each time)
        self.partitions = partitions
        self.memory: dict[str, ProbeRun] = {}
        self.meta: dict[str, dict] = {}
        self.computed: dict[str, int] = {}
        self.helped: dict[str, int] = {}  # probe -> work units this process computed for others
        self._lock = threading.RLock()

    @property
    def registry(self) -> Registry:
        """The registry this store computes probes with (its own, else the active context's)."""
        if self.own_registry is not None:
            return self.own_registry
        from modtest.context import current

        return current().registry

    @registry.setter
    def registry(self, registry: Registry | None) -> None:
        self.own_registry = registry

    def key_of(self, probe, model_fp: str, data_fp: str, k, seed, settings=None) -> str:
        """The cache key from fingerprints already computed (hashing a big model or data set is slow)."""
        from modtest.results import _jsonable
        from modtest.store import cache_key

        key = cache_key(model_fp, data_fp, probe, k, seed, settings)
        self.meta.setdefault(key, {"probe": probe, "k": int(k), "seed": int(seed), "model_hash": model_fp,
                                   "data_hash": data_fp, "settings": _jsonable(dict(settings or {}))})
        return key

    def key(self, probe, model, x, y, k, seed, settings=None) -> str:
        return self.key_of(probe, model_fingerprint(model), data_fingerprint(x, y), k, seed, settings)

    def _request(self, model, x, y, k, seed, settings, executor=None) -> Request:
        return Request(model, x, y, int(k), int(seed), dict(settings or {}), executor, self.partitions)

    def run(self, probe: str, model, x, y, k: int, seed: int, settings: dict | None = None) -> ProbeRun:
        compute_fn = self.registry.compute(probe)
        settings = dict(settings or {})
        model_fp, data_fp = model_fingerprint(model), data_fingerprint(x, y)
        key = self.key_of(probe, model_fp, data_fp, k, seed, settings)
        with self._lock:
            if key in self.memory:
                return ProbeRun(self.memory[key].result, 0.0, "memory", key)

            def compute():
                self.computed[probe] = self.computed.get(probe, 0) + 1
                t = time.perf_counter()
                splittable = self.registry.is_splittable(probe)
                job, executor = None, self.executor if splittable else None
                if self.workshare is not None and splittable:
                    executor = self.workshare
                    job = self.workshare.announce({"probe": probe, "k": int(k), "seed": int(seed),
                                                   "settings": settings, "model": model_fp, "data": data_fp})
                try:
                    out = compute_fn(self._request(model, x, y, k, seed, settings, executor))
                finally:
                    if job is not None:
                        self.workshare.retire(job)
                if isinstance(out.extras, dict):  # kept in the cache entry: the cold wall time
                    out.extras.setdefault("seconds", time.perf_counter() - t)
                return out

            t0 = time.perf_counter()
            if self.cache is not None:
                result, fresh = self.cache.get_or_compute(key, compute)
            else:
                result, fresh = compute(), True
            seconds = time.perf_counter() - t0  # this process's wall time (small on a cache hit)
            run = ProbeRun(result, seconds, "computed" if fresh else "disk", key)
            self.memory[key] = run
            return run

    def get(self, probe: str, model, x, y, k: int, seed: int, settings: dict | None = None) -> ProbeResult:
        return self.run(probe, model, x, y, k, seed, settings).result

    def prefetch(self, probe: str, model, x, y, k: int, seed: int, settings: dict | None = None,
                 workshare=None) -> ProbeRun:
        """Compute a splittable probe cooperatively and keep it (memory and disk cache).

        Gives the same result and cache key as :meth:`run` (what the assertions ask for), but the
        work units are shared out between every process calling this with the same ``workshare``
        folder (default ``<cache root>/workshare``) instead of one process computing under the cache
        entry's lock while the others wait.
        """
        from pathlib import Path

        from modtest.executors.workshare import as_workshare

        if not self.registry.is_splittable(probe):
            raise InvalidInput(f"probe {probe!r} cannot be shared out; splittable: "
                               f"{', '.join(sorted(self.registry.splittable)) or 'none registered'}")
        settings = dict(settings or {})
        key = self.key(probe, model, x, y, k, seed, settings)
        if key in self.memory:
            return self.memory[key]
        if self.cache is not None:
            found = self.cache.get(key)
            if found is not None:
                run = ProbeRun(found, 0.0, "disk", key)
                self.memory[key] = run
                return run
        if workshare is None:
            if self.cache is None:
                raise InvalidInput("prefetch needs a workshare folder or a store with a disk cache")
            workshare = Path(self.cache.root) / "workshare"
        t0 = time.perf_counter()
        result = self.registry.compute(probe)(self._request(model, x, y, k, seed, settings,
                                                            as_workshare(workshare)))
        if isinstance(result.extras, dict):
            result.extras.setdefault("seconds", time.perf_counter() - t0)
        fresh = True
        if self.cache is not None:  # the first process to get here writes; the others read the same thing
            result, fresh = self.cache.get_or_compute(key, lambda: result)
        self.computed[probe] = self.computed.get(probe, 0) + int(fresh)
        run = ProbeRun(result, time.perf_counter() - t0, "computed" if fresh else "disk", key)
        self.memory[key] = run
        return run

    def help(self, model, datasets) -> int:
        """Join the open jobs of other processes on ``model`` (computing free work units); returns
        the number of units computed. ``datasets`` are the ``(x, y)`` this process could run the
        probes on; a job whose data fingerprint matches none of them is left alone."""
        if self.workshare is None:
            return 0
        from modtest.executors.workshare import unit_key

        mfp, data, done = None, None, set()
        before = self.workshare.stats.computed
        while True:  # jobs announced while this process was helping are joined too
            jobs = [j for j in self.workshare.open_jobs() if unit_key("job", j) not in done]
            if not jobs:
                return self.workshare.stats.computed - before
            if mfp is None:
                mfp = model_fingerprint(model)
                data = {data_fingerprint(x, y): (x, y) for x, y in datasets}
            for job in jobs:
                key = unit_key("job", job)
                done.add(key)
                probe = job.get("probe")
                if not self.registry.is_splittable(probe) or job.get("model") != mfp or job.get("data") not in data:
                    continue
                x, y = data[job["data"]]
                settings = dict(job.get("settings") or {})
                if self.cache is not None and self.cache.get(
                        self.key_of(probe, mfp, job["data"], job["k"], job["seed"], settings)) is not None:
                    self.workshare.retire(key)  # done; its owner died before retiring it
                    continue
                n0 = self.workshare.stats.computed
                self.registry.compute(probe)(self._request(model, x, y, job["k"], job["seed"], settings,
                                                           self.workshare))
                self.helped[probe] = self.helped.get(probe, 0) + self.workshare.stats.computed - n0

    @property
    def n_computed(self) -> int:
        return sum(self.computed.values())
