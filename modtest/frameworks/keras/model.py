"""Reading Keras models: safe loading, the layer graph, weights, identity.

Everything downstream (graph, clustering, statistics) works on what this module returns: plain
numpy arrays and a small description of the layer graph (:class:`LayerGraph`).
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from modtest.errors import ModelLoadError, UnsafeModelError, UnsupportedModelError

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # INFO lines off, warnings shown

#: Unit layers: their units (neurons, feature maps) are graph nodes and can be lesioned.
DENSE_TYPES = ("Dense",)
CONV_TYPES = ("Conv1D", "Conv2D", "Conv3D")
DEPTHWISE_TYPES = ("DepthwiseConv1D", "DepthwiseConv2D")
SEPARABLE_TYPES = ("SeparableConv1D", "SeparableConv2D")
TRANSPOSE_TYPES = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")
#: A model with any of these is convolutional: feature maps are its graph nodes.
CONVLIKE_TYPES = CONV_TYPES + DEPTHWISE_TYPES + SEPARABLE_TYPES + TRANSPOSE_TYPES
UNIT_TYPES = DENSE_TYPES + CONVLIKE_TYPES
BATCHNORM_TYPES = ("BatchNormalization",)
#: Per-channel affine layers (and the affine part of normalisations): their scale is folded into
#: the edges (``spec.py`` reads each one's scale; docs/compatibility.md says which are exact).
#: ``Scale`` is a keras.ops multiplication or division by a number.
AFFINE_TYPES = BATCHNORM_TYPES + ("Normalization", "Rescaling", "LayerScale", "LayerNormalization",
                                  "GroupNormalization", "RMSNormalization", "Scale")
#: Layers that keep each channel apart (elementwise or per-channel): edges pass through them.
#: ``Elementwise`` is a keras.ops call that acts entry by entry (adding a number, an activation
#: function); stochastic depth, random augmentations and noise are the identity at inference.
ELEMENTWISE_TYPES = (
    "InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
    "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax", "UnitNormalization",
    "StochasticDepth", "Elementwise", "RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation",
    "RandomContrast", "RandomBrightness", "RandomShear",
)
#: Layers that move or pool positions but keep channels: edges pass through them.
SPATIAL_TYPES = (
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "AdaptiveAveragePooling1D", "AdaptiveAveragePooling2D", "AdaptiveAveragePooling3D",
    "AdaptiveMaxPooling1D", "AdaptiveMaxPooling2D", "AdaptiveMaxPooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D", "Resizing", "CenterCrop", "RandomCrop", "RepeatVector",
)
#: Layers that rearrange axes: channels pass when they stay the last axis (see :func:`layer_graph`).
RESHAPE_TYPES = ("Flatten", "Reshape", "Permute")
PASS_TYPES = ELEMENTWISE_TYPES + SPATIAL_TYPES
#: Merge layers: Add-like ones combine channel c of every input into channel c (a squeeze-and-
#: excitation ``Multiply`` included); Concatenate stacks them (on another axis it is Add-like).
ADD_TYPES = ("Add", "Average", "Maximum", "Minimum", "Subtract", "Multiply")
CONCAT_TYPES = ("Concatenate",)
ACTIVATION_TYPES = ("Activation", "ReLU", "LeakyReLU", "ELU", "PReLU")
SUPPORTED_TYPES = UNIT_TYPES + AFFINE_TYPES + PASS_TYPES + RESHAPE_TYPES + ADD_TYPES + CONCAT_TYPES
#: Classes from keras.applications that are plain layers to the graph (matched with their module).
_APPLICATION_CLASSES = {("keras.src.applications.convnext", "LayerScale"): "LayerScale",
                        ("keras.src.applications.convnext", "StochasticDepth"): "StochasticDepth"}
#: The nearest supported layer for types modtest refuses (named in the refusal message).
_ALTERNATIVES = {
    **{k: "none for recurrent layers (the paper's graph is feed-forward); unroll the recurrence into "
          "Dense layers" for k in ("LSTM", "GRU", "SimpleRNN", "RNN", "Bidirectional", "ConvLSTM1D",
                                   "ConvLSTM2D", "ConvLSTM3D")},
    **{k: "none for attention (its weights depend on the input); Dense is the nearest"
       for k in ("MultiHeadAttention", "Attention", "AdditiveAttention", "GroupQueryAttention")},
    "EinsumDense": "Dense (an EinsumDense over the last axis is a Dense)",
    "Embedding": "Dense on one-hot inputs",
    "TimeDistributed": "the wrapped layer itself (Dense and Conv already act on the last axis)",
    "Lambda": "a Keras layer or keras.ops call with the same effect (Rescaling, Activation, Add, Multiply)",
    "SpectralNormalization": "the wrapped layer, with the normalisation folded into its kernel",
    "Dot": "none (a product of two activations has no weights); Multiply of a map by a gate is supported",
}
_DEFAULT_ALTERNATIVE = ("Dense, Conv1D/2D/3D (also depthwise, separable, transposed, grouped) with "
                        "per-channel layers, merges and nested models between them")


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def _read_config(path: Path) -> dict:
    """Read the model config of a ``.keras`` or ``.h5`` file without deserialising anything."""
    suffix = path.suffix.lower()
    if suffix == ".keras":
        from modtest._validation import check_archive_members

        try:
            with zipfile.ZipFile(path) as zf:
                check_archive_members(path.name, zf.namelist(), _keras_member, "Keras's model.save")
                return json.loads(zf.read("config.json"))
        except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as exc:
            raise ModelLoadError(f"corrupt .keras file {path}: {_first_line(exc)}") from None
    try:
        import h5py

        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as exc:
        raise ModelLoadError(f"corrupt or unreadable HDF5 file {path}: {_first_line(exc)}") from None
    if raw is None:
        raise ModelLoadError(f"{path} holds no model config (a weights-only file?); "
                             f"save the whole model with model.save('model.keras')")
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ModelLoadError(f"corrupt model config in {path}: {_first_line(exc)}") from None


#: the members of a ``.keras`` archive (keras.saving's zip layout); layers with files save them
#: under ``assets/``
_KERAS_MEMBERS = frozenset(("metadata.json", "config.json", "model.weights.h5", "model.weights.npz"))


def _keras_member(name: str) -> bool:
    return name in _KERAS_MEMBERS or name == "assets/" or (name.startswith("assets/") and len(name) > 7)


def _walk_layer_configs(cfg):
    """Yield every layer config dict in a (possibly nested) model config."""
    if isinstance(cfg, dict):
        if "class_name" in cfg and "config" in cfg:
            yield cfg
        for v in cfg.values():
            yield from _walk_layer_configs(v)
    elif isinstance(cfg, (list, tuple)):
        for v in cfg:
            yield from _walk_layer_configs(v)


def unsafe_objects(config: dict, *, legacy: bool = True) -> list[str]:
    """Names of the layers/objects in a model config that would run code from the file.

    ``Lambda`` layers carry Python bytecode; objects from modules outside Keras are custom code.
    ``legacy=False`` skips the one check that needs Keras (a legacy ``.h5`` config naming a class
    that is not a Keras layer), so the others run without importing it.
    """
    found = []
    for item in _walk_layer_configs(config):
        cls = item.get("class_name")
        if not isinstance(cls, str) or cls == "__keras_tensor__":
            continue
        conf = item.get("config") if isinstance(item.get("config"), dict) else {}
        name = conf.get("name", cls)
        module = item.get("module")
        if cls in ("Lambda", "TFOpLambda", "SlicingOpLambda"):
            found.append(f"{name} (Lambda)")
        elif module is not None and not str(module).startswith("keras"):
            found.append(f"{name} ({module}.{cls})")
        elif legacy and module is None and "name" in conf and not _is_keras_layer(cls) \
                and cls not in ("Functional", "Sequential", "Model"):
            found.append(f"{name} ({cls})")  # legacy .h5 config naming a non-Keras class
    return found


def _is_keras_layer(cls: str) -> bool:
    import keras

    return hasattr(keras.layers, cls)


def check_model_file(path, *, trust: bool = False, legacy: bool = True) -> dict:
    """Read a ``.keras``/``.h5`` file's config and refuse what would run code (unless ``trust``).

    ``legacy=False`` skips the one check that needs Keras, so this runs without importing it (the
    pytest-xdist controller, and every check made before the slow import).
    """
    from modtest._validation import TRUST_HINT

    path = Path(path)
    config = _read_config(path)
    risky = unsafe_objects(config, legacy=legacy)
    if risky and not trust:
        unsupported = _unsupported_in_config(config, code_only=True)
        if unsupported is not None:  # trusting the file would not make it auditable: say that first
            raise UnsafeModelError(
                f"{path.name} cannot be audited, with or without trust: {unsupported}; it also contains code "
                f"that would run on loading ({', '.join(risky[:5])}): {TRUST_HINT} loads it, but modtest "
                f"would still refuse that layer")
        raise UnsafeModelError(
            f"{path.name} contains code that would run on loading: {', '.join(risky[:5])}; "
            f"pass {TRUST_HINT} if you trust this file")
    return config


def _config_layers(config: dict, prefix: str = ""):
    """(name, class_name, module, entry) of every layer entry of a model config, nested models'
    layers named ``outer/inner`` (what :func:`layer_graph` calls them)."""
    cfg = config.get("config") if isinstance(config, dict) else None
    layers = cfg.get("layers") if isinstance(cfg, dict) else None
    if not isinstance(layers, list):
        return
    for entry in layers:
        if not isinstance(entry, dict):
            continue
        conf = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        name = prefix + str(conf.get("name", entry.get("name", entry.get("class_name"))))
        yield name, entry.get("class_name"), entry.get("module"), entry
        if isinstance(conf.get("layers"), list):
            yield from _config_layers(entry, name + "/")


def _n_endpoints(spec) -> int:
    if isinstance(spec, dict):
        return len(spec)
    if isinstance(spec, (list, tuple)):
        return len(_endpoint_names(spec))
    return 1


def _unsupported_in_config(config: dict, *, code_only: bool = False) -> str | None:
    """Why a model config cannot be audited (one line), read without Keras, or None: more than one
    input or output, a layer type modtest refuses whatever the trust (recurrent, attention, Lambda,
    custom classes; ``code_only``: only the last two). The loaded model's graph is checked again
    (:func:`layer_graph`); this finds the common cases before any framework import."""
    cfg = config.get("config") if isinstance(config, dict) else None
    if not code_only and isinstance(cfg, dict) and config.get("class_name") not in ("Sequential",) \
            and "output_layers" in cfg:
        n_in, n_out = _n_endpoints(cfg.get("input_layers")), _n_endpoints(cfg.get("output_layers"))
        if n_in != 1 or n_out != 1:
            return f"model {cfg.get('name', 'model')} has {n_in} inputs and {n_out} outputs; modtest needs one of each"
    for name, cls, module, _entry in _config_layers(config):
        if not isinstance(cls, str) or cls in ("Functional", "Sequential", "Model"):
            continue
        if module is not None and not str(module).startswith("keras"):
            return str(_unsupported(LayerInfo(name, f"{module}.{cls}")))
        if cls in ("Lambda", "TFOpLambda", "SlicingOpLambda") or (not code_only and cls in _ALTERNATIVES):
            return str(_unsupported(LayerInfo(name, cls)))
    return None


def check_auditable_file(path) -> None:
    """Refuse (one line, without importing Keras) a model file whose config shows that modtest
    cannot audit it: two outputs, an LSTM, ... (:func:`_unsupported_in_config`)."""
    path = Path(path)
    problem = _unsupported_in_config(_read_config(path))
    if problem is not None:
        raise UnsupportedModelError(f"{path.name} cannot be audited: {problem}")


#: layers after which the output width is still that of the layer before them
_SAME_WIDTH = ("Activation", "Softmax", "ReLU", "LeakyReLU", "ELU", "PReLU", "Dropout", "GaussianNoise",
               "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity")


def config_signature(config: dict) -> tuple[tuple, int | None] | None:
    """``(input_shape, n_classes)`` read from a model config without Keras (None when the config
    does not say: nested models, unusual inputs); ``n_classes`` is None when the output layer's width
    cannot be read. The xdist controller uses it to check ``--data`` before any framework import."""
    cfg = config.get("config") if isinstance(config, dict) else None
    layers = cfg.get("layers") if isinstance(cfg, dict) else None
    if not isinstance(layers, list) or not layers:
        return None
    by_name = {lc.get("config", {}).get("name", lc.get("name")): lc for lc in layers if isinstance(lc, dict)}

    def shape_of(lc):
        conf = lc.get("config") or {}
        shape = conf.get("batch_shape") or conf.get("batch_input_shape")
        return None if not isinstance(shape, list) or len(shape) < 2 else tuple(shape[1:])

    sequential = config.get("class_name") == "Sequential"
    if sequential:
        shape = shape_of(layers[0])
        if shape is None:
            build = (config.get("build_config") or {}).get("input_shape")
            shape = tuple(build[1:]) if isinstance(build, list) and len(build) >= 2 else None
    else:
        ins = cfg.get("input_layers")
        name = ins[0][0] if isinstance(ins, list) and ins and isinstance(ins[0], list) else None
        if isinstance(ins, list) and len(ins) == 3 and isinstance(ins[0], str):
            name = ins[0]  # a single input written as [name, 0, 0]
        shape = shape_of(by_name[name]) if name in by_name else None
    if shape is None:
        return None
    index = len(layers) - 1
    if sequential:
        current = layers[index]
    else:
        outs = cfg.get("output_layers")
        name = outs[0][0] if isinstance(outs, list) and outs and isinstance(outs[0], list) else None
        if isinstance(outs, list) and len(outs) == 3 and isinstance(outs[0], str):
            name = outs[0]
        current = by_name.get(name)
    n_classes = None
    for _ in range(len(layers)):
        if not isinstance(current, dict):
            break
        kind, conf = current.get("class_name"), current.get("config") or {}
        if kind in DENSE_TYPES and isinstance(conf.get("units"), int):
            n_classes = conf["units"]
            break
        if kind in CONV_TYPES and isinstance(conf.get("filters"), int):
            n_classes = conf["filters"]
            break
        if kind not in _SAME_WIDTH:
            break
        if sequential:
            index -= 1
            current = layers[index] if index >= 0 else None
        else:
            prev = _history_names(current.get("inbound_nodes", []))
            current = by_name.get(prev[0]) if len(prev) == 1 else None
    return tuple(shape), n_classes


def file_signature(path) -> tuple[tuple, int | None] | None:
    """:func:`config_signature` of a ``.keras``/``.h5`` file (None when its config cannot be read)."""
    try:
        return config_signature(_read_config(Path(path)))
    except ModelLoadError:
        return None


def load_model(model, *, trust: bool = False, custom_objects: dict | None = None):
    """Load a ``.keras``/``.h5`` model safely, or return an in-memory ``keras.Model`` as it is.

    Safe by default: a model with a ``Lambda`` layer or custom objects is refused with a one-line
    :class:`UnsafeModelError` unless ``trust=True``, because loading it would run code from the file.
    """
    from modtest.frameworks.keras.runtime import import_keras

    keras = import_keras()
    if isinstance(model, keras.Model):
        return model
    if not isinstance(model, (str, os.PathLike)):
        raise ModelLoadError(f"expected a model path or a keras.Model, got {type(model).__name__}")
    from modtest.frameworks import _entry_for_path

    path = Path(model)
    _entry_for_path(path)  # exists, is a file, has a model suffix
    check_model_file(path, trust=trust)
    try:
        loaded = keras.saving.load_model(path, compile=False, safe_mode=not trust,
                                         custom_objects=custom_objects)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any Keras failure becomes one clear line
        raise ModelLoadError(f"cannot load {path.name}: {type(exc).__name__}: {_first_line(exc)}") from None
    if not isinstance(loaded, keras.Model):
        raise ModelLoadError(f"{path.name} does not hold a keras.Model")
    return loaded


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


# --------------------------------------------------------------------------------------------
# Layer graph
# --------------------------------------------------------------------------------------------

@dataclass
class LayerInfo:
    """One layer (or keras.ops call) of the model as the graph sees it.

    ``width`` is the number of units of its output: its channels (the last axis), or every entry
    of a multi-dimensional MLP input (``flat``). ``remap[j]`` is the input unit that output unit
    ``j`` comes from where the layer rearranges units (Flatten of a map, Permute of a flat input);
    a ``barrier`` mixes units with positions, so no edge passes it.
    """

    name: str
    kind: str  # class name (keras.ops calls: Scale, Elementwise, Add, Multiply, ...)
    inputs: list[str] = field(default_factory=list)
    width: int = 0
    layer: object = field(default=None, repr=False)  # the Keras layer or operation
    flat: bool = False
    remap: np.ndarray | None = field(default=None, repr=False)
    barrier: bool = False
    const: float | None = None  # the factor of a keras.ops Scale
    channel_concat: bool = True  # a Concatenate on the channel axis (else it merges like Add)


@dataclass
class LayerGraph:
    """The model's layers as a DAG keyed by name (nested models flattened), in topological order."""

    layers: dict[str, LayerInfo]
    order: list[str]
    input_names: list[str]
    output_names: list[str]
    input_shape: tuple
    _consumers: dict | None = field(default=None, init=False, repr=False)

    def consumers(self, name: str) -> list[str]:
        if self._consumers is None:
            cons: dict[str, list[str]] = {n: [] for n in self.order}
            for n in self.order:
                for i in dict.fromkeys(self.layers[n].inputs):
                    cons[i].append(n)
            self._consumers = cons
        return list(self._consumers.get(name, []))


def _history_names(obj) -> list[str]:
    out = []
    if isinstance(obj, dict):
        hist = obj.get("config", {}).get("keras_history") if isinstance(obj.get("config"), dict) else None
        if obj.get("class_name") == "__keras_tensor__" and hist:
            out.append(hist[0])
        else:
            for v in obj.values():
                out.extend(_history_names(v))
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            out.extend(_history_names(v))
    return out


def layer_graph(model) -> LayerGraph:
    """Describe ``model``'s layers as a DAG, rejecting layer types modtest cannot handle.

    A ``keras.Model`` used as a layer is flattened into the outer graph: its layers are named
    ``outer/inner`` (``a/b/c`` deeper down), its input becomes an ``Identity`` of what the outer
    model feeds it, and the nested model's own name an ``Identity`` of its output.
    """
    import keras

    layers: dict[str, LayerInfo] = {}
    input_names, output_names = _add_model(keras, model, "", None, layers)
    if len(input_names) != 1 or len(output_names) != 1:
        raise UnsupportedModelError(f"model {model.name} has {len(input_names)} inputs and "
                                    f"{len(output_names)} outputs; modtest needs one of each")
    for info in layers.values():
        if info.kind not in SUPPORTED_TYPES:
            raise _unsupported(info)
    order = _toposort(layers)
    input_shape = tuple(model.inputs[0].shape[1:])
    convolutional = any(layers[n].kind in CONVLIKE_TYPES for n in order)
    for name in order:
        _set_width(layers, layers[name], input_shape, convolutional)
    return LayerGraph(layers, order, input_names, output_names, input_shape)


def _add_model(keras, model, prefix: str, feed, layers: dict) -> tuple[list[str], list[str]]:
    """Add ``model``'s layers (names prefixed) to ``layers``; ``feed``: the outer layers its input
    reads (None at the top). Returns its input and output layer names."""
    if isinstance(model, keras.Sequential):
        first = prefix + "input"
        layers[first] = LayerInfo(first, "InputLayer" if feed is None else "Identity", list(feed or []))
        prev = first
        for layer in model.layers:
            prev = _add_layer(keras, layer, type(layer).__name__, prefix, [prev], [], layers)
        return [first], [prev]
    try:
        cfg = model.get_config()
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedModelError(f"cannot read the layer graph of {model.name}: {_first_line(exc)}") from None
    if not isinstance(cfg, dict) or "layers" not in cfg:
        where = f"layer {prefix.rstrip('/')!r} is" if prefix else f"model {model.name} ({type(model).__name__}) is"
        raise UnsupportedModelError(f"{where} a subclassed model; modtest needs Sequential or functional "
                                    f"models (rebuild it with keras.Model(inputs, outputs))")
    ops = {op.name: op for op in getattr(model, "operations", model.layers)}
    inputs = _endpoint_names(cfg["input_layers"])
    for lc in cfg["layers"]:
        nodes = lc.get("inbound_nodes", [])
        name = prefix + lc["name"]
        if len(nodes) > 1:
            raise UnsupportedModelError(f"layer {name!r} is shared (called more than once); "
                                        f"modtest needs each layer called once")
        op = ops.get(lc["name"])
        if lc["name"] in inputs and feed is not None:  # a nested model's input: what the outer model feeds it
            layers[name] = LayerInfo(name, "Identity", list(feed), layer=op)
            continue
        args = nodes[0].get("args", []) if nodes and isinstance(nodes[0], dict) else []
        _add_layer(keras, op, lc["class_name"], prefix, [prefix + h for h in _history_names(nodes)], args, layers)
    return [prefix + n for n in inputs], [prefix + n for n in _endpoint_names(cfg["output_layers"])]


def _add_layer(keras, op, class_name: str, prefix: str, inputs: list[str], args, layers: dict) -> str:
    """Add one layer (a nested model is spliced in); returns the name of its output."""
    name = prefix + (op.name if op is not None else class_name)
    if isinstance(op, keras.Model):
        if len(inputs) != 1 or len(op.inputs) != 1 or len(op.outputs) != 1:
            raise UnsupportedModelError(f"nested model {name!r} has {len(op.inputs)} inputs and "
                                        f"{len(op.outputs)} outputs; modtest flattens nested models "
                                        f"with one of each")
        _, inner_out = _add_model(keras, op, name + "/", inputs, layers)
        layers[name] = LayerInfo(name, "Identity", inner_out, layer=op)
        return name
    kind, const = _kind(op, class_name, args)
    layers[name] = LayerInfo(name, kind, inputs, layer=op, const=const)
    return name


#: keras.ops calls on one tensor that act elementwise (an activation written as a function call).
_ELEMENTWISE_OPS = ("Relu", "Relu6", "Sigmoid", "HardSigmoid", "Silu", "HardSilu", "Gelu", "Elu", "Selu",
                    "Celu", "LeakyRelu", "Softplus", "Softsign", "LogSigmoid", "Tanh", "Mish", "Abs")


def _kind(op, class_name: str, args) -> tuple[str, float | None]:
    """The graph kind of a layer or keras.ops call, and the factor of a ``Scale``."""
    if op is None:
        return class_name, None
    cls, module = type(op).__name__, type(op).__module__
    if (module, cls) in _APPLICATION_CLASSES:
        return _APPLICATION_CLASSES[(module, cls)], None
    if module.startswith("keras.src.ops."):
        return _op_kind(cls, list(args) if isinstance(args, (list, tuple)) else [args])
    if not module.startswith("keras."):
        return f"{module}.{cls}", None  # custom code: refused, named with its module
    return cls, None


def _op_kind(cls: str, args: list) -> tuple[str, float | None]:
    """keras.ops calls: merges of two tensors, a number added or multiplied, elementwise functions."""
    is_tensor = [isinstance(a, dict) and a.get("class_name") == "__keras_tensor__" for a in args]
    numbers = [a for a, t in zip(args, is_tensor) if not t and isinstance(a, (int, float)) and not isinstance(a, bool)]
    n_tensors = sum(is_tensor)
    if n_tensors == 2 and len(args) == 2 and cls in ("Add", "Subtract", "Multiply", "Maximum", "Minimum"):
        return cls, None
    if n_tensors == 1 and len(args) == 2 and len(numbers) == 1:
        c = float(numbers[0])
        if cls in ("Add", "Subtract", "Maximum", "Minimum"):
            return "Elementwise", None
        if cls == "Multiply":
            return "Scale", c
        if cls in ("Divide", "TrueDivide") and is_tensor[0] and c != 0:
            return "Scale", 1.0 / c
    if n_tensors == 1 and len(args) == 1:
        if cls == "Negative":
            return "Scale", -1.0
        if cls in _ELEMENTWISE_OPS:
            return "Elementwise", None
    return f"keras.ops.{cls}", None


def _unsupported(info: LayerInfo) -> UnsupportedModelError:
    """The refusal of a layer: its name, type and the nearest supported alternative."""
    kind = info.kind
    if "." in kind and not kind.startswith("keras.ops."):
        return UnsupportedModelError(
            f"custom layer {info.name!r} of type {kind}: modtest reads only Keras's own layers; nearest "
            f"supported: a Keras layer with the same effect ({_DEFAULT_ALTERNATIVE}); see docs/compatibility.md")
    alt = _ALTERNATIVES.get(kind.split(".")[-1], _DEFAULT_ALTERNATIVE)
    return UnsupportedModelError(f"unsupported layer {info.name!r} of type {kind}; nearest supported: {alt} "
                                 f"(see docs/compatibility.md)")


def _shape(layer, attr: str) -> tuple:
    t = getattr(layer, attr)
    return tuple(t.shape[1:])


def _set_width(layers: dict, info: LayerInfo, input_shape: tuple, convolutional: bool) -> None:
    """Width, and how units map through ``info`` (remap, flat, barrier), from its inputs' widths."""
    kind, ins = info.kind, [layers[i] for i in info.inputs]
    if kind == "InputLayer":
        if convolutional and len(input_shape) > 1:
            info.width = int(input_shape[-1])  # feature maps: the image's channels
        else:
            info.width = int(np.prod(input_shape)) if len(input_shape) else 1
            info.flat = len(input_shape) > 1
        return
    if kind in UNIT_TYPES:
        info.width = unit_width(info.layer)
        return
    first = ins[0] if ins else LayerInfo("", "")
    if kind in CONCAT_TYPES or kind in ADD_TYPES:
        if any(i.flat for i in ins):
            if kind in ADD_TYPES and len({i.width for i in ins}) == 1:
                info.width, info.flat = first.width, True
            else:
                _barrier(info)
            return
        if kind in CONCAT_TYPES:
            rank = len(info.layer.output.shape)
            info.channel_concat = int(info.layer.axis) % rank == rank - 1
            if info.channel_concat:
                info.width = sum(i.width for i in ins)
                return
        info.width = max(i.width for i in ins)
        return
    if kind in RESHAPE_TYPES:
        _set_reshape(info, first)
        return
    if first.flat and kind in SPATIAL_TYPES:
        _barrier(info)  # pooling or padding of a flat input: its units lose their identity
        return
    info.width, info.flat = first.width, first.flat


def _set_reshape(info: LayerInfo, first: LayerInfo) -> None:
    """Flatten, Reshape, Permute: channels pass while they stay the last axis; a flat input keeps its
    entries (Permute reorders them); anything else mixes channels with positions (a barrier)."""
    in_shape, out_shape = _shape(info.layer, "input"), _shape(info.layer, "output")
    if info.kind == "Permute":
        dims = tuple(int(d) for d in info.layer.dims)
        if first.flat:
            info.remap = np.arange(int(np.prod(in_shape))).reshape(in_shape).transpose(
                [d - 1 for d in dims]).ravel()
            info.width, info.flat = first.width, True
        elif dims[-1] == len(dims):
            info.width = first.width
        else:
            _barrier(info)
        return
    if first.flat:  # C-order reshapes keep the order of the entries
        info.width, info.flat = first.width, len(out_shape) > 1
        return
    if len(in_shape) <= 1 or (len(out_shape) > 1 and in_shape[-1] == out_shape[-1]):
        info.width = first.width  # channels stay the last axis
        return
    if len(out_shape) == 1 and in_shape[-1] == first.width:
        info.width = int(np.prod(in_shape))  # flattened map: entry j comes from channel j % C
        info.remap = np.arange(info.width) % first.width
        return
    _barrier(info)


def _barrier(info: LayerInfo) -> None:
    shape = _shape(info.layer, "output") if info.layer is not None else ()
    info.width, info.barrier, info.flat = int(shape[-1]) if shape else 1, True, False


def _endpoint_names(spec) -> list[str]:
    """Layer names from a config's ``input_layers``/``output_layers`` (one or several endpoints)."""
    if spec and isinstance(spec[0], (list, tuple)):
        return [t[0] for t in spec]
    return [spec[0]] if spec else []


def _toposort(layers: dict[str, LayerInfo]) -> list[str]:
    """Depth-first post-order over inputs, layers in insertion order (iterative: deep models)."""
    order, state = [], {}  # 1: on the stack, 2: done
    for root in layers:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(layers[root].inputs))]
        while stack:
            n, it = stack[-1]
            for i in it:
                if i not in layers:
                    raise UnsupportedModelError(f"layer {n!r} reads from unknown layer {i!r}")
                s = state.get(i)
                if s == 1:
                    raise UnsupportedModelError(f"layer graph has a cycle at {i!r}")
                if s is None:
                    state[i] = 1
                    stack.append((i, iter(layers[i].inputs)))
                    break
            else:
                stack.pop()
                state[n] = 2
                order.append(n)
    return order


def is_convolutional(model_or_graph) -> bool:
    """True when the model has convolutional layers (then only feature maps are graph nodes)."""
    lg = model_or_graph if isinstance(model_or_graph, LayerGraph) else layer_graph(model_or_graph)
    return any(lg.layers[n].kind in CONVLIKE_TYPES for n in lg.order)


def _on_maps(info: LayerInfo) -> bool:
    """A Dense applied to a feature map (rank > 2): a 1x1 convolution, its units are maps."""
    return info.kind in DENSE_TYPES and len(info.layer.input.shape) > 2


def output_units(lg: LayerGraph) -> list[str]:
    """The unit layers whose output reaches the model output through non-unit layers only."""
    found, stack, seen = [], list(lg.output_names), set()
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if lg.layers[n].kind in UNIT_TYPES:
            found.append(n)
        else:
            stack.extend(lg.layers[n].inputs)
    return found


def node_layers(lg: LayerGraph) -> tuple[list[str], list[str]]:
    """The graph's node layers, in model order, and their roles (paper section 2).

    MLP: the input, every Dense layer (the last one is the output). CNN: every convolution and every
    Dense applied to a feature map, except the classifier (a unit layer whose output is the model's).
    """
    units = [n for n in lg.order if lg.layers[n].kind in UNIT_TYPES]
    if not units:
        raise UnsupportedModelError("model has no Dense or convolutional layers")
    if is_convolutional(lg):
        out = set(output_units(lg))
        maps = [n for n in units if n not in out
                and (lg.layers[n].kind in CONVLIKE_TYPES or _on_maps(lg.layers[n]))]
        if not maps:
            raise UnsupportedModelError("model has no convolutional layers before its output layer")
        return maps, ["hidden"] * len(maps)
    dense = [n for n in units if lg.layers[n].kind in DENSE_TYPES]
    return [lg.input_names[0]] + dense, ["input"] + ["hidden"] * (len(dense) - 1) + ["output"]


def unit_layers(model) -> list[str]:
    """Names of the layers whose units are lesioned and tested (the paper's hidden layers).

    MLP: every Dense layer but the output layer. CNN: the graph's node layers.
    """
    lg = layer_graph(model)
    nodes, roles = node_layers(lg)
    return [n for n, r in zip(nodes, roles) if r == "hidden"]


def activation_layer_name(model, layer_name: str) -> str:
    """The layer whose output is the post-activation of ``layer_name``'s units.

    Follows BatchNormalization and activation layers that directly and only consume it
    (conv -> BN -> ReLU gives the ReLU); a layer with a built-in activation is its own answer.
    """
    lg = layer_graph(model)
    if layer_name not in lg.layers:
        raise UnsupportedModelError(f"model has no layer named {layer_name!r}")
    name = layer_name
    while True:
        cons = lg.consumers(name)
        if len(cons) != 1:
            return name
        nxt = lg.layers[cons[0]]
        if nxt.kind not in BATCHNORM_TYPES + ACTIVATION_TYPES or len(nxt.inputs) != 1:
            return name
        name = nxt.name


# --------------------------------------------------------------------------------------------
# Layers by name, unit weights, the flattened graph
# --------------------------------------------------------------------------------------------

def get_layer(model, name: str):
    """The layer called ``name``; ``outer/inner`` names a layer of a nested model."""
    from modtest.errors import InvalidInput

    obj = model
    for part in name.split("/"):
        try:
            obj = obj.get_layer(part)
        except (ValueError, AttributeError):
            raise InvalidInput(f"model has no layer named {name!r}") from None
    return obj


def _units_last(a):
    return a


def _depthwise_units(a):
    return a.reshape(a.shape[:-2] + (-1,))  # output channel c * multiplier + m


def _transpose_units(a):
    return np.swapaxes(a, -1, -2)  # kernel (..., filters, in_channels)


def unit_kernel(layer):
    """``(variable, view)``: the variable holding every unit's incoming weights, and a function giving
    a view of an array of its value with the units on the last axis (lesions zero ``view(k)[..., u]``)."""
    kind = type(layer).__name__
    if kind in SEPARABLE_TYPES:
        return layer.pointwise_kernel, _units_last  # the depthwise part is shared by every unit
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        raise UnsupportedModelError(f"layer {layer.name!r} ({kind}) has no kernel to lesion")
    if kind in DEPTHWISE_TYPES:
        return kernel, _depthwise_units
    if kind in TRANSPOSE_TYPES:
        return kernel, _transpose_units
    return kernel, _units_last


def unit_width(layer) -> int:
    """Number of units (output channels) of a unit layer."""
    var, view = unit_kernel(layer)
    return int(view(np.empty(tuple(var.shape), dtype=np.bool_)).shape[-1])


def graph_function(model):
    """The functional graph behind ``model`` (a Sequential keeps one in ``_functional``)."""
    import keras

    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model if hasattr(model, "_nodes_by_depth") else None


@dataclass
class FlatGraph:
    """A functional model computing what ``model`` computes with nested models spliced in (the same
    layer objects), and the node of every layer by its :func:`layer_graph` name."""

    model: object
    nodes: dict

    def output(self, name: str):
        return self.nodes[name].outputs[0]

    def input(self, name: str):
        return self.nodes[name].input_tensors[0]


def flat_graph(model) -> FlatGraph | None:
    """``model``'s :class:`FlatGraph` (the model's own graph when nothing is nested); None when it has
    no functional graph. Flattening calls the inner layers once more, on the outer tensors."""
    import keras
    from keras import tree

    graph = graph_function(model)
    if graph is None:
        return None
    if not any(isinstance(op, keras.Model) for op in graph.operations):
        return FlatGraph(graph, {node.operation.name: node for nodes in graph._nodes_by_depth.values()
                                 for node in nodes if node.operation is not None and not node.is_input})
    nodes: dict = {}
    td = {id(t): t for t in graph.inputs}
    _replay(keras, tree, graph, "", td, nodes)
    outs = [td[id(t)] for t in graph.outputs]
    try:
        flat = keras.Model(graph.inputs, outs[0] if len(outs) == 1 else outs)
    except ValueError as exc:
        raise UnsupportedModelError(f"cannot flatten the nested models of {model.name}: {_first_line(exc)}; "
                                    f"give the nested layers names unique in the whole model") from None
    return FlatGraph(flat, nodes)


def _replay(keras, tree, graph, prefix: str, td: dict, nodes: dict) -> None:
    """Call ``graph``'s operations on the tensors in ``td`` (a nested model: its own operations)."""
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        for node in graph._nodes_by_depth[depth]:
            op = node.operation
            if op is None or node.is_input:
                continue
            args, kwargs = node.arguments.fill_in(td)
            if isinstance(op, keras.Model):
                inner = graph_function(op)
                feed = [t for t in tree.flatten((args, kwargs)) if isinstance(t, keras.KerasTensor)]
                sub = {id(t): f for t, f in zip(inner.inputs, feed)}
                _replay(keras, tree, inner, prefix + op.name + "/", sub, nodes)
                outs = [sub[id(t)] for t in inner.outputs]
            else:
                outs = tree.flatten(op(*args, **kwargs))
            hist = outs[0]._keras_history
            nodes[prefix + op.name] = hist.operation._inbound_nodes[hist.node_index]
            for t, o in zip(node.outputs, outs):
                td[id(t)] = o


def model_hash(model) -> str:
    """A content hash of the model's architecture and weights (hex, 16 chars)."""
    h = hashlib.sha256()
    for layer in model.layers:
        h.update(f"{layer.name}:{type(layer).__name__};".encode())
        for w in layer.get_weights():
            a = np.ascontiguousarray(w)
            h.update(str(a.shape).encode())
            h.update(a.tobytes())
    return h.hexdigest()[:16]


def output_size(model) -> int:
    """Number of classes: the size of the model's last axis."""
    return int(model.outputs[0].shape[-1])
