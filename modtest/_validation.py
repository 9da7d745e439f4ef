"""Validation at the boundary: one wording for every entry point (API, CLI, pytest options)."""
from __future__ import annotations

import numbers
from pathlib import Path

import numpy as np

from modtest.errors import DataError, InvalidInput


def check_int(name: str, value, *, minimum: int | None = None) -> int:
    """``value`` as an int (>= ``minimum``), or one line naming ``name``."""
    bad = isinstance(value, bool) or not isinstance(value, numbers.Integral)
    if bad or (minimum is not None and value < minimum):
        want = "an integer" if minimum is None else f"an integer >= {minimum}"
        raise InvalidInput(f"{name} must be {want}, got {value!r}")
    return int(value)


def check_seed(seed) -> int:
    return check_int("seed", seed, minimum=0)


def check_k(k, n_usable: int) -> int:
    """k >= 2 and smaller than the number of nodes that have at least one edge."""
    k = check_int("k", k)
    if k < 2:
        raise InvalidInput(f"k must be at least 2, got k={k}")
    if k >= n_usable:
        raise InvalidInput(f"k={k} is too large: the graph has only {n_usable} nodes with edges "
                           f"(k must be smaller than that)")
    return k


def check_alpha(alpha) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < float(alpha) < 1:
        raise InvalidInput(f"alpha must be a number in (0, 1), got {alpha!r}")
    return float(alpha)


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise InvalidInput(f"unknown {name} {value!r}; choose one of {', '.join(map(str, choices))}")
    return value


def check_fraction_open(name: str, value) -> float:
    """A fraction in (0, 1] (a share of a layer that may be all of it, but not none)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < float(value) <= 1:
        raise InvalidInput(f"{name} must be a number in (0, 1], got {value!r}")
    return float(value)


def check_fraction(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) <= 1:
        raise InvalidInput(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def load_data(path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``x`` and ``y`` from an ``.npz`` file, never unpickling anything."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file not found: {path}")
    import zipfile

    if not zipfile.is_zipfile(path):  # else np.load would try (and refuse) to unpickle it
        raise DataError(f"data file {path.name} is not an .npz archive; save the arrays with "
                        f"numpy.savez(path, x=..., y=...)")
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files and ("input_ids" in f.files or "pixel_values" in f.files):
                from modtest.frameworks.transformers.data import read_npz_arrays  # numpy only

                return read_npz_arrays(f, path.name)  # Hugging Face layout (docs/transformers.md)
            missing = [k for k in ("x", "y") if k not in f.files]
            if missing:
                raise DataError(f"data file {path.name} has no array {' or '.join(map(repr, missing))}; "
                                f"it needs 'x' (inputs) and 'y' (labels), found {sorted(f.files)}")
            return f["x"], f["y"]
    except DataError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "Object arrays" in str(exc):
            raise DataError(f"data file {path.name} holds Python objects; modtest reads numeric .npz "
                            f"arrays only") from None
        raise DataError(f"cannot read data file {path.name}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - zip/format errors become one line
        raise DataError(f"cannot read data file {path.name}: {type(exc).__name__}: {exc}") from None


def _check_layout(adapter, shape: tuple, want: tuple) -> None:
    """Images in the other layout than the model's (NHWC data for an NCHW torch model, or the
    reverse): one line saying so and how to transpose."""
    if len(shape) != 4 or len(want) != 3 or None in want or tuple(shape[1:]) == tuple(want):
        return
    first = getattr(adapter, "layout", "channels_last") == "channels_first"
    other = (want[1], want[2], want[0]) if first else (want[2], want[0], want[1])
    if tuple(shape[1:]) != other:
        return
    if first:
        raise DataError(f"x has shape {tuple(shape)}, channels last (N, H, W, C), but this "
                        f"{adapter.framework} model reads channels first (N, C, H, W) = (N, "
                        f"{', '.join(map(str, want))}); pass x.transpose(0, 3, 1, 2)")
    raise DataError(f"x has shape {tuple(shape)}, channels first (N, C, H, W), but this {adapter.framework} "
                    f"model reads channels last (N, H, W, C) = (N, {', '.join(map(str, want))}); pass "
                    f"x.transpose(0, 2, 3, 1)")


def check_data(model, x, y) -> tuple[np.ndarray, np.ndarray]:
    """Check that (x, y) fits ``model`` (a model or adapter): input shape, finite values, integer
    labels in range. One-hot ``y`` is turned into class indices. Returns float32 ``x`` and int64 ``y``.
    """
    from modtest.frameworks import adapt

    adapter = adapt(model)
    x = np.asarray(x)
    if x.ndim >= 2 and len(x) and x.dtype != object:
        adapter.bind_data(x)  # a torch nn.Module is exported with an example from the data
    _check_layout(adapter, x.shape, tuple(adapter.input_shape))
    return check_data_fits(adapter.input_shape, adapter.n_classes, x, y)


def check_data_fits(input_shape, n_classes: int | None, x, y) -> tuple[np.ndarray, np.ndarray]:
    """:func:`check_data` against a model's ``input_shape`` (without the batch axis; None for a free
    dimension) and ``n_classes`` (None: unknown, the label range is not checked)."""
    x = np.asarray(x)
    y = np.asarray(y)
    if x.dtype == object or y.dtype == object:
        raise DataError("data arrays must be numeric")
    want = tuple(input_shape)
    if x.ndim == len(want) and x.ndim >= 1 and len(want) >= 1 and x.shape == want:
        raise DataError(f"x has shape {x.shape}: it needs a batch axis, {('N',) + want}")
    if tuple(x.shape[1:]) != tuple(d if d is not None else s for d, s in zip(want, x.shape[1:])) \
            or x.ndim != len(want) + 1:
        raise DataError(f"x has shape {x.shape} but the model expects (N, {', '.join(str(d) for d in want)})")
    if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
        raise DataError("x contains NaN, infinite or non-numeric values")
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]  # a column of class indices
    elif y.ndim == 2:
        if n_classes is not None and y.shape[1] != n_classes:
            raise DataError(f"y has shape {y.shape}: one-hot labels need one column per class, and the model "
                            f"has {n_classes} outputs; pass ({len(y)}, {n_classes}) one-hot rows or ({len(y)},) "
                            f"class indices")
        y = y.argmax(axis=1)
    if y.ndim != 1:
        raise DataError(f"y has shape {y.shape}; labels must be class indices (N,) or one-hot rows "
                        f"(N, {n_classes if n_classes is not None else 'classes'})")
    if len(y) != len(x):
        raise DataError(f"x has {len(x)} examples but y has {len(y)} labels")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
        else:
            raise DataError("y must hold integer class labels")
    if n_classes is not None and len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"labels must lie in [0, {n_classes - 1}] for a model with {n_classes} outputs; "
                        f"found {int(y.min())}..{int(y.max())}")
    if n_classes is not None and len(x) < n_classes:
        raise DataError(f"{len(x)} examples are fewer than the model's {n_classes} classes")
    return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)
