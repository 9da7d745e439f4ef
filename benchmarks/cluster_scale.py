"""Time to graph and cluster large conv nets (randomly initialised): VGG-16 at 32x32 and ResNet-50.

Targets (issue 3): VGG-16 (4,224 feature maps) <= 5 s, ResNet-50-sized (~26,000 maps) <= 30 s on
2 cores. Run: python benchmarks/cluster_scale.py [--skip-resnet]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import machine  # noqa: E402


def run(name, build, k=12):
    import modtest

    model = build()
    t0 = time.perf_counter()
    g = modtest.build_graph(model)
    t1 = time.perf_counter()
    part = modtest.cluster(g, k=k, seed=0)
    t2 = time.perf_counter()
    print(f"{name:<10} nodes={g.n_nodes:>6} edges={g.adjacency.nnz // 2:>9}  graph {t1 - t0:6.2f}s  "
          f"cluster {t2 - t1:6.2f}s  total {t2 - t0:6.2f}s  n-cut={part.ncut:.3f}")
    return t2 - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-resnet", action="store_true")
    args = ap.parse_args(argv)
    import keras

    print(f"machine: {machine()}")
    run("VGG-16", lambda: keras.applications.VGG16(weights=None, input_shape=(32, 32, 3), classes=10))
    if not args.skip_resnet:
        run("ResNet-50", lambda: keras.applications.ResNet50(weights=None, input_shape=(32, 32, 3), classes=10))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
