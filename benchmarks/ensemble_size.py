"""How many partitions a robust claim needs: verdict agreement across seeds and cost, per ensemble size.

For ensembles of R = 5, 10, 20 partitions, audits the importance claim of a digits MLP pruned to 90%
(trained here, seed 1: a model whose partitions disagree) and of the shipped MLP over ``--seeds``
seeds, and prints per R the verdicts, the spread of the merged p, the width of its noise bounds and
the time per audit (2-core machine: absolute times name it and its load).

Usage: ``python benchmarks/ensemble_size.py [--seeds 5] [--sizes 5,10,20]``.
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--sizes", default="5,10,20")
    args = ap.parse_args(argv)
    import numpy as np
    from _machine import machine

    from examples.digits import digits_split, train_mlp
    from modtest import load_model
    from modtest.probes.ensemble import robust_lesion_study

    print(f"machine: {machine()}; load {os.getloadavg()[0]:.1f}")
    xtr, ytr, xte, yte = digits_split(0)
    models = {"shipped pruned MLP": load_model(ROOT / "examples" / "digits_mlp.keras"),
              "pruned MLP, training seed 1": train_mlp(xtr, ytr, seed=1, epochs=20, prune_epochs=20, sparsity=0.9)}
    print("| model | R | quorum | verdicts over seeds | merged p (min .. max) | log10(high / low), median "
          "| seconds per audit |")
    print("|---|---|---|---|---|---|---|")
    for name, model in models.items():
        for r in (int(v) for v in args.sizes.split(",")):
            vs, ps, widths, t = [], [], [], time.perf_counter()
            for s in range(args.seeds):
                net = robust_lesion_study(model, xte, yte, k=12, seed=s, ensemble=r, progress=False).network
                imp = net["importance"]
                vs.append(imp["verdict"])
                ps.append(imp["p"])
                widths.append(np.log10(max(imp["p_high"], 1e-300) / max(imp["p_low"], 1e-300)))
            secs = (time.perf_counter() - t) / args.seeds
            print(f"| {name} | {r} | {imp['quorum']} | "
                  + ", ".join(f"{v} {vs.count(v)}" for v in ("pass", "fail", "inconclusive") if vs.count(v))
                  + f" | {min(ps):.2g} .. {max(ps):.2g} | {np.median(widths):.1f} | {secs:.0f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
