"""The versioned result schema of one modularity audit, and reading it back.

One audit (a pytest session with ``--modtest-json``, or ``modtest audit --json``) is one JSON object:

``schema_version``  int, :data:`SCHEMA_VERSION`
``kind``            ``"modtest-audit"``
``source``          ``"pytest"`` or ``"cli"``
``created``         UTC time, ISO 8601
``model``           ``{"path", "name", "hash"}`` (hash: :meth:`modtest.frameworks.ModelAdapter.fingerprint`, or None)
``data``            ``{"path", "hash", "n_examples"}`` (hash: :func:`modtest.store.data_hash`)
``k``, ``seed``, ``alpha``, ``correction``, ``protocol``   the session's (or command's) settings
``versions``        modtest, python, keras, backend, numpy, scipy, sklearn, matplotlib
``partitions``      one summary per clustering used: k, seed, n-cut, cluster sizes per layer
``probes``          one entry per probe run: probe, k, seed, model/data hash, settings, ``network``
                    (network-level statistics), ``rows`` (one per tested sub-cluster), ``extras``
                    (taxonomy counts, base accuracy, shuffled n-cuts, ...), seconds
``claims``          every assertion: raw and corrected p with their noise bounds, alpha, k, seed,
                    protocol, verdict (``"pass"``, ``"fail"`` or ``"inconclusive"``)
``n_claims``, ``n_failed``, ``n_inconclusive``
``double_lesion``   :func:`modtest.double_lesion_study` output (pairs, matrix) or None
``visualizations``  ``[{"title", "png"}]`` (base64 PNG grids) - may be empty
``timings``         ``{"total_seconds", "probes": {probe: seconds}, "phases": {"clustering", "lesions",
                    "visualization", "other"}}`` (seconds of this audit's own work: a probe read from the
                    cache costs nothing here)
``cost``            ``{"lesioned_networks", "lesioned_examples", "images", "probes": [...]}``: what the
                    audit evaluated (each probe run counted once, however many claims read it); each
                    claim's ``cost`` says what its probe evaluated and whether it was computed for it

Other top-level keys (``modtest audit --json`` keeps ``ncut``, ``subclusters``, ``importance``,
``output_coherence`` for older readers) are kept in :attr:`Report.extra` and written back.
Reading is JSON only (never pickle).
"""
from __future__ import annotations

import json
import math
import platform
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from modtest.errors import ReportError

SCHEMA_VERSION = 2
#: versions :func:`load_report` reads (1: before the robust protocol, claims pass or fail)
READABLE_VERSIONS = (1, 2)
KIND = "modtest-audit"

#: Row keys left out of the schema: large, and reproducible from the seed.
_DROP_ROW_KEYS = ("random_units",)
#: Extras left out: duplicates of row data.
_DROP_EXTRAS = ("figure6",)



def _jsonable(obj: Any) -> Any:
    """JSON-ready builtins (numpy scalars/arrays turned into lists, NaN into None)."""
    from modtest.results import _jsonable as base

    return base(obj)


def library_versions(backend: str | None = None) -> dict:
    """Versions of modtest and the libraries behind an audit, without importing them; ``backend``:
    what ran the audited model (its adapter's :attr:`~modtest.frameworks.ModelAdapter.backend`;
    None: the Keras backend this process would use)."""
    from importlib import metadata

    from modtest import __version__

    out = {"modtest": __version__, "python": platform.python_version()}
    for key, dist in (("keras", "keras"), ("tensorflow", "tensorflow"),
                      ("jax", "jax"), ("torch", "torch"), ("numpy", "numpy"), ("scipy", "scipy"),
                      ("sklearn", "scikit-learn"), ("matplotlib", "matplotlib")):
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            if dist == "tensorflow":
                try:
                    out[key] = metadata.version("tensorflow-cpu")
                except metadata.PackageNotFoundError:
                    out[key] = None
            else:
                out[key] = None
    if backend is None:
        from modtest.frameworks import default_backend

        backend = default_backend()
    out["backend"] = str(backend)
    return out


def partition_summary(partition, model_hash: str | None = None) -> dict:
    """A small summary of a :class:`modtest.cluster.Partition`: n-cut and cluster sizes per layer."""
    import numpy as np

    g = partition.graph
    layers = []
    for name, size, role in zip(g.layer_names, g.layer_sizes, g.roles):
        lab = np.asarray(partition.layer_labels(name))
        sizes = {str(int(c)): int((lab == c).sum()) for c in sorted(set(lab.tolist()))}
        layers.append({"name": name, "units": int(size), "role": role, "cluster_sizes": sizes})
    return {"model_hash": model_hash, "k": int(partition.k), "seed": int(partition.seed),
            "ncut": float(partition.ncut), "n_nodes": int(partition.n_nodes),
            "n_isolated": int((np.asarray(partition.labels) < 0).sum()), "layers": layers,
            "seconds": None if getattr(partition, "seconds", None) is None else float(partition.seconds)}


def probe_entry(result, *, k=None, seed=None, model_hash=None, data_hash=None, settings=None,
                seconds=None, source: str = "computed") -> dict:
    """One ``probes`` entry of the schema from a :class:`modtest.results.ProbeResult`."""
    d = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    rows = [{key: v for key, v in r.items() if key not in _DROP_ROW_KEYS} if isinstance(r, dict) else r
            for r in d.get("rows", [])]
    extras = {key: v for key, v in (d.get("extras") or {}).items() if key not in _DROP_EXTRAS}
    st = dict(d.get("settings") or {})
    if k is None:
        k = st.get("k")
    if seed is None:
        seed = st.get("partition_seed", st.get("seed"))
    if seconds is None:
        seconds = extras.get("seconds")
    return _jsonable({
        "probe": d.get("probe"), "k": k, "seed": seed,
        "model_hash": model_hash or st.get("model_hash"), "data_hash": data_hash,
        "settings": settings if settings is not None else st, "result_settings": st,
        "network": d.get("network", {}), "rows": rows, "extras": extras,
        "seconds": seconds, "source": source,
    })


def probe_cost(result) -> dict:
    """What one probe run evaluated: ``{"lesioned_networks", "lesioned_examples"}`` for a lesion
    probe, ``{"images"}`` for a visualization probe, ``{}`` otherwise. Read from ``extras["cost"]``
    (written by the probes); a lesion result written before the counters is counted from its rows
    (true set plus controls each: exact for the paper's protocol)."""
    try:
        return _probe_cost(result)
    except Exception:  # noqa: BLE001 - a cost summary must never break an assertion or a report
        return {}


def _probe_cost(result) -> dict:
    d = result.to_dict() if hasattr(result, "to_dict") else dict(result)
    extras = d.get("extras") or {}
    if isinstance(extras.get("cost"), dict):
        return dict(extras["cost"])
    if d.get("probe") == "lesion":
        n = extras.get("n_lesions")
        if n is None:
            n = sum(1 + len(r.get("random_drops") or []) for r in d.get("rows") or [])
        n_ex = (d.get("settings") or {}).get("n_examples")
        return {"lesioned_networks": int(n), "lesioned_examples": None if n_ex is None else int(n) * int(n_ex)}
    if d.get("probe") == "visualization" and "n_images" in extras:
        return {"images": int(extras["n_images"])}
    return {}


def claim_entry(claim) -> dict:
    """One ``claims`` entry: the claim's fields and its ``verdict`` (pass, fail or inconclusive)."""
    d = claim.to_dict() if hasattr(claim, "to_dict") else dict(claim)
    d["verdict"] = d.get("outcome") or ("pass" if d.get("passed") else "fail")
    return _jsonable(d)


@dataclass
class Report:
    """One audit, as written to JSON (see the module docstring for the keys)."""

    schema_version: int = SCHEMA_VERSION
    kind: str = KIND
    source: str = "pytest"
    created: str = ""
    model: dict = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    k: int | None = None
    seed: int | None = None
    alpha: float | None = None
    correction: str | None = None
    protocol: str | None = None
    versions: dict = field(default_factory=dict)
    partitions: list = field(default_factory=list)
    probes: list = field(default_factory=list)
    claims: list = field(default_factory=list)
    n_claims: int = 0
    n_failed: int = 0
    n_inconclusive: int = 0
    double_lesion: dict | None = None
    visualizations: list = field(default_factory=list)
    timings: dict = field(default_factory=dict)
    cost: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)

    # ------------------------------------------------------------------ building
    @classmethod
    def new(cls, source: str = "pytest", backend: str | None = None, **kw) -> Report:
        r = cls(source=source, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                versions=library_versions(backend), **kw)
        r.refresh_counts()
        return r

    def refresh_counts(self) -> None:
        self.n_claims = len(self.claims)
        self.n_failed = sum(1 for c in self.claims if c.get("verdict") == "fail")
        self.n_inconclusive = sum(1 for c in self.claims if c.get("verdict") == "inconclusive")

    # ------------------------------------------------------------------ reading
    def probe(self, name: str, k: int | None = None) -> dict | None:
        """The first probe entry named ``name`` (at ``k`` when given), or None."""
        for p in self.probes:
            if p.get("probe") == name and (k is None or p.get("k") == k):
                return p
        return None

    @property
    def lesion(self) -> dict | None:
        """The lesion probe at the report's k (else the first lesion probe)."""
        return self.probe("lesion", self.k) or self.probe("lesion")

    @property
    def partition(self) -> dict | None:
        """The partition summary at the report's k (else the first), or None."""
        for p in self.partitions:
            if p.get("k") == self.k:
                return p
        return self.partitions[0] if self.partitions else None

    # ------------------------------------------------------------------ (de)serialising
    def to_dict(self) -> dict:
        d = asdict(self)
        extra = d.pop("extra")
        out = {key: v for key, v in extra.items() if key not in d}
        out.update(d)
        return _jsonable(out)

    def to_json(self, path=None) -> str:
        text = json.dumps(self.to_dict(), indent=2, allow_nan=False)
        if path is not None:
            from modtest._io import atomic_write_text

            atomic_write_text(path, text)
        return text

    @classmethod
    def from_dict(cls, d: dict, where: str = "report") -> Report:
        if not isinstance(d, dict):
            raise ReportError(f"{where}: not a modtest report (top level is {type(d).__name__}, "
                              f"not an object)")
        version = d.get("schema_version")
        if version is None:
            raise ReportError(f"{where}: not a modtest report (no schema_version)")
        if version not in READABLE_VERSIONS:
            raise ReportError(f"{where}: schema_version {version!r} is not supported by this modtest "
                              f"(reads versions {', '.join(map(str, READABLE_VERSIONS))}); re-run the audit")
        names = {f.name for f in fields(cls)} - {"extra"}
        kw = {key: d[key] for key in names if key in d}
        for key, typ in (("model", dict), ("data", dict), ("versions", dict), ("timings", dict), ("cost", dict),
                         ("partitions", list), ("probes", list), ("claims", list),
                         ("visualizations", list)):
            if key in kw and not isinstance(kw[key], typ):
                raise ReportError(f"{where}: {key!r} must be a JSON {'object' if typ is dict else 'array'}")
        if any(not isinstance(p, dict) for p in kw.get("probes", [])) or \
                any(not isinstance(c, dict) for c in kw.get("claims", [])):
            raise ReportError(f"{where}: every entry of 'probes' and 'claims' must be an object")
        extra = {key: v for key, v in d.items() if key not in names}
        return cls(**kw, extra=extra)


def load_report(path) -> Report:
    """Read a report written by ``--modtest-json``/``modtest audit --json`` (JSON, never pickle).

    Raises :class:`ReportError` with a one-line message for a missing, unreadable, corrupt or
    wrong-version file.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"report file not found: {p}") from None
    except (OSError, UnicodeDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ReportError(f"cannot read report {p}: {type(exc).__name__}: {first}") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"report {p} is not valid JSON (line {exc.lineno}, column {exc.colno}: "
                          f"{exc.msg})") from None
    return Report.from_dict(d, where=f"report {p}")


def finite(v) -> float | None:
    """``v`` as a float, or None for None/NaN/non-numbers."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f
