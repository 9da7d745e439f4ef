"""The framework boundary: what the core and the probes need from a model, whatever its framework.

An adapter wraps one native model (a ``keras.Model``, a torch program, a test's numpy MLP) and
answers in numpy: its graph spec (:class:`modtest.graph.GraphSpec`), its lesionable layers, a lesion
engine, its input shape and classes, a content fingerprint. The core (graph, partition, statistics,
claims, reports) and the probes only ever talk to an adapter, so adding a framework means writing one
adapter and registering it (:func:`modtest.frameworks.register_adapter`), not editing the core.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Callable, ClassVar, Protocol, Sequence

import numpy as np

from modtest.errors import UnsupportedModelError


class LesionEngine(Protocol):
    """Predicted labels of a model with sets of units lesioned (their incoming weights set to 0).

    ``labels(layer, unit_sets)`` has shape (V, N): row v with ``unit_sets[v]`` of ``layer`` lesioned
    (and every ``(layer, units)`` of ``fixed`` too); ``on_progress(n)`` is called as variants finish.
    """

    name: str

    def base_labels(self) -> np.ndarray: ...

    def labels(self, layer: str, unit_sets: Sequence, fixed: Sequence = (),
               on_progress: Callable[[int], None] | None = None) -> np.ndarray: ...


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

    # -- the graph -----------------------------------------------------------------------------
    @abstractmethod
    def graph_spec(self):
        """The :class:`modtest.graph.GraphSpec` of the paper's graph (node layers, kernels, edges)."""

    @abstractmethod
    def unit_layers(self) -> list[str]:
        """Names of the layers whose units are lesioned and tested, in model order."""

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
    def payload(self) -> bytes:
        """The model as bytes another process can :meth:`from_payload` (same weights, same graph)."""
        raise UnsupportedModelError(f"{self.framework} models cannot be sent to other processes")

    @classmethod
    def from_payload(cls, data: bytes, *, trust: bool = False) -> "ModelAdapter":
        raise UnsupportedModelError(f"{cls.framework} models cannot be read from bytes")
