"""The modtest pytest plugin (entry point ``pytest11: modtest = modtest.plugin``).

Wiring only, in the style of pytest-xdist: this module declares the options and ini keys (from the
table in :mod:`modtest.options`) and the session fixtures, and registers the objects that do the
work: :class:`~modtest.plugin.session.ModtestSession` (settings, correction, outcomes, outputs,
terminal summary) and, under pytest-xdist, :mod:`modtest.plugin.xdist`'s worker or controller side.
Frameworks are imported inside fixtures and hooks only, when the session uses modtest.
"""
from __future__ import annotations

import pytest

from modtest.options import OPTIONS
from modtest.plugin.xdist import pytest_xdist_auto_num_workers  # noqa: F401 - a hook of this plugin

_KEY = pytest.StashKey["ModtestSession"]()
_SCOPE = pytest.StashKey["SessionScope"]()


def pytest_addoption(parser):
    """Every option of the table in :mod:`modtest.options`, with its ini key of the same name."""
    group = parser.getgroup("modtest", "modularity audits of trained networks (modtest)")
    for opt in OPTIONS:
        if opt.kind == "bool":
            group.addoption(opt.flag, dest=opt.dest, action="store_true", default=None, help=opt.help)
            parser.addini(opt.dest, opt.help, type="bool", default=False)
        else:
            extra = {} if opt.const is None else {"nargs": "?", "const": opt.const}
            group.addoption(opt.flag, dest=opt.dest, action="store", default=None,
                            metavar=opt.dest.split("_")[-1].upper(), help=opt.help, **extra)
            parser.addini(opt.dest, opt.help, default="")


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config, parser, args):
    """Runs before conftest.py files are imported: the earliest point to set the environment (and to
    filter TensorFlow's start-up lines, whoever imports it: modtest, a conftest or a test module)."""
    from modtest.frameworks import quiet_startup
    from modtest.plugin.xdist import early_environment

    quiet_startup()
    _open_scope(early_config)
    backend = getattr(early_config.known_args_namespace, "modtest_backend", None)
    if backend is None:
        try:
            backend = early_config.getini("modtest_backend") or None
        except (ValueError, KeyError):
            backend = None
    early_environment(str(backend).strip() if backend else None)


def _open_scope(config) -> None:
    """This session's own audit context and adapter registrations, from before its conftest files
    are imported (so what they register belongs to this session) until its config is cleaned up,
    whether or not the session got to run (a usage error too): then the previous ones are back."""
    from modtest.plugin.session import SessionScope

    if _SCOPE not in config.stash:
        scope = config.stash[_SCOPE] = SessionScope.open()
        config.add_cleanup(scope.close)


def session_scope(config):
    """The :class:`~modtest.plugin.session.SessionScope` of a pytest config (opened on first use)."""
    _open_scope(config)
    return config.stash[_SCOPE]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    from modtest.plugin.session import ModtestSession
    from modtest.plugin.xdist import ControllerPlugin, WorkerPlugin, early_environment

    session = ModtestSession(config, session_scope(config))
    early_environment(session.backend)
    config.stash[_KEY] = session
    config.pluginmanager.register(session, "modtest-session")  # pytest_configure is historic: it runs now
    if session.is_worker:
        config.pluginmanager.register(WorkerPlugin(session), "modtest-xdist-worker")
    else:  # acts only on reports relayed from xdist workers (xdist registers itself after this hook)
        config.pluginmanager.register(ControllerPlugin(session), "modtest-xdist-controller")


def get_session(config) -> ModtestSession:  # noqa: F821 - imported lazily
    """The :class:`~modtest.plugin.session.ModtestSession` of a pytest config (its settings: ``k``,
    ``alpha``, ``seed``, ``correction``, ``cache_dir``, ``model_path``, ...)."""
    return config.stash[_KEY]


# --------------------------------------------------------------------------- fixtures

def _fixture_error(exc) -> None:
    from modtest._validation import for_interface

    pytest.fail(f"modtest: {for_interface(exc, 'pytest')}", pytrace=False)


@pytest.fixture(scope="session")
def model(request):
    """The model under test (``--model``, default: the shipped example MLP), loaded once."""
    from modtest.errors import ModtestError

    session = get_session(request.config)
    try:
        model = session.get_model()
        if session.model_explicit or session.k_explicit:  # checked at the start, except in xdist workers
            session._check_auditable(model)
        return model
    except ModtestError as exc:
        _fixture_error(exc)


@pytest.fixture(scope="session")
def eval_data(request, model):
    """``(x, y)`` from ``--data`` (default: shipped digits), checked against ``model``."""
    from modtest.errors import ModtestError

    try:
        return get_session(request.config).data_for(model)  # an EvalData, checked for the model
    except ModtestError as exc:
        _fixture_error(exc)


@pytest.fixture(scope="session")
def partition(request, model):
    """``cluster(model, --modtest-k, --modtest-seed)``, computed once per session."""
    from modtest.errors import ModtestError

    st = get_session(request.config)
    try:
        return st.context.partition(model, st.k, st.seed)
    except ModtestError as exc:
        _fixture_error(exc)


@pytest.fixture(scope="session")
def modtest_probes(request):
    """The session's probe store (in-memory + disk cache); ``.get(probe, model, x, y, k, seed)``."""
    return get_session(request.config).context.store
