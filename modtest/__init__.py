"""modtest: audit trained neural networks for modularity, as pytest tests.

Implements "Importance and Coherence: Methods for Evaluating Modularity in Neural Networks":
a weight graph, spectral clustering into sub-clusters, lesion and visualization probes against
random same-layer controls, network-level statistics, and assertions judged per pytest session.
Heavy modules (Keras, matplotlib) load only when a name that needs them is used.
"""
from modtest.assertions import (
    assert_clusterable, assert_importance, assert_input_coherence, assert_output_coherence,
)
from modtest.cluster import Partition, cluster
from modtest.clusterability import ClusterabilityResult, clusterability
from modtest.errors import (
    DataError, InvalidInput, ModelLoadError, ModtestError, NoTestableSubclusters,
    UnsafeModelError, UnsupportedModelError,
)
from modtest.graph import WeightGraph, build_graph
from modtest.lesion import double_lesion_study, lesion_study
from modtest.model import load_model
from modtest.results import Claim, ProbeResult, SubCluster
from modtest.visualization_probe import untrained_control, visualization_study

__version__ = "0.1.0"

__all__ = [
    "Claim", "ClusterabilityResult", "DataError", "InvalidInput", "ModelLoadError", "ModtestError",
    "NoTestableSubclusters", "Partition", "ProbeResult", "SubCluster", "UnsafeModelError",
    "UnsupportedModelError", "WeightGraph", "assert_clusterable", "assert_importance",
    "assert_input_coherence", "assert_output_coherence", "build_graph", "cluster", "clusterability",
    "double_lesion_study", "lesion_study", "load_model", "untrained_control", "visualization_study",
]
