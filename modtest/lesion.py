"""Lesion tests (paper section 3.2, appendices A.9 and A.10): importance and output coherence.

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
import math
import numbers
import os
import time
from collections import OrderedDict, defaultdict

import numpy as np

from modtest.errors import InvalidInput, NoTestableSubclusters, UnsupportedModelError
from modtest.results import subclusters_of, within_size_limits

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

__all__ = ["lesioned", "ReferenceEngine", "FastEngine", "make_engine", "ENGINES", "METRICS",
           "lesion_study", "double_lesion_study", "scores"]

ENGINES = ("fast", "reference")
METRICS = ("accuracy", "balanced_accuracy")
_TIES = ("inclusive", "strict")
_ZERO_MEAN_TOL = 1e-12
#: Rows whose top-2 output margin is below this (relative) are recomputed on the exact path.
_SCREEN_TOL = 1e-3
#: Layers that act on each channel separately (the incremental path may pass through them).
_PER_CHANNEL = ("BatchNormalization", "Activation", "ReLU", "LeakyReLU", "ELU", "Dropout",
                "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                "GaussianDropout", "AlphaDropout", "Identity", "MaxPooling1D", "MaxPooling2D",
                "MaxPooling3D", "AveragePooling1D", "AveragePooling2D", "AveragePooling3D",
                "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
                "Cropping3D")
#: Built-in activations applied elementwise (the fast engine needs that to mask after them).
_ELEMENTWISE = {"linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish",
                "sigmoid", "hard_sigmoid", "hard_silu", "hard_swish", "tanh", "softplus", "softsign",
                "exponential", "mish", "celu", "log_sigmoid", "tanh_shrink", "squareplus",
                "sparse_plus", "soft_shrink", "hard_shrink", "hard_tanh", "threshold"}


# --------------------------------------------------------------------------------------------
# Weight surgery
# --------------------------------------------------------------------------------------------

def _unit_layer(model, name: str):
    try:
        layer = model.get_layer(name)
    except ValueError:
        raise InvalidInput(f"model has no layer named {name!r}") from None
    if getattr(layer, "kernel", None) is None:
        raise UnsupportedModelError(f"layer {name!r} ({type(layer).__name__}) has no kernel to lesion")
    return layer


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
    block raises.

    Parameters
    ----------
    model : keras.Model
    layer : str, name of a Dense or Conv layer
    units : array_like of int, shape (m,), output units (neurons or feature maps) to lesion
    keep_bias : bool, keep the lesioned units' biases
    """
    import keras

    lay = _unit_layer(model, layer)
    width = int(lay.kernel.shape[-1])
    u = _check_units(units, width, layer)
    saved = []
    try:
        k = keras.ops.convert_to_numpy(lay.kernel)
        saved.append((lay.kernel, k))
        k2 = k.copy()
        k2[..., u] = 0
        lay.kernel.assign(k2)
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


def _graph_function(model):
    """The functional graph behind ``model`` (a Sequential keeps one in ``_functional``)."""
    import keras

    if isinstance(model, keras.Sequential):
        return getattr(model, "_functional", None)
    return model if hasattr(model, "_nodes_by_depth") else None


def _build_split(graph, layer, end=None) -> _Split | None:
    """Build prefix and suffix models around ``layer``'s output; None when it does not reach the output.

    Walks the graph's nodes in topological order from ``layer``'s output tensor, calling the same
    layer objects on new symbolic inputs; a tensor the suffix reads that is not downstream of
    ``layer`` (a skip connection) becomes an extra suffix input.
    """
    import keras
    from keras import tree

    start = layer.output
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


class FastEngine(ReferenceEngine):
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
        try:
            clone = keras.models.clone_model(model)
            clone.set_weights(model.get_weights())
            graph = _graph_function(clone)
        except Exception:  # noqa: BLE001 - any model Keras cannot clone uses the reference path
            clone, graph = None, None
        self.clone = clone
        self._graph = graph
        self._splits: dict[str, _Split | None | bool] = {}
        self.cache_bytes = int(cache_bytes)
        self._lru: OrderedDict = OrderedDict()  # ("layer", name) -> ((prefix arrays, increments), bytes)
        self._lru_bytes = 0
        #: instrumentation: most bytes held at once in cached plus per-block prefix/increment arrays,
        #: and most float values in one stacked suffix input
        self.peak_cached_bytes = 0
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
            if self._graph is not None:
                lay = self.clone.get_layer(layer)
                act = getattr(lay, "activation", None)
                act_name = getattr(act, "__name__", None)
                if act is None or act_name in _ELEMENTWISE:
                    try:
                        split = _build_split(self._graph, lay)
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
        from modtest.model import CONV_TYPES, layer_graph

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
        lay, lay2 = self.clone.get_layer(layer), self.clone.get_layer(cons[0])
        if getattr(lay2, "groups", 1) != 1 or getattr(lay2, "padding", "valid") == "causal" \
                or getattr(lay2, "data_format", "channels_last") != "channels_last" \
                or getattr(lay, "data_format", "channels_last") != "channels_last" \
                or int(lay2.kernel.shape[-2]) != int(lay.kernel.shape[-1]):
            return None
        act2 = getattr(lay2, "activation", None)
        split2 = self._split(lay2.name)
        if not split2 or split2.n_inputs != 1 or (act2 is not None and getattr(act2, "__name__", None)
                                                   not in _ELEMENTWISE):
            return None
        try:
            chain = _build_split(self._graph, lay, end=lay2.input).suffix
        except Exception:  # noqa: BLE001
            return None
        # a batch norm right after a linear L2 is affine per channel: folded into the increments,
        # the compiled call then starts after it (one pass less over the biggest tensor)
        bn, after = None, split2
        cons2 = lg.consumers(lay2.name)
        if (act2 is None or getattr(act2, "__name__", None) == "linear") and len(cons2) == 1 \
                and lg.layers[cons2[0]].kind == "BatchNormalization":
            bn = self.clone.get_layer(cons2[0])
            split_bn = self._split(bn.name) if bn.axis in (-1, len(bn.input.shape) - 1) else False
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

        lay = self.clone.get_layer(layer)
        width = int(lay.kernel.shape[-1])
        if self.keep_bias and getattr(lay, "bias", None) is not None:
            b = keras.ops.convert_to_numpy(lay.bias).astype(np.float32)
        else:
            b = np.zeros(width, np.float32)
        act = getattr(lay, "activation", None)
        if act is None:
            return b
        return np.asarray(keras.ops.convert_to_numpy(act(keras.ops.convert_to_tensor(b[None]))))[0]

    # -- memory: an LRU of per-layer arrays under a byte budget, and instrumentation -------------
    def _lru_get(self, key):
        hit = self._lru.get(key)
        if hit is None:
            return None
        self._lru.move_to_end(key)
        return hit[0]

    def _make_room(self, nbytes: int) -> None:
        """Evict least recently used entries until ``nbytes`` more fit in ``cache_bytes``."""
        while self._lru and self._lru_bytes + nbytes > self.cache_bytes:
            _, (_, b) = self._lru.popitem(last=False)
            self._lru_bytes -= b

    def _lru_put(self, key, value, nbytes: int) -> None:
        self._make_room(nbytes)
        self._lru[key] = (value, nbytes)
        self._lru_bytes += nbytes
        self._note()

    def _note(self, working: int = 0) -> None:
        """Record the bytes now held in cached and per-block arrays (``peak_cached_bytes``)."""
        self.peak_cached_bytes = max(self.peak_cached_bytes, self._lru_bytes + working)

    def clear_cache(self) -> None:
        """Drop every cached prefix activation and increment."""
        self._lru.clear()
        self._lru_bytes = 0

    @property
    def cached_bytes(self) -> int:
        return self._lru_bytes

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

    def labels(self, layer: str, unit_sets, fixed=(), on_progress=None) -> np.ndarray:
        # equal unit sets (frequent among the random controls of small sub-clusters) are run once
        first: dict = {}
        inverse = np.array([first.setdefault(tuple(np.unique(np.asarray(u, dtype=np.int64)).tolist()), len(first))
                            for u in unit_sets], dtype=np.int64)
        if len(first) == len(unit_sets):
            return self._labels_distinct(layer, unit_sets, fixed, on_progress)
        lab = self._labels_distinct(layer, [np.asarray(k, dtype=np.int64) for k in first], fixed, on_progress)
        if on_progress is not None:
            on_progress(len(unit_sets) - len(first))
        return lab[inverse]

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
    """The engine called ``engine`` ("fast" or "reference") over ``model`` and inputs ``x`` (N, ...).

    ``max_elements`` and ``cache_bytes`` (memory bounds of the fast engine, see :class:`FastEngine`)
    default to the engine's defaults; the reference engine needs neither.
    """
    if engine == "fast":
        kw = {}
        if max_elements is not None:
            kw["max_elements"] = max_elements
        if cache_bytes is not None:
            kw["cache_bytes"] = cache_bytes
        return FastEngine(model, x, keep_bias=keep_bias, batch_size=batch_size, **kw)
    if engine == "reference":
        return ReferenceEngine(model, x, keep_bias=keep_bias, batch_size=batch_size)
    raise InvalidInput(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")


# --------------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------------

def scores(labels, y, n_classes: int, metric: str = "accuracy"):
    """Overall score and per-class recall of predicted labels.

    Parameters
    ----------
    labels : int array, shape (V, N) or (N,)
    y : int array, shape (N,)
    n_classes : int
    metric : "accuracy" or "balanced_accuracy" (mean recall over the classes present in ``y``)

    Returns
    -------
    (score, class_recall) : arrays of shape (V,) and (V, n_classes); NaN recall for absent classes
    """
    lab = np.atleast_2d(np.asarray(labels))
    correct = (lab == y[None, :]).astype(np.float64)
    onehot = np.zeros((len(y), n_classes))
    onehot[np.arange(len(y)), y] = 1.0
    counts = onehot.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        recall = (correct @ onehot) / counts
    recall[:, counts == 0] = np.nan
    if metric == "balanced_accuracy":
        score = np.nanmean(recall, axis=1)
    else:
        score = correct.mean(axis=1)
    return score, recall


def _coherence(d: np.ndarray) -> np.ndarray:
    """max(d') - min(d') with d' = d / mean(d) over classes (NaN classes ignored), shape (...,).

    NaN where ``|mean(d)| <= 1e-12`` (no net damage: the statistic is undefined).
    """
    with np.errstate(invalid="ignore", divide="ignore"), _quiet_nan_warnings():
        m = np.nanmean(d, axis=-1)
        dn = d / m[..., None]
        coh = np.nanmax(dn, axis=-1) - np.nanmin(dn, axis=-1)
    return np.where(np.abs(m) <= _ZERO_MEAN_TOL, np.nan, coh)


@contextlib.contextmanager
def _quiet_nan_warnings():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# --------------------------------------------------------------------------------------------
# Validation helpers
# --------------------------------------------------------------------------------------------

def _check_pos_int(name: str, v, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
        raise InvalidInput(f"{name} must be an integer >= {minimum}, got {v!r}")
    return int(v)


def _check_choice(name: str, v, choices) -> str:
    if not isinstance(v, str) or v not in choices:
        raise InvalidInput(f"unknown {name} {v!r}; choose one of {', '.join(choices)}")
    return v


# --------------------------------------------------------------------------------------------
# Single lesions
# --------------------------------------------------------------------------------------------

def lesion_study(model, partition, x, y, *, n_random: int = 20, seed: int = 0, min_size: int = 1,
                 max_fraction: float = 0.9, metric: str = "accuracy", ties: str = "inclusive",
                 keep_bias: bool = False, engine: str = "fast", batch_size: int = 1024,
                 progress=None, workshare=None, max_elements: int | None = None,
                 cache_bytes: int | None = None):
    """Lesion every testable sub-cluster and ``n_random`` random same-layer same-size unit sets.

    Importance: the accuracy drop of the true sub-cluster against its random controls (right-sided
    empirical p). Output coherence: the range of the class-wise drops normalised by their mean,
    ``max(d/mean(d)) - min(d/mean(d))``, against the controls (right-sided). When the true set's
    mean class drop is 0 the coherence is undefined: ``p_coherence`` is None and the row is counted
    in ``network["output_coherence"]["n_excluded"]``. A random set with mean 0 has no coherence
    either; it counts as at least as extreme as the true set (``undefined="against"``), which keeps
    the test valid. Giving it coherence 0 instead, the smallest value, made the test reject 10% of
    true nulls at alpha = 0.05 on the digits MLP (benchmarks/calibration.py).

    Parameters
    ----------
    model : keras.Model or path
    partition : Partition or list of SubCluster
    x : array, shape (N, *input_shape)
    y : array, shape (N,) int labels (or (N, n_classes) one-hot)
    n_random : int, random controls per sub-cluster
    seed : int, enters the key of the random unit sets (with model hash, layer and cluster)
    min_size : int, smallest sub-cluster size tested
    max_fraction : float, largest fraction of its layer a tested sub-cluster may hold
    metric : "accuracy" or "balanced_accuracy"
    ties : "inclusive" (ties count against significance) or "strict"
    keep_bias : bool, keep the biases of lesioned units (default: zero them too)
    engine : "fast" or "reference" (same labels; the reference is the plain definition)
    batch_size : int
    progress : None/True (progress bar on a TTY stderr after ~2 s) or False
    workshare : None, a folder path or a :class:`modtest.workshare.WorkShare`. With one, the work is
        split into units (one sub-cluster with its random controls) that every process running the
        same study with the same folder shares out: each claims, computes and publishes units no
        one else has, then waits for the rest; the result is the same as without it.
    max_elements, cache_bytes : memory bounds of the fast engine (see :class:`FastEngine`); they
        change how the data is chunked, not the result

    Returns
    -------
    ProbeResult with probe="lesion"; rows, network (importance, output_coherence), settings, extras
    """
    from modtest import stats
    from modtest._progress import Progress
    from modtest._random import random_unit_sets
    from modtest._validation import check_data, check_seed
    from modtest.model import load_model, model_hash, output_size, unit_layers
    from modtest.results import ProbeResult

    n_random = _check_pos_int("n_random", n_random)
    seed = check_seed(seed)
    min_size = _check_pos_int("min_size", min_size)
    if isinstance(max_fraction, bool) or not isinstance(max_fraction, numbers.Real) \
            or not 0 < float(max_fraction) <= 1:
        raise InvalidInput(f"max_fraction must be a number in (0, 1], got {max_fraction!r}")
    metric = _check_choice("metric", metric, METRICS)
    ties = _check_choice("ties", ties, _TIES)
    engine = _check_choice("engine", engine, ENGINES)
    batch_size = _check_pos_int("batch_size", batch_size)
    if progress not in (None, True, False):
        raise InvalidInput(f"progress must be None, True or False, got {progress!r}")
    model = load_model(model)
    x, y = check_data(model, x, y)
    subs = subclusters_of(partition)
    layers = unit_layers(model)
    testable = [s for s in subs if s.layer in layers and within_size_limits(s, min_size, max_fraction)]
    if not testable:
        raise NoTestableSubclusters(f"no testable sub-clusters: all {len(subs)} were filtered out by "
                                    f"min_size={min_size}, max_fraction={max_fraction}")
    mh = model_hash(model)
    n_classes = output_size(model)
    from modtest.workshare import as_workshare

    share = as_workshare(workshare)
    for name, v in (("max_elements", max_elements), ("cache_bytes", cache_bytes)):
        if v is not None:
            _check_pos_int(name, v)
    eng = make_engine(engine, model, x, keep_bias=keep_bias, batch_size=batch_size,
                      max_elements=max_elements, cache_bytes=cache_bytes)
    t0 = time.perf_counter()
    base_labels = eng.base_labels()
    base_score, base_recall = scores(base_labels, y, n_classes, metric)
    base_score, base_recall = float(base_score[0]), base_recall[0]

    by_layer = defaultdict(list)
    for s in testable:
        by_layer[s.layer].append(s)
    results = {}
    with Progress(len(testable) * (n_random + 1), "lesion", enabled=progress) as bar:
        if share is not None:
            results = _shared_units(share, eng, [s for n in layers for s in by_layer.get(n, [])], y,
                                    n_classes, metric, mh, n_random, seed, keep_bias, engine, x, bar)
        for layer in ([] if share is not None else [n for n in layers if n in by_layer]):
            sets, owners = [], []
            for s in by_layer[layer]:
                rand = random_unit_sets(s.layer_size, s.size, n_random, mh, "lesion", layer, s.cluster, seed)
                sets.append(np.asarray(s.units, dtype=np.int64))
                sets.extend(list(rand))
                owners.append((s, rand))
            lab = eng.labels(layer, sets, on_progress=bar.update)
            sc, rec = scores(lab, y, n_classes, metric)
            for j, (s, rand) in enumerate(owners):
                sl = slice(j * (n_random + 1), (j + 1) * (n_random + 1))
                results[(s.layer, s.cluster)] = (sc[sl], rec[sl], rand)
    seconds = time.perf_counter() - t0

    rows = []
    for s in testable:
        sc, rec, rand = results[(s.layer, s.cluster)]
        drops = base_score - sc
        class_drops = base_recall[None, :] - rec
        coh = _coherence(class_drops)
        rand_coh = coh[1:]  # NaN where undefined: counted against the true set (stats.empirical_p)
        rows.append({
            "layer": s.layer, "cluster": s.cluster, "name": s.name, "units": list(s.units),
            "size": s.size, "layer_size": s.layer_size, "fraction": s.fraction,
            "acc": float(sc[0]), "drop": float(drops[0]), "random_drops": drops[1:].tolist(),
            "random_units": rand.tolist(),
            "class_drops": class_drops[0].tolist(), "random_class_drops": class_drops[1:].tolist(),
            "coherence": None if np.isnan(coh[0]) else float(coh[0]),
            "random_coherence": [None if np.isnan(v) else float(v) for v in rand_coh],
        })
    true_d = np.array([r["drop"] for r in rows])
    rand_d = np.array([r["random_drops"] for r in rows])
    p_imp = stats.empirical_p(true_d, rand_d, side="right", ties=ties)
    p_imp_left = stats.empirical_p(true_d, rand_d, side="left", ties=ties)
    true_c = np.array([np.nan if r["coherence"] is None else r["coherence"] for r in rows])
    rand_c = np.array([[np.nan if v is None else v for v in r["random_coherence"]] for r in rows],
                      dtype=float).reshape(len(rows), n_random)
    p_coh = stats.empirical_p(true_c, rand_c, side="right", ties=ties, undefined="against")
    for r, pi, pl, pc in zip(rows, p_imp, p_imp_left, p_coh):
        r["p_importance"] = float(pi)
        r["p_importance_left"] = float(pl)
        r["p_coherence"] = None if np.isnan(pc) else float(pc)
    cats = stats.categorize_rows(rows, n_random)
    for r, c in zip(rows, cats):
        r["category"] = c
    # the chi-squared categorical test needs p-values uniform on the grid under the null: ties
    # (lesions that change no prediction) are broken at random for it, keyed so runs repeat
    if ties == "inclusive":
        from modtest._random import keyed_rng

        p_imp_rank = stats.rank_p(true_d, rand_d, keyed_rng(mh, "lesion-ties", "importance", seed))
        p_coh_rank = stats.rank_p(true_c, rand_c, keyed_rng(mh, "lesion-ties", "coherence", seed))
    else:
        p_imp_rank, p_coh_rank = p_imp, p_coh
    for r, pi, pc in zip(rows, p_imp_rank, p_coh_rank):
        r["p_importance_rank"] = float(pi)
        r["p_coherence_rank"] = None if np.isnan(pc) else float(pc)
    network = {
        "importance": stats.combine_pvalues(p_imp, n_random, p_imp_rank),
        "output_coherence": stats.combine_pvalues(p_coh, n_random, p_coh_rank),
        "n_subclusters": len(subs), "n_filtered": len(subs) - len(testable),
    }
    settings = {
        "n_random": n_random, "seed": seed, "min_size": min_size, "max_fraction": float(max_fraction),
        "metric": metric, "ties": ties, "keep_bias": bool(keep_bias), "engine": engine,
        "batch_size": batch_size, "model_hash": mh, "n_examples": int(len(x)),
        "k": getattr(partition, "k", None), "partition_seed": getattr(partition, "seed", None),
    }
    extras = {
        "base_accuracy": base_score, "base_class_accuracy": base_recall.tolist(),
        "taxonomy": stats.category_counts(cats),
        "figure2": [[r["fraction"], r["drop"], r["category"], r["name"]] for r in rows],
        "figure6": [{"name": r["name"], "base": base_recall.tolist(), "true": r["class_drops"],
                     "random": r["random_class_drops"]} for r in rows],
        "filtered": [s.name for s in subs if s not in testable],
        "seconds": seconds,
    }
    return ProbeResult(probe="lesion", rows=rows, network=network, settings=settings, extras=extras)


def _shared_units(share, eng, subs, y, n_classes, metric, mh, n_random, seed, keep_bias, engine, x,
                  bar) -> dict:
    """The scores of every sub-cluster and its controls, units shared out through ``share``.

    A unit's result is ``{"score": (n_random+1,), "recall": (n_random+1, n_classes)}`` (JSON floats,
    exact round trip); its key covers everything the numbers depend on.
    """
    from modtest._random import random_unit_sets
    from modtest.cache import data_hash
    from modtest.workshare import unit_key

    dh = data_hash(x, y)
    items, rands = [], {}
    for s in subs:
        rand = random_unit_sets(s.layer_size, s.size, n_random, mh, "lesion", s.layer, s.cluster, seed)
        rands[(s.layer, s.cluster)] = rand
        key = unit_key("lesion-unit", mh, dh, metric, bool(keep_bias), engine, n_random, seed, s.layer,
                       s.cluster, s.layer_size, [int(u) for u in s.units], n_classes)
        items.append((key, (s, rand)))

    def compute(item):
        s, rand = item
        lab = eng.labels(s.layer, [np.asarray(s.units, dtype=np.int64)] + list(rand))
        sc, rec = scores(lab, y, n_classes, metric)
        return {"score": sc.tolist(), "recall": rec.tolist()}

    got = share.run(items, compute, on_unit=lambda k, v, how: bar.update(n_random + 1))
    results = {}
    for key, (s, rand) in items:
        v = got[key]
        results[(s.layer, s.cluster)] = (np.asarray(v["score"], dtype=np.float64),
                                         np.asarray(v["recall"], dtype=np.float64), rand)
    return results


# --------------------------------------------------------------------------------------------
# Double lesions (appendix A.10)
# --------------------------------------------------------------------------------------------

def double_lesion_study(model, partition, x, y, lesion_result, *, n_random: int = 50, seed: int = 0,
                        min_drop: float = 0.01, engine: str = "fast", batch_size: int = 1024,
                        progress=None, workshare=None) -> dict:
    """Pairwise lesions of important sub-clusters in different layers (paper A.10, figure 9).

    For X (earlier layer) and Y: ``damage(X u Y)`` against ``n_random`` random ``X u Y'`` (Y' of
    size |Y| from Y's layer) and ``X' u Y``. Y is important given X when the joint damage beats all
    controls (p = 1/(n_random+1)) and ``delta(Y, X) = damage(X u Y) - damage(X) > min_drop``;
    likewise X given Y. The pair's case is :func:`modtest.stats.dependency_case`.

    Parameters
    ----------
    model, partition, x, y : as for :func:`lesion_study`
    lesion_result : ProbeResult of :func:`lesion_study` on the same model and data
    n_random : int, random controls per conditional test
    seed : int
    min_drop : float, smallest extra damage that counts
    engine : "fast" or "reference"
    workshare : None, a folder path or a :class:`modtest.workshare.WorkShare`: share the pairs
        (one work unit each) with the other processes using the same folder; same result

    Returns
    -------
    dict with "pairs" (one dict per pair), "matrix" ({"names", "values", "significant"}: diagonal =
    single damage, ``values[i][j]`` = delta(names[j], names[i]) = extra damage of lesioning j once i
    is lesioned, ``significant[i][j]`` = j important given i; None for same-layer pairs) and
    "settings".
    """
    from modtest import stats
    from modtest._progress import Progress
    from modtest._random import random_unit_sets
    from modtest._validation import check_data, check_seed
    from modtest.model import load_model, model_hash, output_size, unit_layers
    from modtest.results import ProbeResult
    from modtest.workshare import as_workshare

    n_random = _check_pos_int("n_random", n_random)
    seed = check_seed(seed)
    engine = _check_choice("engine", engine, ENGINES)
    batch_size = _check_pos_int("batch_size", batch_size)
    if isinstance(min_drop, bool) or not isinstance(min_drop, numbers.Real) or math.isnan(min_drop):
        raise InvalidInput(f"min_drop must be a number, got {min_drop!r}")
    if not isinstance(lesion_result, ProbeResult) or lesion_result.probe != "lesion":
        raise InvalidInput("lesion_result must be the ProbeResult of lesion_study")
    model = load_model(model)
    x, y = check_data(model, x, y)
    mh = model_hash(model)
    if lesion_result.settings.get("model_hash") not in (None, mh):
        raise InvalidInput("lesion_result was computed on a different model (model hash differs)")
    metric = lesion_result.settings.get("metric", "accuracy")
    keep_bias = bool(lesion_result.settings.get("keep_bias", False))
    n_classes = output_size(model)
    layers = unit_layers(model)
    subs = {s.name: s for s in subclusters_of(partition)}
    important = [r for r in lesion_result.rows if r.get("category") == stats.IMPORTANT]
    important.sort(key=lambda r: (layers.index(r["layer"]) if r["layer"] in layers else 1 << 30,
                                  r["cluster"]))
    names = [r["name"] for r in important]
    single = {r["name"]: float(r["drop"]) for r in important}
    units = {}
    for r in important:
        s = subs.get(r["name"])
        units[r["name"]] = (r["layer"], np.asarray(r["units"] if s is None else s.units, dtype=np.int64),
                            int(r["layer_size"] if s is None else s.layer_size))

    eng = make_engine(engine, model, x, keep_bias=keep_bias, batch_size=batch_size)
    base_score = float(scores(eng.base_labels(), y, n_classes, metric)[0][0])
    pairs_todo = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
                  if units[a][0] != units[b][0]]
    pairs = []
    share = as_workshare(workshare)
    with Progress(len(pairs_todo) * 2 * (n_random + 1), "double lesion", enabled=progress) as bar:
        def damages(pair, on_progress=None):
            """One work unit: the joint damages of X u Y' and X' u Y (true set first)."""
            xn, yn = pair
            (lx, ux, sx), (ly, uy, sy) = units[xn], units[yn]
            ry = random_unit_sets(sy, len(uy), n_random, mh, "double_lesion", xn, yn, "Y", seed)
            rx = random_unit_sets(sx, len(ux), n_random, mh, "double_lesion", xn, yn, "X", seed)
            lab_y = eng.labels(ly, [uy] + list(ry), fixed=[(lx, ux)], on_progress=on_progress)
            lab_x = eng.labels(lx, [ux] + list(rx), fixed=[(ly, uy)], on_progress=on_progress)
            return {"dy": (base_score - scores(lab_y, y, n_classes, metric)[0]).tolist(),
                    "dx": (base_score - scores(lab_x, y, n_classes, metric)[0]).tolist()}

        if share is None:
            got = {pair: damages(pair, bar.update) for pair in pairs_todo}
        else:
            from modtest.cache import data_hash
            from modtest.workshare import unit_key

            dh = data_hash(x, y)
            items = [(unit_key("double-lesion-unit", mh, dh, metric, keep_bias, engine, n_random, seed,
                               n_classes, base_score, xn, yn, units[xn][0], units[xn][1].tolist(),
                               units[yn][0], units[yn][1].tolist()), (xn, yn)) for xn, yn in pairs_todo]
            by_key = share.run(items, damages, on_unit=lambda k, v, how: bar.update(2 * (n_random + 1)))
            got = {pair: by_key[key] for key, pair in items}
        for xn, yn in pairs_todo:
            lx, ly = units[xn][0], units[yn][0]
            dy, dx = np.asarray(got[(xn, yn)]["dy"]), np.asarray(got[(xn, yn)]["dx"])
            joint = float(dy[0])
            delta_y = joint - single[xn]
            delta_x = joint - single[yn]
            p_y = float(stats.empirical_p(dy[0], dy[1:], side="right", ties="inclusive"))
            p_x = float(stats.empirical_p(dx[0], dx[1:], side="right", ties="inclusive"))
            best = 1.0 / (n_random + 1) + 1e-12
            y_given_x = bool(p_y <= best and delta_y > min_drop)
            x_given_y = bool(p_x <= best and delta_x > min_drop)
            pairs.append({
                "x": xn, "y": yn, "x_layer": lx, "y_layer": ly,
                "damage_x": single[xn], "damage_y": single[yn], "damage_xy": joint,
                "damage_xy_check": float(dx[0]),
                "random_damage_x_yprime": dy[1:].tolist(), "random_damage_xprime_y": dx[1:].tolist(),
                "delta_y_given_x": delta_y, "delta_x_given_y": delta_x,
                "p_y_given_x": p_y, "p_x_given_y": p_x,
                "y_given_x": y_given_x, "x_given_y": x_given_y,
                "case": stats.dependency_case(x_given_y, y_given_x),
            })
    idx = {n: i for i, n in enumerate(names)}
    m = len(names)
    values = [[None] * m for _ in range(m)]
    sig = [[None] * m for _ in range(m)]
    for n in names:
        values[idx[n]][idx[n]] = single[n]
    for p in pairs:
        i, j = idx[p["x"]], idx[p["y"]]
        values[i][j], sig[i][j] = p["delta_y_given_x"], p["y_given_x"]
        values[j][i], sig[j][i] = p["delta_x_given_y"], p["x_given_y"]
    return {
        "pairs": pairs,
        "matrix": {"names": names, "values": values, "significant": sig},
        "settings": {"n_random": n_random, "seed": seed, "min_drop": float(min_drop), "engine": engine,
                     "metric": metric, "keep_bias": keep_bias, "model_hash": mh,
                     "base_accuracy": base_score},
    }
