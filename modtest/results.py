"""Plain result objects shared by every stage: partitions, probe results, network results, claims.

All are dataclasses over numpy arrays / builtins with ``to_dict``/``from_dict`` so that they can be
written as JSON (never pickled) and read back equal.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np


def _jsonable(obj: Any) -> Any:
    """Turn numpy scalars/arrays (recursively) into JSON-ready builtins."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and (obj != obj or obj in (float("inf"), float("-inf"))):
        return None if obj != obj else (1e308 if obj > 0 else -1e308)
    return obj


@dataclass(frozen=True)
class SubCluster:
    """The units of one cluster that lie in one layer (the paper's "sub-cluster").

    ``units`` are indices into the layer's units (neurons of a dense layer, feature maps of a conv
    layer); ``fraction`` is ``size / layer_size``.
    """

    layer: str
    cluster: int
    units: tuple[int, ...]
    layer_size: int

    @property
    def size(self) -> int:
        return len(self.units)

    @property
    def fraction(self) -> float:
        return self.size / self.layer_size

    @property
    def name(self) -> str:
        """``layer-cluster``, the label the paper's figures use."""
        return f"{self.layer}-{self.cluster}"

    def to_dict(self) -> dict:
        return {"cluster": self.cluster, "layer": self.layer, "units": list(self.units),
                "size": self.size, "fraction": self.fraction, "layer_size": self.layer_size}

    @classmethod
    def from_dict(cls, d: dict) -> SubCluster:
        return cls(layer=d["layer"], cluster=int(d["cluster"]), units=tuple(int(u) for u in d["units"]),
                   layer_size=int(d["layer_size"]))


def subclusters_of(partition) -> list[SubCluster]:
    """The sub-clusters of a Partition (or a plain list of SubCluster), checked."""
    from modtest.errors import InvalidInput

    subs = getattr(partition, "subclusters", partition)
    try:
        subs = list(subs)
    except TypeError:
        raise InvalidInput(f"partition must be a Partition or a list of SubCluster, "
                           f"got {type(partition).__name__}") from None
    for s in subs:
        if not isinstance(s, SubCluster):
            raise InvalidInput(f"partition must hold SubCluster objects, got {type(s).__name__}")
    return subs


def within_size_limits(sub: SubCluster, min_size: int, max_fraction: float) -> bool:
    """The paper's size filter: at least ``min_size`` units and at most ``max_fraction`` of the layer."""
    return sub.size >= min_size and sub.fraction <= max_fraction + 1e-12


@dataclass(frozen=True)
class ProbeResult:
    """Outcome of one probe on one partition.

    ``rows``: one dict per tested sub-cluster (layer, cluster, units, size, fraction, the statistic of
    the true set, the statistics of its random controls, p-values, ...).
    ``network``: per measure (e.g. ``"importance"``), the network-level combination
    ``{"fisher_p", "chi2_p", "n", "n_excluded", ...}``.
    ``settings``: everything that produced the result (seed, n_random, engine, thresholds...).
    """

    probe: str
    rows: list[dict]
    network: dict[str, dict]
    settings: dict = field(default_factory=dict)
    extras: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> ProbeResult:
        return cls(probe=d["probe"], rows=list(d["rows"]), network=dict(d["network"]),
                   settings=dict(d.get("settings", {})), extras=dict(d.get("extras", {})))

    def to_json(self, path=None, **kw) -> str:
        text = json.dumps(self.to_dict(), indent=kw.pop("indent", 2), **kw)
        if path is not None:
            from modtest._io import atomic_write_text

            atomic_write_text(path, text)
        return text


@dataclass
class Claim:
    """One modularity assertion: what was claimed, its statistic, raw p, corrected p and verdict.

    ``p_low``/``p_high`` bound the p-value's noise (Monte Carlo error and partition ensemble in the
    robust protocol; equal to ``p_raw`` in the paper's). ``outcome`` is ``"pass"``, ``"fail"`` or
    ``"inconclusive"`` (None until judged); ``passed`` is True only for a pass.
    """

    name: str
    measure: str
    method: str
    statistic: float
    p_raw: float
    alpha: float
    n_subclusters: int
    p_corrected: float | None = None
    correction: str = "none"
    passed: bool | None = None
    detail: str = ""
    nodeid: str = ""
    probe_seconds: float = 0.0
    p_low: float | None = None
    p_high: float | None = None
    p_low_corrected: float | None = None
    p_high_corrected: float | None = None
    outcome: str | None = None
    k: int | None = None
    seed: int | None = None
    protocol: str = "paper"
    #: why the claim could not show anything, with what to try (:mod:`modtest.diagnose`)
    hints: list = field(default_factory=list)
    #: what the probe behind the claim evaluated (lesioned networks, lesioned examples, images), its
    #: ``source`` ("computed" for this claim; "memory" when computed for an earlier claim and shared)
    #: and its wall ``seconds`` here
    cost: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict) -> Claim:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of the raw p-value; both ``p_raw`` without noise bounds."""
        lo = self.p_raw if self.p_low is None else self.p_low
        hi = self.p_raw if self.p_high is None else self.p_high
        return lo, hi
