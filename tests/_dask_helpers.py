"""Probes for the Dask tests, imported by the Dask workers too (tests/ is on their PYTHONPATH)."""
from __future__ import annotations

import os
import signal
from pathlib import Path

from modtest.probes.lesion import LesionProbe


class KillOnceLesionProbe(LesionProbe):
    """The lesion probe, except that the first worker to start the unit of sub-cluster ``victim``
    writes its pid to ``marker`` and kills its own process (SIGKILL: no clean-up, as a crash or the
    out-of-memory killer would); whoever runs that unit next finds the marker and computes it."""

    def __init__(self, victim: str, marker: str):
        super().__init__()
        self.victim, self.marker = victim, marker

    def compute_many(self, ctx, items, progress=None):
        marker = Path(self.marker)
        if any(it["tag"] == self.victim for it in items) and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
        return super().compute_many(ctx, items, progress)
