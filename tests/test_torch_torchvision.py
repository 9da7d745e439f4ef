"""torchvision's resnet18, vgg11 and mobilenet_v2 (weights=None, 32x32 inputs) load from .pt2, cluster
and run a lesion study; the fast engine gives the reference labels on their first, middle and last
convolution. resnet18 runs by default; the others are slow tests."""
import _torch_models as tm
import numpy as np
import pytest

from modtest import cluster, lesion_study
from modtest.frameworks import adapt


@pytest.mark.parametrize("name", ["resnet18", pytest.param("vgg11", marks=pytest.mark.slow),
                                  pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_torchvision_model_from_pt2(name, tmp_path):
    torch = tm.torch()
    import torchvision  # the test extra installs it: missing is an error, not a skip
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(weights=None, num_classes=5).eval()
    tm._randomise_bn(model, 0)
    x = tm.data((3, 32, 32), n=16, seed=1) * 2 - 1
    path = tm.save(tm.export(model, x), tmp_path / f"{name}.pt2")
    adapter = adapt(path)
    layers = adapter.unit_layers()
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(layers) == len(convs) and adapter.input_shape == (3, 32, 32) and adapter.n_classes == 5
    with torch.no_grad():
        y = model(torch.as_tensor(x)).argmax(1).numpy()
    part = cluster(adapter, k=6, seed=0)
    assert part.graph.n_nodes == sum(c.out_channels for c in convs)
    split = [ly for ly in layers if any(s.layer == ly and s.fraction <= 0.9 for s in part.subclusters)]
    assert len(split) >= 2  # layers the partition splits (a layer in one cluster has nothing to test)
    chosen = {split[0], split[len(split) // 2], split[-1]}  # a lesion study over up to three of them
    subs = [s for s in part.subclusters if s.layer in chosen]
    res = lesion_study(adapter, subs, x, y, n_random=2, seed=0)
    assert res.rows and len(res.rows) + len(res.extras["filtered"]) == len(subs)
    assert res.extras["base_accuracy"] == 1.0
    ref = adapter.lesion_engine(x, engine="reference")
    fast = adapter.lesion_engine(x)
    rng = np.random.default_rng(2)
    for layer in (layers[0], layers[len(layers) // 2], layers[-1]):
        width = adapter.program.units[layer].width
        sets = [rng.choice(width, size=max(1, width // 3), replace=False) for _ in range(4)]
        np.testing.assert_array_equal(fast.labels(layer, sets), ref.labels(layer, sets), err_msg=layer)
