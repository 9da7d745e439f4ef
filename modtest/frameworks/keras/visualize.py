"""Feature visualization by input construction (paper 3.1.2, A.8): a native stand-in for Lucid.

An image is optimised with Adam (lr 0.05, no regularisation) to maximise the mean post-activation of a
set of units of one layer (for conv maps: mean over the map, then mean over the units). Many such
objectives -- a sub-cluster and all its random controls, in any layers -- are optimised together in one
batch: one forward pass over B images, a mask matrix per layer picks out each image's own units, and
the gradient of the sum of the B objectives is each image's own gradient, because the images do not
interact. Everything is ``keras.ops`` and numpy, so it runs on the TensorFlow and JAX backends; only
the gradient call differs per backend (:mod:`modtest.frameworks.keras.grad`).

Parameterizations
-----------------
``"pixel"`` (default): the image is its own parameter, initialised at the middle of ``value_range``
plus noise of 1% of the range, and projected back into ``value_range`` after every Adam step (Lucid's
``param.image(fft=False)`` squashes with a sigmoid instead; projection keeps the plain pixels the paper
states: "the standard pixel-based parameterization ... for all networks"). On small digit models it
is also the better default: on a 24x24 digits MLP it reached a mean objective of 7.98 after 128 steps
where ``"fft"`` reached 7.41 (and needed ~512 steps to catch up, 7.88), with equally legible images --
the 1/f spectrum scaling of ``"fft"`` is made for natural photographs and only smooths the edges of
strokes. ``"fft"`` is Lucid's default image (``param.image(fft=True, decorrelate=True)``): a
1/f-scaled Fourier spectrum, Lucid's colour decorrelation for 3-channel inputs (identity for any other
channel count) and a sigmoid into ``value_range``.

Transforms and parameterizations
--------------------------------
Shared with the torch adapter: :mod:`modtest.frameworks.imaging` (Lucid's pad, jitter, random scale
and rotation, seeded per objective; the "pixel" and "fft" images; the Adam loop). Their names are
importable from here as before.
"""
from __future__ import annotations

import weakref
from collections import OrderedDict

import numpy as np

from modtest._random import keyed_rng
from modtest.errors import InvalidInput, UnsupportedModelError
from modtest.frameworks.imaging import (  # noqa: F401 - the transforms and params are public here too
    _COLOR_NORMALIZED,
    PARAMS,
    Transform,
    _bilinear,
    _FFTParam,
    _fit,
    _grid,
    _PixelParam,
    check_objectives,
    check_render_args,
    check_units,
    image_setup,
    image_shape_from,
    jitter,
    optimise,
    pad,
    random_rotate,
    random_scale,
    resolve_transforms,
    seed_keys,
    small_transforms,
    standard_transforms,
)
from modtest.stats import entropy, softmax


def _ops():
    from keras import ops

    return ops

__all__ = [
    "render", "unit_activations", "output_probabilities", "entropy", "unit_post_activations",
    "Transform", "pad", "jitter", "random_scale", "random_rotate",
    "standard_transforms", "small_transforms", "resolve_transforms", "PARAMS", "clear_cache",
    "untrained_control",
]

# --------------------------------------------------------------------------------------------
# Model plumbing
# --------------------------------------------------------------------------------------------


def _input_shape(model) -> tuple:
    try:
        return tuple(model.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError, ValueError):
        raise UnsupportedModelError(f"model {getattr(model, 'name', model)!r} has no defined input; "
                                    f"build it with an Input layer") from None


def image_shape_for(model, image_shape=None) -> tuple[int, int, int]:
    """The (H, W, C) image optimised for ``model`` (see :func:`modtest.frameworks.imaging.image_shape_from`)."""
    return image_shape_from(_input_shape(model), image_shape)


def _resolve_layers(model, names, resolve: bool) -> dict[str, str]:
    """Unit layer name -> the layer whose output is its post-activation."""
    from modtest.frameworks.keras.model import layer_graph

    out = {}
    known = set(layer_graph(model).layers)
    for name in names:
        if name not in known:
            raise InvalidInput(f"model has no layer named {name!r}")
        if resolve:
            from modtest.frameworks.keras.model import activation_layer_name

            out[name] = activation_layer_name(model, name)
        else:
            out[name] = name
    return out


def _unit_axis_first(model, name) -> bool:
    from modtest.frameworks.keras.model import get_layer

    return getattr(get_layer(model, name), "data_format", "channels_last") == "channels_first"


def _reduce_units(out, channels_first: bool):
    """Per-unit activation (B, U): a conv map is averaged over its positions."""
    ops = _ops()
    rank = len(out.shape)
    if rank == 2:
        return out
    if channels_first:
        return ops.mean(out, axis=tuple(range(2, rank)))
    return ops.mean(out, axis=tuple(range(1, rank - 1)))


_FLAT_GRAPHS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _flat(model):
    """``model``'s flattened graph (nested models spliced in), built once per model: flattening
    calls the inner layers again, which a model's every extractor need not repeat."""
    from modtest.frameworks.keras.model import flat_graph, graph_function

    flat = _FLAT_GRAPHS.get(model)
    if flat is None:
        flat = flat_graph(model)
        if flat is None:
            raise UnsupportedModelError(f"cannot read internal layers of {model.name}: it has no functional graph")
        if flat.model is not graph_function(model):  # a new model: keep it (the model's own graph
            _FLAT_GRAPHS[model] = flat             # would keep the weak key alive)
    return flat


def _extractor(model, act_names: list[str], with_output: bool):
    import keras

    flat = _flat(model)
    try:
        outputs = [flat.output(n) for n in act_names]
        if with_output:
            outputs.append(flat.model.outputs[0])
        return keras.Model(flat.model.inputs, outputs)
    except Exception as exc:  # noqa: BLE001
        raise UnsupportedModelError(f"cannot read internal layers of {model.name}: {exc}") from None


def _softmax_output(model) -> bool:
    last = model.layers[-1]
    if type(last).__name__ == "Softmax":
        return True
    act = getattr(last, "activation", None)
    return getattr(act, "__name__", "") == "softmax"


def _forward(model, images, layers, *, resolve=True, with_output=False, batch_size=256):
    """Per-unit activations of ``layers`` (and the output probabilities) on ``images``."""
    ops = _ops()
    shape = _input_shape(model)
    images = np.asarray(images, dtype="float32")
    n = images.shape[0]
    layers = list(dict.fromkeys(layers))
    acts_map = _resolve_layers(model, layers, resolve)
    act_names = [acts_map[name] for name in layers]
    firsts = [_unit_axis_first(model, name) for name in layers]
    ext = _extractor(model, act_names, with_output)
    target = (n,) + tuple(s if s is not None else -1 for s in shape) if None not in shape else None
    x = images.reshape(target) if target is not None else images
    chunks: list[list[np.ndarray]] = [[] for _ in range(len(layers) + int(with_output))]
    for start in range(0, n, batch_size):
        outs = ext(ops.convert_to_tensor(x[start:start + batch_size]), training=False)
        if not isinstance(outs, (list, tuple)):
            outs = [outs]
        for i, (out, first) in enumerate(zip(outs, firsts)):
            chunks[i].append(np.asarray(ops.convert_to_numpy(_reduce_units(out, first))))
        if with_output:
            chunks[-1].append(np.asarray(ops.convert_to_numpy(outs[-1])))
    acts = {name: np.concatenate(chunks[i]) if n else np.zeros((0, 0)) for i, name in enumerate(layers)}
    probs = None
    if with_output:
        raw = np.concatenate(chunks[-1]).astype("float64")
        raw = raw.reshape(len(raw), -1)
        if _softmax_output(model):
            probs = raw
        else:
            probs = softmax(raw)
    return acts, probs


def unit_activations(model, images, layers, *, resolve: bool = True, batch_size: int = 256) -> dict:
    """Post-activation of every unit of ``layers`` on ``images`` (conv maps averaged over positions).

    Parameters
    ----------
    model : keras.Model
    images : ndarray, shape (B, H, W, C) or (B, *model input shape)
    layers : list of str
        Unit layer names; with ``resolve`` they are mapped to the layer holding their post-activation
        (:func:`modtest.frameworks.keras.model.activation_layer_name`).

    Returns
    -------
    dict of str -> ndarray, shape (B, n_units)
    """
    return _forward(model, images, layers, resolve=resolve, batch_size=batch_size)[0]


def output_probabilities(model, images, *, batch_size: int = 256) -> np.ndarray:
    """The model's softmax output on ``images``, shape (B, n_classes); logits are softmaxed."""
    return _forward(model, images, [], with_output=True, batch_size=batch_size)[1]


def unit_post_activations(model, layer_name: str, x, *, batch_size: int = 256, resolve: bool = True) -> np.ndarray:
    """Each unit's post-activation on every example: (N, n_units); a conv map's value is its L1 norm."""
    ops = _ops()
    act = _resolve_layers(model, [layer_name], resolve)[layer_name]
    first = _unit_axis_first(model, layer_name)
    ext = _extractor(model, [act], with_output=False)
    out = []
    for start in range(0, len(x), batch_size):
        a = ext(ops.convert_to_tensor(x[start:start + batch_size]), training=False)
        a = a[0] if isinstance(a, (list, tuple)) else a
        a = np.asarray(ops.convert_to_numpy(a), dtype=np.float64)
        if a.ndim > 2:
            if first:
                a = np.moveaxis(a, 1, -1)
            a = np.abs(a).reshape(a.shape[0], -1, a.shape[-1]).sum(axis=1)
        out.append(a)
    return np.concatenate(out)



# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


_STEP_CACHE: OrderedDict[tuple, tuple] = OrderedDict()
_STEP_CACHE_SIZE = 8


def clear_cache() -> None:
    """Forget the compiled optimisation steps (each holds its model alive)."""
    _STEP_CACHE.clear()


def _compiled_step(model, key, build):
    """The compiled value-and-gradient function for ``key`` on ``model``, built once (LRU of 8).

    An entry holds the model (through its closure), so its ``id`` cannot be reused while cached;
    the identity check guards against it anyway.
    """
    full = (id(model),) + key
    hit = _STEP_CACHE.get(full)
    if hit is not None and hit[0] is model:
        _STEP_CACHE.move_to_end(full)
        return hit[1]
    fn = build()
    _STEP_CACHE[full] = (model, fn)
    while len(_STEP_CACHE) > _STEP_CACHE_SIZE:
        _STEP_CACHE.popitem(last=False)
    return fn


def render(model, objectives, *, steps: int = 256, lr: float = 0.05, param: str = "pixel",
           transforms="auto", seed=0, batch_size: int = 128, value_range=(0.0, 1.0),
           image_shape=None, resolve: bool = True, return_history: bool = False, layers=None):
    """Optimise one image per objective, all in one batch (chunked), and score the results.

    Parameters
    ----------
    model : keras.Model
        Sequential or functional, one input; called with ``training=False``.
    objectives : list of (str, array_like of int)
        ``(layer_name, units)``: maximise the mean post-activation of ``units`` of that layer (for
        conv maps, the mean over each map, then over the units). Layers may differ between objectives.
    steps : int
        Adam steps (the same for every image).
    lr : float
        Adam learning rate (Lucid's 0.05); beta1 0.9, beta2 0.999, eps 1e-8, no regularisation.
    param : {"pixel", "fft"}
        Image parameterization (see the module docstring for why "pixel" is the default).
    transforms : "auto", "standard", "small", None or list of Transform
        Random transforms applied before every forward pass (see :func:`resolve_transforms`).
    seed : int or list of keys
        An int keys objective ``i`` on ``(seed, i)``; a list gives each objective its own key (any
        hashable-by-repr values). An objective's initial image and transform draws depend on its key
        only, so ``render(objs, seed=s)[0][i]`` equals ``render([objs[i]], seed=[(s, i)])[0][0]``.
    batch_size : int
        Images optimised together; more objectives are done in successive chunks.
    value_range : (float, float) or None
        Valid input range; images are kept inside it (pixel) or squashed into it (fft).
    image_shape : (H, W, C) or None
        Shape of the optimised image; default from the model input (see :func:`image_shape_for`).
    resolve : bool
        Map unit layer names to their post-activation layers (follows BN/activation layers).
    return_history : bool
        Also return the summed objective of each chunk at every step (with transforms), shape
        (n_chunks, steps).
    layers : list of str or None
        Layers the compiled objective reads, in order (default: the objectives' layers). Calls that
        pass the same list run the same compiled step, so a chunk of objectives gives bit-identical
        images whether it is rendered alone or within a longer list.

    Returns
    -------
    images : ndarray, shape (B, H, W, C)
        The optimised images, in ``value_range``.
    scores : ndarray, shape (B,)
        Each objective's value on its final image, without transforms.
    """
    from modtest.frameworks.keras.grad import value_and_grad

    ops = _ops()
    objs = check_objectives(objectives)
    value_range = check_render_args(steps, lr, param, batch_size, value_range)
    keys = seed_keys(seed, len(objs))
    shape = image_shape_for(model, image_shape)
    in_shape = _input_shape(model)
    tlist, fill, parameterization = image_setup(shape, transforms, param, value_range)

    layers = list(dict.fromkeys(list(layers or []) + [layer for layer, _ in objs]))
    acts_map = _resolve_layers(model, layers, resolve)
    firsts = [_unit_axis_first(model, name) for name in layers]
    widths = {}
    for name, first in zip(layers, firsts):
        out_shape = _flat(model).output(acts_map[name]).shape
        widths[name] = int(out_shape[1] if first else out_shape[-1])
    check_units(objs, widths)
    model_shape = tuple(in_shape) if None not in in_shape else None

    def build():
        ext = _extractor(model, [acts_map[name] for name in layers], with_output=False)

        def objective(p, *args):
            masks, tparams = args[:len(layers)], args[len(layers):]
            x = parameterization.to_image(p)
            for t, tp in zip(tlist, tparams):
                x = t.apply(x, tp, fill)
            if model_shape is not None:
                x = ops.reshape(x, (-1,) + model_shape)
            outs = ext(x, training=False)
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            total = 0.0
            for out, mask, first in zip(outs, masks, firsts):
                total = total + ops.sum(_reduce_units(out, first) * mask)
            return total

        return value_and_grad(objective, model.variables)

    key = (tuple(layers), tuple(acts_map[name] for name in layers), param, shape, value_range,
           tuple(repr(t) for t in tlist), fill)
    step_fn = _compiled_step(model, key, build)

    def to_image(p):
        img = parameterization.to_image(ops.convert_to_tensor(p))
        return np.asarray(ops.convert_to_numpy(img), dtype="float32")

    images, history = optimise(objs, keys, layers, widths, parameterization, tlist, step_fn, to_image,
                               steps=steps, lr=lr, batch_size=batch_size, shape=shape)

    acts, _ = _forward(model, images, layers, resolve=resolve, batch_size=max(batch_size, 1))
    scores = np.array([acts[layer][i, units].mean() for i, (layer, units) in enumerate(objs)])
    if return_history:
        return images, scores, np.asarray(history, dtype="float64")
    return images, scores


def untrained_control(model, seed: int = 0):
    """A re-initialised copy of ``model`` (same architecture, fresh seeded weights), for A.5.

    Every initializer that takes a seed gets one derived from ``seed``, the layer's position and the
    initializer's name, so the copy is a pure function of (architecture, seed) and leaves Keras'
    global random state alone.
    """
    import keras

    from modtest._validation import check_seed

    seed = check_seed(seed)
    positions = {layer.name: i for i, layer in enumerate(model.layers)}

    def reseed(cfg, layer_name):
        for key, value in list(cfg.items()):
            if key.endswith("_initializer") and isinstance(value, dict):
                inner = value.get("config")
                if isinstance(inner, dict) and "seed" in inner:
                    value = dict(value)
                    value["config"] = dict(inner)
                    value["config"]["seed"] = int(keyed_rng("untrained_control", seed,
                                                            positions.get(layer_name, -1), layer_name,
                                                            key).integers(0, 2**31 - 1))
                    cfg[key] = value
        return cfg

    def clone_layer(layer):
        if isinstance(layer, keras.Model):  # a nested model: its own layers re-initialised too
            return keras.models.clone_model(layer, clone_function=clone_layer)
        cfg = reseed(layer.get_config(), layer.name)
        return layer.__class__.from_config(cfg)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    if not clone.built:
        clone.build(model.inputs[0].shape)
    return clone
