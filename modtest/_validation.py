"""Validation at the boundary: one wording for every entry point (API, CLI, pytest options)."""
from __future__ import annotations

import numbers
import re
from pathlib import Path

import numpy as np

from modtest.errors import DataError, InvalidInput, ModelLoadError

#: how messages name the trust option; :func:`for_interface` puts the flag of the interface in use
TRUST_HINT = "trust=True (--modtest-trust-model)"
_TRUST_FLAGS = {"api": "trust=True", "pytest": "--modtest-trust-model", "cli": "--trust-model"}


def for_interface(message: str, interface: str) -> str:
    """``message`` naming the options of ``interface`` ("api", "pytest" or "cli")."""
    return str(message).replace(TRUST_HINT, _TRUST_FLAGS[interface])


def _bad_member_path(name: str) -> str | None:
    """Why a zip member's name could point outside the folder it is extracted to, or None."""
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return "an absolute path"
    if "\\" in name:
        return "a path with a backslash"
    if ".." in name.replace("\\", "/").split("/"):
        return "a path with '..'"
    if "\x00" in name:
        return "a path with a NUL byte"
    return None


def check_archive_members(filename: str, names, allowed, writer: str) -> None:
    """Refuse an archive whose members are not the ones ``writer`` produces: absolute paths, ``..``,
    pickles, or any name ``allowed(name)`` rejects. One line naming the first such member; called
    before the framework opens the file (nothing is read from it but the names)."""
    for name in names:
        why = _bad_member_path(name)
        if why is None and name.lower().endswith((".pkl", ".pickle")):
            why = "a pickle"
        if why is None and not allowed(name):
            why = "not a file " + writer + " writes"
        if why is not None:
            raise ModelLoadError(f"{filename}: refused before loading: its archive member {name!r} is {why}; "
                                 f"modtest reads only the members {writer} writes (save the model again)")


def check_output_path(flag: str, path, *, folder: bool = False) -> None:
    """Refuse, before any work, an output path that cannot be written: a folder where the file goes
    (or a file where the folder goes, ``folder``), a parent that is a file, a folder that is not
    writable. Missing parent folders are fine: they are created when the file is written."""
    import os

    p = Path(path).expanduser()
    if not folder and p.is_dir():
        raise InvalidInput(f"{flag} {p}: is a folder; name the file to write")
    if folder and p.exists() and not p.is_dir():
        raise InvalidInput(f"{flag} {p}: is a file, not a folder")
    anc = p if folder else p.parent
    anc = Path(os.path.abspath(anc))
    while not anc.exists():
        if anc.parent == anc:
            break
        anc = anc.parent
    if anc.exists() and not anc.is_dir():
        raise InvalidInput(f"{flag} {p}: cannot create its folder, {anc} is a file")
    if anc.is_dir() and not os.access(anc, os.W_OK | os.X_OK):
        raise InvalidInput(f"{flag} {p}: the folder {anc} is not writable")


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


def check_k_fits(flag: str, k: int, n_nodes: int) -> None:
    """An option's k against a model's node count, before the graph is built (:func:`check_k` checks
    it against the nodes with edges when clustering)."""
    if k >= n_nodes:
        raise InvalidInput(f"{flag}: k={k} is too large: the model's graph has only {n_nodes} nodes "
                           f"(k must be smaller than its number of nodes with edges)")


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
    if n_classes is not None and n_classes < 2:
        check_classifier(n_classes)
    if n_classes is not None and len(y) and (y.min() < 0 or y.max() >= n_classes):
        raise DataError(f"labels must lie in [0, {n_classes - 1}] for a model with {n_classes} outputs; "
                        f"found {int(y.min())}..{int(y.max())}")
    if n_classes is not None and len(x) < n_classes:
        raise DataError(f"{len(x)} examples are fewer than the model's {n_classes} classes")
    return x.astype(np.float32, copy=False), y.astype(np.int64, copy=False)


def check_two_classes(y, n_classes: int | None = None, where: str = "the data", name: str | None = None) -> None:
    """Data of fewer than two classes cannot show a lesion's effect: one line (``name``: the class).
    Checked where an audit takes its data (``--data`` of the CLI and of pytest, an assertion's
    ``data``); the probe functions themselves accept it (an engine check on self-labelled data)."""
    present = np.unique(np.asarray(y))
    if len(present) and len(present) < 2:
        of = f" of the model's {n_classes}" if n_classes is not None else ""
        which = name if name is not None else f"every label is {int(present[0])}"
        raise DataError(f"{where} holds a single class ({which}); accuracy and its drop under a lesion need "
                        f"examples of at least two{of} classes")


def check_classifier(n_classes: int) -> None:
    """A model with fewer than two outputs is not a classifier: one line saying what modtest audits."""
    if n_classes is not None and n_classes < 2:
        raise DataError(f"the model has {n_classes} output (a regression, or a binary classifier with one "
                        f"sigmoid unit); modtest audits classifiers, whose accuracy a lesion can lower: one output "
                        f"per class, e.g. a final Dense(n_classes) with softmax (a binary task: Dense(2)), and "
                        f"labels 0..n_classes-1")


def class_coverage(y, n_classes: int | None) -> str | None:
    """A note when the data lacks some of the model's classes (None when it has them all)."""
    if n_classes is None:
        return None
    present = set(np.unique(np.asarray(y)).tolist())
    missing = [c for c in range(int(n_classes)) if c not in present]
    if not missing:
        return None
    shown = ", ".join(map(str, missing[:10])) + (f" (+{len(missing) - 10} more)" if len(missing) > 10 else "")
    return (f"the data holds {len(present)} of the model's {n_classes} classes (no examples of class "
            f"{shown}); the audit measures the model on those {len(present)} only")
