"""Keras lesion engines: predicted labels of a model with sets of units lesioned.

Lesioning a set of units of a layer sets every weight *incoming* to them (the kernel slice
``kernel[..., units]``) and their biases to 0; with ``keep_bias=True`` the biases are kept. MLP units
are the neurons of hidden Dense layers, CNN units the feature maps of conv layers. Layers after the
lesioned one are untouched: a BatchNormalization after a conv still adds its shift, so a lesioned
feature map becomes a constant map.

Two engines compute the predicted labels of lesioned networks:

* :class:`ReferenceEngine` -- the definition: zero the weights in the model, ``model.predict``,
  restore them (always, also on error).
* :class:`FastEngine` -- the same labels, much faster. A unit whose incoming weights are zero has a
  known output, ``activation(bias)`` (or ``activation(0)``), whatever the input. So the network is run
  once up to the lesioned layer's output (the *prefix*, cached per layer), lesions become masks on
  that cached output, and many lesion variants of one layer are stacked along the batch axis and run
  through the rest of the network (the *suffix*, a ``keras.Model`` built over the same layers, also
  reading any earlier tensor the suffix needs, e.g. a residual branch) in a few compiled calls; the
  masks are applied inside those calls. Where a conv layer feeds the next conv L2 only through
  per-channel layers (batch norm, activation, pooling), a lesion changes L2's pre-activation by a sum
  of precomputed per-unit terms, so L2 is not recomputed: each batch of variants is one matrix
  product ``mask @ increments`` (L2's batch norm folded in) and the rest of the network. Rows whose
  top-2 output margin is within ``_SCREEN_TOL`` are recomputed through the plain suffix; equal unit
  sets are run once. Layers whose built-in activation is not elementwise fall back to the
  reference method.
"""
from __future__ import annotations

import contextlib
import os

import numpy as np

from modtest.errors import InvalidInput, UnsupportedModelError
from modtest.frameworks.base import ENGINES, DistinctUnitSets, PrefixCache, choose_engine

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # INFO lines off, warnings shown

__all__ = ["lesioned", "ReferenceEngine", "FastEngine", "make_engine", "ENGINES"]

#: Rows whose top-2 output margin is below this (relative) are recomputed on the exact path.
_SCREEN_TOL = 1e-3
#: Layers that act on each channel separately (the incremental path may pass through them).
_PER_CHANNEL = ("BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "Dropout",
                "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                "GaussianDropout", "AlphaDropout", "Identity", "MaxPooling1D", "MaxPooling2D",
                "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
                "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
                "Cropping3D", "Rescaling", "Normalization", "LayerScale", "Scale", "Elementwise",
                "StochasticDepth", "UpSampling1D", "UpSampling2D", "UpSampling3D")
#: Built-in activations applied elementwise (the fast engine needs that to mask after them).
_ELEMENTWISE = {"linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish",
                "sigmoid", "hard_sigmoid", "hard_silu", "hard_swish", "tanh", "softplus", "softsign",
                "exponential", "mish", "celu", "log_sigmoid", "tanh_shrink", "squareplus",
                "sparse_plus", "soft_shrink", "hard_shrink", "hard_tanh", "threshold"}


# --------------------------------------------------------------------------------------------
# Weight surgery
# --------------------------------------------------------------------------------------------

def _unit_layer(model, name: str):
    """The unit layer called ``name`` (``outer/inner`` inside a nested model) and its kernel access."""
    from modtest.frameworks.keras.model import get_layer, unit_kernel

    layer = get_layer(model, name)
    if getattr(layer, "kernel", None) is None and getattr(layer, "pointwise_kernel", None) is None:
        raise UnsupportedModelError(f"layer {name!r} ({type(layer).__name__}) has no kernel to lesion")
    return layer, unit_kernel(layer)


def _check_units(units, width: int, layer: str) -> np.ndarray:
    u = np.asarray(units, dtype=np.int64).ravel()
    if u.size and (u.min() < 0 or u.max() >= width):
        raise InvalidInput(f"unit indices of layer {layer!r} must lie in [0, {width - 1}], "
                           f"got {int(u.min())}..{int(u.max())}")
    return u


@contextlib.contextmanager
def lesioned(model, layer: str, units, *, keep_bias: bool = False):
    """Context manager: ``units`` of ``layer`` lesioned inside the block, weights restored after.

    Sets ``kernel[..., units]`` (all weights incoming to the units) and ``bias[units]`` to 0, or
    keeps the bias with ``keep_bias=True``. The original values are restored on exit, also when the
    block raises. Which weights are a unit's incoming ones depends on the layer: a depthwise
    kernel's slice ``[..., c, m]`` for output map ``c * multiplier + m``, a separable layer's
    pointwise column, a transposed convolution's ``kernel[..., u, :]``
    (:func:`modtest.frameworks.keras.model.unit_kernel`).

    Parameters
    ----------
    model : keras.Model
    layer : str, name of a unit layer (``outer/inner`` for a layer of a nested model)
    units : array_like of int, shape (m,), output units (neurons or feature maps) to lesion
    keep_bias : bool, keep the lesioned units' biases
    """
    import keras

    lay, (kernel, view) = _unit_layer(model, layer)
    k = keras.ops.convert_to_numpy(kernel)
    u = _check_units(units, int(view(k).shape[-1]), layer)
    saved = []
    try:
        saved.append((kernel, k))
        k2 = np.array(k, copy=True, order="C")
        view(k2)[..., u] = 0  # a view: writes into k2
        kernel.assign(k2)
        if getattr(lay, "bias", None) is not None and not keep_bias:
            b = keras.ops.convert_to_numpy(lay.bias)
            saved.append((lay.bias, b))
            b2 = b.copy()
            b2[u] = 0
            lay.bias.assign(b2)
        yield lay
    finally:
        for var, val in reversed(saved):
            var.assign(val)


@contextlib.contextmanager
def _lesioned_many(model, lesions, keep_bias: bool):
    with contextlib.ExitStack() as stack:
        for layer, units in lesions:
            stack.enter_context(lesioned(model, layer, units, keep_bias=keep_bias))
        yield


# --------------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------------

class ReferenceEngine:
    """The definition of a lesion: zero weights in the model, ``model.predict``, restore.

    Parameters
    ----------
    model : keras.Model
    x : ndarray, shape (N, ...), float32 inputs
    keep_bias : bool, keep the biases of lesioned units
    batch_size : int, batch size of ``model.predict``
    """

    name = "reference"

    def __init__(self, model, x, *, keep_bias: bool = False, batch_size: int = 1024):
        self.model = model
        self.x = x
        self.keep_bias = bool(keep_bias)
        self.batch_size = int(batch_size)
        self._base = None

    def _predict_labels(self) -> np.ndarray:
        out = self.model.predict(self.x, batch_size=self.batch_size, verbose=0)
        return np.asarray(out).argmax(axis=-1)

    def base_labels(self) -> np.ndarray:
        """Predicted labels of the intact model, shape (N,)."""
        if self._base is None:
            self._base = self._predict_labels()
        return self._base

    def labels(self, layer: str, unit_sets, fixed=(), on_progress=None) -> np.ndarray:
        """Predicted labels with each unit set of ``layer`` lesioned in turn.

        Parameters
        ----------
        layer : str
        unit_sets : sequence of V int arrays (each of any size)
        fixed : sequence of (layer, units) lesioned in every variant (double lesions)
        on_progress : callable(n) called with the number of variants just finished

        Returns
        -------
        ndarray, shape (V, N), int
        """
        out = np.empty((len(unit_sets), len(self.x)), dtype=np.int64)
        with _lesioned_many(self.model, fixed, self.keep_bias):
            for i, units in enumerate(unit_sets):
                with lesioned(self.model, layer, units, keep_bias=self.keep_bias):
                    out[i] = self._predict_labels()
                if on_progress is not None:
                    on_progress(1)
        return out


class _Split:
    """The model split at one unit layer's output: prefix (input -> that output and side tensors),
    suffix (that output and side tensors -> model output)."""

    def __init__(self, prefix, suffix, n_inputs: int):
        self.prefix = prefix
        self.suffix = suffix
        self.n_inputs = n_inputs


def _build_split(graph, node, end=None) -> _Split | None:
    """Build prefix and suffix models around ``node``'s output; None when it does not reach the output.

    Walks the graph's nodes in topological order from the output tensor of ``node`` (a unit layer's
    node in ``graph``), calling the same layer objects on new symbolic inputs; a tensor the suffix
    reads that is not downstream of it (a skip connection) becomes an extra suffix input.
    """
    import keras
    from keras import tree

    layer = node.operation
    start = node.outputs[0]
    new_start = keras.Input(shape=tuple(start.shape[1:]), dtype=start.dtype)
    td = {id(start): new_start}
    side_orig, side_new = [], []
    for depth in sorted(graph._nodes_by_depth.keys(), reverse=True):
        for node in graph._nodes_by_depth[depth]:
            if not node.operation or node.is_input or node.operation is layer:
                continue
            ins = node.input_tensors
            if not any(id(t) in td for t in ins):
                continue
            for t in ins:
                if id(t) not in td:
                    inp = keras.Input(shape=tuple(t.shape[1:]), dtype=t.dtype)
                    td[id(t)] = inp
                    side_orig.append(t)
                    side_new.append(inp)
            args, kwargs = node.arguments.fill_in(td)
            outs = node.operation(*args, **kwargs)
            for t, o in zip(node.outputs, tree.flatten(outs)):
                td[id(t)] = o
    out = graph.outputs[0] if end is None else end
    if id(out) not in td:
        return None
    if end is not None:  # a plain chain start -> end (used by the incremental path)
        return _Split(None, keras.Model(new_start, td[id(out)]), 1)
    suffix = keras.Model([new_start] + side_new, td[id(out)])
    prefix = keras.Model(graph.inputs, [start] + side_orig)
    return _Split(prefix, suffix, 1 + len(side_orig))


class FastEngine(DistinctUnitSets, PrefixCache, ReferenceEngine):
    """Same labels as :class:`ReferenceEngine`, by masking cached layer outputs and batching variants.

    Works on a private clone of the model (the caller's model is never modified). The prefix output
    of each layer is computed once and cached; all variants of one layer go through the compiled
    suffix in chunks of at most ``max_elements`` stacked input values.

    Parameters
    ----------
    model : keras.Model
    x : ndarray, shape (N, ...)
    keep_bias : bool
    batch_size : int, batch size of the prefix; suffix chunks hold about ``16 * batch_size`` rows
    max_elements : int, bound on the number of float values in one stacked suffix input
    cache_bytes : int, memory budget (bytes) of the cached per-layer prefix activations (and
        incremental-path increments): an LRU over layers; a layer whose arrays for all examples do
        not fit is streamed in blocks of examples sized to the budget and not cached. The budget
        cannot go below one example's arrays. ``peak_cached_bytes`` records the most held at once.
    """

    name = "fast"

    def __init__(self, model, x, *, keep_bias: bool = False, batch_size: int = 1024,
                 max_elements: int = 1 << 24, cache_bytes: int = 1 << 30):
        import keras

        super().__init__(model, x, keep_bias=keep_bias, batch_size=batch_size)
        self.max_elements = int(max_elements)
        self._ref = ReferenceEngine(model, x, keep_bias=keep_bias, batch_size=batch_size)
        from modtest.frameworks.keras.model import flat_graph

        try:
            clone = keras.models.clone_model(model)
            clone.set_weights(model.get_weights())
            flat = flat_graph(clone)  # nested models spliced in: every unit layer can be split at
        except Exception:  # noqa: BLE001 - any model Keras cannot clone uses the reference path
            clone, flat = None, None
        self.clone = clone
        self._flat = flat
        self._graph = None if flat is None else flat.model
        self._splits: dict[str, _Split | None | bool] = {}
        # ("layer", name) -> (prefix arrays, increments); peak_cached_bytes counts per-block arrays too
        self._init_cache(cache_bytes)
        #: instrumentation: most float values in one stacked suffix input
        self.peak_stacked_elements = 0
        self._inc: dict = {}
        self._inc_models: dict = {}
        self._masked_models: dict = {}
        self._lg = None
        self.incremental = True

    def base_labels(self) -> np.ndarray:
        """Labels of the intact model: ``model.predict``'s batches, without its data pipeline."""
        if self._base is None:
            self._base = self._batched(self.model, self.x, pad=False)[0].argmax(axis=-1)
        return self._base

    def _split(self, layer: str):
        """The split at ``layer``, None if the layer cannot reach the output, False if unsplittable."""
        if layer not in self._splits:
            split = False
            if self._graph is not None and layer in self._flat.nodes:
                lay = self._flat.nodes[layer].operation
                act = getattr(lay, "activation", None)
                act_name = getattr(act, "__name__", None)
                if act is None or act_name in _ELEMENTWISE:
                    try:
                        split = _build_split(self._graph, self._flat.nodes[layer])
                    except Exception:  # noqa: BLE001 - unusual topology: reference fallback
                        split = False
            self._splits[layer] = split
        return self._splits[layer]

    def _incremental(self, layer: str):
        """Set-up of the incremental path for ``layer``, or None where it does not apply.

        It applies when ``layer``'s output reaches the next convolution ``L2`` only through
        per-channel layers (batch norm, activations, pooling, dropout, padding) and ``L2``'s own
        suffix reads nothing else. Then a lesion of units S changes L2's pre-activation by
        ``sum over u in S of conv(delta_u, kernel[..., u, :])``, with ``delta_u`` the change of input
        channel u -- one precomputed term per unit, so L2's convolution is not recomputed per
        variant.
        """
        if layer in self._inc:
            return self._inc[layer]
        self._inc[layer] = None
        from modtest.frameworks.keras.model import CONV_TYPES, layer_graph, unit_width

        split = self._split(layer)
        if not split or split.n_inputs != 1:
            return None
        if self._lg is None:
            self._lg = layer_graph(self.clone)
        lg, name = self._lg, layer
        while True:
            cons = lg.consumers(name)
            if len(cons) != 1 or len(lg.layers[cons[0]].inputs) != 1:
                return None
            kind = lg.layers[cons[0]].kind
            if kind in CONV_TYPES:
                break
            if kind not in _PER_CHANNEL:
                return None
            name = cons[0]
        lay, lay2 = lg.layers[layer].layer, lg.layers[cons[0]].layer
        if getattr(lay2, "groups", 1) != 1 or getattr(lay2, "padding", "valid") == "causal" \
                or getattr(lay2, "data_format", "channels_last") != "channels_last" \
                or getattr(lay, "data_format", "channels_last") != "channels_last" \
                or int(lay2.kernel.shape[-2]) != unit_width(lay):
            return None
        act2 = getattr(lay2, "activation", None)
        split2 = self._split(cons[0])
        if not split2 or split2.n_inputs != 1 or (act2 is not None and getattr(act2, "__name__", None)
                                                   not in _ELEMENTWISE):
            return None
        try:
            chain = _build_split(self._graph, self._flat.nodes[layer], end=self._flat.input(cons[0])).suffix
        except Exception:  # noqa: BLE001
            return None
        # a batch norm right after a linear L2 is affine per channel: folded into the increments,
        # the compiled call then starts after it (one pass less over the biggest tensor)
        bn, after = None, split2
        cons2 = lg.consumers(cons[0])
        if (act2 is None or getattr(act2, "__name__", None) == "linear") and len(cons2) == 1 \
                and lg.layers[cons2[0]].kind == "BatchNormalization":
            bn = lg.layers[cons2[0]].layer
            split_bn = self._split(cons2[0]) if bn.axis in (-1, len(bn.input.shape) - 1) else False
            if split_bn and split_bn.n_inputs == 1:
                after = split_bn
            else:
                bn = None
        self._inc[layer] = (chain, lay2, after, bn)
        return self._inc[layer]

    def _increments(self, layer: str, a: np.ndarray, const: np.ndarray, inc):
        """Backend tensor (C + 1, e * P) over a block of e examples: row u is the change that lesioning
        input unit u adds to L2's pre-activation, the last row the intact pre-activation (bias
        included); both through L2's batch norm where it is folded in."""
        import keras

        chain, lay2, _, bn = inc
        ops = keras.ops
        cmap = np.broadcast_to(const, (1,) + a.shape[1:]).astype(a.dtype)
        # the chain holds only per-channel layers: called eagerly, it costs less than compiling it
        h_base = chain(ops.convert_to_tensor(a), training=False)
        dh = chain(ops.convert_to_tensor(cmap), training=False) - h_base  # every unit lesioned
        kernel = ops.convert_to_tensor(lay2.kernel)
        bias = lay2.bias if getattr(lay2, "bias", None) is not None else None
        if bn is not None:  # bn(conv(h, k) + b) = conv(h, k * scale) + (b * scale + shift)
            scale, shift = _bn_affine(bn)
            kernel = kernel * scale
            bias = shift if bias is None else bias * scale + shift
        z = lay2.convolution_op(h_base, kernel)
        if bias is not None:
            z = z + bias
        width = int(dh.shape[-1])
        dz = _unit_increments(lay2, dh, kernel)
        # one matrix: the intact pre-activation is the last row, taken with weight 1 by every variant
        return ops.concatenate([ops.reshape(dz, (width, -1)), ops.reshape(z, (1, -1))], axis=0)

    def _increment_model(self, layer: str, inc):
        """Compiled ``(mask (V, C + 1), increments (C + 1, e * P)) -> probabilities (V * e, classes)``:
        L2's pre-activation ``mask @ increments`` (the mask's last column is 1: the intact term),
        L2's activation (or its folded batch norm), then the rest of the network, in one call."""
        model = self._inc_models.get(layer)
        if model is None:
            import keras

            _, lay2, after, bn = inc
            width = int(lay2.kernel.shape[-2])
            mask = keras.Input((width + 1,), dtype="float32")
            dz = keras.Input((None,), dtype="float32")
            z = _plus_increments(tuple(int(d) for d in lay2.output.shape[1:]))([mask, dz])
            act2 = getattr(lay2, "activation", None)
            if act2 is not None and bn is None:
                z = keras.layers.Activation(act2)(z)
            model = keras.Model([mask, dz], after.suffix(z))
            self._inc_models[layer] = model
        return model

    def _labels_incremental(self, layer, unit_sets, n, inc, data, on_progress):
        """Labels (V, n) of every variant on the incremental path, and the (variant, example) pairs
        whose top-2 output margin is too small to trust (to be recomputed exactly)."""
        dz = data
        width, per_variant = int(dz.shape[0]) - 1, int(dz.shape[1])
        model = self._increment_model(layer, inc)
        chunk = max(1, min(max(1, (32 * self.batch_size) // max(n, 1)), self.max_elements // max(per_variant, 1)))
        pad_to = chunk if len(unit_sets) > chunk else None  # one input shape: one compiled call
        out = np.empty((len(unit_sets), n), dtype=np.int64)
        close_v, close_e = [], []
        for lo in range(0, len(unit_sets), chunk):
            sets = unit_sets[lo:lo + chunk]
            v = len(sets)
            vp = max(v, pad_to or 0)
            mask = _unit_mask(sets, width + 1, vp)  # padding rows: intact variants, dropped
            mask[:, width] = 1.0  # the intact pre-activation, in every variant
            self.peak_stacked_elements = max(self.peak_stacked_elements, vp * per_variant)
            probs = np.asarray(model.predict_on_batch([mask, dz]))[:v * n]
            lab, close = _labels_and_close(probs)
            close_v.append(lo + close // n)
            close_e.append(close % n)
            out[lo:lo + v] = lab.reshape(v, n)
            if on_progress is not None:
                on_progress(v)
        return out, np.concatenate(close_v), np.concatenate(close_e)

    def _constant(self, layer: str) -> np.ndarray:
        """Output of a lesioned unit: activation(bias) or activation(0), shape (C,)."""
        import keras

        from modtest.frameworks.keras.model import get_layer, unit_width

        lay = get_layer(self.clone, layer)
        width = unit_width(lay)
        if self.keep_bias and getattr(lay, "bias", None) is not None:
            b = keras.ops.convert_to_numpy(lay.bias).astype(np.float32)
        else:
            b = np.zeros(width, np.float32)
        act = getattr(lay, "activation", None)
        if act is None:
            return b
        return np.asarray(keras.ops.convert_to_numpy(act(keras.ops.convert_to_tensor(b[None]))))[0]

    def _prefix_outputs(self, layer: str, split: _Split, xs=None) -> list[np.ndarray]:
        """Prefix outputs of ``xs`` (default all inputs); one batch is run eagerly (cheaper than
        compiling the prefix for a single call)."""
        xs = self.x if xs is None else xs
        if len(xs) <= self.batch_size:
            import keras

            o = split.prefix(keras.ops.convert_to_tensor(xs), training=False)
            return [keras.ops.convert_to_numpy(t) for t in (o if isinstance(o, (list, tuple)) else [o])]
        return self._batched(split.prefix, xs)

    def _batched(self, model, xs, pad: bool = True) -> list[np.ndarray]:
        """Outputs of ``model`` on ``xs`` in batches of ``batch_size``, written batch by batch into
        arrays allocated once. With ``pad`` the last batch is padded to the batch size (one input
        shape, one compiled function); without, batches are those of ``model.predict``."""
        n = len(xs)
        outs = None
        for lo in range(0, n, self.batch_size):
            xb = xs[lo:lo + self.batch_size]
            e = len(xb)
            if pad and n > self.batch_size and e < self.batch_size:
                xb = _pad_rows(xb, self.batch_size)
            o = model.predict_on_batch(xb)
            o = [np.asarray(t)[:e] for t in (o if isinstance(o, (list, tuple)) else [o])]
            if outs is None:
                outs = [np.empty((n,) + t.shape[1:], dtype=t.dtype) for t in o]
            for dst, t in zip(outs, o):
                dst[lo:lo + len(t)] = t
        return outs

    def _per_example_bytes(self, split: _Split, inc) -> int:
        """Bytes per example of the prefix outputs (and of the increments on the incremental path)."""
        total = 0
        for t in split.prefix.outputs:
            total += int(np.prod(t.shape[1:])) * np.dtype(str(getattr(t, "dtype", "float32"))).itemsize
        if inc is not None:  # dz (width, n * prod(out2)) and z_base (n, *out2), float32
            width = int(split.prefix.outputs[0].shape[-1])
            total += (width + 1) * int(np.prod(inc[1].output.shape[1:])) * 4
        return total

    def _labels_distinct(self, layer: str, unit_sets, fixed=(), on_progress=None) -> np.ndarray:
        split = self._split(layer)
        if split is False:
            return self._ref.labels(layer, unit_sets, fixed, on_progress)
        n = len(self.x)
        if split is None:  # the layer does not reach the output: lesions change nothing there
            with _lesioned_many(self.model, fixed, self.keep_bias):
                lab = self._ref._predict_labels()
            if on_progress is not None:
                on_progress(len(unit_sets))
            return np.broadcast_to(lab, (len(unit_sets), n)).copy()
        if any(f[0] == layer for f in fixed):
            return self._ref.labels(layer, unit_sets, fixed, on_progress)
        out = np.empty((len(unit_sets), n), dtype=np.int64)
        with _lesioned_many(self.clone, fixed, self.keep_bias):
            const = self._constant(layer)
            width = int(split.prefix.outputs[0].shape[-1])
            inc = self._incremental(layer) if self.incremental else None
            if inc is not None and width * int(np.prod(inc[1].output.shape[1:])) * n > 4 * self.max_elements:
                inc = None
            per_ex = self._per_example_bytes(split, inc)
            if not fixed and per_ex * n <= self.cache_bytes:  # the whole layer fits: cache it
                key = ("layer", layer)
                data = self._lru_get(key)
                if data is None:
                    self._make_room(per_ex * n)
                    cached = self._prefix_outputs(layer, split)
                    incd = self._increments(layer, cached[0], const, inc) if inc is not None else None
                    data = (cached, incd)
                    self._lru_put(key, data, sum(a.nbytes for a in cached) + _nbytes(incd))
                cached, incd = data
                out[:] = self._labels_block(layer, split, unit_sets, cached, const, inc, incd, on_progress)
                return out
            # too big for the budget (or lesioned prefix): stream blocks of examples, nothing cached
            block = int(min(n, max(1, self.cache_bytes // max(per_ex, 1))))
            self._make_room(block * per_ex)
            for lo in range(0, n, block):
                cached = self._prefix_outputs(layer, split, self.x[lo:lo + block])
                incd = self._increments(layer, cached[0], const, inc) if inc is not None else None
                self._note(sum(a.nbytes for a in cached) + _nbytes(incd))
                last = lo + block >= n
                out[:, lo:lo + block] = self._labels_block(layer, split, unit_sets, cached, const, inc, incd,
                                                           on_progress if last else None)
                del cached, incd
        return out

    def _labels_block(self, layer, split, unit_sets, cached, const, inc, incd, on_progress) -> np.ndarray:
        """Labels (V, e) of every variant over one block of e examples with prefix outputs ``cached``."""
        a = cached[0]
        width = a.shape[-1]
        if inc is not None:
            lab, vi, ei = self._labels_incremental(layer, unit_sets, len(a), inc, incd, on_progress)
            if vi.size:  # rows near a tie: redo them exactly, through the plain suffix
                lab[vi, ei] = self._exact_labels(split, a, const, unit_sets, vi, ei)
            return lab
        n = len(a)
        per_example = sum(int(np.prod(c.shape[1:])) for c in cached)
        rows_cap = max(1, min(16 * self.batch_size, self.max_elements // max(per_example, 1)))
        if n <= rows_cap:  # whole block per variant, several variants per call
            block, chunk = n, max(1, rows_cap // max(n, 1))
        else:  # big data: one variant per call, over sub-blocks of examples
            block, chunk = rows_cap, 1
        import keras

        out = np.empty((len(unit_sets), n), dtype=np.int64)
        model = self._masked_model(layer, split)
        const_t = keras.ops.convert_to_tensor(np.asarray(const, dtype=a.dtype).reshape(1, width))
        # every suffix call of this layer gets the same input shape (padding rows/variants are
        # dropped), so the suffix is traced/compiled once per layer, not once per leftover size
        pad_v = chunk if len(unit_sets) > chunk else None
        pad_e = block if n > block else None
        blocks = {}  # example blocks as backend tensors, converted once when there is a single block

        def example_block(elo):
            if elo in blocks:
                return blocks[elo]
            rows = max(min(block, n - elo), pad_e or 0)
            t = [keras.ops.convert_to_tensor(_pad_rows(c[elo:elo + block], rows)) for c in cached]
            if block >= n:
                blocks[elo] = t
            return t

        for lo in range(0, len(unit_sets), chunk):
            sets = unit_sets[lo:lo + chunk]
            v = len(sets)
            vp = max(v, pad_v or 0)
            mask = _unit_mask(sets, width, vp)  # padding rows: intact variants, dropped
            for elo in range(0, n, block):
                e = min(block, n - elo)
                ab = example_block(elo)
                ep = int(ab[0].shape[0])
                self.peak_stacked_elements = max(self.peak_stacked_elements, vp * ep * per_example)
                probs = model.predict_on_batch([mask, const_t] + ab)
                lab = np.asarray(probs).argmax(axis=-1).reshape(vp, ep)
                out[lo:lo + v, elo:elo + e] = lab[:v, :e]
            if on_progress is not None:
                on_progress(v)
        return out

    def _masked_model(self, layer: str, split: _Split):
        """Compiled ``(mask (V, C), const (1, C), a (e, ...), *sides) -> probabilities (V * e, classes)``:
        variant i's suffix input is ``a`` with the masked units replaced by their lesioned constant;
        side tensors (skip branches) are repeated for every variant."""
        model = self._masked_models.get(layer)
        if model is None:
            import keras

            outs = split.prefix.outputs
            width = int(outs[0].shape[-1])
            mask = keras.Input((width,), dtype="float32")
            const = keras.Input((width,), dtype=outs[0].dtype)
            ins = [keras.Input(tuple(t.shape[1:]), dtype=t.dtype) for t in outs]
            stacked = _masked_stack([tuple(int(d) for d in t.shape[1:]) for t in outs])([mask, const] + ins)
            model = keras.Model([mask, const] + ins, split.suffix(stacked if len(ins) > 1 else stacked[0]))
            self._masked_models[layer] = model
        return model

    def _exact_labels(self, split, a, const, unit_sets, vi, ei) -> np.ndarray:
        """Labels of the rows (variant ``vi[r]``, example ``ei[r]``) through the plain suffix, called
        eagerly (they are few: tracing a compiled call would cost more)."""
        import keras

        width = a.shape[-1]
        size = max(1, self.max_elements // int(np.prod(a.shape[1:])))
        out = np.empty(len(vi), dtype=np.int64)
        for lo in range(0, len(vi), size):
            v_, e_ = vi[lo:lo + size], ei[lo:lo + size]
            m = _unit_mask([unit_sets[v] for v in v_], width, len(v_)) > 0
            rows_in = np.where(m.reshape((-1,) + (1,) * (a.ndim - 2) + (width,)), const, a[e_])
            probs = split.suffix(keras.ops.convert_to_tensor(rows_in.astype(a.dtype, copy=False)), training=False)
            out[lo:lo + len(v_)] = keras.ops.convert_to_numpy(probs).argmax(axis=-1)
        return out


def _unit_mask(unit_sets, width: int, rows: int) -> np.ndarray:
    """float32 (rows, width): row i is 1 at the units of ``unit_sets[i]``; rows past them stay 0."""
    mask = np.zeros((rows, width), dtype=np.float32)
    for i, units in enumerate(unit_sets):
        mask[i, np.asarray(units, dtype=np.int64)] = 1.0
    return mask


def _labels_and_close(probs: np.ndarray):
    """Argmax labels of ``probs`` (R, classes) and the rows whose top-2 margin is within the screening
    tolerance (their label could differ from the reference engine's by rounding)."""
    lab = probs.argmax(axis=-1)
    if probs.shape[-1] < 2:
        return lab, np.empty(0, dtype=np.int64)
    top2 = np.partition(probs, -2, axis=-1)[:, -2:]
    close = (top2[:, 1] - top2[:, 0]) <= _SCREEN_TOL * np.maximum(1.0, np.abs(top2[:, 1]))
    return lab, np.flatnonzero(close)


def _nbytes(t) -> int:
    """Bytes held by a float32 array or backend tensor (0 for None)."""
    return 0 if t is None else int(np.prod(t.shape)) * 4


def _bn_affine(bn):
    """(scale, shift) of an inference-mode BatchNormalization: ``bn(x) = x * scale + shift``."""
    import keras

    ops = keras.ops
    var = ops.convert_to_tensor(bn.moving_variance)
    scale = 1.0 / ops.sqrt(var + bn.epsilon)
    if bn.gamma is not None:
        scale = scale * bn.gamma
    shift = -ops.convert_to_tensor(bn.moving_mean) * scale
    if bn.beta is not None:
        shift = shift + bn.beta
    return scale, shift


def _unit_increments(lay2, dh, kernel):
    """Per-unit changes of L2's pre-activation, shape (C, e, *out2): ``conv(dh[..., u], kernel[..., u, :])``
    for every input channel u, as one depthwise convolution where the backend has it."""
    import keras

    ops = keras.ops
    width, c2 = int(kernel.shape[-2]), int(kernel.shape[-1])
    if len(kernel.shape) in (3, 4):  # Conv1D / Conv2D: depthwise conv, output channel u * c2 + j
        d = ops.depthwise_conv(dh, kernel, strides=lay2.strides, padding=lay2.padding,
                               data_format="channels_last", dilation_rate=lay2.dilation_rate)
        sp = tuple(int(s) for s in d.shape[1:-1])
        d = ops.reshape(d, (int(d.shape[0]),) + sp + (width, c2))
        nd = len(sp)
        return ops.transpose(d, (nd + 1, 0) + tuple(range(1, nd + 1)) + (nd + 2,))
    return ops.stack([lay2.convolution_op(dh[..., u:u + 1], kernel[..., u:u + 1, :]) for u in range(width)])


def _plus_increments(shape):
    """Layer ``[mask (V, K), increments (K, e * P)] -> (V * e, *shape)``: ``mask @ increments``."""
    import keras

    class PlusIncrements(keras.layers.Layer):
        def call(self, inputs):
            mask, dz = inputs
            return keras.ops.reshape(keras.ops.matmul(mask, dz), (-1,) + shape)

        def compute_output_shape(self, input_shapes):
            return (None,) + shape

    return PlusIncrements()


def _masked_stack(shapes):
    """Layer ``[mask (V, C), const (1, C), a (e, ...), *sides] -> [stacked a (V * e, ...), *stacked sides]``:
    ``where(mask, const, a)`` per variant, variant-major; sides repeated per variant."""
    import keras

    ops = keras.ops

    class MaskedStack(keras.layers.Layer):
        def call(self, inputs):
            mask, const, a, *sides = inputs
            v = ops.shape(mask)[0]
            lead = (1,) * (len(shapes[0]) - 1)
            m = ops.reshape(mask, (-1, 1) + lead + (shapes[0][-1],)) > 0
            c = ops.reshape(const, (1, 1) + lead + (shapes[0][-1],))
            out = [ops.reshape(ops.where(m, c, ops.expand_dims(a, 0)), (-1,) + shapes[0])]
            for sd, shape in zip(sides, shapes[1:]):
                out.append(ops.tile(sd, (v,) + (1,) * len(shape)))
            return out

        def compute_output_shape(self, input_shapes):
            return [(None,) + shape for shape in shapes]

    return MaskedStack()


def _pad_rows(a: np.ndarray, rows: int) -> np.ndarray:
    """``a`` with its last row repeated up to ``rows`` rows (unchanged when it has that many)."""
    if len(a) >= rows:
        return a
    return np.concatenate([a, np.repeat(a[-1:], rows - len(a), axis=0)])


def make_engine(engine: str, model, x, *, keep_bias: bool = False, batch_size: int = 1024,
                max_elements: int | None = None, cache_bytes: int | None = None):
    """The engine called ``engine`` ("fast" or "reference") over ``model`` and inputs ``x``
    (:func:`modtest.frameworks.base.choose_engine`)."""
    return choose_engine(engine, FastEngine, ReferenceEngine, model, x, keep_bias=keep_bias, batch_size=batch_size,
                         max_elements=max_elements, cache_bytes=cache_bytes)
