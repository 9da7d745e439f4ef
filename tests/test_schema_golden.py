"""The audit JSON schema, guarded by saved audits: tests/golden/audit_v1.json (written by modtest before
the robust protocol, schema version 1) and audit_v2.json (this version's `modtest audit --json`).

A change to what an audit writes fails here until the golden file is written again and, when readers
of the old layout would break, SCHEMA_VERSION goes up.
"""
import json
from pathlib import Path

import pytest

from modtest.report.schema import SCHEMA_VERSION, load_report

GOLDEN = Path(__file__).parent / "golden"


def _keys(d: dict) -> set:
    return set(d)


def test_both_versions_read_back():
    v1, v2 = load_report(GOLDEN / "audit_v1.json"), load_report(GOLDEN / "audit_v2.json")
    assert (v1.schema_version, v2.schema_version) == (1, SCHEMA_VERSION) == (1, 2)
    assert {c["verdict"] for c in v1.claims} <= {"pass", "fail"}
    assert all({"p_low", "p_high", "k", "seed", "protocol"} <= set(c) for c in v2.claims)
    assert v2.protocol == "robust" and v2.lesion["network"]["importance"]["partitions"]


def test_a_version_1_baseline_compares_with_a_version_2_audit():
    """Claims are matched by test, measure, method and k (v1 claims carry k only in their name)."""
    from modtest.report.compare import compare_reports

    cmp = compare_reports(load_report(GOLDEN / "audit_v1.json"), load_report(GOLDEN / "audit_v2.json"))
    claims = [r for r in cmp.rows if r["metric"].startswith("claim ")]
    assert len(claims) == 2 and all(r["current"] in ("pass", "fail", "inconclusive") for r in claims)


@pytest.fixture(scope="module")
def fresh():
    """This version's audit of the shipped MLP with the golden file's settings, as written to JSON."""
    import tempfile

    from modtest.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "a.json"
        main(["audit", "--n-random", "5", "--ensemble", "5", "--max-random", "40", "--json", str(out), "--no-fail"])
        return json.loads(out.read_text())


def test_what_an_audit_writes_matches_the_golden_layout(fresh):
    gold = json.loads((GOLDEN / "audit_v2.json").read_text())
    assert _keys(fresh) == _keys(gold)
    assert _keys(fresh["claims"][0]) == _keys(gold["claims"][0])
    by_probe = lambda d: {p["probe"]: p for p in d["probes"]}  # noqa: E731
    for name, p in by_probe(gold).items():
        f = by_probe(fresh)[name]
        assert _keys(f) == _keys(p), name
        for measure, net in p["network"].items():
            if isinstance(net, dict):
                assert _keys(f["network"][measure]) == _keys(net), (name, measure)
                if net.get("partitions"):
                    assert _keys(f["network"][measure]["partitions"][0]) == _keys(net["partitions"][0])
        assert bool(f["rows"]) == bool(p["rows"]), name  # clusterability has no per-sub-cluster rows
        if p["rows"]:
            assert _keys(f["rows"][0]) == _keys(p["rows"][0]), name
        assert _keys(f["extras"]) == _keys(p["extras"]), name
    assert _keys(fresh["partitions"][0]) == _keys(gold["partitions"][0])
    # the same audit, the same numbers (the versions and timings aside)
    assert [c["p_raw"] for c in fresh["claims"]] == [c["p_raw"] for c in gold["claims"]]
