"""Session-wide correction: claims with known raw p-values (stub probe) get exactly multipletests'
corrected p-values and verdicts, serially and with ``-n 2``."""
import json

import numpy as np
import pytest
from statsmodels.stats.multitest import multipletests

from modtest import claims as session
from modtest.results import Claim

P_BY_K = {2: 0.01, 3: 0.03, 4: 0.04}  # holm: pass, fail, fail; fdr_bh: all pass

INNER_TESTS = """
from modtest.assertions import assert_importance

def test_a():
    assert_importance("m.keras", k=2)

def test_b():
    assert_importance("m.keras", k=3)

def test_c():
    assert_importance("m.keras", k=4)
"""


def _claim(p, alpha=0.05, nodeid="t", passed=None):
    return Claim(name="x", measure="importance", method="fisher", statistic=1.0, p_raw=p, alpha=alpha,
                 n_subclusters=3, nodeid=nodeid, passed=passed)


@pytest.mark.parametrize("method", ["holm", "fdr_bh", "bonferroni"])
def test_correct_claims_matches_multipletests(method):
    raw = [0.01, 0.02, 0.04, 0.3]
    claims = session.correct_claims([_claim(p) for p in raw], method)
    reject, adj, _, _ = multipletests(raw, alpha=0.05, method=method)
    assert [c.p_corrected for c in claims] == pytest.approx(list(adj), abs=0, rel=1e-15)
    assert [c.passed for c in claims] == list(reject)
    assert {c.correction for c in claims} == {method}


def test_correct_claims_none_and_nan_and_prior_failure():
    claims = session.correct_claims([_claim(0.01), _claim(float("nan")), _claim(0.2),
                                     _claim(0.001, passed=False)], "none")
    assert [c.passed for c in claims] == [True, False, False, False]
    assert claims[0].p_corrected == 0.01 and np.isnan(claims[1].p_corrected)


def test_claim_roundtrip_through_json():
    c = _claim(float("nan"))
    back = session.claim_from_dict(json.loads(json.dumps(c.to_dict())))
    assert np.isnan(back.p_raw) and back.measure == c.measure


def _run(pytester, modtest_stub, method, *extra):
    modtest_stub(P_BY_K)
    pytester.makepyfile(test_inner=INNER_TESTS)
    out = pytester.path / "report.json"
    res = pytester.runpytest_subprocess("-p", "modtest", "-p", "no:cacheprovider",
                                        f"--modtest-correction={method}", f"--modtest-json={out}",
                                        "--modtest-cache", str(pytester.path / "cache"), *extra)
    rep = json.loads(out.read_text())
    return res, {c["nodeid"].split("::")[-1]: c for c in rep["claims"]}


@pytest.mark.parametrize("method", ["holm", "fdr_bh", "bonferroni", "none"])
def test_session_matches_multipletests(pytester, modtest_stub, method):
    res, claims = _run(pytester, modtest_stub, method)
    raw = [P_BY_K[2], P_BY_K[3], P_BY_K[4]]
    if method == "none":
        reject, adj = np.array(raw) <= 0.05, np.array(raw)
    else:
        reject, adj, _, _ = multipletests(raw, alpha=0.05, method=method)
    got = [claims[n] for n in ("test_a", "test_b", "test_c")]
    assert [c["p_raw"] for c in got] == raw
    assert [c["p_corrected"] for c in got] == pytest.approx(list(adj), rel=1e-12)
    assert [c["verdict"] == "pass" for c in got] == list(reject)
    n_failed = int((~np.asarray(reject)).sum())
    res.assert_outcomes(passed=3 - n_failed, failed=n_failed)
    assert res.ret == (1 if n_failed else 0)
    if n_failed:
        res.stdout.fnmatch_lines(["*failed only after * correction:*"])


def test_serial_and_xdist_identical(pytester, modtest_stub):
    res1, serial = _run(pytester, modtest_stub, "holm")
    res2, parallel = _run(pytester, modtest_stub, "holm", "-n", "2")
    keys = ("p_raw", "p_corrected", "verdict", "measure", "nodeid")
    assert {n: [c[k] for k in keys] for n, c in serial.items()} == \
           {n: [c[k] for k in keys] for n, c in parallel.items()}
    assert res1.ret == res2.ret == 1
    res2.assert_outcomes(passed=1, failed=2)
