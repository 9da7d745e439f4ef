"""Exported torch program -> :class:`modtest.graph.GraphSpec`, with the Keras adapter's semantics.

Kernels are converted to the spec's layout ``(..., c_in, c_out)``: a linear weight ``(out, in)`` is
transposed, a convolution weight ``(out, in / groups, *k)`` becomes ``(*k, in, out)`` (a transposed
convolution's ``(in, out / groups, *k)`` likewise), and a grouped or depthwise convolution is written
as the full kernel with zeros between groups, so a feature map connects only to the maps of its
group. Batch norm is folded into the unit layer before it (``|gamma| / sqrt(running_var + eps)`` per
channel, as Keras computes it), except after a merge. Skip connections are traced through ``add``
(and ``sub``, ``maximum``, ``minimum``) and ``cat`` along the channel axis; activations, dropout,
pooling, padding, flatten/view/reshape and identities pass the channels through. The input is a graph
layer of ``prod(input shape)`` nodes for an MLP, numbered in the input's own (channels-first) order.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from modtest.errors import InvalidInput, UnsupportedModelError
from modtest.frameworks.torch.program import _aten_name, bn_arguments, op_kind
from modtest.graph import EdgeBlock, GraphSpec

__all__ = ["NodeInfo", "describe", "extract_spec", "unit_layers", "is_convolutional"]

INPUT = "input"
_SUPPORTED = ("supported: nn.Linear, nn.Conv1d/2d/3d (groups, depthwise), nn.ConvTranspose1d/2d/3d, "
              "nn.BatchNorm*, add/cat skip connections, activations, dropout, pooling, padding, "
              "flatten/view/reshape (see docs/torch.md)")


@dataclass
class NodeInfo:
    """One data node of the program as the graph sees it."""

    kind: str  # input, unit, bn, add, cat, elementwise, spatial, shape, softmax, getitem
    inputs: list = field(default_factory=list)  # data input nodes, in argument order
    width: int = 0  # channels (units) of its output


def _data_inputs(program, node) -> list:
    out = []

    def visit(a):
        if isinstance(a, (list, tuple)):
            for b in a:
                visit(b)
        elif a in program.data:
            out.append(a)

    visit(node.args)
    visit(list(node.kwargs.values()))
    return out


def describe(program) -> dict:
    """Data node -> :class:`NodeInfo`, in graph order; refuses operators the graph cannot pass."""
    if "described" in program.cache:
        return program.cache["described"]
    import operator

    info = {program.input: NodeInfo("input", [], int(np.prod(program.input_shape)) or 1)}
    unit_nodes = {u.node: u for u in program.units.values()}
    for step in program.steps:
        n = step.node
        if n not in program.data:
            continue
        ins = _data_inputs(program, n)
        if n.target is operator.getitem:
            if n.args[1] != 0:  # indices of max pooling, saved batch-norm statistics
                info[n] = NodeInfo("aux", ins, 0)
                continue
            info[n] = NodeInfo("getitem", ins, info[ins[0]].width)
            continue
        name = _aten_name(n.target)
        kind = op_kind(name, len(ins))
        if kind == "arithmetic":
            continue
        if any(info.get(a) is not None and info[a].kind == "aux" for a in ins):
            raise UnsupportedModelError(f"node {n.name} ({name}) reads pooling indices or batch statistics; "
                                        f"{_SUPPORTED}")
        if kind == "unsupported":
            raise UnsupportedModelError(f"unsupported operation {n.name} ({name or n.target}) on the data path; "
                                        f"{_SUPPORTED}")
        if kind == "unit":
            unit = unit_nodes.get(n)
            if unit is None or ins != [n.args[1] if name == "addmm" else n.args[0]]:
                raise UnsupportedModelError(f"layer {n.name} ({name}) reads its weights from the data; {_SUPPORTED}")
            info[n] = NodeInfo("unit", ins, unit.width)
        elif kind == "cat":
            tensors = n.args[0]
            dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
            rank = len(n.meta["val"].shape)
            if dim not in (1, 1 - rank) and not (rank == 2 and dim == -1):
                raise UnsupportedModelError(f"concatenation {n.name} joins along axis {dim}, not the channel "
                                            f"axis 1; {_SUPPORTED}")
            if any(t not in program.data for t in tensors):
                raise UnsupportedModelError(f"concatenation {n.name} joins the data with a constant; {_SUPPORTED}")
            info[n] = NodeInfo("cat", list(tensors), sum(info[t].width for t in tensors))
        else:
            info[n] = NodeInfo(kind, ins, info[ins[0]].width)
    program.cache["described"] = info
    return info


def is_convolutional(program) -> bool:
    return any(u.kind == "conv" for u in program.units.values())


def unit_layers(program) -> list[str]:
    """The paper's hidden layers: every convolution of a CNN; every linear layer but the last of an MLP."""
    describe(program)
    if is_convolutional(program):
        return [u.name for u in program.units.values() if u.kind == "conv"]
    dense = [u.name for u in program.units.values() if u.kind == "dense"]
    return dense[:-1]


def consumers(program, node) -> list:
    """Data nodes reading ``node``, in graph order."""
    info = describe(program)
    return [n for n, i in info.items() if node in i.inputs]


def _trace(program, info, node, node_set, through_merge=False):
    """Producers reaching ``node``'s output: list of (layer name, channel map, via merge)."""
    i = info[node]
    unit_of = {u.node: u.name for u in program.units.values()}
    if i.kind == "input":
        return [(INPUT, np.arange(i.width), through_merge)] if INPUT in node_set else []
    if i.kind == "unit":
        name = unit_of[node]
        return [(name, np.arange(i.width), through_merge)] if name in node_set else []
    if i.kind == "cat":
        out, offset = [], 0
        for inp in i.inputs:
            w = info[inp].width
            for prod, cmap, _ in _trace(program, info, inp, node_set, True):
                full = -np.ones(i.width, dtype=np.int64)
                full[offset:offset + w] = cmap
                out.append((prod, full, True))
            offset += w
        return out
    if i.kind == "add":
        return [t for inp in i.inputs for t in _trace(program, info, inp, node_set, True)]
    return _trace(program, info, i.inputs[0], node_set, through_merge)


def _check_finite(name: str, arrays) -> None:
    for a in arrays:
        if not np.all(np.isfinite(a)):
            raise InvalidInput(f"layer {name!r} has NaN or infinite weights")


def spec_kernel(program, unit) -> np.ndarray:
    """The unit layer's weight in the spec's layout ``(..., c_in, c_out)``."""
    w = program.weights[unit.weight].detach().cpu().double().numpy()
    if unit.kind == "dense":
        return np.ascontiguousarray(w.T)
    nd = w.ndim - 2
    spatial = tuple(range(2, 2 + nd))
    perm = spatial + ((0, 1) if unit.transposed else (1, 0))
    if unit.groups == 1:
        return np.ascontiguousarray(np.transpose(w, perm))
    g = unit.groups
    c_in, c_out = unit.in_width, unit.width
    ig, og = c_in // g, c_out // g
    full = np.zeros(w.shape[2:] + (c_in, c_out), dtype=np.float32)  # float32: the weights' precision
    for k in range(g):
        block = w[k * ig:(k + 1) * ig] if unit.transposed else w[k * og:(k + 1) * og]
        full[..., k * ig:(k + 1) * ig, k * og:(k + 1) * og] = np.transpose(block, perm)
    return full


def extract_spec(program) -> GraphSpec:
    """The :class:`GraphSpec` of an exported program (see the module docstring)."""
    info = describe(program)
    units = list(program.units.values())
    if not units:
        raise UnsupportedModelError("the program has no nn.Linear or convolution layers")
    convolutional = is_convolutional(program)
    if convolutional:
        node_units = [u for u in units if u.kind == "conv"]
        node_layers = [u.name for u in node_units]
        roles = ["hidden"] * len(node_layers)
    else:
        node_units = [u for u in units if u.kind == "dense"]
        node_layers = [INPUT] + [u.name for u in node_units]
        roles = ["input"] + ["hidden"] * (len(node_units) - 1) + ["output"]
    node_set = set(node_layers)
    width = {u.name: u.width for u in node_units}
    width[INPUT] = info[program.input].width
    kernels, scales = {}, {n: np.ones(width[n]) for n in node_layers}
    for u in node_units:
        arrays = [program.numpy(u.weight)] + ([program.numpy(u.bias)] if u.bias else [])
        _check_finite(u.name, arrays)
        kernels[u.name] = spec_kernel(program, u)
    for n, i in info.items():
        if i.kind != "bn":
            continue
        _, w, _b, _mean, var, eps = bn_arguments(n, _aten_name(n.target))
        v = program.numpy(var.name)
        gamma = program.numpy(w.name) if w is not None else np.ones_like(v)
        _check_finite(n.name, [v, gamma])
        s = np.abs(gamma / np.sqrt(v + eps))
        for prod, cmap, via_merge in _trace(program, info, i.inputs[0], node_set):
            if via_merge or prod not in kernels:
                continue  # a batch norm after a merge normalises a sum: not a kernel fold
            ok = cmap >= 0
            scales[prod][cmap[ok]] *= s[ok]
    blocks = []
    for u in node_units:
        c_in = kernels[u.name].shape[-2]
        for prod, cmap, _ in _trace(program, info, info[u.node].inputs[0], node_set):
            if len(cmap) != c_in:
                raise UnsupportedModelError(
                    f"layer {u.name!r} has {c_in} input channels but {len(cmap)} units reach it from {prod!r}")
            blocks.append(EdgeBlock(prod, u.name, cmap))
    return GraphSpec("cnn" if convolutional else "mlp", node_layers, [width[n] for n in node_layers], roles,
                     kernels, scales, blocks)
