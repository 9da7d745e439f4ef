"""Settings once: one table drives argparse, pytest options and ini keys, and every check (one value
or several: the ensemble's quorum, save names, compare rules) is made in modtest.settings, with one
wording per mistake whichever interface gave the value (only the flag's name differs)."""
import argparse

import pytest

from modtest.errors import InvalidInput
from modtest.options import BY_DEST, OPTIONS
from modtest.settings import Settings

BAD = {  # dest -> a bad raw value
    "modtest_k": "1", "modtest_alpha": "1.5", "modtest_seed": "-1", "modtest_correction": "sidak",
    "modtest_protocol": "fast", "modtest_ensemble": "0", "modtest_max_random": "x",
    "modtest_inconclusive": "maybe", "modtest_progress": "loud", "modtest_max_examples": "0",
    "modtest_scheduler": "nowhere", "modtest_scheduler_timeout": "-3", "modtest_trust_model": "perhaps",
}


def _message(dest, raw, flag_of):
    with pytest.raises(InvalidInput) as e:
        Settings.from_values({dest: raw}, options=[BY_DEST[dest]], flag_of=flag_of)
    return str(e.value)


@pytest.mark.parametrize("dest", sorted(BAD))
def test_one_wording_per_mistake_in_both_interfaces(dest):
    opt = BY_DEST[dest]
    under_pytest = _message(dest, BAD[dest], lambda o: o.flag)
    assert opt.flag in under_pytest and "\n" not in under_pytest
    if opt.cli is not None:
        under_cli = _message(dest, BAD[dest], lambda o: o.cli)
        assert under_cli.replace(opt.cli, opt.flag) == under_pytest


@pytest.mark.parametrize("raw, flag, match", [
    ({"modtest_protocol": "robust", "modtest_ensemble": "2"}, "--modtest-ensemble",
     "cannot give a verdict .* use at least 5 partitions"),
    ({"modtest_save": "../x"}, "--modtest-save", "bad baseline name"),
    ({"modtest_save": "latest"}, "--modtest-save", "reserved"),
    ({"modtest_compare_fail": "p:0.5x"}, "--modtest-compare-fail", "factor must be > 1"),
])
def test_checks_across_options_name_the_flag(raw, flag, match):
    with pytest.raises(InvalidInput, match=f"^{flag}: .*{match}"):
        Settings.from_values(raw)


def test_defaults_the_given_values_and_attribute_names():
    s = Settings.from_values({"modtest_k": "8", "modtest_compare": ""})
    assert s.k == 8 and s.modtest_k == 8 and s["modtest_k"] == 8 and s.given("modtest_k")
    assert s.alpha == BY_DEST["modtest_alpha"].default and not s.given("modtest_alpha")
    assert s.compare == "latest"  # --modtest-compare without a name: the newest baseline
    assert [r.name for r in s.compare_rules]  # the recommended rules when none are given
    assert Settings.from_values({"modtest_protocol": "paper", "modtest_ensemble": "2"}).ensemble == 2
    with pytest.raises(AttributeError):
        s.no_such_setting  # noqa: B018


def test_the_cli_parses_the_table_with_its_own_flags():
    from modtest.cli import build_parser

    ns = build_parser().parse_args(["audit", "--k", "5", "--trust-model", "--probes", "a.py,b"])
    s = Settings.from_args(ns, ("modtest_k", "modtest_trust_model", "modtest_probes"))
    assert (s.k, s.trust_model, s.probes) == (5, True, ("a.py", "b"))
    with pytest.raises(InvalidInput, match=r"^--k must be an integer >= 2, got 1$"):
        Settings.from_args(argparse.Namespace(modtest_k="1"), ("modtest_k",))


def test_every_option_is_a_pytest_option_and_an_ini_key(pytester):
    pytester.makepyfile(test_x="""
        from modtest.plugin import get_session

        def test_settings(request):
            s = get_session(request.config).settings
            assert (s.k, s.seed, s.alpha, s.compare) == (7, 3, 0.01, None)
            assert s.given("modtest_k") and s.given("modtest_seed") and not s.given("modtest_trust_model")
    """)
    pytester.makeini("[pytest]\nmodtest_seed = 3\nmodtest_alpha = 0.2\n")
    res = pytester.runpytest_inprocess("-p", "modtest", "-p", "no:cacheprovider", "--modtest-k", "7",
                                       "--modtest-alpha", "0.01")  # the command line wins over the ini key
    res.assert_outcomes(passed=1)
    help_text = pytester.runpytest_inprocess("-p", "modtest", "--help").stdout.str()
    for opt in OPTIONS:
        assert opt.flag in help_text
