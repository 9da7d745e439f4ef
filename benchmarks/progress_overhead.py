"""Cost of progress reporting: the lesion study of the shipped digits MLP (k=12, 20 controls) with a
live rich line (drawn on an in-memory terminal, delay 0) and with heartbeats every update, against no
reporter, in one process; each variant runs ``--repeat`` times in turn and the best is kept. Prints
the ratios, whether the results are identical, the machine and its load. Usage:
``python benchmarks/progress_overhead.py [--repeat 3]``.
"""
from __future__ import annotations

import argparse
import io
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)

    from _machine import machine

    from modtest._examples import EXAMPLE_DATA, EXAMPLE_MODEL
    from modtest.cluster import cluster
    from modtest.context import AuditContext, using
    from modtest.frameworks import adapt
    from modtest.probes.lesion import lesion_study
    from modtest.progress import ConsoleReporter, NullReporter

    d = np.load(EXAMPLE_DATA)
    adapter = adapt(EXAMPLE_MODEL)
    part = cluster(adapter, k=12, seed=0)
    lines = []
    reporters = {
        "none": lambda: NullReporter(),
        "live": lambda: ConsoleReporter("live", file=io.StringIO(), delay=0.0, width=120),
        "heartbeat": lambda: ConsoleReporter("heartbeat", write=lines.append, delay=0.0, heartbeat=0.0),
    }
    best, results = {}, {}
    lesion_study(adapter, part, d["x"], d["y"], progress=False)  # warm-up: TensorFlow compiles here
    for _ in range(args.repeat):
        for name, make in reporters.items():
            with using(AuditContext(progress=make())):
                t = time.perf_counter()
                res = lesion_study(adapter, part, d["x"], d["y"])
                best[name] = min(best.get(name, float("inf")), time.perf_counter() - t)
            results[name] = res
    same = all(results[n].rows == results["none"].rows for n in results)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.1f} at the end")
    print(f"lesion study, digits MLP, best of {args.repeat}: none {best['none']:.2f} s, "
          f"live {best['live']:.2f} s ({best['live'] / best['none']:.3f}x), "
          f"heartbeat every update {best['heartbeat']:.2f} s ({best['heartbeat'] / best['none']:.3f}x); "
          f"identical results: {same}; heartbeat lines written: {len(lines)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
