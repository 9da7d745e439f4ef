"""Calibration and power of the robust protocol on a real model (the statistics-level checks are in
tests/test_robust.py).

Null: in every partition of the ensemble, the sub-clusters are replaced by random unit sets of the
same sizes from the same layers (drawn independently per replicate and partition), so a
"sub-cluster" and its random controls are exchangeable. Over ``--replicates`` replicates the
robust importance and output-coherence claims must pass at most ``alpha`` of the time (printed with
the exact binomial 95% interval); the other outcomes (fail, inconclusive) are counted too.
Power: the same protocol on models with real modules: the shipped pruned digits MLP (its true
partitions) and the paper's halves-diff MLP, over seeds.

Usage: ``python benchmarks/calibration_robust.py [--replicates 200] [--ensemble 10]``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


class NullPartition:
    """A partition whose sub-clusters are random same-size unit sets (the null)."""

    def __init__(self, subclusters, k, seed):
        self.subclusters, self.k, self.seed, self.ncut = subclusters, k, seed, float("nan")


def null_partitions(template, replicate: int):
    """partitions(model, k, seed) for :func:`robust_lesion_study`: the template's sizes, random units."""
    from modtest._random import random_unit_sets
    from modtest.results import SubCluster

    def make(_model, k, seed):
        subs = []
        for s in template.subclusters:
            u = random_unit_sets(s.layer_size, s.size, 1, "robust-null", replicate, seed, s.layer, s.cluster)[0]
            subs.append(SubCluster(s.layer, s.cluster, tuple(int(v) for v in u), s.layer_size))
        return NullPartition(subs, k, seed)

    return make


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=200)
    ap.add_argument("--ensemble", type=int, default=10)
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--power-seeds", type=int, default=10)
    args = ap.parse_args(argv)
    from _machine import machine

    from examples.digits import digits_split
    from modtest import cluster, load_model
    from modtest.probes.ensemble import robust_lesion_study
    from modtest.stats import binomial_interval

    print(f"machine: {machine()}; load {os.getloadavg()[0]:.1f}")
    t0 = time.perf_counter()
    _xtr, _ytr, xte, yte = digits_split(0)
    shipped = load_model(ROOT / "examples" / "digits_mlp.keras")
    template = cluster(shipped, k=12, seed=0)
    outcomes = {m: [] for m in ("importance", "output_coherence")}
    for i in range(args.replicates):
        res = robust_lesion_study(shipped, xte, yte, k=12, seed=i, alpha=args.alpha, ensemble=args.ensemble,
                                  partitions=null_partitions(template, i), progress=False)
        for m in outcomes:
            outcomes[m].append(res.network[m]["verdict"])
        if (i + 1) % 10 == 0:
            tally = "; ".join(f"{m}: pass {vs.count('pass')}, fail {vs.count('fail')}, "
                              f"inconclusive {vs.count('inconclusive')}" for m, vs in outcomes.items())
            print(f"  [{time.perf_counter() - t0:6.0f}s] {i + 1} null replicates ({tally})", flush=True)
    print(f"\nNull (shipped digits MLP, sub-clusters replaced by random same-size sets, R={args.ensemble}, "
          f"alpha={args.alpha}), {args.replicates} replicates:")
    print("| claim | pass (false positives) | 95% interval | fail | inconclusive |")
    print("|---|---|---|---|---|")
    for m, vs in outcomes.items():
        k, n = vs.count("pass"), len(vs)
        lo, hi = binomial_interval(k, n)
        print(f"| {m} | {k}/{n} = {k / n:.3f} | [{lo:.3f}, {hi:.3f}] | {vs.count('fail')} | "
              f"{vs.count('inconclusive')} |")
    print(f"\nPower (true partitions, R={args.ensemble}), seeds 0..{args.power_seeds - 1}:")
    from examples.replication.families import FAMILIES, family_data, train_family

    fam = FAMILIES["halves_diff"]
    a, b, c, d = family_data(fam)
    models = {"shipped pruned MLP": (shipped, xte, yte), "halves-diff MLP": (train_family(fam, a, b, seed=0), c, d)}
    print("| model | importance verdicts |")
    print("|---|---|")
    for name, (model, x, y) in models.items():
        vs = [robust_lesion_study(model, x, y, k=12, seed=s, alpha=args.alpha, ensemble=args.ensemble,
                                  progress=False).network["importance"]["verdict"] for s in range(args.power_seeds)]
        print(f"| {name} | " + ", ".join(f"{v} {vs.count(v)}" for v in ("pass", "fail", "inconclusive")
                                        if vs.count(v)) + " |")
    print(f"\ntotal {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
