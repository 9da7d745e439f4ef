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

The registry belongs to the running audit: :func:`register_measure` registers in the registry of
the active :class:`~modtest.context.AuditContext` (a pytest session's own, made before its conftest
files are imported and dropped when it ends; outside pytest, the process's default context).
:func:`builtin_registry` makes a fresh registry of the built-in measures.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
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


@dataclass(frozen=True)
class MeasureSpec:
    """One measure a probe declares: its name (what ``assert_measure`` and ``--claims`` take), the
    key of its network-level result (default: the name) and the row columns of its per-sub-cluster
    p-value and effect."""

    name: str
    network_key: str | None = None
    side_note: str = ""
    row_p_key: str | None = None
    row_effect_key: str | None = None


@dataclass(frozen=True)
class ProbeDeclaration:
    """A probe, declared once, in its own module (see ``docs/extending.md``).

    ``compute(request)`` runs it under the paper's protocol; ``robust(request)``, when given, under
    the robust protocol (an ensemble of partitions), with the settings ``robust_settings(defaults)``
    adds (``defaults``: the audit's :class:`~modtest.context.Defaults`). ``splittable``: its compute
    functions run their work units on ``request.executor`` (shared with xdist workers and Dask).
    ``uses_data``: False for a probe of the weights only (it gets empty arrays). ``audit``: ``modtest
    audit`` claims its measures by default. ``prefetch``: ``--modtest-prefetch`` may compute it.
    ``row_keys``: the per-sub-cluster columns its rows carry (the report's tables).
    """

    name: str
    compute: Callable[[Request], ProbeResult]
    measures: tuple[MeasureSpec, ...]
    robust: Callable[[Request], ProbeResult] | None = None
    robust_settings: Callable[[Any], dict] | None = None
    splittable: bool = False
    uses_data: bool = True
    audit: bool = False
    prefetch: bool = False
    row_keys: tuple[str, ...] = ()

    def run(self, request: Request) -> ProbeResult:
        """The probe's result for ``request``: its robust variant when the settings say
        ``protocol="robust"`` and it has one, else ``compute`` (the ``protocol`` key is removed)."""
        settings = dict(request.settings)
        protocol = settings.pop("protocol", "paper")
        fn = self.robust if protocol == "robust" and self.robust is not None else self.compute
        return fn(replace(request, settings=settings))


class Registry:
    """Measures by name, the compute function of each probe, which of those split their work into
    units (only those are shared out: xdist workers join them, Dask runs their units), and the
    probes' declarations (:class:`ProbeDeclaration`)."""

    def __init__(self):
        self.measures: dict[str, Measure] = {}
        self.probes: dict[str, Callable[[Request], ProbeResult]] = {}
        self.splittable: set[str] = set()
        self.declarations: dict[str, ProbeDeclaration] = {}

    def declare(self, declaration: ProbeDeclaration) -> ProbeDeclaration:
        """Register (or replace) a declared probe and each of its measures."""
        self.declarations[declaration.name] = declaration
        for m in declaration.measures:
            self.register(m.name, declaration.name, declaration.run, m.network_key, m.side_note,
                          row_p_key=m.row_p_key, row_effect_key=m.row_effect_key,
                          splittable=declaration.splittable)
        return declaration

    def audit_measures(self) -> tuple[str, ...]:
        """The measures ``modtest audit`` claims by default (of probes declared with ``audit=True``)."""
        return tuple(m.name for d in self.declarations.values() if d.audit for m in d.measures
                     if m.name in self.measures)

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

    def copy(self) -> Registry:
        """An independent registry with the same measures, compute functions and splittable probes
        (registering in one does not change the other)."""
        out = Registry()
        out.measures, out.probes, out.splittable = dict(self.measures), dict(self.probes), set(self.splittable)
        out.declarations = dict(self.declarations)
        return out

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


def active_registry() -> Registry:
    """The registry of the running audit (the active :class:`~modtest.context.AuditContext`'s)."""
    from modtest.context import current

    return current().registry


def __getattr__(name):
    """``REGISTRY``, ``MEASURES`` and ``PROBES``: views of the running audit's registry (there is no
    module-level registry to change; see :func:`active_registry`)."""
    if name == "REGISTRY":
        return active_registry()
    if name == "MEASURES":
        return active_registry().measures
    if name == "PROBES":
        return active_registry().probes
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_measure(name: str, probe: str, compute: Callable[[Request], ProbeResult],
                     network_key: str | None = None, side_note: str = "", *,
                     row_p_key: str | None = None, row_effect_key: str | None = None,
                     splittable: bool | None = None) -> Measure:
    """Register (or replace) a measure in the running audit's registry (see :class:`Registry` and
    :func:`active_registry`): under pytest, for that session only."""
    return active_registry().register(name, probe, compute, network_key, side_note, row_p_key=row_p_key,
                                      row_effect_key=row_effect_key, splittable=splittable)


def get_measure(name: str) -> Measure:
    return active_registry().measure(name)


def load_probes(spec: str, registry: Registry | None = None) -> tuple[ProbeDeclaration, ...]:
    """Import the probe module ``spec`` (a dotted module name, or the path of a ``.py`` file: the
    user's own code, run because they named it) and declare every :class:`ProbeDeclaration` it
    holds at module level in ``registry`` (default: the running audit's). Returns them."""
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    text = str(spec).strip()
    try:
        if text.endswith(".py"):
            path = Path(text).expanduser()
            if not path.is_file():
                raise InvalidInput(f"probe module {text}: no such file")
            name = "modtest_probe_" + path.stem
            module = sys.modules.get(name)
            if module is None or Path(getattr(module, "__file__", "")).resolve() != path.resolve():
                loader_spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(loader_spec)
                sys.modules[name] = module
                loader_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(text)
    except ModuleNotFoundError as exc:
        raise InvalidInput(f"probe module {text!r} cannot be imported: {exc}; give a module name on the "
                           f"Python path or a .py file") from None
    found = tuple(v for v in vars(module).values() if isinstance(v, ProbeDeclaration))
    if not found:
        raise InvalidInput(f"probe module {text!r} declares no probe (no module-level ProbeDeclaration); "
                           f"see docs/extending.md")
    registry = registry or active_registry()
    for declaration in found:
        registry.declare(declaration)
    return found


def declare(declaration: ProbeDeclaration) -> ProbeDeclaration:
    """Declare a probe in the running audit's registry (see :class:`ProbeDeclaration`); a probe
    module calls this once, at import."""
    return active_registry().declare(declaration)


#: the built-in probes whose compute functions split their work into units that several processes
#: can share (what :meth:`Registry.is_splittable` answers while they are registered)
SPLITTABLE = ("lesion", "clusterability", "visualization")


# --------------------------------------------------------------------------- built-in probes

def _lesion(req: Request) -> ProbeResult:
    from modtest.probes.lesion import lesion_study

    return lesion_study(req.model, req.partition, req.x, req.y, seed=req.seed, executor=req.executor,
                        **req.settings)


def _robust_lesion(req: Request) -> ProbeResult:
    from modtest.probes.ensemble import robust_lesion_study

    return robust_lesion_study(req.model, req.x, req.y, k=req.k, seed=req.seed, executor=req.executor,
                               partitions=req.partitions, **req.settings)


def _visualization(req: Request) -> ProbeResult:
    from modtest.probes.visualization import visualization_study

    return visualization_study(req.model, req.partition, seed=req.seed, executor=req.executor, **req.settings)


def _robust_visualization(req: Request) -> ProbeResult:
    from modtest.probes.ensemble import robust_visualization_study

    return robust_visualization_study(req.model, k=req.k, seed=req.seed, executor=req.executor,
                                      partitions=req.partitions, **req.settings)


def _clusterability(req: Request) -> ProbeResult:
    from modtest.probes.clusterability import as_probe_result, clusterability

    r = clusterability(req.model, k=req.k, seed=req.seed, executor=req.executor, **req.settings)
    return as_probe_result(r, req.settings)


def _sequential_clusterability(req: Request) -> ProbeResult:
    from modtest.probes.clusterability import sequential_clusterability

    return sequential_clusterability(req.model, k=req.k, seed=req.seed, executor=req.executor, **req.settings)


#: the built-in probes, each declared once: what the registry, the store (splittable), the
#: assertions and the audit (robust variant and its settings), the CLI (``--claims``) and the
#: session (``--modtest-prefetch``) read
BUILTIN = (
    ProbeDeclaration(
        "clusterability", _clusterability,
        (MeasureSpec("clusterability", "clusterability", "n-cut lower than within-layer weight shuffles"),),
        robust=_sequential_clusterability, splittable=True, uses_data=False),
    ProbeDeclaration(
        "lesion", _lesion,
        (MeasureSpec("importance", "importance",
                     "lesioning the sub-cluster drops accuracy more than random same-layer units",
                     row_p_key="p_importance", row_effect_key="drop"),
         MeasureSpec("output_coherence", "output_coherence",
                     "lesioning the sub-cluster hurts some classes more than others (class-wise range)",
                     row_p_key="p_coherence", row_effect_key="coherence")),
        robust=_robust_lesion, splittable=True, audit=True, prefetch=True,
        robust_settings=lambda d: {"ensemble": d.ensemble, "max_random": d.max_random},
        row_keys=("drop", "p_importance", "coherence", "p_coherence", "category")),
    ProbeDeclaration(
        "visualization", _visualization,
        (MeasureSpec("input_coherence", "input_coherence",
                     "one image activates the whole sub-cluster better than random units",
                     row_p_key="p_input", row_effect_key="score"),
         MeasureSpec("visualization_output_coherence", "output_coherence",
                     "images of the sub-cluster give low-entropy outputs", row_p_key="p_output",
                     row_effect_key="entropy"),
         MeasureSpec("activational_variance", "activational_variance",
                     "sub-cluster activations are more even than random", row_p_key="p_variance",
                     row_effect_key="variance")),
        # images cost far more than lesions: an eighth of the cap
        robust=_robust_visualization, splittable=True, prefetch=True,
        robust_settings=lambda d: {"ensemble": d.ensemble, "max_random": max(9, d.max_random // 8)},
        row_keys=("score", "p_input", "entropy", "p_output", "variance", "p_variance")),
)


def builtin_registry() -> Registry:
    """A new registry holding the built-in probes and measures (nothing registered elsewhere)."""
    registry = Registry()
    register_builtin_measures(registry)
    return registry


def register_builtin_measures(registry: Registry | None = None) -> None:
    """Declare the built-in probes in ``registry`` (default: the running audit's)."""
    registry = registry or active_registry()
    for declaration in BUILTIN:
        registry.declare(declaration)
