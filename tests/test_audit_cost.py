"""The cost of a verdict: counters on the record (JSON, terminal, HTML) and the robust protocol's
controls shared across its ensemble of partitions (issue 26).

Sharing is checked against plain references on the same seeds: the control streams are keyed so that
two sub-clusters of one partition never share one while partitions do; every lesion value the
shared study reports equals the reference engine's lesion of the same unit set; the count of lesioned
networks is the number of distinct (layer, unit set) the decisions read; serial, workshare and a
one-unit-at-a-time executor give the same result to the last bit.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("keras")

from modtest.probes.ensemble import SharedControls, control_streams  # noqa: E402
from modtest.results import SubCluster  # noqa: E402

KW = dict(k=12, seed=0, ensemble=5, n_random=5, max_random=20, progress=False)


def _sub(layer, cluster, units, layer_size=16):
    return SubCluster(layer, cluster, tuple(units), layer_size)


# --------------------------------------------------------------------------- keys of the streams

def test_streams_never_shared_within_a_partition_and_shared_across_partitions():
    a = [("0/a", _sub("h1", 0, (0, 1, 2))), ("0/b", _sub("h1", 1, (3, 4, 5))), ("0/c", _sub("h2", 0, (1, 2, 3))),
         ("0/d", _sub("h1", 2, (6, 7)))]
    b = [("1/x", _sub("h1", 5, (9, 10, 11))), ("1/y", _sub("h1", 3, (0, 4, 8))), ("1/z", _sub("h2", 7, (0, 5, 6)))]
    st = control_streams([a, b])
    for part in (a, b):  # within a partition: all distinct
        keys = [st[t] for t, _ in part]
        assert len(set(keys)) == len(keys)
    # across partitions: the o-th sub-cluster of a layer and size shares the o-th stream
    assert st["0/a"] == st["1/x"] == ("h1", 16, 3, 0)
    assert st["0/b"] == st["1/y"] == ("h1", 16, 3, 1)
    assert st["0/c"] == st["1/z"] == ("h2", 16, 3, 0)
    assert st["0/d"] == ("h1", 16, 2, 0)
    ctl = SharedControls("model-key", 0)
    s0, s1 = ctl.sets(st["0/a"], 40), ctl.sets(st["0/b"], 40)
    assert s0.shape == (40, 3) and not np.array_equal(s0, s1)  # different streams: independent draws
    # a stream extended later gives the same first controls (counter-based)
    fresh = SharedControls("model-key", 0)
    assert np.array_equal(fresh.sets(st["0/a"], 10), s0[:10])
    assert np.array_equal(fresh.sets(st["0/a"], 40), s0)
    assert not np.array_equal(SharedControls("model-key", 1).sets(st["0/a"], 10), s0[:10])  # the seed enters


# --------------------------------------------------------------------------- on the shipped MLP

@pytest.fixture(scope="module")
def example():
    from modtest._examples import EXAMPLE_DATA, EXAMPLE_MODEL, example_path
    from modtest._validation import load_data
    from modtest.frameworks import adapt

    adapter = adapt(example_path(EXAMPLE_MODEL))
    x, y = load_data(example_path(EXAMPLE_DATA))
    return adapter, x, y


class _Recorder:
    """Serial, and records every unit it computed (one at a time, in reverse order)."""

    name = "recorder"

    def __init__(self):
        self.units = []

    def map(self, probe, ctx, units, progress=None):
        self.units += list(units)
        out = [probe.compute(ctx, u.item, progress) for u in reversed(units)]
        return out[::-1]


@pytest.fixture(scope="module")
def shared(example):
    from modtest.probes.ensemble import robust_lesion_study

    adapter, x, y = example
    rec = _Recorder()
    res = robust_lesion_study(adapter, x, y, executor=rec, **KW)
    return res, rec


def _strip(result) -> dict:
    d = json.loads(result.to_json())
    d["extras"].pop("seconds", None)
    return d


def test_each_lesion_is_computed_once_and_counted(shared):
    res, rec = shared
    computed = [(u.item["layer"], tuple(s)) for u in rec.units for s in u.item["sets"]]
    assert len(computed) == len(set(computed))  # no lesion twice, over every round
    cost = res.extras["cost"]
    assert cost["lesioned_networks"] == len(computed) == res.extras["n_lesions"]
    assert cost["lesioned_examples"] == len(computed) * 540
    assert cost["lesions_referenced"] > cost["lesioned_networks"]  # the partitions shared controls
    assert cost["control_streams"] < cost["subclusters"]
    assert all(len(u.item["sets"]) <= 32 for u in rec.units)


def test_the_first_partition_rows_read_their_own_stream_and_the_engine_agrees(example, shared):
    """Rows of partition 0: two sub-clusters never have the same controls; each drop is the
    reference engine's lesion of the row's unit set (no value mixed up by the sharing)."""
    from modtest.probes.lesion import scores

    adapter, x, y = example
    res, _rec = shared
    rows = res.rows
    by_key = {}
    for r in rows:
        by_key.setdefault((r["layer"], r["size"]), []).append(r)
    pairs = [(a, b) for group in by_key.values() for i, a in enumerate(group) for b in group[i + 1:]]
    assert pairs  # the MLP has same-layer, same-size sub-clusters
    for a, b in pairs:
        n = min(len(a["random_units"]), len(b["random_units"]))
        assert a["random_units"][:n] != b["random_units"][:n]
    ref = adapter.lesion_engine(x, engine="reference")
    base = scores(ref.base_labels(), y, adapter.n_classes)[0][0]
    for r in rows[:4]:
        sets = [np.asarray(r["units"])] + [np.asarray(u) for u in r["random_units"]]
        sc = scores(ref.labels(r["layer"], sets), y, adapter.n_classes)[0]
        assert np.allclose(base - sc, [r["drop"]] + r["random_drops"], rtol=0, atol=1e-12)


def test_partitions_share_their_controls(example):
    """Two partitions' sub-clusters of one stream read the same controls: the second partition's
    lesions of a shared stream are not computed again."""
    from modtest.probes.ensemble import robust_lesion_study

    adapter, x, y = example
    one = _Recorder()
    robust_lesion_study(adapter, x, y, executor=one, **{**KW, "max_random": 5})  # round 0 only
    n = sum(len(u.item["sets"]) for u in one.units)
    res = robust_lesion_study(adapter, x, y, **{**KW, "max_random": 5})
    subs = res.extras["cost"]["subclusters"]
    # round 0 without sharing: one true set and 5 controls per sub-cluster of every partition
    assert n == res.extras["cost"]["lesioned_networks"] < subs * 6
    assert res.extras["cost"]["lesions_referenced"] == subs * 6


def test_serial_workshare_and_one_by_one_give_the_same_result(example, shared, tmp_path):
    from modtest.probes.ensemble import robust_lesion_study

    adapter, x, y = example
    res, _rec = shared
    serial = robust_lesion_study(adapter, x, y, **KW)
    ws = robust_lesion_study(adapter, x, y, executor=tmp_path / "ws", **KW)
    assert _strip(serial) == _strip(res) == _strip(ws)
    again = robust_lesion_study(adapter, x, y, executor=tmp_path / "ws", **KW)  # every unit published
    assert _strip(again) == _strip(serial)


# --------------------------------------------------------------------------- on the record

@pytest.fixture(scope="module")
def audits(example):
    from modtest.report.audit import run_audit

    adapter, x, y = example
    out = {}
    for protocol in ("paper", "robust"):
        out[protocol] = run_audit(adapter, x, y, k=12, seed=0, n_random=5, protocol=protocol, ensemble=5,
                                  max_random=20, clusterability=0, progress=False)
    return out


@pytest.mark.parametrize("protocol", ["paper", "robust"])
def test_the_report_states_the_cost_of_each_claim_and_where_the_time_went(audits, protocol):
    from modtest.report.schema import Report

    report, _part, res = audits[protocol]
    lesion = report.lesion
    if protocol == "paper":
        want = sum(1 + len(r["random_drops"]) for r in res.rows)
        assert want == len(res.rows) * 6
    else:
        want = res.extras["cost"]["lesioned_networks"]
    assert lesion["extras"]["cost"]["lesioned_networks"] == want
    assert report.cost["lesioned_networks"] == want and report.cost["lesioned_examples"] == want * 540
    by = {c["measure"]: c["cost"] for c in report.claims}
    assert by["importance"]["lesioned_networks"] == by["output_coherence"]["lesioned_networks"] == want
    assert by["importance"]["source"] == "computed" and by["output_coherence"]["source"] == "memory"
    ph = report.timings["phases"]
    assert set(ph) == {"clustering", "lesions", "visualization", "other"}
    assert ph["clustering"] > 0 and ph["lesions"] > 0 and ph["visualization"] == 0
    assert sum(ph.values()) == pytest.approx(report.timings["total_seconds"])
    n_parts = 1 if protocol == "paper" else 5
    assert len(report.partitions) == n_parts and all(p["seconds"] > 0 for p in report.partitions)
    back = Report.from_dict(json.loads(report.to_json()))
    assert back.cost == report.cost and back.claims[0]["cost"] == report.claims[0]["cost"]


def test_terminal_and_html_say_it(audits, capsys):
    from modtest.cli import _print_audit
    from modtest.report.html import render_html

    report, part, res = audits["robust"]
    _print_audit(report, part, res, "digits_mlp")
    out = capsys.readouterr().out
    n = f"{report.cost['lesioned_networks']:,}"
    assert f"cost of importance (robust protocol): {n} lesioned networks" in out
    assert "shared (computed for an earlier claim)" in out
    assert "time: clustering " in out and " lesions " in out
    html = render_html(report)
    assert '<section id="cost">' in html and n in html and "phase: clustering" in html


def test_a_report_written_before_the_counters_still_renders():
    from pathlib import Path

    from modtest.report.build import claim_costs, cost_lines
    from modtest.report.html import render_html
    from modtest.report.schema import load_report

    old = load_report(Path(__file__).parent / "golden" / "audit_v1.json")
    assert old.cost == {}
    assert all(c[3] is None for c in claim_costs(old))
    cost_lines(old)
    assert "<html" in render_html(old)
