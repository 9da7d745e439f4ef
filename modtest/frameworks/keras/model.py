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

#: Layers whose units (neurons, feature maps) are graph nodes and can be lesioned.
DENSE_TYPES = ("Dense",)
CONV_TYPES = ("Conv1D", "Conv2D", "Conv3D")
UNIT_TYPES = DENSE_TYPES + CONV_TYPES
#: Layers folded into the kernel of the unit layer before them (per output channel scale).
BATCHNORM_TYPES = ("BatchNormalization",)
#: Layers that keep the channel axis as it is: edges pass through them.
PASS_TYPES = (
    "InputLayer", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
    "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax",
    "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
    "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "Flatten", "Rescaling",
)
#: Merge layers: Add-like ones keep channels, Concatenate stacks them.
ADD_TYPES = ("Add", "Average", "Maximum", "Minimum", "Subtract")
CONCAT_TYPES = ("Concatenate",)
ACTIVATION_TYPES = ("Activation", "ReLU", "LeakyReLU", "ELU", "PReLU")
SUPPORTED_TYPES = UNIT_TYPES + BATCHNORM_TYPES + PASS_TYPES + ADD_TYPES + CONCAT_TYPES



# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------

def _read_config(path: Path) -> dict:
    """Read the model config of a ``.keras`` or ``.h5`` file without deserialising anything."""
    suffix = path.suffix.lower()
    if suffix == ".keras":
        try:
            with zipfile.ZipFile(path) as zf:
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
    path = Path(path)
    config = _read_config(path)
    risky = unsafe_objects(config, legacy=legacy)
    if risky and not trust:
        raise UnsafeModelError(
            f"{path.name} contains code that would run on loading: {', '.join(risky[:5])}; "
            f"pass trust=True (--modtest-trust-model) if you trust this file")
    return config


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
    """One layer of the model: its type, its input layers and (for unit layers) its weights."""

    name: str
    kind: str  # class name
    inputs: list[str] = field(default_factory=list)
    width: int = 0  # number of units (channels) of its output


@dataclass
class LayerGraph:
    """The model's layers as a DAG keyed by name, in topological order."""

    layers: dict[str, LayerInfo]
    order: list[str]
    input_names: list[str]
    output_names: list[str]
    input_shape: tuple

    def consumers(self, name: str) -> list[str]:
        return [n for n in self.order if name in self.layers[n].inputs]


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
    """Describe ``model``'s layers as a DAG, rejecting layer types modtest cannot handle."""
    import keras

    layers: dict[str, LayerInfo] = {}
    by_name = {layer.name: layer for layer in model.layers}
    if isinstance(model, keras.Sequential):
        prev = "input"
        layers["input"] = LayerInfo("input", "InputLayer")
        for layer in model.layers:
            layers[layer.name] = LayerInfo(layer.name, type(layer).__name__, [prev])
            prev = layer.name
        input_names, output_names = ["input"], [prev]
    else:
        try:
            cfg = model.get_config()
        except Exception as exc:  # noqa: BLE001
            raise UnsupportedModelError(f"cannot read the layer graph of {model.name}: {_first_line(exc)}") from None
        if "layers" not in cfg:
            raise UnsupportedModelError(f"model {model.name} ({type(model).__name__}) is a subclassed "
                                        f"model; modtest needs a Sequential or functional model")
        for lc in cfg["layers"]:
            if len(lc.get("inbound_nodes", [])) > 1:
                raise UnsupportedModelError(f"layer {lc['name']!r} is shared (called more than once); "
                                            f"modtest needs each layer called once")
            layers[lc["name"]] = LayerInfo(lc["name"], lc["class_name"], _history_names(lc.get("inbound_nodes", [])))
        input_names = _endpoint_names(cfg["input_layers"])
        output_names = _endpoint_names(cfg["output_layers"])
    if len(input_names) != 1 or len(output_names) != 1:
        raise UnsupportedModelError(f"model {model.name} has {len(input_names)} inputs and "
                                    f"{len(output_names)} outputs; modtest needs one of each")
    for info in layers.values():
        if info.kind not in SUPPORTED_TYPES:
            layer = by_name.get(info.name)
            if layer is not None and isinstance(layer, keras.Model):
                raise UnsupportedModelError(f"layer {info.name!r} is a nested model; flatten it into "
                                            f"one functional model")
            raise UnsupportedModelError(
                f"unsupported layer {info.name!r} of type {info.kind}; supported: Dense, Conv1D/2D/3D, "
                f"BatchNormalization, Add/Concatenate and pass-through layers (see README)")
    order = _toposort(layers)
    input_shape = tuple(model.inputs[0].shape[1:])
    for name in order:
        info = layers[name]
        layer = by_name.get(name)
        if info.kind in UNIT_TYPES:
            info.width = int(layer.kernel.shape[-1])
        elif info.kind == "InputLayer":
            info.width = int(np.prod(input_shape)) if len(input_shape) else 1
        elif info.kind in CONCAT_TYPES:
            info.width = sum(layers[i].width for i in info.inputs)
        elif info.inputs:
            info.width = layers[info.inputs[0]].width
    return LayerGraph(layers, order, input_names, output_names, input_shape)


def _endpoint_names(spec) -> list[str]:
    """Layer names from a config's ``input_layers``/``output_layers`` (one or several endpoints)."""
    if spec and isinstance(spec[0], (list, tuple)):
        return [t[0] for t in spec]
    return [spec[0]] if spec else []


def _toposort(layers: dict[str, LayerInfo]) -> list[str]:
    order, seen = [], set()

    def visit(n, stack=()):
        if n in seen:
            return
        if n in stack:
            raise UnsupportedModelError(f"layer graph has a cycle at {n!r}")
        for i in layers[n].inputs:
            if i not in layers:
                raise UnsupportedModelError(f"layer {n!r} reads from unknown layer {i!r}")
            visit(i, stack + (n,))
        seen.add(n)
        order.append(n)

    for n in layers:
        visit(n)
    return order


def is_convolutional(model_or_graph) -> bool:
    """True when the model has convolutional layers (then only feature maps are graph nodes)."""
    lg = model_or_graph if isinstance(model_or_graph, LayerGraph) else layer_graph(model_or_graph)
    return any(lg.layers[n].kind in CONV_TYPES for n in lg.order)


def unit_layers(model) -> list[str]:
    """Names of the layers whose units are lesioned and tested (the paper's hidden layers).

    MLP: every Dense layer but the output layer. CNN: every convolutional layer.
    """
    lg = layer_graph(model)
    if is_convolutional(lg):
        return [n for n in lg.order if lg.layers[n].kind in CONV_TYPES]
    dense = [n for n in lg.order if lg.layers[n].kind in DENSE_TYPES]
    return dense[:-1]  # the last Dense layer is the output layer


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
