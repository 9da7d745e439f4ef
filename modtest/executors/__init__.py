"""Where probe work units run: one ``map(probe, ctx, units, progress) -> values`` per executor.

* :class:`SerialExecutor` -- in this process (the default);
* :class:`~modtest.executors.workshare.WorkShare` -- shared with every process using the same folder
  (pytest-xdist workers on one machine);
* :class:`~modtest.executors.dask.DaskExecutor` -- on a ``dask.distributed`` cluster.

The values are the same whichever runs them (see :mod:`modtest.probes.base`).
"""
from __future__ import annotations

import os

from modtest.errors import InvalidInput

__all__ = ["SerialExecutor", "as_executor"]


class SerialExecutor:
    """Every unit in this process, batched where the probe can (``Probe.compute_many``)."""

    name = "serial"

    def map(self, probe, ctx, units, progress=None) -> list:
        return probe.compute_many(ctx, [u.item for u in units], progress)

    def __repr__(self) -> str:
        return "SerialExecutor()"


SERIAL = SerialExecutor()


def as_executor(executor):
    """None (serial), an executor, a workshare folder path, or a Dask client/address -> an executor."""
    if executor is None:
        return SERIAL
    if type(executor).__module__.split(".")[0] == "distributed":  # a Client or a cluster (its .map is Dask's)
        from modtest.executors.dask import DaskExecutor

        return DaskExecutor(executor)
    if hasattr(executor, "map") and callable(executor.map) and not isinstance(executor, (str, os.PathLike)):
        return executor
    if isinstance(executor, (str, os.PathLike)):
        from modtest.executors.workshare import WorkShare

        return WorkShare(executor)
    raise InvalidInput(f"executor must be None, a folder path or an executor, got {type(executor).__name__}")
