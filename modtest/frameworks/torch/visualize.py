"""Feature visualization of an exported torch program, with torch autograd.

The images, transforms, parameterizations, seeds and the Adam loop are those of the Keras adapter
(:mod:`modtest.frameworks.imaging`); only the objective's value and gradient come from here: the
program is run (by :class:`~modtest.frameworks.torch.program.Program`, up to the deepest layer read)
on the transformed images, each image's own units are averaged (a feature map over its positions
first), and ``torch.autograd.grad`` gives the gradient with respect to the image parameters. Images
are optimised as (H, W, C), like Keras', and handed to the program channels first.
"""
from __future__ import annotations

import numpy as np

from modtest.errors import InvalidInput
from modtest.frameworks.imaging import (
    check_objectives,
    check_render_args,
    check_units,
    image_setup,
    image_shape_from,
    optimise,
    seed_keys,
)
from modtest.frameworks.torch.runtime import import_torch
from modtest.stats import softmax


class TorchOps:
    """The same functions on torch tensors of one device (gradients flow through them)."""

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device

    def _dtype(self, dtype):
        return getattr(self.torch, dtype) if isinstance(dtype, str) else dtype

    def convert_to_tensor(self, a):
        if isinstance(a, self.torch.Tensor):
            return a
        return self.torch.as_tensor(np.asarray(a), device=self.device)

    def convert_to_numpy(self, a):
        return a.detach().cpu().numpy()

    def reshape(self, x, shape):
        return x.reshape(tuple(shape))

    def floor(self, x):
        return self.torch.floor(x)

    def clip(self, x, lo, hi):
        return self.torch.clamp(x, lo, hi)

    def cos(self, x):
        return self.torch.cos(x)

    def sin(self, x):
        return self.torch.sin(x)

    def sigmoid(self, x):
        return self.torch.sigmoid(x)

    def sum(self, x, axis=None):
        return self.torch.sum(x) if axis is None else self.torch.sum(x, dim=axis)

    def shape(self, x):
        return tuple(x.shape)

    def einsum(self, eq, *args):
        return self.torch.einsum(eq, *[self.convert_to_tensor(a) for a in args])

    def arange(self, n, dtype="int32"):
        return self.torch.arange(int(n), dtype=self._dtype(dtype), device=self.device)

    def cast(self, x, dtype):
        return x.to(self._dtype(dtype))

    def take(self, x, idx, axis=0):
        return self.torch.index_select(x, axis, idx.long())

    def pad(self, x, widths, mode="constant", constant_values=0.0):
        if mode == "constant":
            flat = [int(w) for pair in reversed(widths) for w in pair]
            return self.torch.nn.functional.pad(x, flat, mode="constant", value=float(constant_values))
        for axis, (before, after) in enumerate(widths):  # reflect / symmetric: numpy's index map
            if before or after:
                index = np.pad(np.arange(x.shape[axis]), (int(before), int(after)), mode=mode)
                x = self.torch.index_select(x, axis, self.torch.as_tensor(index, device=x.device))
        return x

__all__ = ["TorchVisualizer", "activation_node"]

#: ops whose output is the post-activation of the unit layer before them (with batch norm)
_ACTIVATIONS = ("relu", "relu_", "relu6", "hardtanh", "hardtanh_", "leaky_relu", "leaky_relu_", "elu", "elu_",
                "selu", "celu", "gelu", "silu", "silu_", "sigmoid", "tanh", "hardsigmoid", "hardswish",
                "hardswish_", "mish", "softplus", "prelu", "_prelu_kernel")


def activation_node(program, layer: str, resolve: bool = True):
    """The node holding ``layer``'s post-activation: the unit node, followed through the batch norm and
    activation ops that directly and only consume it (conv -> BN -> ReLU gives the ReLU)."""
    from modtest.frameworks.torch.program import _aten_name
    from modtest.frameworks.torch.spec import describe

    unit = program.units.get(layer)
    if unit is None:
        raise InvalidInput(f"model has no layer named {layer!r}")
    node = unit.node
    if not resolve:
        return node
    info = describe(program)
    while True:
        users = [u for u in node.users if u in info]
        if len(users) != 1 or len(node.users) != 1:
            return node
        nxt = users[0]
        kind = info[nxt].kind
        if kind == "bn" or kind == "getitem" or (kind == "elementwise" and _aten_name(nxt.target) in _ACTIVATIONS):
            node = nxt
            continue
        return node


class TorchVisualizer:
    """Feature visualization of one exported program (the probe's ``visualizer``)."""

    backend = "torch"

    def __init__(self, program):
        self.program = program

    # ------------------------------------------------------------ plumbing
    def _to_input(self, images):
        """Images (B, H, W, C) -> the program's input (B, *input shape), channels first."""
        shape = self.program.input_shape
        if len(shape) == 3:
            x = images.permute(0, 3, 1, 2)
            if tuple(x.shape[1:]) != tuple(shape):
                x = x.reshape((-1,) + tuple(shape))
            return x
        return images.reshape((-1,) + tuple(shape))

    def _acts(self, x, nodes, with_output: bool = False):
        """Values of ``nodes`` (and the output) for a batch ``x``, running only the steps they need."""
        prog = self.program
        keep = list(nodes) + ([prog.output] if with_output else [])
        need = prog.upstream(keep)
        env = prog.base_env()
        env[prog.input] = x.to(prog.input_dtype)
        prog.run(env, prog.steps_of(need), int(x.shape[0]), keep=keep)
        return [env[n] for n in keep]

    @staticmethod
    def _reduce(out):
        """Per-unit activation (B, U): a feature map (B, C, ...) averaged over its positions."""
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out.mean(dim=tuple(range(2, out.ndim))) if out.ndim > 2 else out

    # ------------------------------------------------------------ the probe's interface
    def render(self, objectives, *, steps: int = 256, lr: float = 0.05, param: str = "pixel",
               transforms="auto", seed=0, batch_size: int = 128, value_range=(0.0, 1.0), image_shape=None,
               resolve: bool = True, return_history: bool = False, layers=None):
        """Optimised images (B, H, W, C) and final objective values (B,); see
        :func:`modtest.frameworks.keras.visualize.render` for the arguments."""
        torch = import_torch()
        prog = self.program
        objs = check_objectives(objectives)
        value_range = check_render_args(steps, lr, param, batch_size, value_range)
        keys = seed_keys(seed, len(objs))
        shape = image_shape_from(prog.input_shape, image_shape, channels_first=True)
        tlist, fill, parameterization = image_setup(shape, transforms, param, value_range)
        layers = list(dict.fromkeys(list(layers or []) + [layer for layer, _ in objs]))
        nodes = [activation_node(prog, name, resolve) for name in layers]
        widths = {name: int(prog.units[name].width) for name in layers}
        check_units(objs, widths)
        ops = TorchOps(prog.device)

        def step_fn(p, *args):
            masks = [torch.as_tensor(m, device=prog.device) for m in args[:len(layers)]]
            tparams = [torch.as_tensor(t, device=prog.device) for t in args[len(layers):]]
            pt = torch.as_tensor(p, device=prog.device).requires_grad_(True)
            x = parameterization.to_image(pt)
            for t, tp in zip(tlist, tparams):
                x = t.apply(x, tp, fill)
            outs = self._acts(self._to_input(x), nodes)
            total = sum((self._reduce(out) * mask).sum() for out, mask in zip(outs, masks))
            (grad,) = torch.autograd.grad(total, pt)
            return float(total.detach().cpu()), grad.detach().cpu().numpy()

        def to_image(p):
            with torch.no_grad():
                img = parameterization.to_image(ops.convert_to_tensor(p))
            return np.asarray(img.cpu().numpy() if hasattr(img, "cpu") else img, dtype="float32")

        images, history = optimise(objs, keys, layers, widths, parameterization, tlist, step_fn, to_image,
                                   steps=steps, lr=lr, batch_size=batch_size, shape=shape)
        acts, _ = self.forward(images, layers, batch_size=max(batch_size, 1), resolve=resolve)
        scores = np.array([acts[layer][i, units].mean() for i, (layer, units) in enumerate(objs)])
        if return_history:
            return images, scores, np.asarray(history, dtype="float64")
        return images, scores

    def forward(self, images, layers, *, with_output: bool = False, batch_size: int = 256, resolve: bool = True):
        """Per-unit activations of ``layers`` (dict of (B, U)) and output probabilities (B, classes)
        on images (B, H, W, C); logits are softmaxed."""
        torch = import_torch()
        prog = self.program
        layers = list(dict.fromkeys(layers))
        nodes = [activation_node(prog, name, resolve) for name in layers]
        images = np.asarray(images, dtype="float32")
        chunks = [[] for _ in range(len(layers) + int(with_output))]
        with torch.inference_mode():
            for lo in range(0, len(images), batch_size):
                x = self._to_input(torch.as_tensor(images[lo:lo + batch_size], device=prog.device))
                outs = self._acts(x, nodes, with_output)
                for i, out in enumerate(outs[:len(layers)]):
                    chunks[i].append(self._reduce(out).double().cpu().numpy())
                if with_output:
                    chunks[-1].append(outs[-1].reshape(len(x), -1).double().cpu().numpy())
        acts = {name: np.concatenate(chunks[i]) if len(images) else np.zeros((0, 0))
                for i, name in enumerate(layers)}
        probs = None
        if with_output:
            raw = np.concatenate(chunks[-1])
            if _softmax_output(prog):
                probs = raw
            else:
                probs = softmax(raw)
        return acts, probs

    def post_activations(self, layer: str, x, *, batch_size: int = 256, resolve: bool = True) -> np.ndarray:
        """Each unit's post-activation on every example (N, units); a feature map's is its L1 norm."""
        torch = import_torch()
        prog = self.program
        node = activation_node(prog, layer, resolve)
        out = []
        with torch.inference_mode():
            for lo in range(0, len(x), batch_size):
                xb = torch.as_tensor(np.asarray(x[lo:lo + batch_size]), device=prog.device)
                a = self._acts(xb, [node])[0]
                a = a[0] if isinstance(a, (list, tuple)) else a
                a = a.double()
                if a.ndim > 2:
                    a = a.abs().flatten(2).sum(dim=2)
                out.append(a.cpu().numpy())
        return np.concatenate(out)


def _softmax_output(program) -> bool:
    """Whether the program's output is a softmax (probabilities already)."""
    from modtest.frameworks.torch.program import _aten_name

    name = _aten_name(program.output.target) if program.output.op == "call_function" else None
    return name in ("softmax", "_softmax")
