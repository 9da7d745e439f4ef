"""One interface for every probe: the units of work it needs, computing one unit, combining them.

A probe (lesion, visualization, clusterability, double lesion) is split into *units* whose results
are JSON values. ``units(ctx)`` lists them, ``compute(ctx, item)`` computes one, ``combine(ctx,
values)`` turns the values (in unit order) into the probe's result. Where the units run is the
executor's business (:mod:`modtest.executors`): in this process, shared with other processes through
a folder (pytest-xdist workers), or on a Dask cluster. A unit's value is a pure function of the
probe's identity and the unit, so the result never depends on where or in which order units ran.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from modtest.results import SubCluster

Progress = Callable[[int], None]


@dataclass(frozen=True)
class Unit:
    """One unit of work: ``key`` (JSON-able) names it within its probe; ``item`` is what
    :meth:`Probe.compute` gets (plain, picklable values); ``work`` counts it for progress bars."""

    key: tuple
    item: Any
    work: int = 1


@dataclass(eq=False)
class ProbeContext:
    """What a probe runs on: the model (an adapter), the data, the sub-clusters and the settings.

    Picklable (it travels to Dask workers); per-process resources such as a lesion engine with its
    activation cache are kept in :meth:`resource` and are not pickled.
    """

    model: Any  # a modtest.frameworks.ModelAdapter
    x: np.ndarray | None = None
    y: np.ndarray | None = None
    subclusters: list[SubCluster] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    _resources: dict = field(default_factory=dict, repr=False)
    _data_fp: str | None = field(default=None, repr=False)

    def resource(self, name: str, factory: Callable[[], Any]):
        """A per-process object built once from ``factory`` (e.g. a lesion engine)."""
        if name not in self._resources:
            self._resources[name] = factory()
        return self._resources[name]

    @property
    def model_fp(self) -> str:
        return self.model.fingerprint()

    @property
    def data_fp(self) -> str:
        if self._data_fp is None:
            from modtest.store import data_hash

            self._data_fp = data_hash(np.zeros(0) if self.x is None else self.x,
                                      np.zeros(0) if self.y is None else self.y)
        return self._data_fp

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_resources"] = {}
        return state


class Probe(ABC):
    """A probe as three small steps; subclasses set :attr:`name` and implement them."""

    name: ClassVar[str] = ""

    def identity(self, ctx: ProbeContext) -> tuple:
        """What every unit's value depends on besides the unit itself (it names shared units)."""
        return (ctx.model_fp, ctx.data_fp, sorted(ctx.settings.items()))

    @abstractmethod
    def units(self, ctx: ProbeContext) -> list[Unit]:
        """The units of work, in a fixed order."""

    @abstractmethod
    def compute(self, ctx: ProbeContext, item, progress: Progress | None = None):
        """The JSON value of one unit (``progress(n)`` as work finishes, optional)."""

    def compute_many(self, ctx: ProbeContext, items: list, progress: Progress | None = None) -> list:
        """Values of several units in this process; a probe may batch them (same values)."""
        return [self.compute(ctx, item, progress) for item in items]

    @abstractmethod
    def combine(self, ctx: ProbeContext, values: list):
        """The probe's result from the values of :meth:`units`, in that order."""


def run_probe(probe: Probe, ctx: ProbeContext, executor=None, progress: Progress | None = None):
    """Units -> values (on ``executor``: None runs them here) -> the combined result."""
    from modtest.executors import as_executor

    units = probe.units(ctx)
    values = as_executor(executor).map(probe, ctx, units, progress)
    return probe.combine(ctx, values)
