"""Torch lesion engines: the fast engine's labels equal the reference definition's, on every topology.

Reference: the program run with lesioned copies of the weights (compared here with a plain
``module(x)`` on a module whose weights were zeroed by hand). Fast: cached prefixes, masks, stacked
variants, the incremental path into the next linear or convolution.
"""
import _torch_models as tm
import numpy as np
import pytest

from modtest.errors import InvalidInput
from modtest.frameworks import adapt

TOPOLOGIES = ["plain", "residual", "concat", "grouped", "transposed", "conv1d"]


def _sets(rng, width, n=10, max_size=None):
    max_size = max_size or max(1, width // 2)
    return [np.sort(rng.choice(width, size=int(rng.integers(1, max_size + 1)), replace=False)) for _ in range(n)]


def _engines(adapter, x, **kw):
    ref = adapter.lesion_engine(x, engine="reference", **kw)
    fast = adapter.lesion_engine(x, engine="fast", **kw)
    return ref, fast


@pytest.fixture(scope="module", params=TOPOLOGIES)
def cnn_case(request):
    kind = request.param
    model = tm.cnn(seed=1, kind=kind)
    x = tm.data(tm.input_shape(kind), n=50)
    adapter = adapt(tm.export(model, x))
    return kind, model, adapter, x


def test_reference_is_the_definition(cnn_case):
    """The reference engine's labels are those of the module with the weights into the units (and their
    biases) zeroed by hand."""
    torch = tm.torch()
    kind, model, adapter, x = cnn_case
    layer = adapter.unit_layers()[0]
    units = np.array([0, 2])
    ref = adapter.lesion_engine(x, engine="reference")
    got = ref.labels(layer, [units])[0]
    mod = dict(model.named_modules())[layer]
    saved = [p.detach().clone() for p in (mod.weight, mod.bias)]
    with torch.no_grad():
        if isinstance(mod, torch.nn.ConvTranspose2d):
            og, ig = mod.out_channels // mod.groups, mod.in_channels // mod.groups
            for u in units:
                g, j = divmod(int(u), og)
                mod.weight[g * ig:(g + 1) * ig, j] = 0
        else:
            mod.weight[units] = 0
        mod.bias[units] = 0
        want = model(torch.as_tensor(x)).argmax(1).numpy()
        mod.weight.copy_(saved[0])
        mod.bias.copy_(saved[1])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(ref.base_labels(), model(torch.as_tensor(x)).argmax(1).numpy())


def test_fast_equals_reference_on_every_layer(cnn_case):
    kind, _model, adapter, x = cnn_case
    rng = np.random.default_rng(3)
    ref, fast = _engines(adapter, x)
    np.testing.assert_array_equal(fast.base_labels(), ref.base_labels())
    for layer in adapter.unit_layers():
        width = adapter.program.units[layer].width
        sets = _sets(rng, width)
        np.testing.assert_array_equal(fast.labels(layer, sets), ref.labels(layer, sets), err_msg=f"{kind} {layer}")
    assert fast.stats["incremental"] + fast.stats["plain"] > 0


def test_fast_paths_agree_keep_bias_and_fixed_lesions():
    """Incremental and plain paths, keep_bias, fixed (double) lesions and tiny memory bounds (streamed
    example blocks, one variant per call) all give the reference labels."""
    model = tm.cnn(seed=2, kind="plain")
    x = tm.data(tm.input_shape("plain"), n=40, seed=4)
    adapter = adapt(tm.export(model, x))
    rng = np.random.default_rng(5)
    c1, c2, c3 = adapter.unit_layers()
    for keep_bias in (False, True):
        ref, fast = _engines(adapter, x, keep_bias=keep_bias)
        sets = _sets(rng, 4)
        want = ref.labels(c1, sets)
        assert fast._plan(c1, True) not in (None, False)  # c1 -> BN -> relu -> c2: incremental
        np.testing.assert_array_equal(fast.labels(c1, sets), want)
        fast.incremental = False
        np.testing.assert_array_equal(fast.labels(c1, sets), want)
        fixed, pair = [(c3, np.array([1, 3]))], [np.array([0, 5]), np.array([2])]
        np.testing.assert_array_equal(fast.labels(c2, pair, fixed), ref.labels(c2, pair, fixed))
        np.testing.assert_array_equal(fast.labels(c1, sets, [(c1, np.array([2]))]),
                                      ref.labels(c1, sets, [(c1, np.array([2]))]))
    small = adapter.lesion_engine(x, engine="fast", cache_bytes=1, max_elements=1)
    sets = _sets(rng, 6)
    np.testing.assert_array_equal(small.labels(c2, sets), ref.labels(c2, sets))
    assert small.cached_bytes == 0


def test_equal_unit_sets_run_once():
    model = tm.mlp(seed=3)
    x = tm.data((6,), n=30)
    adapter = adapt(tm.export(model, x))
    fast = adapter.lesion_engine(x)
    a, b = np.array([0, 3]), np.array([1])
    lab = fast.labels("h1", [a, b, np.array([3, 0]), a])
    assert fast.stats["incremental"] + fast.stats["plain"] == 2
    np.testing.assert_array_equal(lab[0], lab[2])
    np.testing.assert_array_equal(lab, adapter.lesion_engine(x, engine="reference").labels("h1", [a, b, a, a]))


def test_fixed_batch_program_runs_any_batch():
    """A program exported with a fixed batch of 1 (its flatten recorded as view(x, [1, -1]) after
    run_decompositions) runs on 37 examples and lesions like the dynamic one."""
    torch = tm.torch()
    model = tm.cnn(seed=4, kind="plain")
    x = tm.data(tm.input_shape("plain"), n=37)
    static = tm.export(model, x, dynamic=False).run_decompositions({})
    ops = {str(n.target) for n in static.graph.nodes if n.op == "call_function"}
    assert "aten.view.default" in ops
    a_static, a_dyn = adapt(static), adapt(tm.export(model, x))
    assert a_static.program.batch == 1 and a_dyn.program.batch is None
    with torch.no_grad():
        want = model(torch.as_tensor(x)).argmax(1).numpy()
    sets = _sets(np.random.default_rng(0), 6)
    for adapter in (a_static, a_dyn):
        ref, fast = _engines(adapter, x)
        np.testing.assert_array_equal(ref.base_labels(), want)
        np.testing.assert_array_equal(fast.labels("c2", sets), ref.labels("c2", sets))


def test_bad_units_and_layers_are_one_line_errors():
    model = tm.mlp(seed=0)
    x = tm.data((6,), n=10)
    adapter = adapt(tm.export(model, x))
    for engine in ("fast", "reference"):
        eng = adapter.lesion_engine(x, engine=engine)
        with pytest.raises(InvalidInput, match=r"unit indices of layer 'h1' must lie in \[0, 11\]"):
            eng.labels("h1", [np.array([12])])
        with pytest.raises(InvalidInput, match="no unit layer named 'nope'"):
            eng.labels("nope", [np.array([0])])
    with pytest.raises(InvalidInput, match="unknown engine"):
        adapter.lesion_engine(x, engine="turbo")
