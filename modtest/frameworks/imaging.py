"""Feature visualization, the framework-free half: Lucid's transforms and image parameterizations,
argument checks, and the batched Adam loop (paper 3.1.2, A.8). The Keras and torch adapters supply
the model plumbing (the value and gradient of the objective) and share everything here, so an image
is optimised the same way whatever framework runs the model.

Transforms
----------
Composable, seeded, Lucid's semantics: :func:`pad`, :func:`jitter`, :func:`random_scale`,
:func:`random_rotate`, on batches of images (B, H, W, C). Random draws are made per objective, from
a stream keyed on that objective's seed key and the transform's position and read step by step, so an
image is the same whether it is optimised alone or in a batch. After the transforms the image is
centre-cropped or padded back to the model's input size (fixed-size models cannot take Lucid's size
changes). Lucid resizes the tensor for ``random_scale``; here the image is zoomed about its centre on
a fixed canvas, which is the same thing up to rounding once the result is centre-cropped to the input
size. Sampling is bilinear (Lucid's rotation is nearest-neighbour), and what is sampled from outside
the image is ``fill`` (the middle of ``value_range``, Lucid's grey 0.5 for a [0, 1] range).

A transform computes with the array library of the tensor it is given (:func:`ops_for`): ``keras.ops``
for Keras backend tensors, torch for torch tensors (gradients flow through both), numpy for numpy
arrays (``t(x, params)``). The parameterizations likewise.

Parameterizations
-----------------
``"pixel"`` (default): the image is its own parameter, initialised at the middle of ``value_range``
plus noise of 1% of the range, and projected back into ``value_range`` after every Adam step (Lucid's
``param.image(fft=False)`` squashes with a sigmoid instead; projection keeps the plain pixels the paper
states). ``"fft"`` is Lucid's default image (``param.image(fft=True, decorrelate=True)``): a 1/f-scaled
Fourier spectrum, Lucid's colour decorrelation for 3-channel inputs (identity for any other channel
count) and a sigmoid into ``value_range``. See :mod:`modtest.frameworks.keras.visualize` for why
"pixel" is the default.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np

from modtest._random import keyed_rng
from modtest.errors import InvalidInput, UnsupportedModelError

__all__ = [
    "Transform", "pad", "jitter", "random_scale", "random_rotate", "standard_transforms",
    "small_transforms", "resolve_transforms", "PARAMS", "ops_for", "image_shape_from", "check_objectives",
    "seed_keys", "check_render_args", "image_setup", "optimise",
]

PARAMS = ("pixel", "fft")


# --------------------------------------------------------------------------------------------
# Array libraries
# --------------------------------------------------------------------------------------------

class NumpyOps:
    """The few array functions the transforms use, on numpy arrays."""

    reshape = staticmethod(np.reshape)
    floor = staticmethod(np.floor)
    clip = staticmethod(np.clip)
    cos = staticmethod(np.cos)
    sin = staticmethod(np.sin)
    einsum = staticmethod(np.einsum)
    sum = staticmethod(np.sum)
    shape = staticmethod(np.shape)

    @staticmethod
    def convert_to_tensor(a):
        return np.asarray(a)

    @staticmethod
    def convert_to_numpy(a):
        return np.asarray(a)

    @staticmethod
    def arange(n, dtype="int32"):
        return np.arange(n, dtype=dtype)

    @staticmethod
    def cast(x, dtype):
        return np.asarray(x).astype(dtype)

    @staticmethod
    def take(x, idx, axis=0):
        return np.take(x, idx, axis=axis)

    @staticmethod
    def pad(x, widths, mode="constant", constant_values=0.0):
        if mode == "constant":
            return np.pad(x, widths, mode="constant", constant_values=constant_values)
        return np.pad(x, widths, mode=mode)

    @staticmethod
    def sigmoid(x):
        return 1.0 / (1.0 + np.exp(-x))


def ops_for(x):
    """The array functions for ``x``: numpy for numpy arrays, else those of the tensor's framework
    (:func:`modtest.frameworks.array_ops`: the torch adapter's for torch tensors, ``keras.ops`` for a
    Keras backend tensor); this module imports no framework."""
    if isinstance(x, (np.ndarray, np.generic)):
        return NumpyOps
    from modtest.frameworks import array_ops

    return array_ops(x)


# --------------------------------------------------------------------------------------------
# Transforms
# --------------------------------------------------------------------------------------------


def _bilinear(x, sy, sx, fill):
    """Sample images ``x`` (B, H, W, C) at source coordinates ``sy, sx`` (B, h, w); outside -> fill.

    Pixel centres are at integer coordinates; integer coordinates reproduce pixels exactly.
    """
    ops = ops_for(x)
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
        """The transform on numpy arrays (computed with numpy: no framework)."""
        x = np.asarray(x, dtype="float32")
        if params is None:
            params = np.zeros((x.shape[0], self.n_params), dtype="float32")
        params = np.asarray(params, dtype="float32").reshape(x.shape[0], self.n_params)
        return np.asarray(self.apply(x, params, float(fill)), dtype="float32")


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
        ops = ops_for(x)
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
        ops = ops_for(x)
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
        ops = ops_for(x)
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
        ops = ops_for(x)
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
        ops = ops_for(x)
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
        ops = ops_for(p)
        scale, er, ei, cw, sw = (ops.convert_to_tensor(a) for a in (self.scale, self.er, self.ei, self.cw, self.sw))
        xr = p[:, 0] * scale
        xi = p[:, 1] * scale
        yr = ops.einsum("hk,bckf->bchf", er, xr) - ops.einsum("hk,bckf->bchf", ei, xi)
        yi = ops.einsum("hk,bckf->bchf", er, xi) + ops.einsum("hk,bckf->bchf", ei, xr)
        img = ops.einsum("bchf,fw->bhwc", yr, cw) - ops.einsum("bchf,fw->bhwc", yi, sw)
        return img / 4.0

    def to_image(self, p):
        ops = ops_for(p)
        img = self.spatial(p)
        if self.shape[2] == 3:
            img = ops.einsum("bhwc,dc->bhwd", img, ops.convert_to_tensor(_COLOR_NORMALIZED))
        lo, hi = self.value_range
        return lo + (hi - lo) * ops.sigmoid(img)

    def project(self, p):
        return p


# --------------------------------------------------------------------------------------------
# Objectives
# --------------------------------------------------------------------------------------------

def check_objectives(objectives):
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


def seed_keys(seed, n):
    if isinstance(seed, (numbers.Integral, np.integer)) and not isinstance(seed, bool):
        return [(int(seed), i) for i in range(n)]
    if isinstance(seed, (list, tuple)) and len(seed) == n:
        return [k if isinstance(k, tuple) else (k,) for k in seed]
    raise InvalidInput(f"seed must be an int or a list of one key per objective ({n}), got {seed!r}")


# --------------------------------------------------------------------------------------------
# The optimisation, for any framework
# --------------------------------------------------------------------------------------------

def image_shape_from(shape: tuple, image_shape=None, *, channels_first: bool = False) -> tuple[int, int, int]:
    """The (H, W, C) image optimised for a model with input ``shape`` (no batch axis).

    (H, W, C) inputs (or (C, H, W) with ``channels_first``) as they are; (H, W) inputs as one channel;
    flat (D,) inputs as a square one-channel image when D is a square (784 -> 28x28, 64 -> 8x8), else as
    a 1 x D strip.
    """
    shape = tuple(shape)
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
        return (shape[1], shape[2], shape[0]) if channels_first else shape
    if len(shape) == 2:
        return (shape[0], shape[1], 1)
    if len(shape) == 1:
        side = int(round(math.sqrt(shape[0])))
        return (side, side, 1) if side * side == shape[0] else (1, shape[0], 1)
    raise UnsupportedModelError(f"cannot visualize a model with input shape {shape}; pass image_shape")


def check_render_args(steps, lr, param, batch_size, value_range):
    """One-line errors for :func:`render`'s settings; returns ``value_range`` as floats (or None)."""
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
    return value_range


def image_setup(shape, transforms, param, value_range):
    """(transforms with the fit back to size, fill value, parameterization) for images of ``shape``."""
    hw = shape[:2]
    tlist = resolve_transforms(transforms, hw)
    size = hw
    for t in tlist:
        size = t.out_hw(size)
    if tlist and tuple(size) != tuple(hw):
        tlist = tlist + [_fit(hw)]
    fill = 0.0 if value_range is None else (value_range[0] + value_range[1]) / 2.0
    parameterization = (_PixelParam if param == "pixel" else _FFTParam)(shape, value_range)
    return tlist, fill, parameterization


def check_units(objs, widths: dict) -> None:
    """Every objective's units lie in its layer (``widths``: layer -> units)."""
    for i, (layer, units) in enumerate(objs):
        width = widths[layer]
        if units.min() < 0 or units.max() >= width:
            raise InvalidInput(f"objectives[{i}] units {units.tolist()} are outside layer {layer!r} "
                               f"of {width} units")


def optimise(objs, keys, layers, widths, parameterization, tlist, step_fn, to_image, *, steps: int,
             lr: float, batch_size: int, shape):
    """Adam on one image per objective, ``batch_size`` at a time: (images (B, H, W, C), history).

    ``step_fn(p, *masks, *transform_params) -> (value, gradient)`` on numpy arrays, with one mask
    (B, units) per layer of ``layers`` (each image's own units, weighted 1 / their number);
    ``to_image(p) -> numpy images``. Adam: beta1 0.9, beta2 0.999, eps 1e-8, no regularisation.
    """
    layer_index = {name: i for i, name in enumerate(layers)}
    n_t = len(tlist)
    images = np.empty((len(objs),) + tuple(shape), dtype="float32")
    history = []
    for start in range(0, len(objs), batch_size):
        chunk = list(range(start, min(start + batch_size, len(objs))))
        b = len(chunk)
        masks = [np.zeros((b, widths[name]), dtype="float32") for name in layers]
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
        images[chunk] = to_image(p)
    return images, history
