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

Transforms
----------
Composable, seeded, Lucid's semantics: :func:`pad`, :func:`jitter`, :func:`random_scale`,
:func:`random_rotate`. Random draws are made per objective, from a stream keyed on that objective's
seed key and the transform's position and read step by step, so an image is the same whether it is
optimised alone or in a batch. After the transforms the image is centre-cropped or padded back to the
model's input size (fixed-size models cannot take Lucid's size changes). Lucid resizes the tensor for
``random_scale``; here the image is zoomed about its centre on a fixed canvas, which is the same thing
up to rounding once the result is centre-cropped to the input size. Sampling is bilinear (Lucid's
rotation is nearest-neighbour), and what is sampled from outside the image is ``fill`` (the middle of
``value_range``, Lucid's grey 0.5 for a [0, 1] range).
"""
from __future__ import annotations

import math
import numbers
import weakref
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from modtest._random import keyed_rng
from modtest.errors import InvalidInput, UnsupportedModelError
from modtest.stats import entropy

__all__ = [
    "render", "unit_activations", "output_probabilities", "entropy", "unit_post_activations",
    "Transform", "pad", "jitter", "random_scale", "random_rotate",
    "standard_transforms", "small_transforms", "resolve_transforms", "PARAMS", "clear_cache",
    "untrained_control",
]

PARAMS = ("pixel", "fft")

# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------


def _ops():
    from keras import ops

    return ops


def _bilinear(x, sy, sx, fill):
    """Sample images ``x`` (B, H, W, C) at source coordinates ``sy, sx`` (B, h, w); outside -> fill.

    Pixel centres are at integer coordinates; integer coordinates reproduce pixels exactly.
    """
    ops = _ops()
    hh, ww, c = x.shape[1], x.shape[2], x.shape[3]
    h, w = sy.shape[1], sy.shape[2]
    flat = ops.reshape(x, (-1, c))
    y0 = ops.floor(sy)
    x0 = ops.floor(sx)
    fy = sy - y0
    fx = sx - x0
    base = ops.reshape(ops.arange(ops.shape(x)[0], dtype="int32") * (hh * ww), (-1, 1, 1))
    out = 0.0
    wsum = 0.0
    for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx),
                        (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy = y0 + dy
        xx = x0 + dx
        valid = ops.cast((yy >= 0) & (yy <= hh - 1) & (xx >= 0) & (xx <= ww - 1), x.dtype)
        wgt = wgt * valid
        idx = (ops.cast(ops.clip(yy, 0, hh - 1), "int32") * ww
               + ops.cast(ops.clip(xx, 0, ww - 1), "int32") + base)
        g = ops.take(flat, ops.reshape(idx, (-1,)), axis=0)
        out = out + ops.reshape(g, (-1, h, w, c)) * wgt[..., None]
        wsum = wsum + wgt
    return out + (1.0 - wsum)[..., None] * fill


def _grid(h, w):
    ii, jj = np.meshgrid(np.arange(h, dtype="float32"), np.arange(w, dtype="float32"), indexing="ij")
    return ii[None], jj[None]


class Transform:
    """A transform of a batch of images (B, H, W, C) with per-image random parameters.

    ``sample(rng, n)`` draws the parameters of ``n`` successive steps for one image, shape (n, k);
    ``apply(x, params, fill)`` transforms a batch (``params``: (B, k) tensor, ignored when k == 0);
    calling the transform, ``t(x, params, fill=0.5)``, does the same on numpy arrays.
    """

    n_params = 0

    def out_hw(self, hw: tuple[int, int]) -> tuple[int, int]:
        return hw

    def sample(self, rng: np.random.Generator, n: int) -> np.ndarray:
        return np.zeros((n, self.n_params), dtype="float32")

    def apply(self, x, params, fill):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, x, params=None, fill: float = 0.5) -> np.ndarray:
        ops = _ops()
        x = np.asarray(x, dtype="float32")
        if params is None:
            params = np.zeros((x.shape[0], self.n_params), dtype="float32")
        params = np.asarray(params, dtype="float32").reshape(x.shape[0], self.n_params)
        out = self.apply(ops.convert_to_tensor(x), ops.convert_to_tensor(params), float(fill))
        return np.asarray(ops.convert_to_numpy(out))


class pad(Transform):  # noqa: N801 - Lucid's lower-case names
    """Pad ``w`` pixels on every side: ``mode="constant"`` with ``value`` (None: the fill, the middle
    of the value range, like Lucid's ``constant_value=0.5``) or ``"reflect"``. Output (H+2w, W+2w)."""

    def __init__(self, w: int, mode: str = "constant", value: float | None = None):
        if mode not in ("constant", "reflect", "symmetric"):
            raise InvalidInput(f"pad mode must be 'constant', 'reflect' or 'symmetric', got {mode!r}")
        self.w, self.mode, self.value = int(w), mode, value

    def out_hw(self, hw):
        return hw[0] + 2 * self.w, hw[1] + 2 * self.w

    def apply(self, x, params, fill):
        ops = _ops()
        widths = ((0, 0), (self.w, self.w), (self.w, self.w), (0, 0))
        if self.mode == "constant":
            value = fill if self.value is None else self.value
            return ops.pad(x, widths, mode="constant", constant_values=float(value))
        return ops.pad(x, widths, mode=self.mode)

    def __repr__(self):
        value = "" if self.value is None else f", value={self.value!r}"
        return f"pad({self.w}, mode={self.mode!r}{value})"


class jitter(Transform):  # noqa: N801
    """Lucid's jitter: a crop of size (H-d, W-d) at a random offset (oy, ox), each uniform on 0..d."""

    n_params = 2

    def __init__(self, d: int):
        if int(d) < 0:
            raise InvalidInput(f"jitter d must be >= 0, got {d!r}")
        self.d = int(d)

    def out_hw(self, hw):
        if hw[0] <= self.d or hw[1] <= self.d:
            raise InvalidInput(f"jitter({self.d}) cannot crop an image of {hw[0]}x{hw[1]}")
        return hw[0] - self.d, hw[1] - self.d

    def sample(self, rng, n):
        return rng.integers(0, self.d + 1, size=(n, 2)).astype("float32")

    def apply(self, x, params, fill):
        ops = _ops()
        h, w = self.out_hw((x.shape[1], x.shape[2]))
        ii, jj = _grid(h, w)
        sy = ops.convert_to_tensor(ii) + ops.reshape(params[:, 0], (-1, 1, 1))
        sx = ops.convert_to_tensor(jj) + ops.reshape(params[:, 1], (-1, 1, 1))
        return _bilinear(x, sy, sx, fill)

    def __repr__(self):
        return f"jitter({self.d})"


class random_scale(Transform):  # noqa: N801
    """Zoom by a factor drawn from ``scales`` about the image centre; canvas size kept."""

    n_params = 1

    def __init__(self, scales: Sequence[float]):
        self.scales = tuple(float(s) for s in scales)
        if not self.scales or min(self.scales) <= 0:
            raise InvalidInput(f"random_scale scales must be positive numbers, got {scales!r}")

    def sample(self, rng, n):
        return np.asarray(self.scales, dtype="float32")[rng.integers(0, len(self.scales), size=n)][:, None]

    def apply(self, x, params, fill):
        ops = _ops()
        h, w = x.shape[1], x.shape[2]
        ii, jj = _grid(h, w)
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        s = ops.reshape(params[:, 0], (-1, 1, 1))
        sy = cy + (ops.convert_to_tensor(ii) - cy) / s
        sx = cx + (ops.convert_to_tensor(jj) - cx) / s
        return _bilinear(x, sy, sx, fill)

    def __repr__(self):
        return f"random_scale({list(self.scales)})"


class random_rotate(Transform):  # noqa: N801
    """Rotate counter-clockwise by an angle in degrees drawn from ``angles``, about the centre."""

    n_params = 1

    def __init__(self, angles: Sequence[float]):
        self.angles = tuple(float(a) for a in angles)
        if not self.angles:
            raise InvalidInput("random_rotate angles must not be empty")

    def sample(self, rng, n):
        return np.asarray(self.angles, dtype="float32")[rng.integers(0, len(self.angles), size=n)][:, None]

    def apply(self, x, params, fill):
        ops = _ops()
        h, w = x.shape[1], x.shape[2]
        ii, jj = _grid(h, w)
        cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
        theta = ops.reshape(params[:, 0], (-1, 1, 1)) * (math.pi / 180.0)
        cos, sin = ops.cos(theta), ops.sin(theta)
        u = ops.convert_to_tensor(jj) - cx  # right
        v = cy - ops.convert_to_tensor(ii)  # up
        us = u * cos + v * sin
        vs = -u * sin + v * cos
        return _bilinear(x, cy - vs, cx + us, fill)

    def __repr__(self):
        return f"random_rotate({list(self.angles)})"


class _fit(Transform):
    """Centre-crop or pad (with the fill) back to (H, W): the model's input size."""

    def __init__(self, hw):
        self.hw = (int(hw[0]), int(hw[1]))

    def __repr__(self):
        return f"_fit({self.hw})"

    def out_hw(self, hw):
        return self.hw

    def apply(self, x, params, fill):
        ops = _ops()
        for axis, target in ((1, self.hw[0]), (2, self.hw[1])):
            size = x.shape[axis]
            if size > target:
                start = (size - target) // 2
                x = x[:, start:start + target] if axis == 1 else x[:, :, start:start + target]
            elif size < target:
                before = (target - size) // 2
                widths = [(0, 0)] * 4
                widths[axis] = (before, target - size - before)
                x = ops.pad(x, widths, mode="constant", constant_values=float(fill))
        return x


def standard_transforms() -> list[Transform]:
    """Lucid's ``transform.standard_transforms`` (the paper's choice for ImageNet models)."""
    return [
        pad(12, mode="constant"),
        jitter(8),
        random_scale([1 + (i - 5) / 50.0 for i in range(11)]),
        random_rotate(list(range(-10, 11)) + 5 * [0]),
        jitter(4),
    ]


def small_transforms(hw: tuple[int, int]) -> list[Transform]:
    """Jitter and scaling (the paper's choice for small and mid-sized models), sized to the image:
    jitter of ~1/14 of the side (2 px for 28x28, 1 px for 8x8) and scales 0.9..1.1."""
    d = max(1, int(round(min(hw) / 14.0)))
    return [jitter(d), random_scale([1 + (i - 5) / 50.0 for i in range(11)])]


def resolve_transforms(transforms, hw: tuple[int, int]) -> list[Transform]:
    """``"auto"``: standard transforms for images of side >= 128 px, small ones otherwise (and none
    for a 1-pixel-high "image" of a flat input); ``None``/``()``: none; ``"standard"``, ``"small"``;
    or a list of :class:`Transform`."""
    if transforms is None:
        return []
    if isinstance(transforms, str):
        if transforms == "auto":
            if min(hw) <= 1:
                return []
            return standard_transforms() if min(hw) >= 128 else small_transforms(hw)
        if transforms == "standard":
            return standard_transforms()
        if transforms == "small":
            return small_transforms(hw)
        if transforms == "none":
            return []
        raise InvalidInput(f"transforms must be 'auto', 'standard', 'small', 'none' or a list, got {transforms!r}")
    out = list(transforms)
    for t in out:
        if not isinstance(t, Transform):
            raise InvalidInput(f"transforms must hold Transform objects, got {type(t).__name__}")
    return out


# --------------------------------------------------------------------------------------------
# Parameterizations
# --------------------------------------------------------------------------------------------

_COLOR_SVD_SQRT = np.asarray([[0.26, 0.09, 0.02],
                              [0.27, 0.00, -0.05],
                              [0.27, -0.09, 0.03]], dtype="float32")
_COLOR_NORMALIZED = _COLOR_SVD_SQRT / np.max(np.linalg.norm(_COLOR_SVD_SQRT, axis=0))


class _PixelParam:
    """The image is the parameter; kept inside the value range by projection after each step."""

    def __init__(self, shape, value_range):
        self.shape = tuple(shape)  # (H, W, C)
        self.value_range = value_range

    @property
    def param_shape(self):
        return self.shape

    def init(self, rng):
        lo, hi = self.value_range if self.value_range is not None else (-0.5, 0.5)
        return ((lo + hi) / 2.0 + 0.01 * (hi - lo) * rng.standard_normal(self.shape)).astype("float32")

    def to_image(self, p):
        return p

    def project(self, p):
        if self.value_range is not None:
            np.clip(p, self.value_range[0], self.value_range[1], out=p)
        return p


class _FFTParam:
    """Lucid's ``fft_image`` + ``to_valid_rgb(decorrelate=True, sigmoid=True)``.

    The spectrum (2, C, H, Wf) is scaled by 1/max(f, 1/max(H, W)) * sqrt(H W); the inverse real FFT is
    written as real matrix products (exactly ``np.fft.irfft2``), so it runs on any backend.
    """

    def __init__(self, shape, value_range):
        if value_range is None:
            raise InvalidInput("param='fft' needs a finite value_range (it squashes with a sigmoid)")
        self.shape = tuple(shape)
        self.value_range = value_range
        h, w, c = self.shape
        fy = np.fft.fftfreq(h)[:, None]
        fx = np.fft.fftfreq(w)[: w // 2 + (2 if w % 2 else 1)]
        freqs = np.sqrt(fx * fx + fy * fy)
        self.fh, self.fw = freqs.shape
        self.scale = ((1.0 / np.maximum(freqs, 1.0 / max(h, w))) * np.sqrt(w * h)).astype("float32")
        wlen = 2 * (self.fw - 1)  # irfft length; one column more than w when w is odd, cut below
        k = np.arange(self.fw)[:, None]
        cols = np.arange(w)[None, :]
        ck = np.full((self.fw, 1), 2.0)
        ck[0] = 1.0
        if wlen % 2 == 0:
            ck[-1] = 1.0
        ang = 2 * np.pi * k * cols / wlen
        self.cw = (ck * np.cos(ang) / wlen).astype("float32")  # (Wf, W)
        self.sw = (ck * np.sin(ang) / wlen).astype("float32")
        angh = 2 * np.pi * np.arange(h)[:, None] * np.arange(h)[None, :] / h
        self.er = (np.cos(angh) / h).astype("float32")  # (H, H)
        self.ei = (np.sin(angh) / h).astype("float32")

    @property
    def param_shape(self):
        return (2, self.shape[2], self.fh, self.fw)

    def init(self, rng):
        return (0.01 * rng.standard_normal(self.param_shape)).astype("float32")

    def spatial(self, p):
        """Inverse FFT of the scaled spectrum: (B, 2, C, H, Wf) -> (B, H, W, C), before colour/sigmoid."""
        ops = _ops()
        xr = p[:, 0] * self.scale
        xi = p[:, 1] * self.scale
        yr = ops.einsum("hk,bckf->bchf", self.er, xr) - ops.einsum("hk,bckf->bchf", self.ei, xi)
        yi = ops.einsum("hk,bckf->bchf", self.er, xi) + ops.einsum("hk,bckf->bchf", self.ei, xr)
        img = ops.einsum("bchf,fw->bhwc", yr, self.cw) - ops.einsum("bchf,fw->bhwc", yi, self.sw)
        return img / 4.0

    def to_image(self, p):
        ops = _ops()
        img = self.spatial(p)
        if self.shape[2] == 3:
            img = ops.einsum("bhwc,dc->bhwd", img, _COLOR_NORMALIZED)
        lo, hi = self.value_range
        return lo + (hi - lo) * ops.sigmoid(img)

    def project(self, p):
        return p


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
    """The (H, W, C) image optimised for ``model``.

    (H, W, C) inputs as they are; (H, W) inputs as one channel; flat (D,) inputs as a square
    one-channel image when D is a square (784 -> 28x28, 64 -> 8x8), else as a 1 x D strip.
    """
    shape = _input_shape(model)
    if image_shape is not None:
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise InvalidInput(f"image_shape must be (H, W, C), got {image_shape!r}")
        if None not in shape and int(np.prod(shape)) != int(np.prod(image_shape)):
            raise InvalidInput(f"image_shape {image_shape} does not hold the model input {shape}")
        return image_shape
    if None in shape:
        raise InvalidInput(f"model input shape {shape} has free dimensions; pass image_shape=(H, W, C)")
    if len(shape) == 3:
        return shape
    if len(shape) == 2:
        return (shape[0], shape[1], 1)
    if len(shape) == 1:
        side = int(round(math.sqrt(shape[0])))
        return (side, side, 1) if side * side == shape[0] else (1, shape[0], 1)
    raise UnsupportedModelError(f"cannot visualize a model with input shape {shape}; pass image_shape")


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
            z = raw - raw.max(axis=1, keepdims=True)
            e = np.exp(z)
            probs = e / e.sum(axis=1, keepdims=True)
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


def _check_objectives(model, objectives):
    if not isinstance(objectives, (list, tuple)) or not objectives:
        raise InvalidInput("objectives must be a non-empty list of (layer_name, units) pairs")
    out = []
    for i, obj in enumerate(objectives):
        try:
            layer, units = obj
        except (TypeError, ValueError):
            raise InvalidInput(f"objectives[{i}] must be a (layer_name, units) pair, got {obj!r}") from None
        units = np.unique(np.asarray(units, dtype=np.int64).ravel())
        if units.size == 0:
            raise InvalidInput(f"objectives[{i}] has no units")
        out.append((str(layer), units))
    return out


def _seed_keys(seed, n):
    if isinstance(seed, (numbers.Integral, np.integer)) and not isinstance(seed, bool):
        return [(int(seed), i) for i in range(n)]
    if isinstance(seed, (list, tuple)) and len(seed) == n:
        return [k if isinstance(k, tuple) else (k,) for k in seed]
    raise InvalidInput(f"seed must be an int or a list of one key per objective ({n}), got {seed!r}")


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
    objs = _check_objectives(model, objectives)
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise InvalidInput(f"steps must be a non-negative integer, got {steps!r}")
    if not isinstance(lr, numbers.Real) or not lr > 0:
        raise InvalidInput(f"lr must be a positive number, got {lr!r}")
    if param not in PARAMS:
        raise InvalidInput(f"param must be one of {PARAMS}, got {param!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise InvalidInput(f"batch_size must be a positive integer, got {batch_size!r}")
    if value_range is not None:
        value_range = (float(value_range[0]), float(value_range[1]))
        if not value_range[0] < value_range[1]:
            raise InvalidInput(f"value_range must be (low, high) with low < high, got {value_range!r}")
    keys = _seed_keys(seed, len(objs))
    shape = image_shape_for(model, image_shape)
    in_shape = _input_shape(model)
    hw = shape[:2]
    tlist = resolve_transforms(transforms, hw)
    size = hw
    for t in tlist:
        size = t.out_hw(size)
    if tlist and tuple(size) != tuple(hw):
        tlist = tlist + [_fit(hw)]
    fill = 0.0 if value_range is None else (value_range[0] + value_range[1]) / 2.0
    parameterization = (_PixelParam if param == "pixel" else _FFTParam)(shape, value_range)

    layers = list(dict.fromkeys(list(layers or []) + [layer for layer, _ in objs]))
    acts_map = _resolve_layers(model, layers, resolve)
    firsts = [_unit_axis_first(model, name) for name in layers]
    widths = []
    for name, first in zip(layers, firsts):
        out_shape = _flat(model).output(acts_map[name]).shape
        widths.append(int(out_shape[1] if first else out_shape[-1]))
    layer_index = {name: i for i, name in enumerate(layers)}
    for i, (layer, units) in enumerate(objs):
        width = widths[layer_index[layer]]
        if units.min() < 0 or units.max() >= width:
            raise InvalidInput(f"objectives[{i}] units {units.tolist()} are outside layer {layer!r} "
                               f"of {width} units")
    model_shape = tuple(in_shape) if None not in in_shape else None
    n_t = len(tlist)

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

    images = np.empty((len(objs),) + shape, dtype="float32")
    history = []
    for start in range(0, len(objs), batch_size):
        chunk = list(range(start, min(start + batch_size, len(objs))))
        b = len(chunk)
        masks = [np.zeros((b, w), dtype="float32") for w in widths]
        for row, i in enumerate(chunk):
            layer, units = objs[i]
            masks[layer_index[layer]][row, units] += 1.0 / len(units)
        p = np.stack([parameterization.init(keyed_rng("modtest.visualize.init", keys[i])) for i in chunk])
        p = parameterization.project(p)
        draws = [np.stack([t.sample(keyed_rng("modtest.visualize.transform", keys[i], k), steps)
                           for i in chunk], axis=1) if steps else None
                 for k, t in enumerate(tlist)]  # each (steps, b, n_params)
        m = np.zeros_like(p)
        v = np.zeros_like(p)
        b1, b2, eps = 0.9, 0.999, 1e-8
        hist = []
        for step in range(steps):
            tparams = [d[step].astype("float32") if d.shape[-1] else np.zeros((b, 0), "float32")
                       for d in draws] if n_t else []
            value, grad = step_fn(p, *masks, *tparams)
            hist.append(value)
            m = b1 * m + (1 - b1) * grad
            v = b2 * v + (1 - b2) * grad * grad
            mhat = m / (1 - b1 ** (step + 1))
            vhat = v / (1 - b2 ** (step + 1))
            p = parameterization.project(p + lr * mhat / (np.sqrt(vhat) + eps))
        history.append(hist)
        img = parameterization.to_image(ops.convert_to_tensor(p))
        images[chunk] = np.asarray(ops.convert_to_numpy(img), dtype="float32")

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
