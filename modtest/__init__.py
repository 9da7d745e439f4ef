"""modtest: audit trained neural networks for modularity, as pytest tests.

Implements "Importance and Coherence: Methods for Evaluating Modularity in Neural Networks":
a weight graph, spectral clustering into sub-clusters, lesion and visualization probes against
random same-layer controls, and network-level statistics.
"""
from modtest.cluster import Partition, cluster
from modtest.clusterability import clusterability
from modtest.errors import (
    DataError, InvalidInput, ModelLoadError, ModtestError, NoTestableSubclusters,
    UnsafeModelError, UnsupportedModelError,
)
from modtest.graph import WeightGraph, build_graph
from modtest.model import load_model
from modtest.results import ProbeResult, SubCluster

__version__ = "0.1.0"

__all__ = [
    "DataError", "InvalidInput", "ModelLoadError", "ModtestError", "NoTestableSubclusters",
    "Partition", "ProbeResult", "SubCluster", "UnsafeModelError", "UnsupportedModelError",
    "WeightGraph", "build_graph", "cluster", "clusterability", "load_model",
]
