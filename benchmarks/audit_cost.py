"""What a robust verdict costs: `modtest audit --claims importance` under the robust and the paper
protocol, on the same model and data, in one run.

Per model and protocol: lesioned networks evaluated (load-independent: quote these first), lesioned
examples, wall time (clustering included, the machine's load printed with it), and the verdicts of
importance and output coherence; then the robust/paper ratio. Models: the shipped pruned digits MLP
(``examples/digits_mlp.keras``), the digits CNN (``examples/digits_cnn.keras``) and, with ``--vgg``,
a VGG-16 at 32x32 with random weights on 256 random images.

Usage: ``python benchmarks/audit_cost.py [--models mlp,cnn] [--vgg] [--seed 0] [--robust-n-random 20]``.
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


def lesion_counts(report) -> tuple[int, int]:
    """(lesioned networks, lesioned examples) of the audit's lesion probe.

    Read from ``extras["cost"]`` where the audit records it; an audit written before the counters
    (the branch's starting commit) is counted from what it has: the robust protocol's ``n_lesions``,
    the paper protocol's rows x (1 + controls)."""
    p = report.lesion
    cost = (p.get("extras") or {}).get("cost")
    n_ex = int(report.data.get("n_examples") or 0)
    if cost:
        return int(cost["lesioned_networks"]), int(cost["lesioned_examples"])
    n = p["extras"].get("n_lesions")
    if n is None:
        n = sum(1 + len(r["random_drops"]) for r in p["rows"])
    return int(n), int(n) * n_ex


def models(names, vgg: bool):
    import numpy as np

    from modtest._examples import EXAMPLE_DATA, example_path
    from modtest._validation import load_data

    x, y = load_data(example_path(EXAMPLE_DATA))
    for name in names:
        file = {"mlp": "digits_mlp.keras", "cnn": "digits_cnn.keras"}[name]
        yield f"digits {name.upper()}", ROOT / "examples" / file, x, y
    if vgg:
        import keras

        model = keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), classes=10)
        rng = np.random.default_rng(0)
        yield "VGG-16 32x32 (random)", model, rng.random((256, 32, 32, 3), dtype=np.float32), \
            rng.integers(0, 10, 256)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,cnn", help="comma-separated: mlp, cnn (default both)")
    ap.add_argument("--vgg", action="store_true", help="also VGG-16 at 32x32 (random weights, 256 images)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--robust-n-random", type=int, default=20,
                    help="controls per sub-cluster in the robust protocol's first round (default 20, as modtest "
                         "audit); the paper protocol keeps 20")
    args = ap.parse_args(argv)
    from _machine import machine

    from modtest.frameworks import adapt
    from modtest.report.audit import run_audit

    print(f"machine: {machine()}; load {os.getloadavg()[0]:.1f} (other work may share the cores)")
    print("| model | protocol | lesioned networks | lesioned examples | wall s | importance | output coherence |")
    print("|---|---|---|---|---|---|---|")
    ratios = []
    for name, model, x, y in models([m.strip() for m in args.models.split(",") if m.strip()], args.vgg):
        got = {}
        for protocol in ("paper", "robust"):
            adapter = adapt(model)  # a fresh adapter: no memoized partition or engine carried over
            t = time.perf_counter()
            n_random = args.robust_n_random if protocol == "robust" else 20
            report, _part, res = run_audit(adapter, x, y, k=args.k, seed=args.seed, protocol=protocol,
                                           n_random=n_random, clusterability=0, progress=False, claims=["importance"])
            secs = time.perf_counter() - t
            nets, exs = lesion_counts(report)
            if protocol == "robust":
                verdicts = [res.network[m]["verdict"] for m in ("importance", "output_coherence")]
            else:  # the paper's protocol: pass when Fisher p <= alpha
                verdicts = ["pass" if res.network[m]["fisher_p"] <= report.alpha else "fail"
                            for m in ("importance", "output_coherence")]
            got[protocol] = (nets, secs)
            print(f"| {name} | {protocol} | {nets:,} | {exs:,} | {secs:.1f} | {verdicts[0]} | {verdicts[1]} |",
                  flush=True)
        (pn, ps), (rn, rs) = got["paper"], got["robust"]
        ratios.append((name, rn / pn, rs / ps))
    print("\n| model | robust / paper lesioned networks | robust / paper wall time |")
    print("|---|---|---|")
    for name, rn, rs in ratios:
        print(f"| {name} | {rn:.1f}x | {rs:.1f}x |")
    print(f"load at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
