"""Evaluation data: folders of class subfolders of images (checked against Keras's own loader), the
stratified subsample, one-line errors, the model signature read from a config without Keras."""
import numpy as np
import pytest

from modtest._validation import check_data_fits
from modtest.data import (
    bilinear_resize,
    image_folder_index,
    load_image_folder,
    read_data,
    shipped_data_for,
    stratified_subsample,
)
from modtest.errors import DataError


def _save(path, array, mode):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8), mode=mode).save(path)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """Three classes (sorted names differ from creation order), images of several sizes, a nested
    folder, a hidden folder and a text file that must be skipped."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    sizes = [(10, 7), (5, 12), (16, 16), (9, 9)]
    for name in ["zebra", "ant", "moth"]:
        for i, (h, w) in enumerate(sizes):
            sub = root / name / ("nested" if i == 3 else "")
            _save(sub / f"img{i}.png", rng.integers(0, 256, (h, w, 3)), "RGB")
    _save(root / ".hidden" / "x.png", rng.integers(0, 256, (4, 4, 3)), "RGB")
    (root / "ant" / "notes.txt").write_text("not an image")
    gray = tmp_path_factory.mktemp("gray")
    for name in ("a", "b"):
        for i, (h, w) in enumerate(sizes[:3]):
            _save(gray / name / f"g{i}.png", rng.integers(0, 256, (h, w)), "L")
    return root, gray


def _keras_reference(folder, size, color_mode):
    import keras

    ds = keras.utils.image_dataset_from_directory(folder, labels="inferred", label_mode="int", color_mode=color_mode,
                                                  image_size=size, shuffle=False, batch_size=None, verbose=False)
    xs, ys = zip(*[(np.asarray(x), int(y)) for x, y in ds])
    return np.stack(xs), np.asarray(ys), ds.class_names


@pytest.mark.parametrize("size", [(8, 6), (12, 20), (16, 16)])
def test_folder_matches_keras_image_dataset_from_directory(image_folder, size):
    root, gray = image_folder
    for folder, channels, mode in ((root, 3, "rgb"), (gray, 1, "grayscale")):
        x, y, classes = load_image_folder(folder, (*size, channels))
        kx, ky, kclasses = _keras_reference(folder, size, mode)
        assert classes == kclasses and y.tolist() == ky.tolist()
        assert x.dtype == np.float32 and x.shape == kx.shape
        np.testing.assert_allclose(x, kx, atol=2e-3)  # float32 rounding in TensorFlow's resize


def test_folder_labels_and_order(image_folder):
    root, _gray = image_folder
    files, labels, classes = image_folder_index(root)
    assert classes == ["ant", "moth", "zebra"]  # sorted names, hidden folder skipped
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert [f.name for f in files[:4]] == ["img0.png", "img1.png", "img2.png", "img3.png"]  # text file skipped
    assert files[3].parent.name == "nested"


def test_resize_is_the_identity_at_the_same_size_and_bilinear_otherwise():
    img = np.arange(12, dtype=np.float32).reshape(3, 4, 1)
    assert np.array_equal(bilinear_resize(img, 3, 4), img)
    up = bilinear_resize(np.array([[[0.0], [10.0]]]), 1, 4)[0, :, 0]
    np.testing.assert_allclose(up, [0.0, 2.5, 7.5, 10.0])  # half-pixel centres, clamped edges


def test_channels_first_layout(image_folder):
    root, _gray = image_folder
    x_last, _, _ = load_image_folder(root, (8, 6, 3))
    x_first, _, _ = load_image_folder(root, (3, 8, 6), layout="channels_first")
    assert np.array_equal(x_first, x_last.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("setup, call, match", [
    ("empty", lambda p: image_folder_index(p), "has no class subfolders"),
    ("no_images", lambda p: image_folder_index(p), "has no images"),
    ("corrupt", lambda p: load_image_folder(p, (4, 4, 3)), "cannot read image"),
    ("ok", lambda p: load_image_folder(p, (64,)), "needs a model with image input"),
    ("ok", lambda p: load_image_folder(p, (None, None, 3)), "no fixed image size"),
    ("ok", lambda p: load_image_folder(p, (4, 4, 2)), r"1 \(grayscale\), 3"),
    ("ok", lambda p: load_image_folder(p, (4, 4, 3), n_classes=1), "2 class subfolders but the model has 1"),
])
def test_folder_errors_are_one_line(tmp_path, setup, call, match):
    rng = np.random.default_rng(1)
    if setup == "no_images":
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / "x.txt").write_text("x")
    elif setup == "corrupt":
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / "x.png").write_bytes(b"not a png")
        _save(tmp_path / "b" / "i.png", rng.integers(0, 256, (5, 5, 3)), "RGB")  # two classes (one is refused)
    elif setup == "ok":
        for name in ("a", "b"):
            _save(tmp_path / name / "i.png", rng.integers(0, 256, (5, 5, 3)), "RGB")
    with pytest.raises(DataError, match=match) as info:
        call(tmp_path)
    assert "\n" not in str(info.value)


def test_read_data_needs_the_input_shape_for_a_folder(image_folder):
    with pytest.raises(DataError, match="input shape is needed"):
        read_data(image_folder[0])


def test_stratified_subsample_keeps_proportions_order_and_is_deterministic():
    y = np.repeat(np.arange(4), [40, 30, 20, 10])
    x = np.arange(100, dtype=np.float32)[:, None]
    xs, ys = stratified_subsample(x, y, 50)
    assert len(xs) == 50 and np.bincount(ys).tolist() == [20, 15, 10, 5]
    assert np.all(np.diff(xs[:, 0]) > 0)  # original order
    assert np.array_equal(ys, y[xs[:, 0].astype(int)])
    xs2, _ = stratified_subsample(x, y, 50)
    assert np.array_equal(xs, xs2)
    assert stratified_subsample(x, y, 500)[0] is x  # asking for more keeps everything
    with pytest.raises(DataError, match="cannot draw a stratified subsample of 3"):
        stratified_subsample(x, y, 3)  # fewer than the 4 classes


def test_label_shapes():
    x = np.zeros((6, 2), np.float32)
    onehot = np.eye(3)[[0, 1, 2, 0, 1, 2]]
    assert check_data_fits((2,), 3, x, onehot)[1].tolist() == [0, 1, 2, 0, 1, 2]
    assert check_data_fits((2,), 3, x, np.array([[0], [1], [2], [0], [1], [2]]))[1].tolist() == [0, 1, 2, 0, 1, 2]
    with pytest.raises(DataError, match=r"y has shape \(6, 5\): one-hot labels need one column per class, and "
                                        r"the model has 3 outputs"):
        check_data_fits((2,), 3, x, np.eye(5)[[0, 1, 2, 0, 1, 2]])


def test_shipped_data_only_for_a_model_it_fits():
    x, y = shipped_data_for((8, 8, 1), 10)
    assert x.shape == (540, 8, 8, 1)
    with pytest.raises(DataError, match=r"no --data given, and the shipped digits data .* does not fit this model "
                                        r"\(x has shape \(540, 8, 8, 1\) but the model expects \(N, 32, 32, 3\)\): "
                                        r"pass --data PATH"):
        shipped_data_for((32, 32, 3), 10)
    with pytest.raises(DataError, match="labels must lie in"):
        shipped_data_for((8, 8, 1), 5)


def test_config_signature_matches_the_loaded_model(tmp_path):
    import keras

    from modtest.frameworks import adapt, file_signature

    inp = keras.Input((12, 10, 3))
    h = keras.layers.Conv2D(4, 3)(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Softmax()(keras.layers.Dense(7)(h))
    models = {"functional": keras.Model(inp, out),
              "sequential": keras.Sequential([keras.Input((5,)), keras.layers.Dense(3),
                                              keras.layers.Dropout(0.1), keras.layers.Activation("softmax")])}
    paths = [tmp_path / f"{name}{suffix}" for name in models for suffix in (".keras", ".h5")]
    for path in paths:
        models[path.stem].save(path)
    from modtest._examples import EXAMPLE_CNN, EXAMPLE_MODEL

    for path in paths + [EXAMPLE_MODEL, EXAMPLE_CNN]:
        adapter = adapt(path)
        assert file_signature(path) == (adapter.input_shape, adapter.n_classes), path.name


def test_pytest_session_reads_an_image_folder_and_subsamples(pytester, image_folder, modtest_stub):
    """A folder as --data under pytest: resized to the model's input (the stub model: 8x8x1, 10
    classes), labels from the sorted folder names, subsampled with --modtest-max-examples."""
    pytester = modtest_stub({})
    pytester.makepyfile("""
        import numpy as np

        def test_data(eval_data):
            x, y = eval_data
            assert x.shape == (6, 8, 8, 1) and x.dtype == np.float32
            assert sorted(y.tolist()) == [0, 0, 1, 1, 2, 2]
    """)
    res = pytester.runpytest_subprocess("-p", "modtest", "-p", "no:cacheprovider", "--model", "m.keras",
                                        "--data", str(image_folder[0]), "--modtest-max-examples", "6")
    res.assert_outcomes(passed=1)
