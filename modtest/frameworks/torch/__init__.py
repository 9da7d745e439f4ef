"""The torch adapter: ``.pt2`` programs of ``torch.export`` (and ``nn.Module`` objects, exported here).

Every module of modtest that imports torch lives in this folder, with the Keras adapter's entry points:

* ``files.py``     -- safe loading of ``.pt2`` archives; refusals of ``.pt``/``.pth`` files (no import)
* ``modules.py``   -- exporting an ``nn.Module`` passed to the Python API
* ``program.py``   -- the exported ATen graph, its weights, an interpreter for any part of it
* ``spec.py``      -- program -> :class:`modtest.graph.GraphSpec` (kernels converted to Keras' layout)
* ``engines.py``   -- lesion engines: the reference definition and the fast batched engine
* ``visualize.py`` -- feature visualization with torch autograd (transforms shared with Keras)
* ``runtime.py``   -- importing torch next to TensorFlow; the device
"""
from __future__ import annotations

import numpy as np

from modtest.frameworks.base import ModelAdapter
from modtest.frameworks.torch.files import load_program
from modtest.frameworks.torch.modules import export_module

__all__ = ["TorchAdapter", "load_program", "export_module", "is_program", "is_module"]


def is_program(obj) -> bool:
    """Whether ``obj`` is a ``torch.export.ExportedProgram`` (checked by type name: no import)."""
    return any(c.__module__.startswith("torch.export") and c.__name__ == "ExportedProgram"
               for c in type(obj).__mro__)


def is_module(obj) -> bool:
    """Whether ``obj`` is a ``torch.nn.Module`` that is not a Keras model (Keras' torch backend makes
    its models modules too); checked by type names, without importing torch."""
    mods = [c.__module__ for c in type(obj).__mro__]
    return "torch.nn.modules.module" in mods and not any(m.startswith("keras") for m in mods)


class TorchAdapter(ModelAdapter):
    """An exported torch program (or an ``nn.Module``, exported on first need) seen by the core."""

    framework = "torch"
    layout = "channels_first"

    def __init__(self, model, name: str | None = None):
        super().__init__(model)
        self._program = None
        self._name = name

    @property
    def name(self) -> str:
        if self._name:
            return self._name
        return type(self.model).__name__

    def bind_data(self, x) -> None:
        """A module not exported yet is exported with an example taken from ``x`` (channels-last images
        for a module whose first layer is a convolution get the layout error, not torch's)."""
        if self._program is None and is_module(self.model):
            from modtest.frameworks.torch.modules import first_conv_channels

            channels = first_conv_channels(self.model)
            shape = np.shape(x)
            if channels is not None and len(shape) == 4 and shape[1] != channels and shape[-1] == channels:
                from modtest.errors import DataError

                raise DataError(f"x has shape {tuple(shape)}, channels last (N, H, W, C), but this torch model "
                                f"reads channels first (N, C, H, W) with C = {channels}; pass "
                                f"x.transpose(0, 3, 1, 2)")
            export_module(self.model, np.asarray(x[:2]))

    @property
    def program(self):
        """The :class:`~modtest.frameworks.torch.program.Program` (read once per adapter)."""
        if self._program is None:
            from modtest.frameworks.torch.program import Program
            from modtest.frameworks.torch.runtime import device

            exported = export_module(self.model) if is_module(self.model) else self.model
            self._program = Program.read(exported, device())
        return self._program

    @property
    def input_shape(self) -> tuple:
        return self.program.input_shape

    @property
    def n_classes(self) -> int:
        return self.program.n_classes

    def compute_fingerprint(self) -> str:
        return self.program.fingerprint()

    def graph_spec(self):
        from modtest.frameworks.torch.spec import extract_spec

        return extract_spec(self.program)

    def unit_layers(self) -> list[str]:
        from modtest.frameworks.torch.spec import unit_layers

        return unit_layers(self.program)

    def lesion_engine(self, x, *, engine="fast", keep_bias=False, batch_size=1024, max_elements=None,
                      cache_bytes=None):
        from modtest.frameworks.torch.engines import make_engine

        return make_engine(engine, self.program, x, keep_bias=keep_bias, batch_size=batch_size,
                           max_elements=max_elements, cache_bytes=cache_bytes)

    def visualizer(self):
        from modtest.frameworks.torch.visualize import TorchVisualizer

        return TorchVisualizer(self.program)

    def payload(self) -> bytes:
        import io

        from modtest.frameworks.torch.runtime import import_torch

        torch = import_torch()
        buf = io.BytesIO()
        torch.export.save(self.program.exported, buf)
        return buf.getvalue()

    @classmethod
    def from_payload(cls, data: bytes, *, trust: bool = False) -> TorchAdapter:
        import tempfile
        from pathlib import Path

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.pt2"
            path.write_bytes(data)
            return cls(load_program(path, trust=trust))
