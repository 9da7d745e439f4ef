"""Comparing audits: rules, the comparison itself, ``modtest compare``, and the pytest options
``--modtest-save`` / ``--modtest-compare`` end to end (stub probes, no keras)."""
import json

import pytest
from test_report import small_report

from modtest.cli import main
from modtest.report.compare import CompareError, compare_reports, metrics, parse_rules

PLUGIN = ("-p", "modtest", "-p", "no:cacheprovider")


# --------------------------------------------------------------------------- rules

def test_parse_rules():
    rules = parse_rules(" p:10x, important:-2,drop_q50:-0.01 ,prunable:+3")
    assert [(r.name, r.op, r.amount) for r in rules] == [("p", "x", 10.0), ("important", "-", 2.0),
                                                         ("drop_q50", "-", 0.01), ("prunable", "+", 3.0)]
    assert parse_rules("") == [] and parse_rules("none") == [] and parse_rules(" None ") == []
    # no rules given: the recommended noise-aware defaults
    assert [r.text for r in parse_rules(None)] == ["p:10x", "important:-2"]


@pytest.mark.parametrize("expr,match", [
    ("bogus:-2", "unknown metric 'bogus'"), ("p:-2", "p takes a factor"), ("important:2x", "signed change"),
    ("important", "expected NAME:-D"), ("p:0.5x", "factor must be > 1"), ("important:-0", "must be > 0"),
])
def test_bad_rules(expr, match):
    with pytest.raises(CompareError, match=match) as info:
        parse_rules(expr)
    assert "\n" not in str(info.value)


def test_rules_on_metrics():
    base = small_report(p=1e-3, important=3)
    assert metrics(base)["lesion[k=12].important"]["value"] == 3
    assert compare_reports(base, small_report(p=9e-3, important=2), "p:10x,important:-2").ok
    cmp = compare_reports(base, small_report(p=2e-2, important=1), "p:10x,important:-2")
    assert len(cmp.failures) == 3  # fisher_p, chi2_p, important
    assert "lesion[k=12].important got worse: 3 -> 1 (-2; rule important:-2)" in cmp.failures
    assert any(f.startswith("lesion[k=12].importance.fisher_p got worse: 0.001 -> 0.02 (x20") for f in cmp.failures)
    shifted = small_report(drops=(0.0, 0.01, 0.1))
    assert not compare_reports(base, shifted, "drop_q50:-0.03").ok
    assert compare_reports(base, shifted, "drop_q50:-0.05").ok
    # without rules only claims count
    assert compare_reports(base, small_report(p=0.04, important=0)).ok


def test_claim_that_stopped_holding_fails():
    cmp = compare_reports(small_report(), small_report(p=0.2, verdict="fail"))
    assert not cmp.ok and "claim importance[k=12,seed=0] (fisher) [t.py::test_imp] held in baseline" in cmp.failures[0]
    assert compare_reports(small_report(p=0.2, verdict="fail"), small_report()).ok  # improvement
    gone = small_report()
    gone.claims = []
    cmp = compare_reports(small_report(), gone)
    assert cmp.ok and "is not in the current audit" in cmp.notes[0]


# --------------------------------------------------------------------------- modtest compare

def test_cli_compare(tmp_path, capsys):
    a, b, html = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "c.html"
    small_report().to_json(a)
    small_report(p=0.03, important=2).to_json(b)
    assert main(["compare", str(a), str(a), "--fail", "p:10x"]) == 0
    out = capsys.readouterr().out
    assert "metric" in out and "lesion[k=12].importance.fisher_p" in out and "no rule failed" in out
    assert main(["compare", str(a), str(b), "--fail", "p:10x,important:-2", "--html", str(html)]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "2 regression" not in out and "important got worse" in out
    assert 'id="comparison"' in html.read_text()


@pytest.mark.parametrize("setup,args,match", [
    ("none", ["compare", "{a}", "{missing}"], "report file not found"),
    ("corrupt", ["compare", "{a}", "{b}"], "is not valid JSON"),
    ("ok", ["compare", "{a}", "{a}", "--fail", "wat:-1"], "unknown metric 'wat'"),
])
def test_cli_compare_errors(tmp_path, capsys, setup, args, match):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    small_report().to_json(a)
    b.write_text("{")
    argv = [x.format(a=a, b=b, missing=tmp_path / "nope.json") for x in args]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and match in err[0]


# --------------------------------------------------------------------------- pytest options

ONE_CLAIM = """
from modtest.assertions import assert_importance

def test_imp():
    assert_importance("m.keras", k=2)
"""


def _p(pytester, p):
    pytester.makeconftest(__import__("conftest").STUB_CONFTEST.format(p_by_k={"2": p}))


def test_save_then_compare_end_to_end(pytester):
    pytester.makepyfile(test_inner=ONE_CLAIM)
    _p(pytester, 0.001)
    res = pytester.runpytest_subprocess(*PLUGIN, "--modtest-save", "main", "--modtest-json", "r.json",
                                        "--modtest-html", "r.html")
    res.assert_outcomes(passed=1)
    saved = json.loads((pytester.path / ".modtest" / "baselines" / "main.json").read_text())
    assert saved["schema_version"] == 2 and saved["claims"][0]["verdict"] == "pass"
    assert saved["probes"][0]["probe"] == "lesion" and saved["probes"][0]["k"] == 2
    rep = json.loads((pytester.path / "r.json").read_text())
    assert rep["n_claims"] == 1 and rep["correction"] == "holm" and "versions" in rep
    assert 'id="importance"' in (pytester.path / "r.html").read_text()
    res.stdout.fnmatch_lines(["*modtest baseline saved: *main.json"])

    # the same audit: passes (no NAME = the latest baseline)
    res = pytester.runpytest_subprocess(*PLUGIN, "--modtest-compare", "--modtest-compare-fail", "p:10x")
    res.assert_outcomes(passed=1)
    assert res.ret == 0
    res.stdout.fnmatch_lines(["*compared with baseline 'main': no regression*"])

    # p grew 30-fold (the claim still holds): the session fails, naming what got worse
    _p(pytester, 0.03)
    res = pytester.runpytest_subprocess(*PLUGIN, "--modtest-compare=main", "--modtest-compare-fail", "p:10x",
                                        "--modtest-cache", "other_cache")  # not the cached p
    res.assert_outcomes(passed=1)
    assert res.ret == 1
    res.stdout.fnmatch_lines(["*compared with baseline 'main': 4 regression(s)*",
                              "*REGRESSION lesion[[]k=2[]].importance.fisher_p got worse: "
                              "0.001 -> 0.03 (x30; rule p:10x)*"])


def _usage_error(res, match):
    assert res.ret == 4, res.stdout.str() + res.stderr.str()
    err = [ln for ln in res.stderr.lines if ln.startswith("ERROR")]
    assert len(err) == 1 and match in err[0], err
    assert "Traceback" not in res.stdout.str() + res.stderr.str()


@pytest.mark.parametrize("args,match", [
    (["--modtest-compare"], "--modtest-compare: no baselines saved in"),
    (["--modtest-compare=nope"], "--modtest-compare: baseline 'nope' not found"),
    (["--modtest-compare=bad"], "--modtest-compare: baseline "),
    (["--modtest-compare-fail", "p:-3"], "--modtest-compare-fail: bad compare-fail rule 'p:-3'"),
    (["--modtest-compare-fail", "foo:+1"], "--modtest-compare-fail: unknown compare-fail rule 'foo:+1'"),
    (["--modtest-save", "../up"], "--modtest-save: bad baseline name '../up'"),
])
def test_usage_errors(pytester, monkeypatch, args, match):
    import os

    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))
    store = pytester.path / "st"
    store.mkdir()
    (store / "bad.json").write_text('{"schema_version": 1, "claims": [')
    pytester.makepyfile("def test_never():\n    raise SystemExit('must not run')\n")
    extra = ["--modtest-storage", str(store)] if args != ["--modtest-compare"] else \
        ["--modtest-storage", str(pytester.path / "empty")]
    _usage_error(pytester.runpytest(*PLUGIN, *extra, *args), match)
    assert sorted(p.name for p in store.iterdir()) == ["bad.json"] and not (pytester.path / "empty").exists()


def test_ini_keys(pytester, monkeypatch):
    import os

    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))
    pytester.makeini("[pytest]\nmodtest_compare = latest\nmodtest_storage = ini_store\n"
                     "modtest_compare_fail = p:5x\nmodtest_save = nightly\nmodtest_html = r.html\n")
    pytester.makepyfile("""
        from modtest.plugin import get_session as _state

        def test_state(request):
            st = _state(request.config)
            assert st.compare_name == "latest" and st.save_name == "nightly"
            assert [r.text for r in st.compare_rules] == ["p:5x"] and st.html_path.name == "r.html"
    """)
    _usage_error(pytester.runpytest(*PLUGIN), "no baselines saved in")
    (pytester.path / "ini_store").mkdir()
    small_report().to_json(pytester.path / "ini_store" / "x.json")
    pytester.runpytest(*PLUGIN).assert_outcomes(passed=1)
