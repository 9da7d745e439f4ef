"""Feature visualization on torch programs: the transforms and parameterizations shared with Keras
compute the same with numpy, torch and keras.ops; torch autograd renders images that raise their
objective, deterministically and independently of batching; twins see the same activations."""
import _torch_models as tm
import numpy as np
import pytest

from modtest.frameworks import adapt
from modtest.frameworks import imaging as I

IMG = np.random.default_rng(0).random((3, 9, 7, 2)).astype("float32")
TRANSFORMS = [I.pad(2), I.pad(1, mode="reflect"), I.pad(1, mode="symmetric"), I.jitter(2),
              I.random_scale([0.8, 1.3]), I.random_rotate([-17, 30]), I._fit((6, 6)), I._fit((11, 9))]


@pytest.mark.parametrize("t", TRANSFORMS, ids=repr)
def test_transforms_agree_across_array_libraries(t):
    torch = tm.torch()
    from keras import ops

    params = t.sample(np.random.default_rng(1), 3).astype("float32")
    want = t(IMG, params, fill=0.25)  # numpy
    got_t = t.apply(torch.as_tensor(IMG), torch.as_tensor(params), 0.25).numpy()
    got_k = ops.convert_to_numpy(t.apply(ops.convert_to_tensor(IMG), ops.convert_to_tensor(params), 0.25))
    np.testing.assert_allclose(got_t, want, atol=2e-5)
    np.testing.assert_allclose(got_k, want, atol=2e-5)


def test_gradients_flow_through_transforms_and_fft_param():
    torch = tm.torch()
    param = I._FFTParam((32, 32, 3), (0.0, 1.0))
    p = torch.as_tensor(param.init(np.random.default_rng(0))[None]).requires_grad_(True)
    x = param.to_image(p)
    for t in I.standard_transforms()[1:]:
        x = t.apply(x, torch.as_tensor(t.sample(np.random.default_rng(2), 1).astype("float32")), 0.5)
    (g,) = torch.autograd.grad(x.sum(), p)
    assert g.shape == p.shape and torch.isfinite(g).all() and g.abs().sum() > 0
    start = param.init(np.random.default_rng(3))[None]
    img = param.to_image(torch.as_tensor(start)).numpy()
    np.testing.assert_allclose(img, I.NumpyOps.convert_to_numpy(param.to_image(start)), atol=1e-5)


@pytest.fixture(scope="module")
def cnn_adapter():
    model = tm.cnn(seed=3, kind="residual")
    x = tm.data(tm.input_shape("residual"), n=20)
    return adapt(tm.export(model, x)), x


def test_render_raises_the_objective_and_is_deterministic(cnn_adapter):
    adapter, _x = cnn_adapter
    vis = adapter.visualizer()
    objs = [("c1", [0, 1]), ("c2", [2]), ("c3", [0, 3]), ("c1", [3])]
    kw = dict(value_range=(0.0, 1.0), transforms="small", lr=0.05)
    _, s0 = vis.render(objs, steps=0, seed=7, **kw)
    images, s1, hist = vis.render(objs, steps=30, seed=7, return_history=True, **kw)
    assert images.shape == (4, 8, 8, 2) and images.min() >= 0 and images.max() <= 1
    assert (s1 >= s0).all() and (s1 > s0).sum() >= 3 and hist.shape == (1, 30)  # a dead unit stays at 0
    chunked, sc = vis.render(objs, steps=30, seed=7, batch_size=1, layers=["c1", "c2", "c3"], **kw)
    batch, sb = vis.render(objs, steps=30, seed=7, layers=["c1", "c2", "c3"], **kw)
    np.testing.assert_allclose(chunked, batch, atol=1e-5)
    one, _ = vis.render([objs[2]], steps=30, seed=[(7, 2)], layers=["c1", "c2", "c3"], **kw)
    np.testing.assert_allclose(one[0], batch[2], atol=1e-5)
    other, _ = vis.render(objs, steps=30, seed=8, **kw)
    assert np.abs(other - images).max() > 1e-3


def test_visualization_study_and_correlation_on_a_torch_model(cnn_adapter):
    from modtest import cluster, visualization_study
    from modtest.probes.correlation import correlation_visualization

    adapter, x = cnn_adapter
    part = cluster(adapter, k=3, seed=0)
    res = visualization_study(adapter, part, n_random=3, steps=8, min_size=2, batch_size=32)
    assert res.rows and set(res.network) == {"input_coherence", "output_coherence", "activational_variance"}
    assert res.settings["engine"] == "modtest.visualize/torch-torch"
    assert all(len(r["random_scores"]) == 3 and 0 <= r["p_input"] <= 1 for r in res.rows)
    pics = correlation_visualization(adapter, "c2", x)
    assert pics.shape == (adapter.program.units["c2"].width,) + x.shape[1:]
    assert np.isfinite(pics).all() and np.abs(pics).max() <= 1


def test_twins_see_the_same_activations_and_images():
    """A Keras MLP and its torch twin: the same per-unit activations and output probabilities on the same
    images, and (no transforms, pixel images) the same rendered images to float precision."""
    from _models import tiny_mlp
    from _torch_twins import torch_twin

    from modtest.frameworks.keras import KerasVisualizer

    km = tiny_mlp(seed=4, n_in=16)
    twin, _ = torch_twin(km)
    ta = adapt(twin)
    kv, tv = KerasVisualizer(km), ta.visualizer()
    images = np.random.default_rng(0).random((5, 4, 4, 1)).astype("float32")
    ak, pk = kv.forward(images, ["h1", "h2"], with_output=True)
    at, pt = tv.forward(images, ["h1", "h2"], with_output=True)
    for layer in ("h1", "h2"):
        np.testing.assert_allclose(at[layer], ak[layer], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(pt, pk, rtol=1e-5, atol=1e-6)
    objs = [("h1", [0, 3]), ("h2", [1])]
    ik, sk = kv.render(objs, steps=10, transforms=None, seed=1)
    it, st = tv.render(objs, steps=10, transforms=None, seed=1)
    np.testing.assert_allclose(it, ik, atol=1e-4)
    np.testing.assert_allclose(st, sk, rtol=1e-4, atol=1e-5)
