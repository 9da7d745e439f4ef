"""Speed of the fast lesion engine against the reference engine on the shipped digits models.

Runs the full lesion study (k=12, 20 random controls) of examples/digits_mlp.keras and
examples/digits_cnn.keras with both engines in one process and prints the speed ratio, whether the
results are identical, and the machine. Each engine runs ``--repeat`` times (default 3) on a freshly
loaded model; the first run of each (cold: TensorFlow compiles and warms its kernels in this process)
and the best run are both printed. Usage: ``python benchmarks/lesion_speed.py [--n-random N]``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--n-random", type=int, default=20)
    ap.add_argument("--repeat", type=int, default=3, help="time each engine this many times")
    args = ap.parse_args(argv)

    import keras

    from modtest._examples import EXAMPLE_CNN, EXAMPLE_DATA, EXAMPLE_MODEL
    from modtest.cluster import cluster
    from modtest.frameworks.keras.model import load_model
    from modtest.probes.lesion import lesion_study

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"os.cpu_count()={os.cpu_count()}, python {platform.python_version()}, "
          f"keras {keras.__version__} ({keras.backend.backend()})")
    d = np.load(EXAMPLE_DATA)
    x, y = d["x"], d["y"]
    for path in (EXAMPLE_MODEL, EXAMPLE_CNN):
        part = cluster(load_model(path), k=args.k, seed=0)
        times, first, results = {}, {}, {}
        for engine in ("fast", "reference"):
            best = float("inf")
            for i in range(args.repeat):
                model = load_model(path)  # a fresh model: no engine inherits the other's compiled calls
                t0 = time.perf_counter()
                res = lesion_study(model, part, x, y, n_random=args.n_random, seed=0, engine=engine,
                                   progress=False)
                dt = time.perf_counter() - t0
                best = min(best, dt)
                if i == 0:
                    first[engine] = dt
            times[engine], results[engine] = best, res
        n_variants = len(results["fast"].rows) * (args.n_random + 1)
        same_rows = json.loads(results["fast"].to_json())["rows"] == \
            json.loads(results["reference"].to_json())["rows"]
        same_net = results["fast"].network == results["reference"].network
        print(f"{path.name}: {len(results['fast'].rows)} sub-clusters, {n_variants} lesioned networks, "
              f"{len(x)} examples")
        print(f"  {'':10s} {'first run':>10s} {f'best of {args.repeat}':>10s}")
        for engine in ("fast", "reference"):
            print(f"  {engine:10s} {first[engine]:9.2f}s {times[engine]:9.2f}s")
        print(f"  {'speed-up':10s} {first['reference'] / first['fast']:9.1f}x "
              f"{times['reference'] / times['fast']:9.1f}x   identical results: {same_rows and same_net}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
