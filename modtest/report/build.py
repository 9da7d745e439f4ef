"""Assemble a :class:`~modtest.report.schema.Report` from what an audit computed: the probe store's
runs, the partitions, the claims, the model and data identities, and the timings."""
from __future__ import annotations

import time

from modtest.report.schema import Report, claim_entry, partition_summary, probe_entry


def probe_entries(store) -> list[dict]:
    """The schema's ``probes`` entries for every probe run kept in ``store``."""
    out = []
    for key, run in list(store.memory.items()):
        meta = store.meta.get(key, {})
        entry = probe_entry(run.result, k=meta.get("k"), seed=meta.get("seed"),
                            model_hash=meta.get("model_hash"), data_hash=meta.get("data_hash"),
                            settings=meta.get("settings"), source=run.source)
        entry["key"] = key
        entry["wall_seconds"] = float(run.seconds)
        out.append(entry)
    return out


def partition_entries(partitions: dict) -> list[dict]:
    """Summaries of the partitions of an audit context (``{(model hash, k, seed): Partition}``)."""
    out = []
    for (mh, _k, _s), part in list(partitions.items()):
        try:
            out.append(partition_summary(part, mh))
        except Exception:  # noqa: BLE001 - a summary must never break the session
            continue
    return out


def merge_unique(entries, ident) -> list[dict]:
    """``entries`` without repeats (by ``ident(entry)``), first seen kept."""
    out, seen = [], set()
    for e in entries:
        key = ident(e)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def build_report(*, source: str, context, model: dict, data: dict, k: int, seed: int, alpha: float,
                 started: float | None = None, extra_audits=(), protocol: str | None = None,
                 backend: str | None = None) -> Report:
    """The report of an audit context (a pytest session's, with what xdist workers sent in
    ``extra_audits``: ``[{"probes": [...], "partitions": [...]}]``)."""
    probes = merge_unique(probe_entries(context.store) + [e for w in extra_audits for e in w.get("probes", [])],
                          lambda e: e.get("key"))
    probes.sort(key=lambda e: (str(e.get("probe")), e.get("k") or 0, str(e.get("key"))))
    parts = merge_unique(partition_entries(context.partitions)
                         + [p for w in extra_audits for p in w.get("partitions", [])],
                         lambda p: (p.get("model_hash"), p.get("k"), p.get("seed")))
    col = context.collector
    per_probe: dict[str, float] = {}
    for e in probes:
        name = f"{e.get('probe')}[k={e.get('k')}]"
        per_probe[name] = per_probe.get(name, 0.0) + float(e.get("wall_seconds") or 0.0)
    total = time.perf_counter() - started if started else None
    return Report.new(source=source, backend=backend, model=model, data=data, k=k, seed=seed, alpha=alpha,
                      protocol=protocol or context.defaults.protocol,
                      correction=col.method if col is not None else "none", partitions=parts, probes=probes,
                      claims=[claim_entry(c) for c in (col.claims if col is not None else [])],
                      timings={"total_seconds": total, "probes": per_probe})
