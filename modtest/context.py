"""The audit context: what an assertion uses when it is not told.

One object holds the defaults (k, alpha, seed, data, trust, per-probe settings), the claim collector,
the probe store and the partitions of the running audit. The pytest session installs its own for the
length of the session (:func:`activate`); outside pytest a plain one is created on first use, in
which claims are judged alone. Tests make their own with :func:`using` instead of patching modules.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from modtest.options import DEFAULTS


@dataclass
class Defaults:
    """What an assertion uses when it is not told: k, alpha, seed, data, trust, protocol settings."""

    k: int = DEFAULTS["k"]
    alpha: float = DEFAULTS["alpha"]
    seed: int = DEFAULTS["seed"]
    data: Callable[[Any], tuple] | None = None  # model -> (x, y), checked against that model
    trust: bool = False
    settings: dict = field(default_factory=dict)  # per probe: {"lesion": {...}, ...}
    protocol: str = DEFAULTS["protocol"]
    ensemble: int = DEFAULTS["ensemble"]
    max_random: int = DEFAULTS["max_random"]

    def probe_settings(self, probe: str, alpha: float) -> dict:
        """The settings ``probe`` runs with for a claim at ``alpha``: the per-probe settings and the
        protocol's (an assertion and a prefetch ask for the same, so they share one cache entry)."""
        settings = dict(self.settings.get(probe, {}))
        if self.protocol == "robust" and probe in ("lesion", "clusterability", "visualization"):
            settings.setdefault("protocol", "robust")
            settings.setdefault("alpha", alpha)
            if probe == "lesion":
                settings.setdefault("ensemble", self.ensemble)
                settings.setdefault("max_random", self.max_random)
            if probe == "visualization":  # images cost far more than lesions: an eighth of the cap
                settings.setdefault("ensemble", self.ensemble)
                settings.setdefault("max_random", max(9, self.max_random // 8))
        return settings


class AuditContext:
    """Defaults, claim collector (None: claims are judged alone), probe store, partitions, and the
    progress reporter long probes report to (:mod:`modtest.progress`; default: live lines on a
    terminal, nothing otherwise)."""

    def __init__(self, defaults: Defaults | None = None, collector=None, store=None, progress=None):
        from modtest.probes.store import ProbeStore
        from modtest.progress import default_reporter

        self.defaults = defaults or Defaults()
        self.progress = progress if progress is not None else default_reporter()
        self.collector = collector
        self.partitions: dict[tuple, Any] = {}
        self._adapters: dict[int, tuple] = {}
        self.store = store if store is not None else ProbeStore()
        self.store.partitions = self.partition

    def adapter(self, model):
        """The adapter of ``model``, made once per model object in this context (so its fingerprint,
        a hash of every weight, is computed once)."""
        from modtest.frameworks import ModelAdapter, adapt

        if isinstance(model, ModelAdapter):
            return model
        hit = self._adapters.get(id(model))
        if hit is None or hit[0] is not model:
            hit = (model, adapt(model))
            self._adapters[id(model)] = hit
        return hit[1]

    def partition(self, model, k: int, seed: int):
        """``cluster(model, k, seed)``, computed once per (model hash, k, seed) in this context."""
        from modtest.cluster import cluster

        adapter = self.adapter(model)
        key = (adapter.fingerprint(), int(k), int(seed))
        if key not in self.partitions:
            self.partitions[key] = cluster(adapter, k=k, seed=seed)
        return self.partitions[key]


_CURRENT: AuditContext | None = None


def current() -> AuditContext:
    """The running audit's context (a plain one outside pytest, made on first use)."""
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = AuditContext()
    return _CURRENT


def activate(context: AuditContext | None) -> AuditContext | None:
    """Install ``context`` (None: a fresh plain one on next use); returns the previous one."""
    global _CURRENT
    old, _CURRENT = _CURRENT, context
    return old


@contextlib.contextmanager
def using(context: AuditContext):
    """``with using(AuditContext(...)):`` -- assertions inside see ``context``."""
    old = activate(context)
    try:
        yield context
    finally:
        activate(old)
