"""State belongs to an audit: a measure registered in one context, or by one pytest session's
conftest, is not seen by another, and a session leaves the process as it found it (also when it
ends with a usage error). Once, ``tests/test_cli.py`` changed the process-wide registry and two
workshare tests failed whenever they ran after it on the same xdist worker."""
import pytest

from modtest import context, frameworks, probes
from modtest.context import AuditContext, using
from modtest.results import ProbeResult


def _stub(req):
    return ProbeResult("lesion", [], {"importance": {"fisher_p": 0.5}}, {"k": req.k}, {})


def test_register_measure_goes_to_the_active_context_only():
    outer = probes.active_registry()
    before = (dict(outer.measures), dict(outer.probes), set(outer.splittable))
    with using(AuditContext(registry=probes.builtin_registry())) as ctx:
        probes.register_measure("importance", "lesion", _stub, "importance", "stub")
        assert probes.get_measure("importance").compute is _stub
        assert probes.REGISTRY is ctx.registry and not ctx.registry.is_splittable("lesion")
    assert (dict(outer.measures), dict(outer.probes), set(outer.splittable)) == before
    assert outer.is_splittable("lesion") and probes.get_measure("importance").compute is not _stub


def test_builtin_registries_are_independent():
    a, b = probes.builtin_registry(), probes.builtin_registry()
    a.register("importance", "lesion", _stub)
    assert not a.is_splittable("lesion") and b.is_splittable("lesion")
    assert b.measure("importance").compute is not _stub
    c = b.copy()
    c.register("mine", "mine", _stub)
    assert "mine" not in b.measures and "mine" in c.measures


def test_a_context_shares_the_active_registry_unless_given_one():
    mine = probes.builtin_registry()
    with using(AuditContext(registry=mine)):
        inner = AuditContext()  # e.g. run_audit's: sees what was registered in the active context
        assert inner.registry is mine and inner.store.registry is mine


CONFTEST = '''
from modtest import probes
from modtest.frameworks import ModelAdapter, register_adapter
from modtest.results import ProbeResult

def stub(req):
    return ProbeResult("lesion", [], {}, {}, {})

probes.register_measure("importance", "lesion", stub, "importance", "inner stub")
probes.register_measure("inner_only", "inner", stub, "inner_only", "inner stub")
register_adapter("inner-fake", accepts=lambda m: False, wrap=ModelAdapter, suffixes=(".keras",))
'''


@pytest.mark.parametrize("args, status", [((), 0), (("--modtest-k", "0"), 4)])
def test_an_inprocess_session_leaves_the_process_as_it_found_it(pytester, args, status):
    """What a session's conftest registers (measures, adapters) is gone when it ends, whether it
    ran its tests or stopped at a usage error."""
    outer = probes.active_registry()
    before = (dict(outer.measures), dict(outer.probes), set(outer.splittable))
    adapters = frameworks.adapter_registrations()
    active = context.current()
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_x="""
        from modtest import probes
        def test_sees_its_own():
            assert probes.get_measure("importance").side_note == "inner stub"
            assert "inner_only" in probes.MEASURES
    """)
    res = pytester.runpytest_inprocess("-p", "modtest", "-p", "no:cacheprovider", *args)
    assert res.ret == status
    if status == 0:
        res.assert_outcomes(passed=1)
    assert context.current() is active
    assert (dict(outer.measures), dict(outer.probes), set(outer.splittable)) == before
    assert "inner_only" not in probes.MEASURES and outer.is_splittable("lesion")
    assert frameworks.adapter_registrations() == adapters
