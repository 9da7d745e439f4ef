"""Process start-up for the processes modtest owns (a pytest session, each xdist worker, the CLI).

Importing Keras with TensorFlow creates about half a million long-lived objects (modules, op
registries). CPython's cyclic garbage collector walks all of them in every full collection: eight
during the import itself, more later, and again at interpreter exit, which together cost about 2.5 s
per process on a 2-core EPYC (0.2 s a collection, 1 s at exit), with nothing collected. Importing with
the collector paused and then freezing what exists (``gc.freeze``: the permanent generation, still
freed by reference counting, only skipped by the cyclic collector) removes that work. Objects created
afterwards (models, activations, results) are collected as usual.

TensorFlow also writes start-up lines to the process's stderr (file descriptor 2) from C++ while it
is imported: "All log messages before absl::InitializeLog() is called are written to STDERR", the
oneDNN and CPU-instruction notices, CUDA factory registrations on machines without a GPU. Some come
before TensorFlow reads ``TF_CPP_MIN_LOG_LEVEL``, so setting it does not silence them.
:func:`quiet_startup` installs a one-shot import hook: the first ``import tensorflow`` (from Keras,
modtest or the user's test files) runs with descriptor 2 sent to a temporary file, and everything
in it except those known lines is written back to stderr afterwards.
"""
from __future__ import annotations

import contextlib
import gc
import importlib.abc
import importlib.util
import os
import re
import sys
import tempfile

__all__ = ["import_keras", "quiet_startup", "drop_startup_noise", "check_backend", "keras_backend_name",
           "select_backend"]

#: TensorFlow's start-up lines that say nothing about the user's model or run
STARTUP_NOISE = tuple(re.compile(p) for p in (
    r"All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    r"oneDNN custom operations are on",
    r"This TensorFlow binary is optimized to use available CPU",
    r"^To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags",
    r"Unable to register (cuDNN|cuFFT|cuBLAS) factory",
    r"Attempting to register factory for plugin",
    r"computation placer already registered",
    r"TF-TRT Warning: Could not find TensorRT",
    r"Could not find cuda drivers on your machine, GPU will not be used",
))


def drop_startup_noise(text: str) -> str:
    """``text`` without TensorFlow's known start-up lines (every other line kept, in order)."""
    kept = [line for line in text.splitlines(keepends=True)
            if not any(p.search(line) for p in STARTUP_NOISE)]
    return "".join(kept)


@contextlib.contextmanager
def _filtered_fd2():
    """Send file descriptor 2 to a temporary file; write it back without the start-up noise."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):  # no descriptor 2 (embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            rest = drop_startup_noise(tmp.read().decode("utf-8", "replace"))
            if rest:
                os.write(2, rest.encode("utf-8"))


class _QuietLoader(importlib.abc.Loader):
    """Runs the wrapped loader's ``exec_module`` with descriptor 2 filtered."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self.loader  # the module keeps TensorFlow's own loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self.loader
        with _filtered_fd2():
            self.loader.exec_module(module)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """A one-shot finder: the first ``import tensorflow`` gets a :class:`_QuietLoader`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tensorflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet_startup() -> None:
    """Filter TensorFlow's start-up lines from this process's stderr (see the module docstring)
    and hide its INFO log lines (``TF_CPP_MIN_LOG_LEVEL=1`` unless set: warnings still show).
    Does nothing once TensorFlow is imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    if "tensorflow" in sys.modules or any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _QuietTensorFlowImport())

#: set to "0" to leave the garbage collector alone
ENV = "MODTEST_GC_FREEZE"


#: the module each Keras backend imports
BACKEND_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch", "numpy": "numpy",
                   "openvino": "openvino"}
INSTALL_HINT = "pip install 'pytest-modtest[tensorflow-cpu]' (or [tensorflow] for GPUs, or [jax])"


def select_backend(backend: str) -> None:
    """Set ``KERAS_BACKEND`` to ``backend`` (``--modtest-backend``), warning when Keras was already
    imported with another one (then it cannot take effect in this process)."""
    import warnings

    if sys.modules.get("keras") is not None and os.environ.get("KERAS_BACKEND", "tensorflow") != backend:
        warnings.warn(f"modtest: keras was imported before --modtest-backend={backend} could take "
                      f"effect (import keras inside tests or fixtures, not in conftest.py)", stacklevel=3)
    os.environ["KERAS_BACKEND"] = backend


def keras_backend_name() -> str:
    """The backend Keras will use, found as Keras finds it (``KERAS_BACKEND``, then the ``backend``
    of ``$KERAS_HOME/keras.json`` or ``~/.keras/keras.json``, else tensorflow), without importing it."""
    name = os.environ.get("KERAS_BACKEND")
    if name:
        return name
    import json

    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    try:
        with open(os.path.join(home, "keras.json")) as f:
            return str(json.load(f).get("backend") or "tensorflow")
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def _installed(module: str) -> bool:
    if sys.modules.get(module) is not None:
        return True
    try:
        return importlib.util.find_spec(module) is not None
    except (ValueError, ImportError):
        return False


def check_backend() -> None:
    """A one-line :class:`~modtest.errors.BackendMissing` when Keras or its backend is not installed
    (instead of the ImportError traceback Keras's import gives)."""
    from modtest.errors import BackendMissing

    if sys.modules.get("keras") is not None:
        return
    if not _installed("keras"):
        raise BackendMissing(f"Keras is not installed; modtest reads Keras models: {INSTALL_HINT}")
    name = keras_backend_name()
    if not _installed(BACKEND_MODULES.get(name, name)):
        others = [b for b, m in BACKEND_MODULES.items() if b not in (name, "numpy") and _installed(m)]
        where = "KERAS_BACKEND" if os.environ.get("KERAS_BACKEND") else "Keras's default"
        switch = (f", or use the installed {' or '.join(others)} with KERAS_BACKEND={others[0]} "
                  f"(--modtest-backend {others[0]})" if others else "")
        raise BackendMissing(f"the Keras backend {name!r} ({where}) is not installed: {INSTALL_HINT}{switch}")


def import_keras():
    """``import keras`` (and its backend) with the cyclic collector paused, then ``gc.freeze()``.

    Does nothing special when Keras is already imported or ``MODTEST_GC_FREEZE=0``. TensorFlow's
    start-up lines are filtered (:func:`quiet_startup`); a missing backend is one line
    (:func:`check_backend`).
    """
    check_backend()
    quiet_startup()
    if "keras" in sys.modules or os.environ.get(ENV, "1") == "0":
        import keras

        return keras
    enabled = gc.isenabled()
    gc.disable()
    try:
        import keras
    finally:
        if enabled:
            gc.enable()
    gc.freeze()
    return keras
