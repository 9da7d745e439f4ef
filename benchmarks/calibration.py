"""Calibration of the lesion importance/coherence tests under the null, and their power.

Null: the sub-clusters of a partition are replaced by random unit sets of the same sizes from the
same layers, so a "sub-cluster" and its random controls are exchangeable and every network-level
p-value is (at least) uniform. Over many such replicates the rejection rate at alpha = 0.05 of the
centred Fisher test and of the chi2 categorical test must be consistent with <= 0.05: we print it
with its exact binomial 95% interval (:func:`modtest.stats.binomial_interval`) and check that the
interval's lower end is <= 0.05 (a rate significantly above 0.05 would be a miscalibrated test).

Replicates are batched: R replicates are R copies of the template's sub-clusters (random units,
distinct cluster ids) lesioned in ONE :func:`modtest.probes.lesion.lesion_study` call (fast engine); the
per-replicate network p-values are then combined with :func:`modtest.stats.combine_pvalues` from
the rows, exactly as lesion_study combines its own rows.

Models: the shipped digits MLP (trained, 90% pruned) and untrained randomly initialised MLPs.
Power: a constructed two-module MLP (two disjoint blocks, each carrying one bit of the label, each
unit repeated so that random sets rarely destroy a whole module), clustered with k=2; the rejection
rate over lesion seeds.

Usage: ``python benchmarks/calibration.py [--replicates 200] [--alpha 0.05]``. Not a test: takes
roughly 10 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402


def random_replicates(subclusters, n_rep: int, tag, start: int = 0):
    """``n_rep`` copies of ``subclusters`` with random units of the same sizes (cluster id r*1000+c)."""
    from modtest._random import random_unit_sets
    from modtest.results import SubCluster

    out = []
    for r in range(start, start + n_rep):
        for s in subclusters:
            u = random_unit_sets(s.layer_size, s.size, 1, "calibration-null", tag, s.layer, s.cluster, r)[0]
            out.append(SubCluster(s.layer, r * 1000 + s.cluster, tuple(int(v) for v in u), s.layer_size))
    return out


def network_pvalues(result, n_random: int) -> dict[str, np.ndarray]:
    """Per replicate (cluster id // 1000): Fisher and chi2 p of importance and output coherence."""
    from modtest import stats

    reps = sorted({r["cluster"] // 1000 for r in result.rows})
    out = {k: [] for k in ("imp_fisher", "imp_chi2", "coh_fisher", "coh_chi2")}
    for rep in reps:
        rows = [r for r in result.rows if r["cluster"] // 1000 == rep]
        nan = float("nan")
        imp = stats.combine_pvalues([r["p_importance"] for r in rows], n_random,
                                    [r["p_importance_rank"] for r in rows])
        coh = stats.combine_pvalues([nan if r["p_coherence"] is None else r["p_coherence"] for r in rows],
                                    n_random,
                                    [nan if r["p_coherence_rank"] is None else r["p_coherence_rank"]
                                     for r in rows])
        out["imp_fisher"].append(imp["fisher_p"])
        out["imp_chi2"].append(imp["chi2_p"])
        out["coh_fisher"].append(coh["fisher_p"])
        out["coh_chi2"].append(coh["chi2_p"])
    return {k: np.array(v, dtype=float) for k, v in out.items()}


def null_run(model, x, y, template, n_rep: int, tag, *, n_random=20, chunk=25, seed=0):
    from modtest.probes.lesion import lesion_study

    parts = []
    for start in range(0, n_rep, chunk):
        subs = random_replicates(template, min(chunk, n_rep - start), tag, start)
        res = lesion_study(model, subs, x, y, n_random=n_random, seed=seed, progress=False)
        parts.append(network_pvalues(res, n_random))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def report(label, pv: dict, alpha: float) -> bool:
    from modtest.stats import binomial_interval

    ok = True
    for key, name in (("imp_fisher", "importance Fisher"), ("imp_chi2", "importance chi2"),
                      ("coh_fisher", "coherence  Fisher"), ("coh_chi2", "coherence  chi2")):
        p = pv[key][~np.isnan(pv[key])]
        k, n = int((p <= alpha).sum()), len(p)
        lo, hi = binomial_interval(k, n)
        consistent = lo <= alpha
        ok &= consistent
        print(f"  {label:<26} {name:<18} rejected {k:>3}/{n:<3} = {k / n:.3f}  95% CI [{lo:.3f}, {hi:.3f}]"
              f"  {'consistent with <= ' + str(alpha) if consistent else 'ABOVE ' + str(alpha)}")
    return ok


def untrained_mlp(seed: int, width=64):
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten()]
                            + [keras.layers.Dense(width, activation="relu") for _ in range(3)]
                            + [keras.layers.Dense(10, activation="softmax")])


def two_module_mlp(seed: int = 0, copies: int = 8, noise: float = 0.05):
    """8 inputs -> 2x(2*copies) -> 2x(2*copies) -> 4 classes; label = 2*[x0 > 0] + [x4 > 0].

    Module A reads x0 only, module B x4 only (block-diagonal kernels plus small noise inside the
    blocks); each module's units are ``copies`` repeats of relu(+x) and relu(-x), so lesioning a whole
    module destroys its bit while a random set of the same size almost never does.
    """
    import keras

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    h = 2 * copies  # units per module per layer
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2 * h, activation="relu"),
                              keras.layers.Dense(2 * h, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")])
    sign = np.tile([1.0, -1.0], copies)  # unit j of a module computes relu(sign[j] * bit input)
    w1 = np.zeros((8, 2 * h))
    w1[0, :h] = sign
    w1[4, h:] = sign
    w1[:4, :h] += noise * rng.normal(size=(4, h))
    w1[4:, h:] += noise * rng.normal(size=(4, h))
    w2 = np.zeros((2 * h, 2 * h))
    blk = np.outer(sign, sign) / copies  # layer-2 unit j: relu(sign[j] * x) again, averaged over copies
    w2[:h, :h] = blk + noise * rng.normal(size=(h, h)) / copies
    w2[h:, h:] = blk + noise * rng.normal(size=(h, h)) / copies
    w3 = np.zeros((2 * h, 4))
    for c in range(4):  # logit_c = 4 * (+-x0 +- x4): the sum over a module's units gives x0 (x4)
        a, b = (c >> 1) & 1, c & 1
        w3[:h, c] = (1 if a else -1) * sign * 4 / copies
        w3[h:, c] = (1 if b else -1) * sign * 4 / copies
    for layer, w in zip(model.layers, (w1, w2, w3)):
        layer.set_weights([w.astype("float32"), np.zeros(w.shape[1], "float32")])
    return model


def two_module_data(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = 2 * (x[:, 0] > 0) + (x[:, 4] > 0)
    return x, y.astype(np.int64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=200, help="null replicates per model family")
    ap.add_argument("--alpha", type=float, default=0.05)
    ap.add_argument("--n-random", type=int, default=20)
    ap.add_argument("--power-seeds", type=int, default=50)
    args = ap.parse_args(argv)

    from _machine import machine

    from modtest._examples import EXAMPLE_DATA, EXAMPLE_MODEL
    from modtest._validation import check_data, load_data
    from modtest.cluster import cluster
    from modtest.frameworks.keras.model import load_model
    from modtest.probes.lesion import lesion_study
    from modtest.stats import binomial_interval

    t_all = time.perf_counter()
    print(f"machine: {machine()}")
    print(f"null replicates per family: {args.replicates}, alpha = {args.alpha}, n_random = {args.n_random}")
    ok = True

    model = load_model(EXAMPLE_MODEL)
    x, y = check_data(model, *load_data(EXAMPLE_DATA))
    template = cluster(model, k=12, seed=0).subclusters
    t = time.perf_counter()
    pv = null_run(model, x, y, template, args.replicates, "digits", n_random=args.n_random)
    print(f"digits MLP ({len(template)} sub-clusters per replicate, {time.perf_counter() - t:.0f}s):")
    ok &= report("digits MLP, random sets", pv, args.alpha)

    n_models = 8
    per = -(-args.replicates // n_models)
    parts = []
    t = time.perf_counter()
    for s in range(n_models):
        um = untrained_mlp(s)
        tmpl = cluster(um, k=8, seed=0).subclusters
        parts.append(null_run(um, x, y, tmpl, per, f"untrained{s}", n_random=args.n_random))
    pv = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    print(f"untrained MLPs ({n_models} inits x {per} replicates, {time.perf_counter() - t:.0f}s):")
    ok &= report("untrained MLPs, random sets", pv, args.alpha)

    t = time.perf_counter()
    pm = two_module_mlp()
    px, py = two_module_data()
    part = cluster(pm, k=2, seed=0)
    rej_f = rej_c = 0
    fisher_ps = []
    for s in range(args.power_seeds):
        r = lesion_study(pm, part, px, py, n_random=args.n_random, seed=s, progress=False)
        imp = r.network["importance"]
        rej_f += imp["fisher_p"] <= args.alpha
        rej_c += imp["chi2_p"] <= args.alpha
        fisher_ps.append(imp["fisher_p"])
    base = r.extras["base_accuracy"]
    drops = ", ".join(f"{row['name']} {row['drop']:.2f}" for row in r.rows)
    print(f"power, constructed two-module MLP (k=2, {len(part.subclusters)} sub-clusters, base accuracy "
          f"{base:.2f}, drops {drops}; {time.perf_counter() - t:.0f}s):")
    for name, k in (("Fisher", rej_f), ("chi2", rej_c)):
        lo, hi = binomial_interval(int(k), args.power_seeds)
        print(f"  importance {name:<6} power {int(k)}/{args.power_seeds} = {k / args.power_seeds:.2f}  "
              f"95% CI [{lo:.2f}, {hi:.2f}]")
    print(f"  median Fisher p {np.median(fisher_ps):.2g}")
    print(f"calibration {'OK' if ok else 'FAILED'}; total {time.perf_counter() - t_all:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
