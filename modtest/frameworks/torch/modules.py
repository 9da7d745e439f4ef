"""``nn.Module`` -> ``ExportedProgram``: how a module passed to the Python API is exported.

A module is exported in inference mode (``eval()``, its training flag restored afterwards) with an
example input: taken from the data when the data is seen first (``check_data``, every probe that takes
data), given explicitly (:func:`export_module`), or, for a module whose first layer is an
``nn.Linear``, a zero vector of its input width. The batch dimension is exported as dynamic when torch
allows it, so the program runs on any batch. Exports are kept per module object (weakly: a dropped
module drops them) and redone when its weights change, so the many ``adapt(module)`` calls of one
audit export it once.
"""
from __future__ import annotations

import weakref

import numpy as np

from modtest.errors import ModelLoadError, UnsupportedModelError

__all__ = ["export_module", "cached_export", "infer_example_shape"]

#: module -> (weights key, input shape, ExportedProgram): a cache of derived values, not session state
_EXPORTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _weights_key(module) -> tuple:
    """Identity and version of every parameter and buffer (an in-place update bumps the version)."""
    return tuple((k, id(v), getattr(v, "_version", 0)) for k, v in module.state_dict(keep_vars=True).items())


def infer_example_shape(module) -> tuple | None:
    """The input shape (without batch) of a module whose first layer with weights is an ``nn.Linear``."""
    import torch

    for m in module.modules():
        if isinstance(m, torch.nn.Linear):
            return (int(m.in_features),)
        if any(True for _ in m.parameters(recurse=False)):
            return None
    return None


def first_conv_channels(module) -> int | None:
    """The input channels of a module whose first layer with weights is a convolution."""
    import torch

    for m in module.modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd):
            return int(m.in_channels)
        if any(True for _ in m.parameters(recurse=False)):
            return None
    return None


def cached_export(module):
    """The cached export of ``module`` when its weights have not changed since, else None."""
    hit = _EXPORTS.get(module)
    if hit is not None and hit[0] == _weights_key(module):
        return hit[2]
    return None


def export_module(module, example=None):
    """Export ``module`` (in eval mode) with ``example`` inputs (array or tensor, (N, ...)); without
    one, the cached export or an inferred input shape. Returns the ``ExportedProgram``."""
    from modtest.frameworks.torch.runtime import SERIALIZER, import_torch

    torch = import_torch(*SERIALIZER)
    key = _weights_key(module)
    hit = _EXPORTS.get(module)
    if example is None:
        if hit is not None and hit[0] == key:
            return hit[2]
        shape = hit[1] if hit is not None else infer_example_shape(module)
        if shape is None:
            raise ModelLoadError(f"cannot export the torch module {type(module).__name__} without an example "
                                 f"input: pass data first (lesion_study, check_data), pass the exported program "
                                 f"(torch.export.export(model.eval(), (x[:2],))), or call "
                                 f"modtest.frameworks.torch.export_module(model, x[:2])")
        example = np.zeros((2,) + tuple(shape), dtype=np.float32)
    ex = torch.as_tensor(np.asarray(example) if not isinstance(example, torch.Tensor) else example)
    if ex.ndim == 0:
        raise UnsupportedModelError("the example input needs a batch axis")
    if hit is not None and hit[0] == key and tuple(hit[1]) == tuple(ex.shape[1:]):
        return hit[2]
    ex = ex[:2] if len(ex) >= 2 else torch.cat([ex, ex])[:2]
    param = next(iter(module.parameters()), None)
    if param is not None:
        ex = ex.to(device=param.device, dtype=param.dtype if ex.is_floating_point() else ex.dtype)
    training = module.training
    module.eval()
    try:
        try:  # a dynamic batch: the program runs on any batch size
            program = torch.export.export(module, (ex,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        except Exception:  # noqa: BLE001 - the model fixes its batch somewhere: export batch 1 as recorded
            program = torch.export.export(module, (ex[:1],))
    except Exception as exc:  # noqa: BLE001 - one line, whatever torch.export says
        text = str(exc).strip().splitlines()
        raise UnsupportedModelError(f"torch.export cannot export {type(module).__name__}: {type(exc).__name__}: "
                                    f"{text[0][:300] if text else ''}") from None
    finally:
        module.train(training)
    _EXPORTS[module] = (key, tuple(ex.shape[1:]), program)
    return program
