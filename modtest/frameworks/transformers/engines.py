"""The reference lesion engine of Hugging Face classifiers: one lesion per forward, by hooks.

For each unit set, forward hooks on the model (see :mod:`modtest.frameworks.transformers.families`)
zero the lesioned neurons' pre-activations (or set them to their bias, ``keep_bias``) and the
lesioned heads' outputs before the output projection; the model runs on the data in batches under
``torch.inference_mode`` and the hooks are removed. The model's weights are never written.
"""
from __future__ import annotations

import contextlib

import numpy as np

from modtest.errors import InvalidInput
from modtest.frameworks.base import ENGINES

__all__ = ["ReferenceEngine", "make_engine"]


class ReferenceEngine:
    name = "reference"

    def __init__(self, family, x, *, keep_bias: bool = False, batch_size: int = 256):
        import torch

        self.family = family
        self.keep_bias = bool(keep_bias)
        self.batch_size = max(1, int(batch_size))
        x = np.asarray(x)
        self._x = torch.as_tensor(x if family.text else x.astype(np.float32))
        self._base = None

    def _check(self, layer: str, units) -> np.ndarray:
        width = self.family.layer_width(layer)
        u = np.unique(np.asarray(units, dtype=np.int64).ravel())
        if u.size and (u.min() < 0 or u.max() >= width):
            raise InvalidInput(f"unit indices of layer {layer!r} must lie in [0, {width - 1}], "
                               f"got {int(u.min())}..{int(u.max())}")
        return u

    def _hook(self, layer: str, units: np.ndarray):
        import torch

        info = self.family.layer_info(layer)
        idx = torch.as_tensor(units, dtype=torch.long)
        if info["unit_kind"] == "neuron":
            mod = self.family.neuron_module(layer)
            bias = getattr(mod, "bias", None)

            def after(_m, _inp, out):
                out = out.clone()
                out[..., idx] = bias[idx].to(out.dtype) if (self.keep_bias and bias is not None) else 0.0
                return out

            return mod.register_forward_hook(after)
        mod = self.family.head_module(info["block"])
        # Conv1D (GPT-2) weights are (in, out), Linear ones (out, in)
        dh = mod.weight.shape[0 if hasattr(mod, "nf") else 1] // self.family.n_heads
        cols = (idx[:, None] * dh + torch.arange(dh)[None, :]).reshape(-1)

        def before(_m, args):
            z = args[0].clone()
            z[..., cols] = 0.0
            return (z,) + tuple(args[1:])

        return mod.register_forward_pre_hook(before)

    def _run(self, lesions) -> np.ndarray:
        import torch

        handles = []
        try:
            for layer, units in lesions:
                if len(units):
                    handles.append(self._hook(layer, units))
            out = []
            with torch.inference_mode():
                for i in range(0, len(self._x), self.batch_size):
                    out.append(self.family.forward(self._x[i:i + self.batch_size]).argmax(-1).cpu().numpy())
            return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
        finally:
            for h in handles:
                with contextlib.suppress(Exception):
                    h.remove()

    def base_labels(self) -> np.ndarray:
        if self._base is None:
            self._base = self._run(())
        return self._base

    def labels(self, layer, unit_sets, fixed=(), on_progress=None) -> np.ndarray:
        fixed = [(fl, self._check(fl, fu)) for fl, fu in fixed]
        rows = []
        for units in unit_sets:
            rows.append(self._run(fixed + [(layer, self._check(layer, units))]))
            if on_progress is not None:
                on_progress(1)
        return np.stack(rows) if rows else np.zeros((0, len(self._x)), dtype=np.int64)


def make_engine(engine: str, family, x, *, keep_bias=False, batch_size=1024, **_):
    """The engine: only the reference one so far ("fast" falls back to it, said in docs/transformers.md)."""
    if engine not in ENGINES:
        raise InvalidInput(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    return ReferenceEngine(family, x, keep_bias=keep_bias, batch_size=min(int(batch_size), 256))
