"""Lesion engines of Hugging Face classifiers, by forward hooks (the model's weights are never written).

* :class:`ReferenceEngine` -- the definition, one lesion per forward: for each unit set, hooks (see
  :mod:`modtest.frameworks.transformers.families`) zero the lesioned neurons' pre-activations (or set
  them to their bias, ``keep_bias``) and the lesioned heads' outputs before the output projection; the
  model runs on the data in batches under ``torch.inference_mode`` and the hooks are removed.
* :class:`FastEngine` -- the same labels with fewer forward calls: many variants are stacked along the
  batch axis (variant-major, up to ``batch_size`` rows per call) and the hooks multiply by a per-row
  keep mask. Rows whose top-2 logit margin is within ``_SCREEN_TOL`` (relative) are recomputed by the
  reference path, so a batch-size-dependent rounding cannot flip a label.
"""
from __future__ import annotations

import contextlib

import numpy as np

from modtest.errors import InvalidInput
from modtest.frameworks.base import ENGINES

__all__ = ["ReferenceEngine", "FastEngine", "make_engine"]

#: rows whose top-2 margin is below this (relative to the largest logit) are recomputed one variant at a time
_SCREEN_TOL = 1e-4


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

    def _run(self, lesions, rows=None) -> np.ndarray:
        """Labels with ``lesions`` applied, on all examples or on the examples ``rows``."""
        import torch

        x = self._x if rows is None else self._x[torch.as_tensor(rows, dtype=torch.long)]
        handles = []
        try:
            for layer, units in lesions:
                if len(units):
                    handles.append(self._hook(layer, units))
            out = []
            with torch.inference_mode():
                for i in range(0, len(x), self.batch_size):
                    out.append(self.family.forward(x[i:i + self.batch_size]).argmax(-1).cpu().numpy())
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


class FastEngine(ReferenceEngine):
    """Variants stacked along the batch axis, lesions as keep masks (see the module docstring)."""

    name = "fast"

    def __init__(self, family, x, *, keep_bias: bool = False, batch_size: int = 1024):
        super().__init__(family, x, keep_bias=keep_bias, batch_size=batch_size)

    def _mask_hook(self, layer: str, keep):
        """A hook multiplying ``layer``'s units by ``keep`` (rows, width) of 0/1 (0: lesioned)."""
        import torch

        info = self.family.layer_info(layer)
        if info["unit_kind"] == "neuron":
            mod = self.family.neuron_module(layer)
            bias = getattr(mod, "bias", None) if self.keep_bias else None

            def after(_m, _inp, out):
                k = keep.to(out.dtype).reshape((keep.shape[0],) + (1,) * (out.ndim - 2) + (keep.shape[1],))
                return out * k if bias is None else out * k + bias.to(out.dtype) * (1 - k)

            return mod.register_forward_hook(after)
        mod = self.family.head_module(info["block"])
        dh = mod.weight.shape[0 if hasattr(mod, "nf") else 1] // self.family.n_heads
        cols = torch.repeat_interleave(keep, dh, dim=1)

        def before(_m, args):
            z = args[0]
            k = cols.to(z.dtype).reshape((cols.shape[0],) + (1,) * (z.ndim - 2) + (cols.shape[1],))
            return (z * k,) + tuple(args[1:])

        return mod.register_forward_pre_hook(before)

    def labels(self, layer, unit_sets, fixed=(), on_progress=None) -> np.ndarray:
        import torch

        fixed = [(fl, self._check(fl, fu)) for fl, fu in fixed]
        sets = [self._check(layer, u) for u in unit_sets]
        n, width = len(self._x), self.family.layer_width(layer)
        out = np.zeros((len(sets), n), dtype=np.int64)
        if not sets or not n:
            return out
        b = min(n, self.batch_size)
        per_call = max(1, self.batch_size // b)
        fixed_handles = [self._hook(fl, fu) for fl, fu in fixed if len(fu)]
        unsure = []
        try:
            for v0 in range(0, len(sets), per_call):
                chunk = sets[v0:v0 + per_call]
                keep = torch.ones((len(chunk), width))
                for i, u in enumerate(chunk):
                    keep[i, torch.as_tensor(u, dtype=torch.long)] = 0.0
                for e0 in range(0, n, b):
                    xb = self._x[e0:e0 + b]
                    rows = len(xb)
                    handle = self._mask_hook(layer, torch.repeat_interleave(keep, rows, dim=0))
                    try:
                        with torch.inference_mode():
                            logits = self.family.forward(xb.repeat((len(chunk),) + (1,) * (xb.ndim - 1)))
                    finally:
                        handle.remove()
                    logits = logits.double().cpu().numpy().reshape(len(chunk), rows, -1)
                    out[v0:v0 + len(chunk), e0:e0 + rows] = logits.argmax(-1)
                    if logits.shape[-1] > 1:
                        top2 = np.sort(logits, axis=-1)[..., -2:]
                        scale = np.maximum(np.abs(top2[..., 1]), 1.0)
                        for vi, ei in zip(*np.nonzero(top2[..., 1] - top2[..., 0] <= _SCREEN_TOL * scale)):
                            unsure.append((v0 + vi, e0 + ei))
                if on_progress is not None:
                    on_progress(len(chunk))
        finally:
            for h in fixed_handles:
                h.remove()
        by_variant: dict = {}
        for v, e in unsure:
            by_variant.setdefault(int(v), []).append(int(e))
        for v, rows in by_variant.items():  # near-ties: the reference path, one variant at a time
            out[v, rows] = self._run(fixed + [(layer, sets[v])], rows=rows)
        return out


def make_engine(engine: str, family, x, *, keep_bias=False, batch_size=1024, **_):
    """``"reference"`` (one lesion per forward) or ``"fast"`` (variants stacked along the batch axis)."""
    if engine not in ENGINES:
        raise InvalidInput(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if engine == "fast":
        return FastEngine(family, x, keep_bias=keep_bias, batch_size=max(1, int(batch_size)))
    return ReferenceEngine(family, x, keep_bias=keep_bias, batch_size=min(int(batch_size), 256))
