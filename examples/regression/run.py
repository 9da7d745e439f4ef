"""Modularity regression check between two trainings of the digits MLP.

Trains the paper's 4x256 MLP on 8x8 digits twice, the same seed and data:

* baseline:  trained, then magnitude-pruned to 90% sparsity (the shipped example's recipe);
* candidate: trained with dropout 0.5 and no pruning (the paper: dropout makes networks less
  modular; with pruning they get more modular).

Audits both (spectral clustering, lesion study, clusterability), saves the baseline audit with
:class:`modtest.report.storage.BaselineStorage`, compares the candidate with it under the rules
``p:10x,important:-2`` (the same logic as ``pytest --modtest-compare``), writes the candidate's
HTML report with the comparison, and prints the comparison table. Exit status 1 when a rule fails,
as in CI.

Usage::

    python examples/regression/run.py [--out regression-out] [--n-random 20] [--fail p:10x,important:-2]

Runs in about a minute on 2 CPU cores. Sub-clusters of two trainings are not the same units: only
network-level statistics and distributions (taxonomy counts, drop quantiles) are compared.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # examples/: digits.py

from digits import accuracy, digits_split, train_mlp  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="regression-out", help="folder for baselines, JSON and HTML")
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-random", type=int, default=20, help="random controls per sub-cluster")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--shuffles", type=int, default=19, help="clusterability weight shuffles (0: skip)")
    ap.add_argument("--fail", default="p:10x,important:-2", help="comparison rules")
    args = ap.parse_args(argv)

    from modtest.report import run_audit, write_html
    from modtest.report.compare import compare_reports, parse_rules
    from modtest.report.storage import BaselineStorage

    rules = parse_rules(args.fail)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xtr, ytr, xte, yte = digits_split(seed=args.seed)
    recipes = {
        "pruned": dict(prune_epochs=args.epochs, sparsity=0.9),
        "dropout": dict(prune_epochs=0, dropout=0.5),
    }
    reports = {}
    for name, recipe in recipes.items():
        t0 = time.perf_counter()
        model = train_mlp(xtr, ytr, seed=args.seed, epochs=args.epochs, **recipe)
        model.save(out / f"{name}.keras")
        rep, part, _res = run_audit(model, xte, yte, k=args.k, seed=args.seed, n_random=args.n_random,
                                    clusterability=args.shuffles, model_path=out / f"{name}.keras",
                                    progress=False)
        rep.to_json(out / f"{name}.json")
        reports[name] = rep
        print(f"{name:8s} accuracy={accuracy(model, xte, yte):.3f}  n-cut={part.ncut:.3f}  "
              + "  ".join(f"{c['measure']}:{c['verdict']}(p={c['p_corrected']:.2g})" for c in rep.claims)
              + f"  [{time.perf_counter() - t0:.0f}s]")

    storage = BaselineStorage(out / "baselines")
    path = storage.save("pruned", reports["pruned"])
    print(f"baseline saved: {path}")
    cmp = compare_reports(storage.load("pruned"), reports["dropout"], rules,
                          baseline_name="pruned", current_name="dropout")
    write_html(reports["dropout"], out / "dropout.html", cmp)
    print()
    print(cmp.table())
    for n in cmp.notes:
        print(f"note: {n}")
    print(cmp.summary())
    print(f"HTML report: {out / 'dropout.html'}")
    return 0 if cmp.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
