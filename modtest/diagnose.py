"""Why a lesion claim could not show anything, in words a failure message can carry.

A claim that fails with "Fisher p=1 ... drop 0" is usually not evidence against modularity but a
sign that the audit could not work: a model at chance accuracy on the data given (lesions cannot
lower it further), lesions that change no prediction, a layer that is one cluster (it has no random
alternative, so it is never tested), every sub-cluster filtered out. Each hint names the cause and
what to try.
"""
from __future__ import annotations

import numpy as np

__all__ = ["chance_level", "lesion_hints", "partition_hints", "NEAR_CHANCE"]

#: a base score within this share of the distance from chance to perfect counts as "near chance"
NEAR_CHANCE = 0.1


def chance_level(y, n_classes: int, metric: str = "accuracy") -> float:
    """The score of always predicting the most frequent class (accuracy), or ``1 / n_classes``
    (balanced accuracy)."""
    y = np.asarray(y)
    if metric != "accuracy" or len(y) == 0:
        return 1.0 / max(int(n_classes), 1)
    return float(np.bincount(y.astype(np.int64), minlength=int(n_classes)).max() / len(y))


def partition_hints(partition, unit_layers, max_fraction: float = 0.9) -> list[str]:
    """Layers whose units all fall into one cluster holding more than ``max_fraction`` of the layer
    (never tested: no random alternative)."""
    hints = []
    if partition is None:
        return hints
    for layer in unit_layers:
        try:
            labels = np.asarray(partition.layer_labels(layer))
        except (ValueError, KeyError, AttributeError):
            continue
        used = labels[labels >= 0]
        if len(used) > 1 and len(np.unique(used)) == 1 and len(used) > max_fraction * len(labels):
            hints.append(f"layer {layer} is one cluster (all {len(used)} connected units in cluster "
                         f"{int(used[0])}), so it has no random alternative and is not tested: try a larger k")
    return hints


def lesion_hints(result, y=None, n_classes: int | None = None, partition=None, unit_layers=()) -> list[str]:
    """Hints for a lesion probe's result (a :class:`~modtest.results.ProbeResult`): base score at or
    near chance, every accuracy drop zero, layers that are one cluster."""
    hints = []
    extras = getattr(result, "extras", None) or {}
    settings = getattr(result, "settings", None) or {}
    metric = settings.get("metric", "accuracy")
    base = extras.get("base_accuracy")
    if base is not None and n_classes:
        chance = chance_level(np.zeros(0) if y is None else y, n_classes, metric)
        if float(base) <= chance + NEAR_CHANCE * (1.0 - chance):
            hints.append(f"the model's base {metric.replace('_', ' ')} is {float(base):.3f}, at or near chance "
                         f"({chance:.3f}), so lesions cannot lower it: check that the data matches the model "
                         f"(input scaling, channel order, label order) and that the model is trained")
    rows = getattr(result, "rows", None) or []
    drops = [r.get("drop") for r in rows if isinstance(r, dict) and r.get("drop") is not None]
    if drops and all(float(d) == 0.0 for d in drops) and not hints:
        n = None if y is None else len(y)
        hints.append("no lesion changed the accuracy (every tested sub-cluster's drop is 0)"
                     + (f" on {n} examples" if n is not None else "")
                     + ": use more or harder examples, or a smaller k (larger sub-clusters)")
    hints += partition_hints(partition, unit_layers, float(settings.get("max_fraction", 0.9)))
    return hints
