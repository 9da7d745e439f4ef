"""Feature visualization engine: transforms, parameterizations, Adam, batching."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from modtest.errors import InvalidInput  # noqa: E402
from modtest.frameworks.keras import visualize as V  # noqa: E402

IMG = np.arange(16, dtype="float32").reshape(1, 4, 4, 1)


# ------------------------------------------------------------------------------- transforms


def test_pad_constant_and_default_fill():
    out = V.pad(1)(IMG, fill=0.5)[0, ..., 0]
    want = np.full((6, 6), 0.5, dtype="float32")
    want[1:5, 1:5] = IMG[0, ..., 0]
    np.testing.assert_array_equal(out, want)
    out = V.pad(1, value=-1.0)(IMG, fill=0.5)[0, ..., 0]
    assert out[0, 0] == -1.0 and out[1, 1] == 0.0
    assert V.pad(3).out_hw((4, 5)) == (10, 11)


def test_pad_reflect():
    out = V.pad(1, mode="reflect")(IMG)[0, ..., 0]
    np.testing.assert_array_equal(out[1:5, 1:5], IMG[0, ..., 0])
    np.testing.assert_array_equal(out[0, 1:5], IMG[0, 1, :, 0])  # row 1 mirrored above row 0


def test_jitter_is_a_crop_at_the_given_offset():
    x = np.concatenate([IMG, IMG + 100])
    out = V.jitter(1)(x, [[0, 1], [1, 0]])[..., 0]
    np.testing.assert_array_equal(out[0], [[1, 2, 3], [5, 6, 7], [9, 10, 11]])
    np.testing.assert_array_equal(out[1], [[104, 105, 106], [108, 109, 110], [112, 113, 114]])
    assert V.jitter(2).out_hw((8, 6)) == (6, 4)


def test_jitter_draws_offsets_in_range():
    draws = V.jitter(2).sample(np.random.default_rng(0), 500)
    assert draws.shape == (500, 2)
    assert set(np.unique(draws)) == {0.0, 1.0, 2.0}


def test_rotate_90_degrees_is_rot90_counterclockwise():
    out = V.random_rotate([90])(IMG, [[90]])[0, ..., 0]
    np.testing.assert_allclose(out, np.rot90(IMG[0, ..., 0]), atol=1e-5)
    out = V.random_rotate([0])(IMG, [[0]])[0, ..., 0]
    np.testing.assert_allclose(out, IMG[0, ..., 0], atol=1e-6)


def test_rotate_45_degrees_by_hand():
    # 3x3 image, centre (1, 1). Counter-clockwise by 45 degrees, output (0, 1) (top centre) shows
    # the source point at 45 degrees up-right: row 1 - sin45, col 1 + cos45 = (0.2929, 1.7071).
    x = np.arange(9, dtype="float32").reshape(1, 3, 3, 1)
    out = V.random_rotate([45])(x, [[45]], fill=-1.0)[0, ..., 0]
    a = 1 - np.sqrt(0.5)  # fractional row offset; the column offset is 1 - a
    want01 = (1 - a) * a * 1 + (1 - a) * (1 - a) * 2 + a * a * 4 + a * (1 - a) * 5
    assert out[0, 1] == pytest.approx(want01, abs=1e-5)
    # output (0, 0) shows the point straight up at distance sqrt2: row 1 - 1.414 = -0.414, col 1,
    # between the fill (weight 0.414) and pixel (0, 1) = 1 (weight 0.586)
    b = np.sqrt(2) - 1
    assert out[0, 0] == pytest.approx((1 - b) * 1 + b * -1.0, abs=1e-5)
    assert out[1, 1] == pytest.approx(4.0)


def test_scale_zooms_about_the_centre_by_hand():
    out = V.random_scale([2.0])(IMG, [[2.0]])[0, ..., 0]
    # output (0, 0) samples (0.75, 0.75): 0.75 * 4 + 0.75 = 3.75; rows step 0.5 * 4, cols 0.5
    want = 3.75 + 2.0 * np.arange(4)[:, None] + 0.5 * np.arange(4)[None, :]
    np.testing.assert_allclose(out, want, atol=1e-5)
    out = V.random_scale([0.5])(IMG, [[0.5]], fill=-7.0)[0, ..., 0]
    # output (1, 1) samples (1.5 + (1 - 1.5) * 2) = 0.5 -> (0.5, 0.5): mean of 0, 1, 4, 5
    assert out[1, 1] == pytest.approx(2.5)
    assert out[0, 0] == pytest.approx(-7.0)  # samples (-1.5, -1.5): all fill


def test_transform_chain_and_fit_back_to_size():
    chain = V.standard_transforms()
    hw = (224, 224)
    for t in chain:
        hw = t.out_hw(hw)
    assert hw == (224 + 24 - 8 - 4, 224 + 24 - 8 - 4)
    fit = V._fit((4, 4))
    big = np.arange(36, dtype="float32").reshape(1, 6, 6, 1)
    np.testing.assert_array_equal(fit(big)[0, ..., 0], big[0, 1:5, 1:5, 0])
    small = np.ones((1, 2, 2, 1), dtype="float32")
    out = fit(small, fill=0.25)[0, ..., 0]
    assert out[1:3, 1:3].tolist() == [[1, 1], [1, 1]] and out[0, 0] == 0.25


def test_standard_transform_values_match_lucid():
    pad_, j8, scale, rot, j4 = V.standard_transforms()
    assert (pad_.w, pad_.mode, j8.d, j4.d) == (12, "constant", 8, 4)
    assert scale.scales == tuple(1 + (i - 5) / 50 for i in range(11))
    assert rot.angles == tuple(float(a) for a in list(range(-10, 11)) + [0] * 5)
    assert [repr(t) for t in V.resolve_transforms("auto", (28, 28))] == [
        "jitter(2)", f"random_scale({list(scale.scales)})"]
    assert [repr(t) for t in V.resolve_transforms("auto", (8, 8))][0] == "jitter(1)"
    assert V.resolve_transforms(None, (28, 28)) == []


# ------------------------------------------------------------------------------- parameterizations


def test_fft_parameterization_is_lucids_irfft2():
    for shape in ((5, 7, 1), (6, 6, 3)):
        param = V._FFTParam(shape, (0.0, 1.0))
        p = np.random.default_rng(0).standard_normal((2,) + param.param_shape).astype("float32")
        got = keras.ops.convert_to_numpy(param.spatial(keras.ops.convert_to_tensor(p)))
        h, w, _ = shape
        for b in range(2):
            spec = (p[b, 0] + 1j * p[b, 1]) * param.scale
            want = np.fft.irfft2(spec)[:, :h, :w] / 4.0  # (C, H, W); odd W: one column cut
            np.testing.assert_allclose(got[b], want.transpose(1, 2, 0), atol=1e-4)
        img = keras.ops.convert_to_numpy(param.to_image(keras.ops.convert_to_tensor(p)))
        assert img.min() >= 0.0 and img.max() <= 1.0


# ------------------------------------------------------------------------------- optimisation


def _linear_model(w):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((w.size,)), keras.layers.Dense(1, name="lin")])
    model.get_layer("lin").set_weights([w.reshape(-1, 1).astype("float32"), np.zeros(1, "float32")])
    return model


@pytest.mark.parametrize("param", ["pixel", "fft"])
def test_linear_unit_image_aligns_with_weights(param):
    """Adam on a linear objective takes sign-like steps, so the image goes to sign(w): with weights
    of (nearly) one magnitude on a pattern and 0 elsewhere, the image is aligned with w."""
    rng = np.random.default_rng(1)
    pattern = np.zeros((8, 8))
    pattern[1:7, 2] = 1.0
    pattern[1:7, 5] = -1.0
    pattern[1, 2:6] = 1.0
    w = (pattern * (1.0 + 0.1 * rng.random((8, 8)))).ravel()
    model = _linear_model(w)
    kw = dict(lr=0.05, param=param, transforms=None, value_range=(-1.0, 1.0))
    _, s0 = V.render(model, [("lin", [0])], steps=0, **kw)
    images, s1 = V.render(model, [("lin", [0])], steps=100, **kw)
    assert images.shape == (1, 8, 8, 1)
    assert s1[0] > s0[0] + 1.0
    img = images[0].ravel()
    cos = img @ w / (np.linalg.norm(img) * np.linalg.norm(w))
    # pixel: the paper's claim, cos > 0.9. fft: pixels of zero weight are coupled through the
    # spectrum and drift with the rest, so only a clear positive alignment is required.
    assert cos > (0.9 if param == "pixel" else 0.5), cos
    assert images.min() >= -1.0 and images.max() <= 1.0


def _small_cnn():
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((10, 10, 1)),
        keras.layers.Conv2D(6, 3, padding="same", name="c1"),
        keras.layers.ReLU(name="r1"),
        keras.layers.Conv2D(6, 3, activation="relu", name="c2"),
        keras.layers.Flatten(),
        keras.layers.Dense(8, activation="relu", name="d1"),
        keras.layers.Dense(3, activation="softmax", name="out"),
    ])


OBJS = [("c1", [0, 1, 2]), ("d1", [1, 2]), ("c2", [4]), ("c1", [3, 5]), ("d1", [0, 3, 4, 5])]


ALL_TRANSFORMS = [V.pad(2), V.jitter(2), V.random_scale([0.9, 1.0, 1.1]),
                  V.random_rotate([-10, 0, 10]), V.jitter(1)]


@pytest.mark.parametrize("param,transforms", [("pixel", "auto"), ("fft", ALL_TRANSFORMS)])
def test_batched_equals_one_at_a_time(param, transforms):
    """Same images (atol 1e-4) and scores (rtol 1e-4) whether optimised in a batch, in chunks of 2,
    or one objective at a time with the same per-objective seed keys."""
    model = _small_cnn()
    kw = dict(steps=25, param=param, transforms=transforms)
    batch, scores = V.render(model, OBJS, seed=7, batch_size=64, **kw)
    chunked, cscores = V.render(model, OBJS, seed=7, batch_size=2, **kw)
    np.testing.assert_allclose(chunked, batch, atol=1e-4)
    np.testing.assert_allclose(cscores, scores, rtol=1e-4, atol=1e-6)
    for i, obj in enumerate(OBJS):
        one, s = V.render(model, [obj], seed=[(7, i)], **kw)
        np.testing.assert_allclose(one[0], batch[i], atol=1e-4)
        assert s[0] == pytest.approx(scores[i], rel=1e-4, abs=1e-6)


def test_render_raises_objective_and_reports_scores():
    model = _small_cnn()
    _, s0 = V.render(model, OBJS, steps=0)
    images, s1, hist = V.render(model, OBJS, steps=40, return_history=True)
    assert images.shape == (len(OBJS), 10, 10, 1)
    assert 0.0 <= images.min() and images.max() <= 1.0
    assert hist.shape == (1, 40)
    assert (s1 >= s0 - 1e-6).all() and s1.sum() > s0.sum()
    acts = V.unit_activations(model, images, ["c1", "d1"])  # c1 resolves to its ReLU
    assert acts["c1"].shape == (5, 6) and acts["d1"].shape == (5, 8)
    assert s1[0] == pytest.approx(acts["c1"][0, [0, 1, 2]].mean(), rel=1e-5)
    assert (acts["c1"] >= 0).all()


def test_render_is_deterministic_and_seed_dependent():
    model = _small_cnn()
    a, _ = V.render(model, OBJS[:2], steps=10, seed=1)
    b, _ = V.render(model, OBJS[:2], steps=10, seed=1)
    c, _ = V.render(model, OBJS[:2], steps=10, seed=2)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 1e-3


def test_flat_inputs_use_square_images_and_logits_get_softmaxed():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(5, activation="relu", name="h"),
                              keras.layers.Dense(3, name="logits")])
    images, _ = V.render(model, [("h", [0, 1])], steps=5)
    assert images.shape == (1, 4, 4, 1)
    p = V.output_probabilities(model, images)
    assert p.shape == (1, 3) and p.sum() == pytest.approx(1.0)
    assert V.entropy([[0.5, 0.5, 0.0]])[0] == pytest.approx(np.log(2))


def test_render_rejects_bad_arguments():
    model = _small_cnn()
    with pytest.raises(InvalidInput, match="outside layer 'd1'"):
        V.render(model, [("d1", [8])], steps=1)
    with pytest.raises(InvalidInput, match="no layer named 'nope'"):
        V.render(model, [("nope", [0])], steps=1)
    with pytest.raises(InvalidInput, match="param"):
        V.render(model, [("d1", [0])], steps=1, param="cppn")
    with pytest.raises(InvalidInput, match="non-empty"):
        V.render(model, [], steps=1)
    with pytest.raises(InvalidInput, match="seed"):
        V.render(model, [("d1", [0])], steps=1, seed=[1, 2])
