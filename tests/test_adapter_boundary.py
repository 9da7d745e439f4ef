"""The framework boundary: a second adapter plugs in without touching the core.

A plain numpy MLP and its adapter (a few dozen lines, below) drive the whole core: graph, partition,
lesion study (the paper's protocol and the robust one), an assertion; and the results equal those of
the Keras twin with the same weights. The core modules import no framework.
"""
import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import modtest
from modtest.frameworks import ModelAdapter, register_adapter
from modtest.graph import EdgeBlock, GraphSpec


class NumpyMLP:
    """ReLU hidden layers, softmax output; ``weights`` is a list of (kernel (in, out), bias (out,))."""

    def __init__(self, weights, name="numpy_mlp"):
        self.weights = [(np.asarray(w, np.float32), np.asarray(b, np.float32)) for w, b in weights]
        self.name = name

    def predict(self, x, lesions=()):
        h = np.asarray(x, np.float32).reshape(len(x), -1)
        for i, (w, b) in enumerate(self.weights):
            w, b = w.copy(), b.copy()
            for layer, units in lesions:  # a lesion zeroes the weights into the units and their biases
                if layer == f"h{i + 1}":
                    w[:, units], b[units] = 0.0, 0.0
            h = h @ w + b
            if i < len(self.weights) - 1:
                h = np.maximum(h, 0.0)
        return h.argmax(axis=1)


class NumpyEngine:
    name = "numpy"

    def __init__(self, model, x):
        self.model, self.x = model, x

    def base_labels(self):
        return self.model.predict(self.x)

    def labels(self, layer, unit_sets, fixed=(), on_progress=None):
        out = np.stack([self.model.predict(self.x, list(fixed) + [(layer, np.asarray(u))]) for u in unit_sets])
        if on_progress is not None:
            on_progress(len(unit_sets))
        return out


class NumpyAdapter(ModelAdapter):
    framework = "numpy"

    @property
    def input_shape(self):
        return (self.model.weights[0][0].shape[0],)

    @property
    def n_classes(self):
        return self.model.weights[-1][0].shape[1]

    def compute_fingerprint(self):
        return hashlib.sha256(b"".join(w.tobytes() + b.tobytes() for w, b in self.model.weights)).hexdigest()[:16]

    def unit_layers(self):
        return [f"h{i + 1}" for i in range(len(self.model.weights) - 1)]

    def graph_spec(self):
        names = ["input"] + self.unit_layers() + ["out"]
        sizes = [self.input_shape[0]] + [w.shape[1] for w, _ in self.model.weights]
        kernels = {n: w.astype(np.float64) for n, (w, _) in zip(names[1:], self.model.weights)}
        blocks = [EdgeBlock(p, c, np.arange(s)) for p, c, s in zip(names, names[1:], sizes)]
        return GraphSpec("mlp", names, sizes, ["input"] + ["hidden"] * (len(names) - 2) + ["output"],
                         kernels, {n: np.ones(s) for n, s in zip(names, sizes)}, blocks)

    def lesion_engine(self, x, **kw):
        return NumpyEngine(self.model, x)


register_adapter("numpy-test", accepts=lambda m: isinstance(m, NumpyMLP), wrap=NumpyAdapter)


# --------------------------------------------------------------------------- the twins

@pytest.fixture(scope="module")
def twins():
    """A Keras MLP (6 -> 12 -> 10 -> 4) and its numpy twin with the same weights, and data."""
    from _models import tiny_mlp

    keras_model = tiny_mlp(seed=2)
    weights = [(layer.get_weights()[0], layer.get_weights()[1]) for layer in keras_model.layers]
    x = np.random.default_rng(0).normal(size=(80, 6)).astype("float32")
    y = keras_model.predict(x, verbose=0).argmax(1)
    numpy_model = NumpyMLP(weights)
    assert (numpy_model.predict(x) == y).all()
    return keras_model, numpy_model, x, y


def test_graph_and_partition_equal_the_keras_twin(twins):
    from modtest import build_graph, cluster

    keras_model, numpy_model, _x, _y = twins
    gk, gn = build_graph(keras_model), build_graph(numpy_model)
    assert gk.layer_sizes == gn.layer_sizes and gk.roles == gn.roles
    np.testing.assert_allclose(gk.adjacency.toarray(), gn.adjacency.toarray(), rtol=1e-6)
    np.testing.assert_array_equal(cluster(keras_model, k=3, seed=1).labels, cluster(numpy_model, k=3, seed=1).labels)


def test_lesion_study_equals_the_keras_twin(twins):
    """The paper's protocol through the numpy adapter, the random controls drawn from the same key: the
    same rows (controls, drops, p-values, categories)."""
    from modtest import cluster, lesion_study

    keras_model, numpy_model, x, y = twins
    key = "twins"
    rk = lesion_study(keras_model, cluster(keras_model, k=3, seed=1), x, y, n_random=10, seed=0, control_key=key)
    rn = lesion_study(numpy_model, cluster(numpy_model, k=3, seed=1), x, y, n_random=10, seed=0, control_key=key)
    keys = ("name", "units", "drop", "random_drops", "random_units", "p_importance", "p_coherence", "category")
    assert [[r[k] for k in keys] for r in rk.rows] == [[r[k] for k in keys] for r in rn.rows]
    assert rk.network["importance"] == rn.network["importance"]


def test_robust_assertion_through_the_adapter(twins):
    """An assertion with the robust protocol (ensemble of 5 partitions) runs on the numpy model and
    gives the Keras twin's claim (controls drawn from the same key)."""
    from modtest.assertions import assert_importance
    from modtest.context import AuditContext, Defaults, using

    keras_model, numpy_model, x, y = twins
    claims = []
    for model in (keras_model, numpy_model):
        settings = {"lesion": {"control_key": "twins"}}
        with using(AuditContext(Defaults(ensemble=5, max_random=40, settings=settings))):
            try:
                claims.append(assert_importance(model, k=3, data=(x, y)))
            except AssertionError as exc:
                claims.append(str(exc))
    if isinstance(claims[0], str):
        assert claims[0].split("k=3")[0] == claims[1].split("k=3")[0]
    else:
        assert (claims[0].p_raw, claims[0].p_low, claims[0].p_high) == (claims[1].p_raw, claims[1].p_low,
                                                                       claims[1].p_high)


def test_the_core_imports_no_framework():
    """Importing the core and running it on the numpy adapter loads neither Keras nor TensorFlow."""
    code = ("import sys; sys.path.insert(0, 'tests'); import numpy as np\n"
            "from test_adapter_boundary import NumpyMLP\n"
            "from modtest import cluster, lesion_study\n"
            "import modtest.stats, modtest.robust, modtest.claims, modtest.report.compare, modtest.plugin\n"
            "rng = np.random.default_rng(0)\n"
            "m = NumpyMLP([(rng.normal(size=(6, 12)), np.zeros(12)), (rng.normal(size=(12, 10)), np.zeros(10)),"
            " (rng.normal(size=(10, 4)), np.zeros(4))])\n"
            "x = rng.normal(size=(40, 6)); y = m.predict(x)\n"
            "lesion_study(m, cluster(m, k=3), x, y, n_random=5)\n"
            "bad = [n for n in sys.modules if n.split('.')[0] in ('keras', 'tensorflow', 'torch', 'jax')]\n"
            "assert not bad, bad\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


FRAMEWORKS = ("keras", "tensorflow", "torch", "jax", "tf_keras")


def test_framework_names_are_read_only_inside_the_adapters():
    """Outside the adapters (``frameworks/keras/``, ``frameworks/torch/``, ``frameworks/transformers/``)
    no module imports a framework, reads
    ``sys.modules`` for one or the ``KERAS_BACKEND`` variable: the adapters (and the dispatch in
    ``frameworks/__init__.py``) are the only places that know which framework runs a model."""
    import ast

    root = Path(modtest.__file__).resolve().parent
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("frameworks/keras/", "frameworks/torch/", "frameworks/transformers/")) \
                or rel == "frameworks/__init__.py":
            continue
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            bad += [f"{rel}:{node.lineno} imports {n}" for n in names if n.split(".")[0] in FRAMEWORKS]
            if isinstance(node, ast.Constant) and node.value == "KERAS_BACKEND":
                bad.append(f"{rel}:{node.lineno} reads KERAS_BACKEND")
            if (isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant)
                    and node.slice.value in FRAMEWORKS):
                bad.append(f"{rel}:{node.lineno} looks up {node.slice.value!r}")
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
                    and node.args and isinstance(node.args[0], ast.Constant) and node.args[0].value in FRAMEWORKS):
                bad.append(f"{rel}:{node.lineno} looks up {node.args[0].value!r}")
    assert not bad, "\n".join(bad)
