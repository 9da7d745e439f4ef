"""The Keras 3 adapter: safe loading, layer graph -> graph spec, lesion engines, visualization.

Every module of modtest that imports Keras lives in this folder:

* ``model.py``    -- safe loading (config read as JSON first), the layer graph, unit layers, hashes
* ``spec.py``     -- layer graph -> :class:`modtest.graph.GraphSpec` (kernels, folded batch norm)
* ``engines.py``  -- lesion engines: the reference definition and the fast batched engine
* ``visualize.py``, ``grad.py`` -- feature visualization (Lucid's method on ``keras.ops``)
* ``runtime.py``  -- importing Keras cheaply in the processes modtest owns
"""
from __future__ import annotations

import numpy as np

from modtest.frameworks.base import ModelAdapter
from modtest.frameworks.keras.model import load_model

__all__ = ["KerasAdapter", "load_model"]


class KerasAdapter(ModelAdapter):
    """A ``keras.Model`` (Sequential or functional) seen by the core."""

    framework = "keras"
    layout = "channels_last"

    @property
    def backend(self) -> str:
        import keras

        return str(keras.backend.backend())

    @property
    def input_shape(self) -> tuple:
        return tuple(self.model.inputs[0].shape[1:])

    @property
    def n_classes(self) -> int:
        return int(self.model.outputs[0].shape[-1])

    def compute_fingerprint(self) -> str:
        from modtest.frameworks.keras.model import model_hash

        return model_hash(self.model)

    def graph_spec(self):
        from modtest.frameworks.keras.spec import extract_spec

        return extract_spec(self.model)

    def unit_layers(self) -> list[str]:
        from modtest.frameworks.keras.model import unit_layers

        return unit_layers(self.model)

    def lesion_engine(self, x, *, engine="fast", keep_bias=False, batch_size=1024, max_elements=None,
                      cache_bytes=None):
        from modtest.frameworks.keras.engines import make_engine

        return make_engine(engine, self.model, x, keep_bias=keep_bias, batch_size=batch_size,
                           max_elements=max_elements, cache_bytes=cache_bytes)

    def visualizer(self):
        return KerasVisualizer(self.model)

    def untrained_control(self, seed: int = 0):
        from modtest.frameworks.keras.visualize import untrained_control

        return untrained_control(self.model, seed)

    def payload(self) -> bytes:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.keras"
            self.model.save(path)
            return path.read_bytes()

    @classmethod
    def from_payload(cls, data: bytes, *, trust: bool = False) -> KerasAdapter:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.keras"
            path.write_bytes(data)
            return cls(load_model(path, trust=trust))


class KerasVisualizer:
    """Feature visualization of one Keras model (see :mod:`modtest.frameworks.keras.visualize`)."""

    def __init__(self, model):
        self.model = model

    @property
    def backend(self) -> str:
        import keras

        return keras.backend.backend()

    def render(self, objectives, **kw):
        """Optimised images and final objective values, (B, H, W, C) and (B,)."""
        from modtest.frameworks.keras.visualize import render

        return render(self.model, objectives, **kw)

    def forward(self, images, layers, *, with_output: bool = False, batch_size: int = 256):
        """Per-unit activations of ``layers`` (dict of (B, U)) and output probabilities (B, classes)."""
        from modtest.frameworks.keras.visualize import _forward

        return _forward(self.model, images, layers, with_output=with_output, batch_size=batch_size)

    def post_activations(self, layer: str, x, *, batch_size: int = 256, resolve: bool = True) -> np.ndarray:
        """Each unit's post-activation on every example (N, units); a conv map's value is its L1 norm."""
        from modtest.frameworks.keras.visualize import unit_post_activations

        return unit_post_activations(self.model, layer, x, batch_size=batch_size, resolve=resolve)
