"""Assemble a :class:`~modtest.report.schema.Report` from what an audit computed: the probe store's
runs, the partitions, the claims, the model and data identities, and the timings."""
from __future__ import annotations

import time

from modtest.report.schema import Report, claim_entry, partition_summary, probe_cost, probe_entry


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
                      timings={"total_seconds": total, "probes": per_probe, "phases": phases(probes, parts, total)},
                      cost=audit_cost(probes))


#: the phases of an audit's time, by probe (the partitions' own clustering is counted from their summaries;
#: the clusterability probe re-clusters shuffled weights)
_PHASE_OF = {"lesion": "lesions", "double_lesion": "lesions", "visualization": "visualization",
             "clusterability": "clustering"}


def phases(probes: list[dict], partitions: list[dict], total: float | None) -> dict:
    """Where an audit's time went: ``{"clustering", "lesions", "visualization", "other"}`` seconds.

    Clustering: every partition clustered in this audit (``seconds`` of its summary; the robust
    protocol's ensemble included). Lesions and visualization: the probes computed in this audit (their
    ``extras["seconds"]``, clustering excluded; a probe read from the cache costs nothing here).
    Other: the rest of ``total`` (loading, the clusterability shuffles, the claims, the report)."""
    out = {"clustering": float(sum(float(p.get("seconds") or 0.0) for p in partitions)),
           "lesions": 0.0, "visualization": 0.0}
    for e in probes:
        phase = _PHASE_OF.get(str(e.get("probe")))
        if phase is None or e.get("source", "computed") != "computed":
            continue
        secs = (e.get("extras") or {}).get("seconds")
        out[phase] += float(secs if secs is not None else e.get("wall_seconds") or 0.0)
    out["other"] = None if total is None else max(0.0, float(total) - sum(out.values()))
    return out


def audit_cost(probes: list[dict]) -> dict:
    """What an audit evaluated: lesioned networks, lesioned examples and rendered images summed over
    its probe runs (each counted once, however many claims read it), and one entry per run."""
    per, totals = [], {"lesioned_networks": 0, "lesioned_examples": 0, "images": 0}
    for e in probes:
        c = probe_cost(e)
        if not c:
            continue
        per.append({"probe": e.get("probe"), "k": e.get("k"), "seed": e.get("seed"),
                    "protocol": (e.get("result_settings") or {}).get("protocol", "paper"),
                    "source": e.get("source"), **c})
        for key in totals:
            totals[key] += int(c.get(key) or 0)
    return {**totals, "probes": per}


def _n(v) -> str:
    return "-" if v is None else f"{int(v):,}"


def claim_costs(report) -> list[tuple]:
    """Per claim: (measure, protocol, probe, lesioned networks, lesioned examples, how), ``how`` saying
    whether the probe was computed for this claim or shared with an earlier one (or read from the
    cache). Reports written before the counters give their claims' probes' counts where they can."""
    out = []
    for c in report.claims:
        cost = c.get("cost") or {}
        src = cost.get("source")
        how = {"computed": "computed for it", "memory": "shared (computed for an earlier claim)",
               "disk": "read from the cache"}.get(src, src or "-")
        out.append((c.get("measure"), c.get("protocol"), cost.get("probe", "-"), cost.get("lesioned_networks"),
                    cost.get("lesioned_examples"), how))
    return out


def cost_lines(report) -> list[str]:
    """The cost of an audit in a few lines (``modtest audit``'s summary): per claim, then where the
    time went."""
    lines = []
    for measure, protocol, probe, nets, exs, how in claim_costs(report):
        if nets is None:
            continue
        lines.append(f"cost of {measure} ({protocol} protocol): {_n(nets)} lesioned networks, {_n(exs)} lesioned "
                     f"examples ({probe} probe, {how})")
    ph = (report.timings or {}).get("phases") or {}
    if ph:
        total = (report.timings or {}).get("total_seconds")
        lines.append("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in ph.items() if v is not None)
                     + ("" if total is None else f" (total {total:.1f}s)"))
    return lines
