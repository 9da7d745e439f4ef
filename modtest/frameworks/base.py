"""The framework boundary: what the core and the probes need from a model, whatever its framework.

An adapter wraps one native model (a ``keras.Model``, a torch program, a test's numpy MLP) and
answers in numpy: its graph spec (:class:`modtest.graph.GraphSpec`), its lesionable layers, a lesion
engine, its input shape and classes, a content fingerprint. The core (graph, partition, statistics,
claims, reports) and the probes only ever talk to an adapter, so adding a framework means writing one
adapter and registering it (:func:`modtest.frameworks.register_adapter`), not editing the core.
"""
from __future__ import annotations

import weakref
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np

from modtest.errors import InvalidInput, UnsupportedModelError


class LesionEngine(Protocol):
    """Predicted labels of a model with sets of units lesioned (their incoming weights set to 0).

    ``labels(layer, unit_sets)`` has shape (V, N): row v with ``unit_sets[v]`` of ``layer`` lesioned
    (and every ``(layer, units)`` of ``fixed`` too); ``on_progress(n)`` is called as variants finish.
    """

    name: str

    def base_labels(self) -> np.ndarray: ...

    def labels(self, layer: str, unit_sets: Sequence, fixed: Sequence = (),
               on_progress: Callable[[int], None] | None = None) -> np.ndarray: ...


class PrefixCache:
    """A least-recently-used cache of per-layer arrays under a byte budget, shared by the fast
    lesion engines: ``cache_bytes`` is the budget, ``peak_cached_bytes`` the most held at once
    (cached entries plus the per-block arrays a caller reports with :meth:`_note`)."""

    def _init_cache(self, cache_bytes: int) -> None:
        self.cache_bytes = int(cache_bytes)
        self._lru: OrderedDict = OrderedDict()  # key -> (value, bytes)
        self._lru_bytes = 0
        self.peak_cached_bytes = 0

    def _lru_get(self, key):
        hit = self._lru.get(key)
        if hit is None:
            return None
        self._lru.move_to_end(key)
        return hit[0]

    def _make_room(self, nbytes: int) -> None:
        """Evict least recently used entries until ``nbytes`` more fit in ``cache_bytes``."""
        while self._lru and self._lru_bytes + nbytes > self.cache_bytes:
            _, (_, b) = self._lru.popitem(last=False)
            self._lru_bytes -= b

    def _lru_put(self, key, value, nbytes: int) -> None:
        self._make_room(nbytes)
        self._lru[key] = (value, nbytes)
        self._lru_bytes += nbytes
        self._note()

    def _note(self, working: int = 0) -> None:
        """Record the bytes now held in cached plus ``working`` per-block arrays."""
        self.peak_cached_bytes = max(self.peak_cached_bytes, self._lru_bytes + working)

    def clear_cache(self) -> None:
        """Drop every cached entry."""
        self._lru.clear()
        self._lru_bytes = 0

    @property
    def cached_bytes(self) -> int:
        return self._lru_bytes


class DistinctUnitSets:
    """``labels`` that runs each distinct unit set once (equal sets are frequent among the random
    controls of small sub-clusters) through the engine's ``_labels_distinct``."""

    def labels(self, layer: str, unit_sets, fixed=(), on_progress=None) -> np.ndarray:
        first: dict = {}
        inverse = np.array([first.setdefault(tuple(np.unique(np.asarray(u, dtype=np.int64)).tolist()), len(first))
                            for u in unit_sets], dtype=np.int64)
        if len(first) == len(unit_sets):
            return self._labels_distinct(layer, unit_sets, fixed, on_progress)
        lab = self._labels_distinct(layer, [np.asarray(k, dtype=np.int64) for k in first], fixed, on_progress)
        if on_progress is not None:
            on_progress(len(unit_sets) - len(first))
        return lab[inverse]


#: the lesion engines every adapter offers: "fast" (batched) and "reference" (the definition)
ENGINES = ("fast", "reference")


def choose_engine(engine: str, fast, reference, model, x, *, keep_bias: bool = False, batch_size: int = 1024,
                  max_elements: int | None = None, cache_bytes: int | None = None):
    """An adapter's ``engine`` ("fast" or "reference", classes ``fast``/``reference``) over ``model``
    and inputs ``x``; ``max_elements`` and ``cache_bytes`` (the fast engine's memory bounds) default
    to the engine's own defaults."""
    if engine == "fast":
        kw = {k: v for k, v in (("max_elements", max_elements), ("cache_bytes", cache_bytes)) if v is not None}
        return fast(model, x, keep_bias=keep_bias, batch_size=batch_size, **kw)
    if engine == "reference":
        return reference(model, x, keep_bias=keep_bias, batch_size=batch_size)
    raise InvalidInput(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")


class ModelAdapter(ABC):
    """One model seen through its framework. Subclasses set :attr:`framework` and implement the
    abstract methods; everything returned is numpy or builtins."""

    framework: ClassVar[str] = ""
    #: ``"channels_last"`` (Keras, NHWC) or ``"channels_first"`` (torch, NCHW) for image inputs
    layout: ClassVar[str] = "channels_last"

    def __init__(self, model: Any):
        self.model = model
        self._fingerprint: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    # -- identity and shape ------------------------------------------------------------------
    @property
    def name(self) -> str:
        return str(getattr(self.model, "name", type(self.model).__name__))

    @property
    def backend(self) -> str:
        """What runs the model (the report's ``versions.backend``): the framework, or for Keras its
        backend."""
        return self.framework

    @property
    @abstractmethod
    def input_shape(self) -> tuple:
        """The input shape without the batch axis (None for a free dimension)."""

    @property
    @abstractmethod
    def n_classes(self) -> int:
        """Size of the output's last axis."""

    def fingerprint(self) -> str:
        """A content hash of architecture and weights (16 hex digits), computed once per adapter."""
        if self._fingerprint is None:
            self._fingerprint = self.compute_fingerprint()
        return self._fingerprint

    @abstractmethod
    def compute_fingerprint(self) -> str:
        """The content hash (see :meth:`fingerprint`)."""

    def bind_data(self, x) -> None:
        """Take example inputs from the data (a torch ``nn.Module`` is exported with them); most
        adapters need none."""
        return None

    # -- the graph -----------------------------------------------------------------------------
    @abstractmethod
    def graph_spec(self):
        """The :class:`modtest.graph.GraphSpec` of the paper's graph (node layers, kernels, edges)."""

    @abstractmethod
    def unit_layers(self) -> list[str]:
        """Names of the layers whose units are lesioned and tested, in model order."""

    def layer_info(self, layer: str) -> dict:
        """Extra fields of the lesion rows of ``layer`` (a transformer's ``unit_kind`` and ``block``);
        none by default."""
        return {}

    def layer_positions(self) -> dict[str, int]:
        """Position of every unit layer in model order (probes sort by it)."""
        return {name: i for i, name in enumerate(self.unit_layers())}

    # -- running -------------------------------------------------------------------------------
    @abstractmethod
    def lesion_engine(self, x: np.ndarray, *, engine: str = "fast", keep_bias: bool = False,
                      batch_size: int = 1024, max_elements: int | None = None,
                      cache_bytes: int | None = None) -> LesionEngine:
        """A :class:`LesionEngine` over inputs ``x`` (``"reference"``: the plain definition)."""

    def visualizer(self):
        """The feature-visualization engine (render images, read activations); optional."""
        raise UnsupportedModelError(f"{self.framework} models have no feature-visualization engine yet")

    def untrained_control(self, seed: int = 0):
        """A re-initialised copy of the native model (paper A.5); optional."""
        raise UnsupportedModelError(f"{self.framework} models have no untrained control yet")

    # -- travelling between processes (Dask workers) ----------------------------------------------
    #: the model file this adapter was read from (set by :func:`modtest.frameworks.adapt`), or None
    source_path: str | None = None

    def payload(self) -> bytes:
        """The model as bytes another process can :meth:`from_payload` (same weights, same graph)."""
        raise UnsupportedModelError(f"{self.framework} models cannot be sent to other processes "
                                    f"(the adapter has no payload())")

    @classmethod
    def from_payload(cls, data: bytes, *, trust: bool = False) -> ModelAdapter:
        raise UnsupportedModelError(f"{cls.framework} models cannot be read from bytes")

    def parcel(self, *, path: bool = False, trust: bool = False) -> ModelParcel:
        """This model packed for another process: its :meth:`payload` bytes, or (``path=True``, for a
        model read from a file) the file's path, which the other process must be able to read."""
        _LOADED.setdefault(self.fingerprint(), self)  # opened in this process: this very adapter
        if path and self.source_path is not None:
            return ModelParcel(type(self), self.fingerprint(), path=str(self.source_path), trust=trust)
        return ModelParcel(type(self), self.fingerprint(), data=self.payload(), trust=trust)

    def __reduce__(self):
        # pickled as its payload; unpickling loads it once per process and fingerprint (ModelParcel.open)
        return _open_parcel, (self.parcel(),)

    def __dask_tokenize__(self):
        """Dask names an adapter by its content (scattering the same model twice gives one key)."""
        return ("modtest-model", self.framework, self.fingerprint())


def _open_parcel(parcel: ModelParcel) -> ModelAdapter:
    return parcel.open()


class ModelParcel:
    """A model on its way to another process: its bytes or a file path, with its fingerprint.

    :meth:`open` loads it at most once per process and fingerprint (a weak cache: a loaded model is
    shared while anything uses it), and checks that what was loaded has the fingerprint it was sent
    with, so every process computes on the same weights.
    """

    def __init__(self, adapter_cls: type, fingerprint: str, *, data: bytes | None = None,
                 path: str | None = None, trust: bool = False):
        self.adapter_cls, self.fingerprint = adapter_cls, str(fingerprint)
        self.data, self.path, self.trust = data, path, bool(trust)
        self._adapter: ModelAdapter | None = None

    def __repr__(self) -> str:
        how = f"path={self.path!r}" if self.path is not None else f"{len(self.data or b'')} bytes"
        return f"ModelParcel({self.adapter_cls.framework}, {self.fingerprint}, {how})"

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_adapter"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._adapter = None

    def __dask_tokenize__(self):
        return ("modtest-model", self.adapter_cls.framework, self.fingerprint, self.path)

    def open(self) -> ModelAdapter:
        """The adapter: the one already loaded in this process for this fingerprint, or loaded now."""
        if self._adapter is None:
            hit = _LOADED.get(self.fingerprint)
            if hit is None:
                hit = self._load()
                _LOADED[self.fingerprint] = hit
            self._adapter = hit
        return self._adapter

    def _load(self) -> ModelAdapter:
        from modtest.errors import ModelLoadError

        if self.path is not None:
            from modtest.frameworks import adapt

            adapter = adapt(self.path, trust=self.trust)
        else:
            adapter = self.adapter_cls.from_payload(self.data, trust=self.trust)
        got = adapter.fingerprint()
        if got != self.fingerprint:
            where = f"the file {self.path}" if self.path is not None else "the bytes it was sent"
            raise ModelLoadError(f"the model read from {where} has fingerprint {got}, expected {self.fingerprint}: "
                                 f"every process must read the same model file")
        return adapter


#: fingerprint -> adapter loaded in this process (a weak cache: an entry lives while the model is used)
_LOADED: weakref.WeakValueDictionary[str, ModelAdapter] = weakref.WeakValueDictionary()
