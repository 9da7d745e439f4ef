"""docs/extending.md: the documented probe file is the shipped one, and it appears in ``modtest
audit`` (terminal, JSON, HTML) and in a pytest session without any other module touched."""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from modtest import probes
from modtest.cli import main
from modtest.context import AuditContext, using
from modtest.errors import InvalidInput

ROOT = Path(__file__).resolve().parent.parent
PROBE_FILE = ROOT / "examples" / "probes" / "weight_degree.py"
EXAMPLE_MODEL = ROOT / "examples" / "digits_mlp.keras"


def test_the_page_shows_the_file_as_it_is():
    page = (ROOT / "docs" / "extending.md").read_text()
    block = re.search(r"```python\n(.*?)```", page, re.S).group(1)
    assert block == PROBE_FILE.read_text()


def test_the_probe_computes_what_it_says():
    """Rows against a plain recomputation from the graph; p-values on the empirical grid."""
    from modtest.cluster import cluster
    from modtest.frameworks import adapt
    from modtest.probes import Request

    with using(AuditContext(registry=probes.builtin_registry())) as ctx:
        (decl,) = probes.load_probes(str(PROBE_FILE))
        assert ctx.registry.measure("hub_degree").probe == "weight_degree"
        assert "hub_degree" in ctx.registry.audit_measures()
    model = adapt(EXAMPLE_MODEL)
    part = cluster(model, k=6, seed=0)
    res = decl.run(Request(model, np.zeros(0), np.zeros(0), 6, 0, {"n_random": 9}, None,
                           lambda m, k, s: part))
    assert len(res.rows) == len(part.subclusters) > 0
    deg = np.asarray(part.graph.adjacency.sum(axis=1)).ravel()
    for row, sub in zip(res.rows, part.subclusters):
        units = part.graph.offsets[part.graph.layer_names.index(sub.layer)] + np.asarray(sub.units)
        assert row["degree"] == pytest.approx(deg[units].mean())
        assert row["p_degree"] * 10 == pytest.approx(round(row["p_degree"] * 10))  # k / (9 + 1)
    net = res.network["hub_degree"]
    assert 0 < net["fisher_p"] <= 1 and net["n"] == len(res.rows)


def test_modtest_audit_claims_it_in_terminal_json_and_html(tmp_path, capsys):
    out_json, out_html = tmp_path / "a.json", tmp_path / "a.html"
    outer = probes.active_registry()
    with using(AuditContext(registry=probes.builtin_registry())):
        status = main(["audit", str(EXAMPLE_MODEL), "--probes", str(PROBE_FILE), "--claims", "hub_degree",
                       "--clusterability", "0", "--progress", "off", "--json", str(out_json),
                       "--html", str(out_html), "--no-fail"])
    assert status == 0
    assert "hub_degree" not in outer.measures  # loaded into the audit's registry only
    text = capsys.readouterr().out
    assert re.search(r"^hub degree: +raw p=0\.\d{3}", text, re.M), text
    assert re.search(r"claims .*: hub_degree (pass|fail) \(corrected p=", text), text
    report = json.loads(out_json.read_text())
    assert [c["measure"] for c in report["claims"]] == ["hub_degree"]
    assert [p["probe"] for p in report["probes"]] == ["weight_degree"]
    html = out_html.read_text()
    assert "hub_degree" in html and "weight_degree" in html


def test_a_pytest_session_adds_it_with_modtest_probes(pytester):
    pytester.makepyfile(test_hub="""
        from modtest.assertions import assert_measure

        def test_hub(model):
            assert_measure("hub_degree", model, k=6)
    """)
    res = pytester.runpytest_inprocess("-p", "modtest", "-p", "no:cacheprovider", "--model", str(EXAMPLE_MODEL),
                                       "--modtest-probes", str(PROBE_FILE), "--modtest-json", "r.json",
                                       "--modtest-cache", "cache", "--data", "none")
    assert res.ret in (0, 1), res.stdout.str()
    report = json.loads((pytester.path / "r.json").read_text())
    (claim,) = report["claims"]
    assert claim["measure"] == "hub_degree" and claim["k"] == 6
    assert any(p["probe"] == "weight_degree" for p in report["probes"])
    assert "hub_degree" not in probes.active_registry().measures


def test_a_module_without_a_declaration_is_refused(tmp_path):
    empty = tmp_path / "nothing.py"
    empty.write_text("X = 1\n")
    with using(AuditContext(registry=probes.builtin_registry())):
        with pytest.raises(InvalidInput, match="declares no probe"):
            probes.load_probes(str(empty))
        with pytest.raises(InvalidInput, match="no such file"):
            probes.load_probes(str(tmp_path / "missing.py"))
        with pytest.raises(InvalidInput, match="cannot be imported"):
            probes.load_probes("no_such_module_anywhere")
