"""An exported torch program read for modtest: its ATen graph in order, its weights, and a small
interpreter that runs any part of it on real tensors.

modtest never calls ``ExportedProgram.module()`` (it would execute the file's guard code) and never
runs an operator outside the tables below: the graph is walked node by node here, so that a lesion
can replace a weight, a prefix can stop at a layer's output and a suffix can start from cached values.

Batch sizes: a program exported with a dynamic batch dimension is run on any batch as it is (its
shape arithmetic, ``sym_size`` and friends, is evaluated from the symbolic expression the exporter
recorded, with the batch bound to the current one). A program exported with a fixed batch ``B``
(``torch.export.export(model, (torch.randn(1, 3, 224, 224),))``) records ``B`` in its reshapes,
``view(x, [1, 512])``; where such a size is the batch of a data tensor it is replaced by the current
batch at run time. Other uses of a fixed batch are reported with a one-line error.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field

import numpy as np

from modtest.errors import UnsupportedModelError
from modtest.frameworks.torch.files import EXPORT_HINT, target_name

__all__ = ["Program", "UnitOp", "op_kind"]

# --------------------------------------------------------------------------------------------
# Operator tables (aten names without the overload)
# --------------------------------------------------------------------------------------------

#: unit layers: their output units (neurons, feature maps) are graph nodes and can be lesioned
DENSE_OPS = ("linear", "addmm", "mm")
CONV_OPS = ("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d",
            "convolution", "_convolution")
BATCHNORM_OPS = ("batch_norm", "_native_batch_norm_legit_no_training", "native_batch_norm",
                 "_native_batch_norm_legit", "cudnn_batch_norm", "miopen_batch_norm")
#: one data input, each channel (and each element) on its own: activations, dropout, identity
ELEMENTWISE_OPS = (
    "relu", "relu6", "hardtanh", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "sigmoid", "tanh",
    "hardsigmoid", "hardswish", "mish", "softplus", "log_sigmoid", "prelu", "_prelu_kernel", "rrelu",
    "threshold", "clamp", "clamp_min", "clamp_max", "abs", "neg", "exp", "square", "sqrt",
    "dropout", "feature_dropout", "alpha_dropout", "feature_alpha_dropout", "native_dropout",
    "clone", "contiguous", "alias", "detach", "_to_copy", "to", "lift_fresh_copy", "type_as",
    "add", "sub", "rsub", "mul", "div",  # with a scalar or a weight: see op_kind
)
#: one data input, each channel on its own, spatial positions mixed: pooling, padding, resizing
SPATIAL_OPS = (
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_max_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d", "constant_pad_nd", "pad", "reflection_pad1d",
    "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d",
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "upsample_bilinear2d",
    "_upsample_nearest_exact2d", "mean", "amax", "sum",
)
#: one data input, axes rearranged: flattening for the classifier (channels are reinterpreted)
SHAPE_OPS = ("flatten", "view", "reshape", "_unsafe_view", "squeeze", "unsqueeze", "expand")
#: the classifier's softmax: an elementwise op for the graph, a whole-row op for everything else
SOFTMAX_OPS = ("softmax", "_softmax", "log_softmax", "_log_softmax")
#: two or more data inputs with the same channels
ADD_OPS = ("add", "sub", "maximum", "minimum")
CONCAT_OPS = ("cat", "concat")
#: shape arithmetic (no tensors)
SHAPE_ARITHMETIC = ("sym_size", "sym_numel", "sym_stride", "sym_storage_offset")
#: tuple outputs whose first element is the tensor the next op reads
_TUPLE_OPS = ("max_pool2d_with_indices", "max_pool3d_with_indices", "adaptive_max_pool1d",
              "adaptive_max_pool2d", "adaptive_max_pool3d", "native_dropout",
              "_native_batch_norm_legit_no_training", "native_batch_norm", "_native_batch_norm_legit",
              "cudnn_batch_norm", "miopen_batch_norm")
#: ops that make a new tensor from a size list: a recorded batch there would be a fixed size
_SIZE_ARG_OPS = ("view", "reshape", "_unsafe_view", "expand")


def _aten_name(target) -> str | None:
    """``relu_`` for ``torch.ops.aten.relu_.default``; None for anything else."""
    name = target_name(target)
    parts = name.split(".")
    if len(parts) == 5 and parts[:2] == ["torch", "ops"] and parts[2] in ("aten", "prims"):
        return parts[3]
    return None


def op_kind(name: str | None, n_data: int) -> str:
    """How the graph sees an op with ``n_data`` data inputs: unit, bn, add, cat, elementwise,
    spatial, shape, softmax, getitem, arithmetic or unsupported."""
    if name is None:
        return "unsupported"
    base = name.rstrip("_") if name not in ("_softmax", "_log_softmax") else name
    if base in DENSE_OPS or base in CONV_OPS:
        return "unit"
    if base in BATCHNORM_OPS:
        return "bn"
    if base in SHAPE_ARITHMETIC:
        return "arithmetic"
    if n_data >= 2:
        if base in ADD_OPS:
            return "add"
        if base in CONCAT_OPS:
            return "cat"
        return "unsupported"
    if base in CONCAT_OPS:
        return "cat"
    if base in SOFTMAX_OPS:
        return "softmax"
    if base in ELEMENTWISE_OPS:
        return "elementwise"
    if base in SPATIAL_OPS:
        return "spatial"
    if base in SHAPE_OPS:
        return "shape"
    return "unsupported"


@dataclass
class UnitOp:
    """A unit layer of the program: one linear or convolution node and its weight."""

    name: str  # the weight's module path (``layer1.0.conv1``)
    node: object  # the torch.fx node
    kind: str  # "dense" or "conv"
    weight: str  # placeholder name of the weight
    bias: str | None  # placeholder name of the bias (None: no bias)
    width: int  # output units
    in_width: int  # input units (channels) it reads
    groups: int = 1
    transposed: bool = False  # ConvTranspose: weight (in, out / groups, *k)
    weight_transposed: bool = False  # addmm/mm read the (out, in) weight through t()/permute
    stride: tuple = ()
    padding: object = 0
    dilation: tuple = ()

    @property
    def out_axis(self) -> int:
        """The weight axis of output units: 0 (out, in, ...), 1 for transposed convolutions."""
        return 1 if self.transposed else 0


@dataclass
class _Step:
    node: object
    fn: object
    inplace: bool = False
    size_fix: bool = False  # replace a recorded fixed batch in the size list by the current one


@dataclass
class Program:
    """An ``ExportedProgram`` as modtest runs it (build with :meth:`Program.read`)."""

    exported: object
    weights: dict  # placeholder name -> tensor (parameters, buffers, constants), on ``device``
    fqn: dict  # placeholder name -> module path of the parameter or buffer
    placeholders: dict  # placeholder name -> node
    input: object  # the user input node
    output: object  # the node whose value is the model output
    steps: list  # _Step per call_function node, in graph order
    data: set  # nodes whose value depends on the input
    units: dict  # name -> UnitOp, in graph order
    batch: int | None  # the recorded fixed batch, None when the batch is dynamic
    batch_symbol: object = None
    device: object = None
    index: dict = field(default_factory=dict)  # node -> position in steps
    cache: dict = field(default_factory=dict)  # derived descriptions (the graph's node table, ...)

    # ---------------------------------------------------------------- reading
    @classmethod
    def read(cls, exported, device=None) -> Program:
        """Read an ``ExportedProgram``: one tensor input, one tensor output, inference mode."""
        from modtest.frameworks.torch.runtime import import_torch

        torch = import_torch()
        from torch.export.graph_signature import InputKind, OutputKind

        device = device or torch.device("cpu")
        sig = exported.graph_signature
        graph = exported.graph_module.graph
        ph = {n.name: n for n in graph.nodes if n.op == "placeholder"}
        user = [s for s in sig.input_specs if s.kind == InputKind.USER_INPUT]
        if len(user) != 1 or not hasattr(user[0].arg, "name"):
            raise UnsupportedModelError(f"the program takes {len(user)} inputs; modtest needs one tensor input")
        outs = sig.output_specs
        if any(s.kind in (OutputKind.BUFFER_MUTATION, OutputKind.USER_INPUT_MUTATION) for s in outs):
            raise UnsupportedModelError("the program updates buffers (batch-norm statistics): it was exported "
                                        "in training mode; call model.eval() before torch.export.export")
        user_out = [s for s in outs if s.kind == OutputKind.USER_OUTPUT]
        if len(user_out) != 1:
            raise UnsupportedModelError(f"the program returns {len(user_out)} outputs; modtest needs one tensor")
        weights, fqn = {}, {}
        constants = getattr(exported, "constants", {}) or {}
        state = exported.state_dict
        for s in sig.input_specs:
            if s.kind == InputKind.USER_INPUT:
                continue
            if s.kind in (InputKind.PARAMETER, InputKind.BUFFER):
                value = state[s.target] if s.target in state else constants.get(s.target)
            elif s.kind == InputKind.CONSTANT_TENSOR:
                value = constants.get(s.target)
            else:
                raise UnsupportedModelError(f"the program reads a {s.kind.name.lower()} input "
                                            f"({s.target}); modtest supports tensors only")
            if not isinstance(value, torch.Tensor):
                raise UnsupportedModelError(f"input {s.target!r} of the program is not a tensor")
            weights[s.arg.name] = value.detach().to(device)
            fqn[s.arg.name] = s.target
        inp = ph[user[0].arg.name]
        out_node = next(n for n in graph.nodes if n.op == "output")
        results = out_node.args[0]
        name_out = user_out[0].arg.name
        output = next((r for r in (results if isinstance(results, (list, tuple)) else [results])
                       if getattr(r, "name", None) == name_out), None)
        if output is None:
            raise UnsupportedModelError("the program's output is not a tensor computed by its graph")
        for n in graph.nodes:
            if n.op in ("get_attr", "call_module", "call_method"):
                raise UnsupportedModelError(f"the program's graph has a {n.op} node ({n.target}); modtest "
                                            f"supports flat ATen graphs: {EXPORT_HINT}")
            name = _aten_name(n.target) if n.op == "call_function" else None
            if name in ("batch_norm", "native_batch_norm", "_native_batch_norm_legit",
                        "_native_batch_norm_legit_functional") and _bn_training(n, name):
                raise UnsupportedModelError(f"batch norm {n.name} uses batch statistics: the program was "
                                            f"exported in training mode; call model.eval() before exporting")
        val = inp.meta.get("val")
        if val is None or not hasattr(val, "shape"):
            raise UnsupportedModelError("the program's input carries no shape; export it with torch.export")
        batch, symbol = None, None
        dim0 = val.shape[0] if len(val.shape) else 1
        if isinstance(dim0, int):
            batch = int(dim0)
        else:
            free = dim0.node.expr.free_symbols
            if len(free) != 1:
                raise UnsupportedModelError("the program's batch dimension is an expression; export with "
                                            "dynamic_shapes={'x': {0: torch.export.Dim('batch')}}")
            symbol = next(iter(free))
        if any(not isinstance(d, int) for d in val.shape[1:]):
            raise UnsupportedModelError(f"the program's input shape {tuple(val.shape)} has free dimensions "
                                        f"besides the batch; export it with a fixed input size")
        data = {inp}
        for n in graph.nodes:
            if n.op == "call_function" and any(a in data for a in n.all_input_nodes):
                data.add(n)
        prog = cls(exported, weights, fqn, ph, inp, output, [], data, {}, batch, symbol, device)
        prog._build_steps(graph)
        prog._find_units()
        return prog

    def _build_steps(self, graph) -> None:
        torch = _torch()
        for n in graph.nodes:
            if n.op != "call_function":
                continue
            target, name = n.target, _aten_name(n.target)
            step = _Step(n, target)
            if target is operator.getitem or name is None:
                if target is not operator.getitem and target_name(target) not in _SAFE_PY:
                    raise UnsupportedModelError(f"the program calls {target_name(target)}, which modtest does "
                                                f"not run")
            else:
                schema = target._schema
                if schema.is_mutable:
                    base = name[:-1] if name.endswith("_") else name
                    packet = getattr(torch.ops.aten, base, None)
                    functional = getattr(packet, target._overloadname, None) if packet is not None else None
                    writes = schema.arguments and schema.arguments[0].alias_info is not None \
                        and schema.arguments[0].alias_info.is_write
                    if functional is None or not writes or functional._schema.is_mutable:
                        raise UnsupportedModelError(f"the program mutates a tensor with {target_name(target)}; "
                                                    f"modtest needs an inference graph: {EXPORT_HINT}")
                    step = _Step(n, functional, inplace=True)
                if self.batch is not None and name in _SIZE_ARG_OPS and n.args and n.args[0] in self.data:
                    sizes = n.args[1] if len(n.args) > 1 else None
                    v = getattr(n.args[0], "meta", {}).get("val")
                    if isinstance(sizes, (list, tuple)) and sizes and sizes[0] == self.batch and v is not None \
                            and len(v.shape) and v.shape[0] == self.batch:
                        step.size_fix = True
            self.index[n] = len(self.steps)
            self.steps.append(step)

    def _find_units(self) -> None:
        """Unit layers (linear and convolution nodes reading a weight parameter), in graph order."""
        seen = {}
        for step in self.steps:
            n = step.node
            name = _aten_name(n.target)
            if name is None or n not in self.data:
                continue
            base = name.rstrip("_")
            if base not in DENSE_OPS and base not in CONV_OPS:
                continue
            unit = self._unit_op(n, base)
            if unit.name in seen:
                raise UnsupportedModelError(f"layer {unit.name!r} is used more than once (shared weights); "
                                            f"modtest needs each layer called once")
            seen[unit.name] = unit
        self.units = seen

    def _unit_op(self, n, base: str) -> UnitOp:
        args = list(n.args)
        kw = dict(n.kwargs)

        def arg(i, key, default=None):
            return args[i] if len(args) > i else kw.get(key, default)

        transposed, groups, w_t = False, 1, False
        stride, padding, dilation = (), 0, ()
        if base == "linear":
            w, b = arg(1, "weight"), arg(2, "bias")
        elif base in ("addmm", "mm"):
            w = arg(2, "mat2") if base == "addmm" else arg(1, "mat2")
            b = arg(0, "self") if base == "addmm" else None
            if getattr(w, "op", None) == "call_function" and _aten_name(w.target) in ("t", "permute", "transpose") \
                    and w.args[0].op == "placeholder":
                w, w_t = w.args[0], True
            else:
                raise UnsupportedModelError(f"matrix product {n.name} does not read a weight parameter "
                                            f"through a transpose; modtest supports nn.Linear")
            if b is not None and getattr(b, "op", None) != "placeholder":
                raise UnsupportedModelError(f"matrix product {n.name} adds a computed bias")
        elif base in ("convolution", "_convolution"):
            w, b = arg(1, "weight"), arg(2, "bias")
            stride, padding, dilation = tuple(arg(3, "stride")), arg(4, "padding"), tuple(arg(5, "dilation"))
            transposed, groups = bool(arg(6, "transposed")), int(arg(8, "groups"))
        elif base.startswith("conv_transpose"):
            w, b = arg(1, "weight"), arg(2, "bias")
            stride, padding = tuple(arg(3, "stride", (1,))), arg(4, "padding", 0)
            groups, dilation, transposed = int(arg(6, "groups", 1)), tuple(arg(7, "dilation", (1,))), True
        else:  # conv1d/2d/3d
            w, b = arg(1, "weight"), arg(2, "bias")
            stride, padding = tuple(arg(3, "stride", (1,))), arg(4, "padding", 0)
            dilation, groups = tuple(arg(5, "dilation", (1,))), int(arg(6, "groups", 1))
        if getattr(w, "op", None) != "placeholder" or w.name not in self.weights:
            raise UnsupportedModelError(f"layer {n.name} does not read its weight from a parameter; modtest "
                                        f"needs nn.Linear / nn.Conv*d modules")
        if b is not None and (getattr(b, "op", None) != "placeholder" or b.name not in self.weights):
            raise UnsupportedModelError(f"layer {n.name} computes its bias; modtest needs a bias parameter")
        weight = self.weights[w.name]
        fqn = self.fqn.get(w.name, w.name)
        name = fqn[: -len(".weight")] if fqn.endswith(".weight") else fqn
        kind = "dense" if base in DENSE_OPS else "conv"
        if kind == "dense":
            width, in_width = int(weight.shape[0]), int(weight.shape[1])
        elif transposed:
            width, in_width = int(weight.shape[1]) * groups, int(weight.shape[0])
        else:
            width, in_width = int(weight.shape[0]), int(weight.shape[1]) * groups
        return UnitOp(name, n, kind, w.name, None if b is None else b.name, width, in_width, groups,
                      transposed, w_t, stride, padding, dilation)

    # ---------------------------------------------------------------- shapes
    @property
    def input_shape(self) -> tuple:
        return tuple(int(d) for d in self.input.meta["val"].shape[1:])

    @property
    def input_dtype(self):
        return self.input.meta["val"].dtype

    @property
    def n_classes(self) -> int:
        return int(self.output.meta["val"].shape[-1])

    def shape_of(self, node) -> tuple:
        """A node's recorded shape without the batch axis (ints)."""
        v = node.meta.get("val")
        if isinstance(v, (list, tuple)):
            v = v[0]
        return tuple(int(d) for d in v.shape[1:])

    # ---------------------------------------------------------------- running
    def base_env(self, overrides: dict | None = None) -> dict:
        """Node -> value for every weight placeholder, with ``overrides`` (placeholder name -> tensor)."""
        env = {self.placeholders[k]: v for k, v in self.weights.items()}
        if overrides:
            for k, v in overrides.items():
                env[self.placeholders[k]] = v
        return env

    def downstream(self, nodes) -> set:
        """The nodes whose value depends on any of ``nodes`` (those included)."""
        out = set(nodes)
        for step in self.steps:
            if any(a in out for a in step.node.all_input_nodes):
                out.add(step.node)
        return out

    @staticmethod
    def upstream(nodes, where=None) -> set:
        """The non-placeholder nodes that ``nodes`` depend on (those included): what computing them runs.
        With ``where``, the walk stops at nodes for which it is false (they are left out)."""
        need: set = set()
        stack = list(nodes)
        while stack:
            n = stack.pop()
            if n in need or n.op == "placeholder" or (where is not None and not where(n)):
                continue
            need.add(n)
            stack.extend(n.all_input_nodes)
        return need

    def run(self, env: dict, steps, batch: int, keep=()) -> dict:
        """Run ``steps`` (a list of :class:`_Step`) over ``env`` (node -> value, updated in place) for a
        batch of ``batch`` examples; values not in ``keep`` are freed after their last use here."""
        from torch.fx.node import map_arg

        last = {}
        for i, step in enumerate(steps):
            for a in step.node.all_input_nodes:
                last[a] = i
        keep = set(keep)
        for i, step in enumerate(steps):
            n = step.node
            if n in env:  # given (a cached value, or a shape computed for this batch)
                continue
            if self.batch_symbol is not None and _is_shape(n):
                env[n] = self.shape_value(n, batch)
                continue
            args = map_arg(n.args, env.__getitem__)
            kwargs = map_arg(n.kwargs, env.__getitem__)
            if step.size_fix:
                sizes = list(args[1])
                sizes[0] = int(args[0].shape[0])
                args = (args[0], sizes) + tuple(args[2:])
            try:
                value = step.fn(*args, **kwargs)
            except RuntimeError as exc:
                raise UnsupportedModelError(self._run_error(n, exc, batch)) from None
            env[n] = value
            if step.inplace:  # the functional op's result is what the in-place op left in its input
                env[n.args[0]] = value
            for a in n.all_input_nodes:
                if last.get(a) == i and a not in keep and a.op != "placeholder":
                    env.pop(a, None)
        return env

    def _run_error(self, node, exc, batch) -> str:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        if self.batch is not None and batch != self.batch:
            return (f"the program was exported with a fixed batch of {self.batch} and node {node.name} "
                    f"({target_name(node.target)}) fails on a batch of {batch}: {first}; export it with "
                    f"dynamic_shapes={{'x': {{0: torch.export.Dim('batch')}}}}")
        return f"node {node.name} ({target_name(node.target)}) fails: {first}"

    def shape_value(self, node, batch: int) -> int:
        """An integer node's value for a batch of ``batch`` examples, from its recorded expression."""
        v = node.meta.get("val")
        if isinstance(v, int):
            return int(v)
        expr = v.node.expr
        if self.batch_symbol is not None:
            expr = expr.subs(self.batch_symbol, batch)
        if expr.free_symbols:
            raise UnsupportedModelError(f"shape {node.name} depends on {sorted(map(str, expr.free_symbols))}; "
                                        f"modtest supports a dynamic batch dimension only")
        return int(expr)

    def forward(self, x, overrides: dict | None = None, capture=()) -> tuple:
        """(output, {node: value} of ``capture``) of the whole program on a batch ``x``."""
        env = self.base_env(overrides)
        env[self.input] = x
        self.run(env, self.steps, int(x.shape[0]), keep=tuple(capture) + (self.output,))
        return env[self.output], {n: env[n] for n in capture}

    def steps_of(self, nodes) -> list:
        """The steps of ``nodes``, in graph order."""
        return [self.steps[i] for i in sorted(self.index[n] for n in nodes if n in self.index)]

    # ---------------------------------------------------------------- identity
    def fingerprint(self) -> str:
        """sha256 (16 hex digits) of the graph's operators and arguments and every weight."""
        import hashlib

        h = hashlib.sha256()
        names = {n: f"v{i}" for i, n in enumerate(self.exported.graph_module.graph.nodes)}
        for n in self.exported.graph_module.graph.nodes:
            args = _torch().fx.node.map_arg((n.args, n.kwargs), lambda a: names[a])
            h.update(f"{n.op}:{target_name(n.target) if n.op == 'call_function' else ''}:{args!r};".encode())
        for k in sorted(self.weights):
            t = self.weights[k].detach().cpu().contiguous()
            h.update(f"{self.fqn[k]}:{tuple(t.shape)}:{t.dtype};".encode())
            h.update(t.numpy().tobytes() if t.dtype != _torch().bfloat16 else t.float().numpy().tobytes())
        return h.hexdigest()[:16]

    def numpy(self, name: str) -> np.ndarray:
        """A weight as a float64 numpy array."""
        return self.weights[name].detach().cpu().double().numpy()


def bn_arguments(node, name: str) -> tuple:
    """(input, weight, bias, running_mean, running_var, eps) of a batch-norm node."""
    a = list(node.args)
    if name == "batch_norm":  # (x, w, b, mean, var, training, momentum, eps, cudnn)
        return a[0], a[1], a[2], a[3], a[4], float(a[7])
    if name == "_native_batch_norm_legit_no_training":  # (x, w, b, mean, var, momentum, eps)
        return a[0], a[1], a[2], a[3], a[4], float(a[6])
    return a[0], a[1], a[2], a[3], a[4], float(a[7])  # native_batch_norm, cudnn/miopen: training at 5


def _bn_training(node, name: str) -> bool:
    if name == "_native_batch_norm_legit_functional":
        return True
    if name == "_native_batch_norm_legit" and len(node.args) == 6:  # (x, w, b, training, momentum, eps)
        return bool(node.args[3])
    training = node.args[5] if len(node.args) > 5 else node.kwargs.get("training", False)
    return bool(training)


def _is_shape(node) -> bool:
    v = node.meta.get("val")
    torch = _torch()
    return isinstance(v, (torch.SymInt, int)) and not isinstance(v, bool)


_SAFE_PY = frozenset(f"_operator.{n}" for n in ("add", "sub", "mul", "floordiv", "truediv", "mod", "neg",
                                                 "pos", "pow", "eq", "ne", "lt", "le", "gt", "ge"))


def _torch():
    from modtest.frameworks.torch.runtime import import_torch

    return import_torch()
