"""A probe in one file: do the sub-clusters gather the units of highest weighted degree?

For each sub-cluster of the partition, the statistic is the mean weighted degree (the sum of the
weights of a unit's edges in the paper's graph) of its units; the controls are random sets of the
same size in the same layer. Each sub-cluster gets a right-sided empirical p-value, and the network
level combines them with Fisher's and the chi-squared tests, as the lesion probe does. It reads the
weights only (no data), so it runs in a second on any model modtest can graph.

Use it with ``modtest audit MODEL --probes examples/probes/weight_degree.py`` (claimed with the
built-in measures), ``pytest --modtest-probes examples/probes/weight_degree.py`` and
``assert_measure("hub_degree", model)`` in a test, or ``probes.declare(PROBE)`` in a conftest.py.
"""
import numpy as np

from modtest._random import random_unit_sets
from modtest.probes import MeasureSpec, ProbeDeclaration, Request
from modtest.results import ProbeResult
from modtest.stats import combine_pvalues, empirical_p


def weight_degree(req: Request) -> ProbeResult:
    n_random = int(req.settings.get("n_random", 20))
    part = req.partition  # the audit's partition at (k, seed), computed once per audit
    degrees = part.graph.degrees
    rows, p_values = [], []
    for sub in part.subclusters:
        layer = degrees[part.graph.layer_slice(sub.layer)]
        controls = random_unit_sets(sub.layer_size, sub.size, n_random, req.model.fingerprint(),
                                    "weight_degree", sub.layer, sub.cluster, req.seed)
        true, rand = float(layer[list(sub.units)].mean()), layer[controls].mean(axis=1)
        p = float(empirical_p(true, rand, side="right"))
        p_values.append(p)
        rows.append({"layer": sub.layer, "cluster": sub.cluster, "size": sub.size,
                     "fraction": sub.size / sub.layer_size, "degree": true, "p_degree": p})
    network = {"hub_degree": combine_pvalues(np.array(p_values), n_random)}
    return ProbeResult("weight_degree", rows, network, {"k": req.k, "seed": req.seed, "n_random": n_random}, {})


PROBE = ProbeDeclaration(
    "weight_degree", weight_degree,
    (MeasureSpec("hub_degree", side_note="sub-clusters gather units of higher weighted degree than random "
                 "same-layer units", row_p_key="p_degree", row_effect_key="degree"),),
    uses_data=False, audit=True, row_keys=("degree", "p_degree"))
