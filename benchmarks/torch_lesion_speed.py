"""Speed of the fast torch lesion engine against the reference torch engine on the digits MLP twin.

The torch twin of examples/digits_mlp.keras (same weights) is exported, saved as .pt2 and loaded back
the way ``--model net.pt2`` loads it; the full lesion study (k=12, 20 random controls) then runs with
both engines in this process, each ``--repeat`` times (first and best run printed). Printed: the
speed ratio (target >= 10x), whether every lesioned network predicts the same labels under both
engines and the studies' rows agree, the machine and its load. Usage:
``python benchmarks/torch_lesion_speed.py [--n-random N] [--repeat R]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # _torch_twins

import numpy as np  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--n-random", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3, help="time each engine this many times")
    args = ap.parse_args(argv)

    import keras
    from _machine import machine
    from _torch_twins import torch_twin

    from modtest._examples import EXAMPLE_DATA, EXAMPLE_MODEL
    from modtest.cluster import cluster
    from modtest.frameworks import adapt
    from modtest.frameworks.torch import export_module
    from modtest.frameworks.torch.runtime import device, import_torch
    from modtest.probes.lesion import lesion_study

    torch = import_torch()
    d = np.load(EXAMPLE_DATA)
    twin, to_torch = torch_twin(keras.saving.load_model(EXAMPLE_MODEL))
    x, y = to_torch(d["x"]), d["y"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "digits_mlp.pt2"
        torch.export.save(export_module(twin, x), path)
        adapter = adapt(path)
        adapter.program  # noqa: B018 - load now, outside the timings
    part = cluster(adapter, k=args.k, seed=0)

    times, first, results = {}, {}, {}
    for engine in ("fast", "reference"):
        best = float("inf")
        for i in range(args.repeat):
            t0 = time.perf_counter()
            res = lesion_study(adapter, part, x, y, n_random=args.n_random, seed=0, engine=engine, progress=False)
            dt = time.perf_counter() - t0
            best = min(best, dt)
            if i == 0:
                first[engine] = dt
        times[engine], results[engine] = best, res

    # the labels themselves: every tested sub-cluster and random same-size sets, per layer
    rng = np.random.default_rng(0)
    same_labels, n_sets = True, 0
    engines = {e: adapter.lesion_engine(x, engine=e) for e in ("fast", "reference")}
    for layer in adapter.unit_layers():
        width = adapter.program.units[layer].width
        sets = [np.asarray(s.units) for s in part.subclusters if s.layer == layer and 0 < len(s.units) < width]
        sets += [rng.choice(width, size=len(s), replace=False) for s in sets for _ in range(3)]
        if sets:
            same_labels &= bool(np.array_equal(engines["fast"].labels(layer, sets),
                                               engines["reference"].labels(layer, sets)))
            n_sets += len(sets)
    same_rows = json.loads(results["fast"].to_json())["rows"] == json.loads(results["reference"].to_json())["rows"]

    print(f"machine: {machine()}; torch {torch.__version__} on {device()}, "
          f"{torch.get_num_threads()} threads; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"digits_mlp twin (.pt2): {len(results['fast'].rows)} sub-clusters, "
          f"{len(results['fast'].rows) * (args.n_random + 1)} lesioned networks per study, {len(x)} examples")
    print(f"  {'':10s} {'first run':>10s} {f'best of {args.repeat}':>10s}")
    for engine in ("fast", "reference"):
        print(f"  {engine:10s} {first[engine]:9.2f}s {times[engine]:9.2f}s")
    ratio = times["reference"] / times["fast"]
    print(f"  {'speed-up':10s} {first['reference'] / first['fast']:9.1f}x {ratio:9.1f}x   (target >= 10x: "
          f"{'met' if ratio >= 10 else 'NOT met'})")
    print(f"identical predicted labels on {n_sets} lesioned networks: {same_labels}; identical study rows: "
          f"{same_rows}")
    return 0 if same_labels and same_rows else 1


if __name__ == "__main__":
    raise SystemExit(main())
