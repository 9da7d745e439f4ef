"""Failure messages say why nothing could be shown: a model at chance, lesions that change nothing, a
layer that is one cluster, every sub-cluster filtered out."""
import numpy as np
import pytest

from modtest.diagnose import chance_level, lesion_hints, partition_hints
from modtest.results import ProbeResult


class _Partition:
    def __init__(self, labels):
        self.labels = labels

    def layer_labels(self, layer):
        return np.asarray(self.labels[layer])


def _result(base=0.9, drops=(0.1, 0.0)):
    rows = [{"layer": "d", "cluster": i, "drop": d} for i, d in enumerate(drops)]
    return ProbeResult("lesion", rows, {}, {"metric": "accuracy", "max_fraction": 0.9}, {"base_accuracy": base})


def test_chance_level_is_the_majority_share():
    assert chance_level(np.array([0, 0, 0, 1]), 2) == 0.75
    assert chance_level(np.array([0, 0, 0, 1]), 4, "balanced_accuracy") == 0.25


def test_hints_for_chance_zero_drops_and_one_cluster_layers():
    y = np.repeat(np.arange(10), 10)
    assert lesion_hints(_result(), y, 10) == []
    (chance,) = lesion_hints(_result(base=0.113), y, 10)
    assert "base accuracy is 0.113, at or near chance (0.100)" in chance and "input scaling" in chance
    (zero,) = lesion_hints(_result(drops=(0.0, 0.0)), y, 10)
    assert "no lesion changed the accuracy" in zero and "on 100 examples" in zero
    part = _Partition({"a": [0, 0, 0, 0], "b": [1, 2, 1, 2], "c": [3, 3, 3, -1]})
    hints = partition_hints(part, ["a", "b", "c"])
    assert len(hints) == 1 and hints[0].startswith("layer a is one cluster (all 4 connected units in cluster 0)")
    assert "try a larger k" in hints[0]  # c: 3 of 4 units is 75% of the layer, still tested


def _paper_context():
    from modtest.context import AuditContext, Defaults

    return AuditContext(Defaults(protocol="paper", settings={"lesion": {"n_random": 5}}))


def test_a_model_at_chance_fails_with_the_reason():
    from modtest._examples import EXAMPLE_DATA, EXAMPLE_MODEL
    from modtest.assertions import assert_importance
    from modtest.context import using

    d = np.load(EXAMPLE_DATA)
    y = np.random.default_rng(0).permutation(d["y"])  # labels that no longer match the images
    with using(_paper_context()), pytest.raises(AssertionError) as info:
        assert_importance(EXAMPLE_MODEL, k=12, data=(d["x"], y))
    msg = str(info.value)
    assert msg.startswith("importance not shown: Fisher p=") and "at or near chance" in msg
    assert "check that the data matches the model" in msg


def test_every_subcluster_filtered_names_the_one_cluster_layers():
    """Two weakly linked halves (input + first hidden layer, second hidden layer + output): at k=2 each
    hidden layer is one cluster, nothing is testable, and the message says so."""
    import keras

    from modtest.assertions import assert_importance
    from modtest.context import using

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, activation="relu", name="h1"),
                              keras.layers.Dense(5, activation="relu", name="h2"),
                              keras.layers.Dense(3, activation="softmax", name="out")])
    for layer, scale in (("h1", 1.0), ("h2", 1e-3), ("out", 1.0)):
        w, b = model.get_layer(layer).get_weights()
        model.get_layer(layer).set_weights([np.full_like(w, scale), b])
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(30, 6)).astype("float32"), rng.integers(0, 3, 30)
    with using(_paper_context()), pytest.raises(AssertionError) as info:
        assert_importance(model, k=2, data=(x, y))
    msg = str(info.value)
    assert msg.startswith("no testable sub-clusters: ")
    assert "layer h1 is one cluster" in msg and "layer h2 is one cluster" in msg and "try a larger k" in msg
