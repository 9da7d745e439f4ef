"""Evaluation data from files: ``.npz`` archives, folders of class subfolders of images, the shipped
example (only for a model it fits), and a stratified subsample of large validation sets.

A folder follows Keras's ``image_dataset_from_directory`` convention: one subfolder per class, the
label of an image is its subfolder's position among the sorted subfolder names (names starting with
"." are skipped), images are found recursively (``.bmp``, ``.gif``, ``.jpeg``, ``.jpg``, ``.png``;
a GIF's first frame), read as grayscale, RGB or RGBA for a model with 1, 3 or 4 input channels,
resized to the model's input size by bilinear interpolation with half-pixel centres (what
``tf.image.resize`` does there; ``tests/test_data.py`` compares with Keras) and kept as float32
pixel values in [0, 255], unscaled, exactly as Keras gives them. Images are decoded with Pillow,
so no framework is needed. Every problem is one :class:`~modtest.errors.DataError` line.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from modtest.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "check_data_path", "read_data", "image_folder_index", "load_image_folder",
           "bilinear_resize", "stratified_subsample", "shipped_data_for", "NO_DATA_HINT"]

#: the image files Keras's image_dataset_from_directory reads
IMAGE_SUFFIXES = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}
NO_DATA_HINT = "pass --data PATH (an .npz with arrays x and y, or a folder of class subfolders of images)"


def image_folder_index(path) -> tuple[list[Path], np.ndarray, list[str]]:
    """``(files, labels, class_names)`` of a folder of class subfolders, in Keras's order (classes
    sorted by name; within a class, folders by path and files by name)."""
    root = Path(path)
    classes = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DataError(f"data folder {root} has no class subfolders: put each class's images in its own "
                        f"subfolder ({root}/<class>/*.png) or pass an .npz with arrays x and y")
    files, labels = [], []
    for label, name in enumerate(classes):
        for folder, _dirs, names in sorted(os.walk(root / name), key=lambda t: t[0]):
            for fname in sorted(names):
                if fname.lower().endswith(IMAGE_SUFFIXES):
                    files.append(Path(folder) / fname)
                    labels.append(label)
    if not files:
        more = ", ..." if len(classes) > 5 else ""
        raise DataError(f"data folder {root} has no images ({', '.join(IMAGE_SUFFIXES)}) in its "
                        f"{len(classes)} class subfolders ({', '.join(classes[:5])}{more})")
    from modtest._validation import check_two_classes

    check_two_classes(labels, where=f"data folder {root}", name=f"images only in {classes[labels[0]]}/")
    return files, np.asarray(labels, dtype=np.int64), classes


def _resize_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) weights of bilinear interpolation with half-pixel centres, no antialiasing:
    source coordinate ``(i + 0.5) * n_in / n_out - 0.5``, clamped to the edges."""
    m = np.zeros((n_out, n_in), dtype=np.float64)
    pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    base = np.floor(pos)
    frac = pos - base
    lo = np.clip(base, 0, n_in - 1).astype(np.int64)
    hi = np.clip(base + 1, 0, n_in - 1).astype(np.int64)
    rows = np.arange(n_out)
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


def bilinear_resize(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """An (H, W, C) image resized to (height, width, C) (see :func:`_resize_matrix`), float32."""
    img = np.asarray(img, dtype=np.float64)
    if img.shape[:2] == (height, width):
        return img.astype(np.float32)
    ry, rx = _resize_matrix(img.shape[0], height), _resize_matrix(img.shape[1], width)
    return np.einsum("yh,hwc,xw->yxc", ry, img, rx, optimize=True).astype(np.float32)


def _image_size(input_shape, layout: str) -> tuple[int, int, int]:
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise DataError(f"a folder of images needs a model with image input (height, width, channels); this "
                        f"model's input is {shape}: pass an .npz with arrays x and y")
    h, w, c = (shape[1], shape[2], shape[0]) if layout == "channels_first" else shape
    if h is None or w is None or c is None:
        raise DataError(f"the model's input {shape} has no fixed image size, so a folder of images cannot be "
                        f"resized to it: resize the images yourself and pass an .npz with arrays x and y")
    if c not in _MODES:
        raise DataError(f"the model's input has {c} channels; a folder of images can feed 1 (grayscale), 3 "
                        f"(RGB) or 4 (RGBA) channels: pass an .npz with arrays x and y")
    return int(h), int(w), int(c)


def load_image_folder(path, input_shape, layout: str = "channels_last", n_classes: int | None = None):
    """``(x, y, class_names)`` from a folder of class subfolders, resized to ``input_shape``."""
    from PIL import Image, UnidentifiedImageError

    h, w, c = _image_size(input_shape, layout)
    files, labels, classes = image_folder_index(path)
    if n_classes is not None and len(classes) > n_classes:
        raise DataError(f"data folder {path} has {len(classes)} class subfolders but the model has {n_classes} "
                        f"outputs (an image's label is its subfolder's position in sorted order)")
    x = np.empty((len(files), h, w, c), dtype=np.float32)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as im:
                im.seek(0)  # an animated GIF's first frame
                arr = np.asarray(im.convert(_MODES[c]), dtype=np.float32)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            first = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise DataError(f"cannot read image {f}: {first}") from None
        x[i] = bilinear_resize(arr.reshape(arr.shape[0], arr.shape[1], c), h, w)
    if layout == "channels_first":
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x, labels, classes


def check_data_path(path) -> None:
    """Cheap checks of ``--data`` before any framework is imported: an ``.npz`` archive is read
    (arrays ``x`` and ``y``); a folder must hold class subfolders with images."""
    from modtest._validation import load_data

    p = Path(path)
    if p.is_dir():
        image_folder_index(p)
    else:
        load_data(p)


def read_data(path, input_shape=None, layout: str = "channels_last", n_classes: int | None = None):
    """``(x, y)`` from an ``.npz`` file or a folder of class subfolders (resized to ``input_shape``)."""
    from modtest._validation import load_data

    p = Path(path)
    if p.is_dir():
        if input_shape is None:
            raise DataError(f"data folder {p}: the model's input shape is needed to resize its images")
        x, y, _classes = load_image_folder(p, input_shape, layout, n_classes)
        return x, y
    return load_data(p)


def stratified_subsample(x, y, n: int, seed: int = 0):
    """``n`` examples of ``(x, y)`` with the class proportions of ``y`` (scikit-learn's stratified
    split, ``random_state=seed``), in their original order; all of them when ``n >= len(x)``."""
    x, y = np.asarray(x), np.asarray(y)
    if n >= len(x):
        return x, y
    from sklearn.model_selection import train_test_split

    try:
        keep, _rest = train_test_split(np.arange(len(x)), train_size=int(n), stratify=y, random_state=seed)
    except ValueError as exc:
        raise DataError(f"cannot draw a stratified subsample of {n} from {len(x)} examples: "
                        f"{str(exc).splitlines()[0]}") from None
    keep = np.sort(keep)
    return x[keep], y[keep]


def shipped_data_for(input_shape, n_classes) -> tuple[np.ndarray, np.ndarray]:
    """The shipped digits test split, checked against a model's ``input_shape`` and ``n_classes``;
    a :class:`DataError` saying to pass ``--data`` when it does not fit."""
    from modtest._examples import EXAMPLE_DATA, example_path
    from modtest._validation import check_classifier, check_data_fits, load_data

    check_classifier(n_classes)  # no data would fit: saying to pass --data would not help
    x, y = load_data(example_path(EXAMPLE_DATA))
    try:
        return check_data_fits(input_shape, n_classes, x, y)
    except DataError as exc:
        raise DataError(f"no --data given, and the shipped digits data ({len(x)} examples of shape "
                        f"{tuple(x.shape[1:])}, 10 classes) does not fit this model ({exc}): {NO_DATA_HINT}") from None


class EvalData(tuple):
    """The ``eval_data`` fixture's ``(x, y)``: a tuple (``x, y = eval_data``, ``eval_data[0]``) whose repr
    is short (shapes, dtypes, classes), so that pytest, which prints a failing test's arguments, does
    not print the arrays. ``checked_for``: the fingerprint of the model it was checked against at the
    front door (:func:`modtest.audit.bind_data`; None: not checked), so nothing below re-checks it."""

    def __new__(cls, x, y, checked_for: str | None = None):
        out = super().__new__(cls, (x, y))
        out.checked_for = checked_for
        return out

    def __getnewargs__(self):
        return (*self, self.checked_for)

    @property
    def x(self):
        return self[0]

    @property
    def y(self):
        return self[1]

    def __repr__(self) -> str:
        x, y = self
        classes = np.unique(np.asarray(y)) if np.asarray(y).size else np.array([], dtype=np.int64)
        span = f"{int(classes[0])}..{int(classes[-1])}" if len(classes) else "none"
        return (f"EvalData(x: {tuple(np.shape(x))} {np.asarray(x).dtype}, y: {tuple(np.shape(y))} "
                f"{np.asarray(y).dtype}, {len(classes)} classes {span})")

    __str__ = __repr__
