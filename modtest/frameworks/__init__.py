"""Framework adapters: one folder per framework, chosen by the model's type or file suffix.

``adapt(model)`` turns a native model, a model file or an adapter into a
:class:`~modtest.frameworks.base.ModelAdapter`; nothing here imports a framework until a model of
that framework is seen. A new framework registers itself with :func:`register_adapter` (see
``tests/test_adapter_boundary.py`` for a numpy MLP adapter in a few dozen lines).
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modtest.errors import ModelLoadError
from modtest.frameworks.base import LesionEngine, ModelAdapter

__all__ = ["ModelAdapter", "LesionEngine", "adapt", "load_model", "register_adapter", "check_model_file",
           "file_signature", "supported_suffixes", "adapter_registrations", "restore_adapter_registrations",
           "quiet_startup", "select_backend", "default_backend", "file_backend", "runtime_signature", "array_ops"]


@dataclass(frozen=True)
class _Entry:
    framework: str
    accepts: Callable[[Any], bool]       # a native model of this framework?
    wrap: Callable[[Any], ModelAdapter]  # native model -> adapter
    suffixes: tuple[str, ...] = ()       # model files this framework reads
    load: Callable[..., Any] | None = None  # (path, trust=...) -> native model
    check: Callable[..., Any] | None = None  # (path, trust=...) -> None: cheap file checks, no import
    hint: str = ""  # how to save a model of this framework as a file modtest reads
    signature: Callable[..., Any] | None = None  # path -> (input_shape, n_classes) or None, no import
    reads: tuple[str, ...] | None = None  # the suffixes it reads (None: all of ``suffixes``); the
    # others are recognised to be refused with a precise message (a torch state dict in a .pt)
    auditable: Callable[..., Any] | None = None  # path -> None: refuses, without an import, a file
    # whose structure modtest cannot audit (two outputs, a recurrent layer)
    folder: Callable[[Path], bool] | None = None  # path -> whether it reads this directory (no import)


_REGISTRY: list[_Entry] = []


def register_adapter(framework: str, *, accepts, wrap, suffixes=(), load=None, check=None, hint="",
                     signature=None, reads=None, auditable=None, folder=None) -> None:
    """Register (or replace) the adapter of ``framework``; the newest registration is tried first.
    ``signature(path)``, optional, reads a model file's input shape and output width without
    importing the framework (``(input_shape, n_classes)``, or None when the file does not say).
    ``reads`` lists the suffixes it reads when ``suffixes`` also holds some it only recognises.
    ``auditable(path)``, optional, refuses a file whose structure modtest cannot audit, without
    importing the framework (the loaded model's graph is checked again in any case).
    ``folder(path)``, optional, says (without importing the framework) whether a directory is a model
    of this framework (a Hugging Face model folder)."""
    _REGISTRY[:] = [e for e in _REGISTRY if e.framework != framework]
    _REGISTRY.insert(0, _Entry(framework, accepts, wrap, tuple(s.lower() for s in suffixes), load, check, hint,
                               signature, None if reads is None else tuple(s.lower() for s in reads),
                               auditable, folder))


def quiet_startup() -> None:
    """Keep the frameworks' start-up lines (TensorFlow's) off stderr, whoever imports them later."""
    from modtest.frameworks.keras.runtime import quiet_startup as keras_quiet

    keras_quiet()


def select_backend(backend: str) -> None:
    """Make ``backend`` the Keras backend of this process (before Keras is imported; a warning if
    it already was, with another backend)."""
    from modtest.frameworks.keras.runtime import select_backend as keras_select

    keras_select(backend)


def default_backend() -> str:
    """The backend a Keras model would run on here, read without importing Keras (a report's
    backend when no model was loaded)."""
    from modtest.frameworks.keras.runtime import keras_backend_name

    return keras_backend_name()


def file_backend(path) -> str | None:
    """What would run the model file or folder ``path`` (its framework; Keras's backend for a Keras
    file), from its name (and a folder's files), no framework imported. None: no adapter reads it."""
    try:
        e = _entry_for_path(Path(str(path)))
    except ModelLoadError:
        return None
    return default_backend() if e.framework == "keras" else e.framework


def runtime_signature() -> tuple[str, str]:
    """(modtest version, Keras backend) of this process, without importing a framework: the last
    bits of a float depend on the backend, so a Dask client and its workers must agree on it."""
    import modtest

    return modtest.__version__, default_backend()


def array_ops(x):
    """The array functions (the ``keras.ops`` subset :mod:`modtest.frameworks.imaging` uses) for a
    framework tensor ``x``: torch's for torch tensors, ``keras.ops`` for other backend tensors."""
    if type(x).__module__.partition(".")[0] == "torch":
        from modtest.frameworks.torch.visualize import TorchOps

        return TorchOps(x.device)
    from keras import ops

    return ops


def adapter_registrations() -> tuple:
    """The adapters registered now (newest first), for :func:`restore_adapter_registrations`."""
    return tuple(_REGISTRY)


def restore_adapter_registrations(entries: tuple) -> None:
    """Put back the adapters of :func:`adapter_registrations` (a pytest session's scope does at its
    end: adapters its conftest files registered do not outlive it)."""
    _REGISTRY[:] = list(entries)


def _module_of(obj) -> str:
    return " ".join(c.__module__ for c in type(obj).__mro__)


def _builtin() -> None:
    """The Keras and torch adapters, registered without importing either framework."""
    def keras_load(path, trust=False):
        from modtest.frameworks.keras import load_model as load

        return load(path, trust=trust)

    def keras_wrap(model):
        from modtest.frameworks.keras import KerasAdapter

        return KerasAdapter(model)

    def keras_check(path, trust=False):
        from modtest.frameworks.keras.model import check_model_file as check

        check(path, trust=trust, legacy=False)

    def keras_signature(path):
        from modtest.frameworks.keras.model import file_signature

        return file_signature(path)

    def keras_auditable(path):
        from modtest.frameworks.keras.model import check_auditable_file

        check_auditable_file(path)

    register_adapter("keras", accepts=lambda m: _module_of(m).startswith("keras") or " keras." in _module_of(m),
                     wrap=keras_wrap, suffixes=(".keras", ".h5", ".hdf5"), load=keras_load, check=keras_check,
                     hint="load it with Keras and save it with model.save('model.keras')",
                     signature=keras_signature, auditable=keras_auditable)

    def torch_load(path, trust=False):
        from modtest.frameworks.torch.files import load_program

        return load_program(path, trust=trust)

    def torch_wrap(model):
        from modtest.frameworks.torch import TorchAdapter

        return TorchAdapter(model)

    def torch_check(path, trust=False):
        from modtest.frameworks.torch.files import check_model_file as check

        check(path, trust=trust)

    def torch_accepts(model) -> bool:
        mods = _module_of(model).split()
        if any(m.startswith("keras") for m in mods):
            return False  # Keras' torch backend makes Keras models torch modules too
        return "torch.nn.modules.module" in mods or "torch.export.exported_program" in mods

    register_adapter("torch", accepts=torch_accepts, wrap=torch_wrap, suffixes=(".pt2", ".pt", ".pth"),
                     reads=(".pt2",), load=torch_load, check=torch_check,
                     hint="export it with torch.export.export(model.eval(), (x,)) and save it with "
                          "torch.export.save(program, 'model.pt2')")


_builtin()


def _transformers() -> None:
    """Hugging Face model folders (config.json + safetensors): modtest.frameworks.transformers."""
    def accepts(model) -> bool:
        return any(c.__module__.startswith("transformers.") and c.__name__ == "PreTrainedModel"
                   for c in type(model).__mro__)

    def wrap(model):
        from modtest.frameworks.transformers import TransformersAdapter

        return TransformersAdapter(model)

    def load(path, trust=False):
        from modtest.frameworks.transformers.files import load_folder

        return load_folder(path, trust=trust)

    def check(path, trust=False):
        from modtest.frameworks.transformers.files import check_folder

        check_folder(path, trust=trust)

    def signature(path):
        from modtest.frameworks.transformers.files import folder_signature

        return folder_signature(path)

    def folder(path) -> bool:
        return (Path(path) / "config.json").is_file()

    register_adapter("transformers", accepts=accepts, wrap=wrap, load=load, check=check, signature=signature,
                     folder=folder, hint="a Hugging Face model folder: model.save_pretrained(folder)")


_transformers()


def supported_suffixes() -> tuple[str, ...]:
    """The model-file suffixes the registered adapters read."""
    return tuple(s for e in _REGISTRY for s in (e.suffixes if e.reads is None else e.reads))


def _how_to_convert() -> str:
    """What model files modtest reads and how to write one, per registered framework."""
    return "; ".join(f"{e.framework}: {'/'.join(e.suffixes if e.reads is None else e.reads) or 'folders'}"
                     + (f" ({e.hint})" if e.hint else "") for e in reversed(_REGISTRY)
                     if e.suffixes or e.folder is not None)


def _entry_for_path(path: Path) -> _Entry:
    if not path.exists():
        raise ModelLoadError(f"model file not found: {path}")
    if path.is_dir():
        for e in _REGISTRY:
            if e.folder is not None and e.folder(path):
                return e
        kind = "a TensorFlow SavedModel directory" if (path / "saved_model.pb").exists() else "a directory"
        raise ModelLoadError(f"{path} is {kind} that no adapter reads; modtest reads {_how_to_convert()}")
    suffix = path.suffix.lower()
    for e in _REGISTRY:
        if suffix in e.suffixes:
            return e
    raise ModelLoadError(f"unsupported model file {path.name!r}: modtest reads {_how_to_convert()}; "
                         f"or pass the in-memory model")


def check_model_file(path, *, trust: bool = False, auditable: bool = False) -> None:
    """Cheap checks of a model file (exists, known format, nothing that runs code unless ``trust``),
    without importing its framework: used before the slow import, and by the xdist controller.
    ``auditable``: also refuse a file whose structure (read from its config) modtest cannot audit."""
    path = Path(path)
    entry = _entry_for_path(path)
    if entry.check is not None:
        entry.check(path, trust=trust)
    if auditable and entry.auditable is not None:
        entry.auditable(path)


def file_signature(path) -> tuple[tuple, int | None] | None:
    """A model file's ``(input_shape, n_classes)`` read without importing its framework, or None
    when its framework cannot tell (then the data is checked once the model is loaded)."""
    try:
        entry = _entry_for_path(Path(path))
    except ModelLoadError:
        return None
    return entry.signature(Path(path)) if entry.signature is not None else None


def adapt(model, *, trust: bool = False) -> ModelAdapter:
    """An adapter for ``model``: an adapter (returned as is), a native model, or a model file path
    (loaded safely: nothing from the file runs unless ``trust``)."""
    if isinstance(model, ModelAdapter):
        return model
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        entry = _entry_for_path(path)
        adapter = entry.wrap(entry.load(path, trust=trust))
        adapter.source_path = str(path.resolve())  # another process may read the same file (Dask workers)
        return adapter
    for e in _REGISTRY:
        if e.accepts(model):
            return e.wrap(model)
    raise ModelLoadError(f"expected a model path or a model of a supported framework "
                         f"({', '.join(e.framework for e in _REGISTRY)}), got {type(model).__name__}")


def load_model(model, *, trust: bool = False, custom_objects: dict | None = None):
    """The native model: a file read safely (see *Safety* in the docs), or a model passed through."""
    if custom_objects is not None:
        from modtest.frameworks.keras import load_model as keras_load

        return keras_load(model, trust=trust, custom_objects=custom_objects)
    return adapt(model, trust=trust).model
