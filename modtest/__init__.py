"""modtest: audit trained neural networks for modularity, as pytest tests.

Implements "Importance and Coherence: Methods for Evaluating Modularity in Neural Networks":
a weight graph, spectral clustering into sub-clusters, lesion and visualization probes against
random same-layer controls, network-level statistics, and assertions judged per pytest session.
Heavy modules (Keras, matplotlib) load only when a name that needs them is used.
"""
import importlib

# functions named like their modules are bound eagerly: importing ``modtest.cluster`` sets the
# package attribute ``cluster`` to the submodule, which would hide a lazily exported function
from modtest.cluster import Partition, cluster
from modtest.probes.clusterability import ClusterabilityResult, clusterability

#: public name -> the module that defines it; imported on first use (PEP 562), so that loading the
#: pytest plugin, which every pytest run does where modtest is installed, stays cheap
_EXPORTS = {
    "assert_clusterable": "modtest.assertions", "assert_importance": "modtest.assertions",
    "assert_input_coherence": "modtest.assertions", "assert_output_coherence": "modtest.assertions",
    "BackendMissing": "modtest.errors", "DataError": "modtest.errors", "InvalidInput": "modtest.errors",
    "ModelLoadError": "modtest.errors",
    "ModtestError": "modtest.errors", "NoTestableSubclusters": "modtest.errors",
    "UnsafeModelError": "modtest.errors", "UnsupportedModelError": "modtest.errors",
    "WeightGraph": "modtest.graph", "build_graph": "modtest.graph",
    "double_lesion_study": "modtest.probes.double_lesion", "lesion_study": "modtest.probes.lesion",
    "load_model": "modtest.frameworks",
    "Claim": "modtest.results", "ProbeResult": "modtest.results", "SubCluster": "modtest.results",
    "untrained_control": "modtest.probes.visualization", "visualization_study": "modtest.probes.visualization",
}


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'modtest' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.1.0"

__all__ = [
    "BackendMissing", "Claim", "ClusterabilityResult", "DataError", "InvalidInput", "ModelLoadError", "ModtestError",
    "NoTestableSubclusters", "Partition", "ProbeResult", "SubCluster", "UnsafeModelError",
    "UnsupportedModelError", "WeightGraph", "assert_clusterable", "assert_importance",
    "assert_input_coherence", "assert_output_coherence", "build_graph", "cluster", "clusterability",
    "double_lesion_study", "lesion_study", "load_model", "untrained_control", "visualization_study",
]
