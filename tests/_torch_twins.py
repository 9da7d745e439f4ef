"""Torch twins of Keras models: the same layers, names and weights, in torch's layout.

A Keras layer ``name`` becomes a torch module attribute ``name`` (so the exported program's unit
layers carry the Keras names); kernels are transposed to torch's (out, in, kh, kw), a Dense after a
Flatten of a conv map has its rows permuted from Keras' (h, w, c) flatten order to torch's (c, h, w),
and inputs are NCHW (``x.transpose(0, 3, 1, 2)``). Supported: what the tests' and examples' models use
(Sequential or single-chain functional models of Dense, Conv2D, BatchNormalization, ReLU/Activation,
MaxPooling2D, GlobalAveragePooling2D, Flatten, Dropout).
"""
from __future__ import annotations

import numpy as np


def _activation(name):
    import torch

    return {"linear": None, "relu": torch.relu, "softmax": lambda t: torch.softmax(t, dim=-1),
            "sigmoid": torch.sigmoid, "tanh": torch.tanh}[name]


def torch_twin(keras_model):
    """(torch module, to_torch(x)) for a Keras model of the supported layers."""
    import torch

    from modtest.frameworks.torch.runtime import import_torch

    import_torch()  # guards the export against a process that imported TensorFlow first
    steps = []
    module = torch.nn.Module()
    in_shape = tuple(keras_model.inputs[0].shape[1:])
    shape = in_shape  # Keras shape (h, w, c) or (d,)
    flat_from = None  # the (h, w, c) of a conv map a Flatten just flattened
    for layer in keras_model.layers:
        kind = type(layer).__name__
        w = layer.get_weights()
        if kind == "InputLayer":
            continue
        if kind == "Dense":
            kernel, bias = w[0], (w[1] if layer.use_bias else None)
            mod = torch.nn.Linear(kernel.shape[0], kernel.shape[1], bias=bias is not None)
            k = kernel
            if flat_from is not None and len(flat_from) == 3 and flat_from[2] > 1:
                h, ww, c = flat_from  # torch index c*h*w order <- Keras index h*w*c order
                order = np.arange(h * ww * c).reshape(h, ww, c).transpose(2, 0, 1).ravel()
                k = kernel[order]
            mod.weight.data = torch.as_tensor(np.ascontiguousarray(k.T))
            if bias is not None:
                mod.bias.data = torch.as_tensor(bias)
            setattr(module, layer.name, mod)
            steps.append((layer.name, _activation(layer.activation.__name__)))
            shape, flat_from = (kernel.shape[1],), None
        elif kind == "Conv2D":
            kernel = w[0]
            if layer.strides != (1, 1) or layer.dilation_rate != (1, 1) or layer.groups != 1:
                raise NotImplementedError(f"twin of {layer.name}: strides/dilation/groups")
            kh, kw = kernel.shape[:2]
            pad = (kh // 2, kw // 2) if layer.padding == "same" else 0
            mod = torch.nn.Conv2d(kernel.shape[2], kernel.shape[3], (kh, kw), padding=pad, bias=layer.use_bias)
            mod.weight.data = torch.as_tensor(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
            if layer.use_bias:
                mod.bias.data = torch.as_tensor(w[1])
            setattr(module, layer.name, mod)
            steps.append((layer.name, _activation(layer.activation.__name__)))
            h, ww = shape[0], shape[1]
            if layer.padding != "same":
                h, ww = h - kh + 1, ww - kw + 1
            shape = (h, ww, kernel.shape[3])
        elif kind == "BatchNormalization":
            gamma, beta, mean, var = w
            mod = torch.nn.BatchNorm2d(len(gamma), eps=layer.epsilon) if len(shape) == 3 else \
                torch.nn.BatchNorm1d(len(gamma), eps=layer.epsilon)
            for name, value in (("weight", gamma), ("bias", beta), ("running_mean", mean), ("running_var", var)):
                getattr(mod, name).data = torch.as_tensor(value)
            setattr(module, layer.name, mod)
            steps.append((layer.name, None))
        elif kind == "ReLU":
            steps.append((torch.relu, None))
        elif kind == "Activation":
            steps.append((_activation(layer.activation.__name__), None))
        elif kind == "MaxPooling2D":
            ph, pw = layer.pool_size
            steps.append((torch.nn.MaxPool2d((ph, pw)), None))
            shape = (shape[0] // ph, shape[1] // pw, shape[2])
        elif kind == "GlobalAveragePooling2D":
            steps.append((lambda t: t.mean(dim=(2, 3)), None))
            shape = (shape[2],)
        elif kind == "Flatten":
            steps.append((lambda t: t.flatten(1), None))
            flat_from, shape = shape, (int(np.prod(shape)),)
        elif kind == "Dropout":
            continue
        else:
            raise NotImplementedError(f"no torch twin for {kind} ({layer.name})")

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            for name, child in module.named_children():
                setattr(self, name, child)

        def forward(self, x):
            for op, act in steps:
                x = getattr(self, op)(x) if isinstance(op, str) else op(x)
                if act is not None:
                    x = act(x)
            return x

    twin = Twin().eval()

    def to_torch(x):
        x = np.asarray(x, dtype=np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)) if x.ndim == 4 else x

    return twin, to_torch
