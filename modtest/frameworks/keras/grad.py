"""One tiny gradient adapter per Keras backend.

Everything else in the visualization engine is written with ``keras.ops`` and numpy, so it runs on
any backend; only "value and gradient of a scalar function with respect to its first argument"
differs between backends, and lives here:

* tensorflow: ``tf.GradientTape`` inside a ``tf.function`` (traced for the first shape, then once more
  with free dimensions);
* jax: ``jax.jit(jax.value_and_grad(...))``, the model's variables passed in explicitly through a
  ``keras.StatelessScope`` (what ``Layer.stateless_call`` does), so no weights are baked in as
  constants;
* torch: ``torch.autograd`` (untested here: torch is not a dependency).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from modtest.errors import UnsupportedModelError


def backend() -> str:
    """Name of the active Keras backend ("tensorflow", "jax", "torch", ...)."""
    import keras

    return keras.backend.backend()


def value_and_grad(fn: Callable, variables: Sequence = ()) -> Callable:
    """Compile ``fn`` into ``f(x, *args) -> (value, dvalue/dx)``, both as numpy arrays.

    Parameters
    ----------
    fn : callable
        ``fn(x, *args) -> scalar`` written with ``keras.ops`` (it may call Keras models); ``x`` and
        ``args`` are backend tensors, ``args`` are treated as constants.
    variables : sequence of keras.Variable
        The Keras variables ``fn`` reads (``model.variables``). Needed by the jax backend only,
        which passes their values into the jitted function instead of capturing them.

    Returns
    -------
    callable
        ``f(x, *args)`` taking numpy arrays (float32), returning ``(float, ndarray like x)``.
    """
    name = backend()
    if name == "tensorflow":
        return _tensorflow(fn)
    if name == "jax":
        return _jax(fn, list(variables))
    if name == "torch":
        return _torch(fn)
    raise UnsupportedModelError(f"keras backend {name!r} has no gradient adapter; use tensorflow, jax or torch")


def _tensorflow(fn):
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(x, *args):
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x, *args)
        return value, tape.gradient(value, x)

    def call(x, *args):
        value, grad = step(tf.convert_to_tensor(x), *[tf.convert_to_tensor(a) for a in args])
        return float(value.numpy()), grad.numpy()

    return call


def _jax(fn, variables):
    import jax
    import keras

    def pure(values, x, *args):
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(x, *args)

    step = jax.jit(jax.value_and_grad(pure, argnums=1))

    def call(x, *args):
        values = [v.value for v in variables]
        value, grad = step(values, x, *args)
        return float(value), np.asarray(grad)

    return call


def _torch(fn):
    import torch

    def call(x, *args):
        xt = torch.tensor(np.asarray(x), requires_grad=True)
        targs = [torch.as_tensor(np.asarray(a)) for a in args]
        if torch.cuda.is_available():
            xt = xt.detach().cuda().requires_grad_(True)
            targs = [a.cuda() for a in targs]
        value = fn(xt, *targs)
        (grad,) = torch.autograd.grad(value, xt)
        return float(value.detach().cpu().numpy()), grad.detach().cpu().numpy()

    return call
