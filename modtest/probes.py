"""The probe registry and the per-session probe cache.

A *measure* (``"importance"``, ``"output_coherence"``, ...) is read from the network-level result of
a *probe* (``"lesion"``, ``"visualization"``, ``"clusterability"``). Several measures share one
probe, and a probe runs once per (model hash, data hash, probe, k, seed, settings): results are
kept in memory for the process and on disk (:class:`modtest.cache.ProbeCache`) across processes
and runs.

Registering a measure::

    register_measure("importance", "lesion", compute=lambda ctx: lesion_study(...),
                     network_key="importance", side_note="accuracy drop larger than random units",
                     row_p_key="p_importance")

``compute(ctx)`` gets a :class:`ProbeContext` and returns a :class:`ProbeResult`.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from modtest.errors import InvalidInput
from modtest.results import ProbeResult


@dataclass(frozen=True)
class Measure:
    name: str
    probe: str
    compute: Callable[["ProbeContext"], ProbeResult]
    network_key: str
    side_note: str = ""
    row_p_key: str | None = None
    row_effect_key: str | None = None


@dataclass
class ProbeContext:
    """What a probe's ``compute`` gets: the model, data, k, seed and settings; a lazy partition."""

    model: Any
    x: Any
    y: Any
    k: int
    seed: int
    settings: dict = field(default_factory=dict)
    #: a :class:`modtest.workshare.WorkShare` through which processes share a splittable probe's units
    workshare: Any = None

    @property
    def partition(self):
        return get_partition(self.model, self.k, self.seed)


MEASURES: dict[str, Measure] = {}
PROBES: dict[str, Callable[[ProbeContext], ProbeResult]] = {}


def register_measure(name: str, probe: str, compute: Callable[[ProbeContext], ProbeResult],
                     network_key: str | None = None, side_note: str = "", *,
                     row_p_key: str | None = None, row_effect_key: str | None = None) -> Measure:
    """Register (or replace) a measure and the compute function of its probe.

    The latest registration of a probe's compute function wins for every measure of that probe.
    """
    m = Measure(name, probe, compute, network_key or name, side_note, row_p_key, row_effect_key)
    MEASURES[name] = m
    PROBES[probe] = compute
    for other, om in list(MEASURES.items()):
        if om.probe == probe and om.compute is not compute:
            MEASURES[other] = Measure(om.name, om.probe, compute, om.network_key, om.side_note,
                                      om.row_p_key, om.row_effect_key)
    return m


def get_measure(name: str) -> Measure:
    if name not in MEASURES:
        raise InvalidInput(f"unknown measure {name!r}; registered: {', '.join(sorted(MEASURES))}")
    return MEASURES[name]


# --------------------------------------------------------------------------- built-in measures

def _lesion(ctx: ProbeContext) -> ProbeResult:
    from modtest.lesion import lesion_study

    return lesion_study(ctx.model, ctx.partition, ctx.x, ctx.y, seed=ctx.seed, workshare=ctx.workshare,
                        **ctx.settings)


def _visualization(ctx: ProbeContext) -> ProbeResult:
    from modtest.visualization_probe import visualization_study

    return visualization_study(ctx.model, ctx.partition, seed=ctx.seed, workshare=ctx.workshare,
                               **ctx.settings)


def _clusterability(ctx: ProbeContext) -> ProbeResult:
    from modtest.clusterability import clusterability

    r = clusterability(ctx.model, k=ctx.k, seed=ctx.seed, workshare=ctx.workshare, **ctx.settings)
    net = {"p": r.p_value, "fisher_p": r.p_value, "chi2_p": r.p_value, "statistic": r.z_score,
           "ncut": r.ncut, "z_score": r.z_score, "n": len(r.shuffled_ncuts), "n_excluded": 0}
    return ProbeResult(probe="clusterability", rows=[], network={"clusterability": net},
                       settings={"k": r.k, "seed": r.seed, **ctx.settings},
                       extras={"shuffled_ncuts": list(r.shuffled_ncuts)})


#: Probes whose compute functions take ``ctx.workshare`` and split their work into units.
SPLITTABLE = {"lesion", "clusterability", "visualization"}


def register_builtin_measures() -> None:
    register_measure("clusterability", "clusterability", _clusterability, "clusterability",
                     "n-cut lower than within-layer weight shuffles")
    register_measure("importance", "lesion", _lesion, "importance",
                     "lesioning the sub-cluster drops accuracy more than random same-layer units",
                     row_p_key="p_importance", row_effect_key="drop")
    register_measure("output_coherence", "lesion", _lesion, "output_coherence",
                     "lesioning the sub-cluster hurts some classes more than others (class-wise range)",
                     row_p_key="p_coherence", row_effect_key="coherence")
    register_measure("input_coherence", "visualization", _visualization, "input_coherence",
                     "one image activates the whole sub-cluster better than random units",
                     row_p_key="p_input", row_effect_key="score")
    register_measure("visualization_output_coherence", "visualization", _visualization,
                     "output_coherence", "images of the sub-cluster give low-entropy outputs",
                     row_p_key="p_output", row_effect_key="entropy")
    register_measure("activational_variance", "visualization", _visualization,
                     "activational_variance", "sub-cluster activations are more even than random",
                     row_p_key="p_variance", row_effect_key="variance")


register_builtin_measures()


# --------------------------------------------------------------------------- fingerprints

def model_fingerprint(model) -> str:
    """Content hash of a model (weights + architecture); a seam that tests may replace."""
    from modtest.model import model_hash

    return model_hash(model)


def data_fingerprint(x, y) -> str:
    from modtest.cache import data_hash

    return data_hash(x, y)


# --------------------------------------------------------------------------- the store

@dataclass
class ProbeRun:
    """One probe result with how it was obtained: ``source`` is "computed", "memory" or "disk"."""

    result: ProbeResult
    seconds: float
    source: str
    key: str


class ProbeStore:
    """Probe results of one process: an in-memory dict in front of an optional disk cache.

    With a ``workshare`` (a :class:`modtest.workshare.WorkShare` shared by several processes, e.g.
    pytest-xdist workers), a splittable probe computed here is announced as an open job while it
    runs, so that processes with nothing left to do can :meth:`help` with its work units.
    """

    def __init__(self, cache=None, workshare=None):
        self.cache = cache
        self.workshare = workshare
        self.memory: dict[str, ProbeRun] = {}
        self.computed: dict[str, int] = {}
        self.helped: dict[str, int] = {}  # probe -> work units this process computed for others
        self._lock = threading.RLock()

    def key(self, probe, model, x, y, k, seed, settings=None) -> str:
        return self.key_of(probe, model_fingerprint(model), data_fingerprint(x, y), k, seed, settings)

    def key_of(self, probe, model_fp: str, data_fp: str, k, seed, settings=None) -> str:
        """The cache key from fingerprints already computed (hashing a big model or data set is slow)."""
        from modtest.cache import cache_key

        return cache_key(model_fp, data_fp, probe, k, seed, settings)

    def run(self, probe: str, model, x, y, k: int, seed: int, settings: dict | None = None) -> ProbeRun:
        if probe not in PROBES:
            raise InvalidInput(f"unknown probe {probe!r}; registered: {', '.join(sorted(PROBES))}")
        settings = dict(settings or {})
        model_fp, data_fp = model_fingerprint(model), data_fingerprint(x, y)
        key = self.key_of(probe, model_fp, data_fp, k, seed, settings)
        with self._lock:
            if key in self.memory:
                return ProbeRun(self.memory[key].result, 0.0, "memory", key)
            ctx = ProbeContext(model, x, y, int(k), int(seed), settings)

            def compute():
                self.computed[probe] = self.computed.get(probe, 0) + 1
                t = time.perf_counter()
                job = None
                if self.workshare is not None and probe in SPLITTABLE:
                    ctx.workshare = self.workshare
                    job = self.workshare.announce(
                        {"probe": probe, "k": int(k), "seed": int(seed), "settings": settings,
                         "model": model_fp, "data": data_fp})
                try:
                    out = PROBES[probe](ctx)
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

    def help(self, model, datasets) -> int:
        """Join the open jobs of other processes on ``model`` (computing free work units); returns
        the number of units computed. ``datasets`` are the ``(x, y)`` this process could run the
        probes on; a job whose data fingerprint matches none of them is left alone."""
        if self.workshare is None:
            return 0
        from modtest.workshare import unit_key

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
                if probe not in SPLITTABLE or job.get("model") != mfp or job.get("data") not in data:
                    continue
                x, y = data[job["data"]]
                settings = dict(job.get("settings") or {})
                if self.cache is not None and self.cache.get(
                        self.key_of(probe, mfp, job["data"], job["k"], job["seed"], settings)) is not None:
                    self.workshare.retire(key)  # done; its owner died before retiring it
                    continue
                n0 = self.workshare.stats.computed
                PROBES[probe](ProbeContext(model, x, y, int(job["k"]), int(job["seed"]), settings,
                                           self.workshare))
                self.helped[probe] = self.helped.get(probe, 0) + self.workshare.stats.computed - n0

    def get(self, probe: str, model, x, y, k: int, seed: int, settings: dict | None = None) -> ProbeResult:
        return self.run(probe, model, x, y, k, seed, settings).result

    @property
    def n_computed(self) -> int:
        return sum(self.computed.values())


_STORE = ProbeStore()
_PARTITIONS: dict[tuple, Any] = {}


def default_store() -> ProbeStore:
    return _STORE


def set_default_store(store: ProbeStore) -> ProbeStore:
    """Make ``store`` the process-wide one (the pytest plugin installs one with a disk cache)."""
    global _STORE
    old, _STORE = _STORE, store
    return old


def get_probe(probe: str, model, x, y, k: int = 12, seed: int = 0, settings: dict | None = None) -> ProbeResult:
    """The result of ``probe`` on (model, x, y) at (k, seed, settings), computed at most once."""
    return _STORE.get(probe, model, x, y, k, seed, settings)


def get_partition(model, k: int, seed: int):
    """``cluster(model, k, seed)``, memoized per (model hash, k, seed) in this process."""
    from modtest.cluster import cluster

    key = (model_fingerprint(model), int(k), int(seed))
    if key not in _PARTITIONS:
        _PARTITIONS[key] = cluster(model, k=k, seed=seed)
    return _PARTITIONS[key]
