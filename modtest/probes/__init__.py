"""Probes and the measures read from them.

One module per probe, each behind the interface of :mod:`modtest.probes.base` (units, compute,
combine): ``lesion``, ``double_lesion``, ``visualization``, ``correlation``, ``clusterability``.

A *measure* (``"importance"``, ``"output_coherence"``, ...) is read from the network-level result of
a probe. Several measures share one probe, and a probe runs once per (model hash, data hash, probe,
k, seed, settings) in a :class:`modtest.probes.store.ProbeStore`. Registering a measure::

    register_measure("importance", "lesion", compute=lambda req: lesion_study(...),
                     network_key="importance", side_note="accuracy drop larger than random units",
                     row_p_key="p_importance")

``compute(request)`` gets a :class:`Request` and returns a :class:`~modtest.results.ProbeResult`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modtest.errors import InvalidInput
from modtest.results import ProbeResult


@dataclass(frozen=True)
class Measure:
    """A claim's statistic: which probe computes it and where its network-level p is read."""

    name: str
    probe: str
    compute: Callable[[Request], ProbeResult]
    network_key: str
    side_note: str = ""
    row_p_key: str | None = None
    row_effect_key: str | None = None


@dataclass
class Request:
    """What a measure's ``compute`` gets: the model, data, k, seed and settings; the partition is
    the session's (computed once per model, k and seed)."""

    model: Any
    x: Any
    y: Any
    k: int
    seed: int
    settings: dict = field(default_factory=dict)
    #: where the probe's work units run (None: here; a WorkShare shared with xdist workers; Dask)
    executor: Any = None
    partitions: Any = None  # a callable (model, k, seed) -> Partition

    @property
    def partition(self):
        if self.partitions is not None:
            return self.partitions(self.model, self.k, self.seed)
        from modtest.cluster import cluster

        return cluster(self.model, k=self.k, seed=self.seed)


class Registry:
    """Measures by name, the compute function of each probe, and which of those split their work
    into units (only those are shared out: xdist workers join them, Dask runs their units)."""

    def __init__(self):
        self.measures: dict[str, Measure] = {}
        self.probes: dict[str, Callable[[Request], ProbeResult]] = {}
        self.splittable: set[str] = set()

    def register(self, name: str, probe: str, compute: Callable[[Request], ProbeResult],
                 network_key: str | None = None, side_note: str = "", *, row_p_key: str | None = None,
                 row_effect_key: str | None = None, splittable: bool | None = None) -> Measure:
        """Register (or replace) a measure; the newest compute function of a probe serves every
        measure of that probe. ``splittable``: ``compute`` runs its units on ``request.executor``;
        None keeps what was said of the same function, and a new function that does not say so is
        run whole, by one process, never joined."""
        if splittable is None:
            splittable = self.probes.get(probe) is compute and probe in self.splittable
        m = Measure(name, probe, compute, network_key or name, side_note, row_p_key, row_effect_key)
        self.measures[name] = m
        self.probes[probe] = compute
        if splittable:
            self.splittable.add(probe)
        else:
            self.splittable.discard(probe)
        for other, om in list(self.measures.items()):
            if om.probe == probe and om.compute is not compute:
                self.measures[other] = Measure(om.name, om.probe, compute, om.network_key, om.side_note,
                                               om.row_p_key, om.row_effect_key)
        return m

    def is_splittable(self, probe: str) -> bool:
        """Whether ``probe``'s compute function shares its work units (see :meth:`register`)."""
        return probe in self.splittable

    def measure(self, name: str) -> Measure:
        if name not in self.measures:
            raise InvalidInput(f"unknown measure {name!r}; registered: {', '.join(sorted(self.measures))}")
        return self.measures[name]

    def compute(self, probe: str) -> Callable[[Request], ProbeResult]:
        if probe not in self.probes:
            raise InvalidInput(f"unknown probe {probe!r}; registered: {', '.join(sorted(self.probes))}")
        return self.probes[probe]


REGISTRY = Registry()
MEASURES = REGISTRY.measures
PROBES = REGISTRY.probes


def register_measure(name: str, probe: str, compute: Callable[[Request], ProbeResult],
                     network_key: str | None = None, side_note: str = "", *,
                     row_p_key: str | None = None, row_effect_key: str | None = None,
                     splittable: bool | None = None) -> Measure:
    """Register (or replace) a measure in the default registry (see :class:`Registry`)."""
    return REGISTRY.register(name, probe, compute, network_key, side_note, row_p_key=row_p_key,
                             row_effect_key=row_effect_key, splittable=splittable)


def get_measure(name: str) -> Measure:
    return REGISTRY.measure(name)


#: the built-in probes whose compute functions split their work into units that several processes
#: can share (what :meth:`Registry.is_splittable` answers while they are registered)
SPLITTABLE = ("lesion", "clusterability", "visualization")


# --------------------------------------------------------------------------- built-in measures

def _lesion(req: Request) -> ProbeResult:
    settings = dict(req.settings)
    if settings.pop("protocol", "paper") == "robust":
        from modtest.probes.ensemble import robust_lesion_study

        return robust_lesion_study(req.model, req.x, req.y, k=req.k, seed=req.seed, executor=req.executor,
                                   partitions=req.partitions, **settings)
    from modtest.probes.lesion import lesion_study

    return lesion_study(req.model, req.partition, req.x, req.y, seed=req.seed, executor=req.executor,
                        **settings)


def _visualization(req: Request) -> ProbeResult:
    settings = dict(req.settings)
    if settings.pop("protocol", "paper") == "robust":
        from modtest.probes.ensemble import robust_visualization_study

        return robust_visualization_study(req.model, k=req.k, seed=req.seed, executor=req.executor,
                                          partitions=req.partitions, **settings)
    from modtest.probes.visualization import visualization_study

    return visualization_study(req.model, req.partition, seed=req.seed, executor=req.executor, **settings)


def _clusterability(req: Request) -> ProbeResult:
    settings = dict(req.settings)
    if settings.pop("protocol", "paper") == "robust":
        from modtest.probes.clusterability import sequential_clusterability

        return sequential_clusterability(req.model, k=req.k, seed=req.seed, executor=req.executor, **settings)
    from modtest.probes.clusterability import as_probe_result, clusterability

    r = clusterability(req.model, k=req.k, seed=req.seed, executor=req.executor, **settings)
    return as_probe_result(r, req.settings)


def register_builtin_measures() -> None:
    register_measure("clusterability", "clusterability", _clusterability, "clusterability",
                     "n-cut lower than within-layer weight shuffles", splittable=True)
    register_measure("importance", "lesion", _lesion, "importance",
                     "lesioning the sub-cluster drops accuracy more than random same-layer units",
                     row_p_key="p_importance", row_effect_key="drop", splittable=True)
    register_measure("output_coherence", "lesion", _lesion, "output_coherence",
                     "lesioning the sub-cluster hurts some classes more than others (class-wise range)",
                     row_p_key="p_coherence", row_effect_key="coherence", splittable=True)
    register_measure("input_coherence", "visualization", _visualization, "input_coherence",
                     "one image activates the whole sub-cluster better than random units",
                     row_p_key="p_input", row_effect_key="score", splittable=True)
    register_measure("visualization_output_coherence", "visualization", _visualization,
                     "output_coherence", "images of the sub-cluster give low-entropy outputs",
                     row_p_key="p_output", row_effect_key="entropy", splittable=True)
    register_measure("activational_variance", "visualization", _visualization,
                     "activational_variance", "sub-cluster activations are more even than random",
                     row_p_key="p_variance", row_effect_key="variance", splittable=True)


register_builtin_measures()
