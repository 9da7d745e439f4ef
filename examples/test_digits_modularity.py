"""Modularity audit of a trained network, as tests: copy this file into your CI.

Run it on the shipped example (a 90%-pruned 4x256 MLP trained on 8x8 digits)::

    pytest --model examples/digits_mlp.keras -p modtest examples/test_digits_modularity.py

or on your own model and data (an .npz with arrays ``x`` and ``y``)::

    pytest --model my_model.keras --data my_test.npz tests/test_modularity.py

The ``model`` and ``eval_data`` fixtures come from the modtest plugin (``--model``, ``--data``);
probes run once per session and are cached on disk (``--modtest-cache``), so a second run is fast.
Every modtest assertion of the session is one hypothesis: at the end all p-values are corrected
together (``--modtest-correction``, Holm by default) and a claim whose corrected p exceeds alpha
fails its test. ``--modtest-json report.json`` writes every claim's raw and corrected p.
"""
import pytest

from modtest.assertions import assert_clusterable, assert_importance, assert_output_coherence


def test_subclusters_are_important(model, eval_data):
    """Lesioning the spectral sub-clusters (k=12) hurts accuracy more than lesioning random
    same-size sets of units of the same layer (Fisher combination over the sub-clusters)."""
    assert_importance(model, k=12, data=eval_data)


def test_network_is_clusterable(model):
    """The network's n-cut at k=2 is lower than that of 49 networks with the same weights shuffled
    within each layer (smallest possible p: 1/50 = 0.02). On the shipped MLP the margin is wide
    (z = -12: n-cut 0.552 against shuffles 0.582-0.60); at k=12 it does not hold (p = 0.15)."""
    assert_clusterable(model, k=2, n_shuffles=49)


# Output coherence (lesioning a sub-cluster hurts some classes much more than others) does NOT hold
# for this MLP on digits (Fisher p is about 0.97 at k=12): it is shown here as an expected failure,
# not asserted. Remove the mark for a model where you expect it; keep claims you expect to fail out
# of a CI suite, since every claim counts in the session-wide correction.
@pytest.mark.xfail(strict=False, reason="output coherence does not hold for the digits MLP")
def test_output_coherence(model, eval_data):
    assert_output_coherence(model, k=12, data=eval_data)
