"""The audit context: what an assertion uses when it is not told.

One object holds the defaults (k, alpha, seed, data, trust, per-probe settings), the claim collector,
the probe store, the registry of measures and the partitions of the running audit. A pytest session
installs its own before its conftest files are imported and restores the previous one when it ends
(so nothing a session registers outlives it); outside pytest a plain one, the process default, is
created on first use, in which claims are judged alone. Code that needs its own makes one and runs
inside :func:`using`; nothing patches module state.
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

    def probe_settings(self, probe: str, alpha: float, registry=None) -> dict:
        """The settings ``probe`` runs with for a claim at ``alpha``: the per-probe settings and, under
        the robust protocol, those its declaration's robust variant needs (``registry``: where the
        declaration is read; an assertion and a prefetch ask for the same, so they share one cache
        entry)."""
        settings = dict(self.settings.get(probe, {}))
        declaration = registry.declarations.get(probe) if registry is not None else None
        if self.protocol == "robust" and declaration is not None and declaration.robust is not None:
            settings.setdefault("protocol", "robust")
            settings.setdefault("alpha", alpha)
            for key, value in (declaration.robust_settings(self) if declaration.robust_settings else {}).items():
                settings.setdefault(key, value)
        return settings


class AuditContext:
    """Defaults, claim collector (None: claims are judged alone), probe store, registry of measures,
    partitions, and the progress reporter long probes report to (:mod:`modtest.progress`; default:
    live lines on a terminal, nothing otherwise).

    ``registry``: the measures this audit knows (:class:`modtest.probes.Registry`); default: the
    store's when it was given one, else the active context's (the same object: a measure registered
    there is seen here), else a fresh registry of the built-in measures.
    """

    def __init__(self, defaults: Defaults | None = None, collector=None, store=None, progress=None,
                 registry=None):
        from modtest.probes import builtin_registry
        from modtest.probes.store import ProbeStore
        from modtest.progress import default_reporter

        self.defaults = defaults or Defaults()
        self.progress = progress if progress is not None else default_reporter()
        self.collector = collector
        self.partitions: dict[tuple, Any] = {}
        self._adapters: dict[int, tuple] = {}
        if registry is None and store is not None:
            registry = store.own_registry
        if registry is None:
            registry = _CURRENT.registry if _CURRENT is not None else builtin_registry()
        self.registry = registry
        self.store = store if store is not None else ProbeStore(registry=registry)
        if self.store.own_registry is None:
            self.store.registry = registry
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


#: the active context: set only by :func:`activate` (a pytest session, :func:`using`), which hands
#: back the previous one to restore
_CURRENT: AuditContext | None = None


def current() -> AuditContext:
    """The running audit's context (a plain one outside pytest, made on first use)."""
    global _CURRENT
    if _CURRENT is None:
        _CURRENT = AuditContext()
    return _CURRENT


def current_or_none() -> AuditContext | None:
    """The active context, or None before any was made or installed."""
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
