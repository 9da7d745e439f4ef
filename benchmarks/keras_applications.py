"""Every keras.applications family: graph size, graph + cluster time, lesion-study throughput.

Each family is built with random weights (``weights=None``, 10 classes) at the smallest input it
accepts (32x32; InceptionV3 75x75, Xception 71x71). Printed per family: nodes, edges, the time to
read the graph spec and build the adjacency, the time to cluster it (k=12), the CPU time of both
(all threads: less sensitive to other jobs on a shared machine than the wall time), and a lesion study on
the fast engine and on the reference engine (the named baseline) in the same run: ``--layers`` unit
layers spread over the network, each split into ``--parts`` sub-clusters (units ``u`` with
``u % parts == i``: random weights cluster by depth, so the partition's own sub-clusters are whole
layers, not testable), ``--n-random`` controls each, on ``--images`` images. Throughput is lesioned
networks x images / second, the first lesion of each layer (compiling its suffix) included. The
rows of both engines must be identical.
Usage: ``python benchmarks/keras_applications.py [--families MobileNet,VGG16] [--no-reference] [--graph-only]``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np  # noqa: E402
from _machine import machine  # noqa: E402

FAMILIES = {"VGG16": 32, "ResNet50": 32, "ResNet50V2": 32, "MobileNet": 32, "MobileNetV2": 32,
            "MobileNetV3Small": 32, "EfficientNetB0": 32, "EfficientNetV2B0": 32, "DenseNet121": 32,
            "InceptionV3": 75, "Xception": 71, "ConvNeXtTiny": 32, "NASNetMobile": 32}


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} cores"


def build(name: str, size: int):
    import keras

    keras.utils.set_random_seed(0)
    return getattr(keras.applications, name)(weights=None, input_shape=(size, size, 3), classes=10)


def workload(graph, n_layers: int, parts: int):
    """``parts`` sub-clusters (units ``u % parts == i``) in ``n_layers`` unit layers spread over the
    network."""
    from modtest.results import SubCluster

    names = graph.layer_names
    picks = sorted({int(round(i)) for i in np.linspace(0, len(names) - 1, n_layers)})
    return [SubCluster(names[i], c, tuple(range(c, graph.layer_sizes[i], parts)), graph.layer_sizes[i])
            for i in picks for c in range(parts)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--layers", type=int, default=4, help="unit layers lesioned per family")
    ap.add_argument("--parts", type=int, default=4, help="sub-clusters per lesioned layer")
    ap.add_argument("--n-random", type=int, default=20, help="random controls per sub-cluster")
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--no-reference", action="store_true", help="skip the reference engine")
    ap.add_argument("--graph-only", action="store_true", help="graph + cluster only, no lesion study")
    args = ap.parse_args(argv)

    from modtest.cluster import cluster
    from modtest.frameworks import adapt
    from modtest.frameworks.keras import KerasAdapter
    from modtest.graph import graph_from_spec
    from modtest.probes.lesion import lesion_study

    print(f"machine: {machine()}")
    print(f"at start: {load()}")
    print("| family | input | nodes | edges | graph | cluster | graph + cluster | its CPU time "
          "| lesion images/s (fast) | reference | fast / reference | identical |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name in args.families.split(","):
        size = FAMILIES[name]
        model = build(name, size)
        c0, t0 = time.process_time(), time.perf_counter()
        graph = graph_from_spec(adapt(model).graph_spec())
        t1 = time.perf_counter()
        part = cluster(graph, k=12, seed=0)
        c2, t2 = time.process_time(), time.perf_counter()
        assert len(np.unique(part.labels[part.labels >= 0])) == 12
        if args.graph_only:
            print(f"| {name} | {size}x{size} | {graph.n_nodes} | {graph.adjacency.nnz // 2} | {t1 - t0:.1f} s "
                  f"| {t2 - t1:.1f} s | {t2 - t0:.1f} s | {c2 - c0:.1f} s | | | | |", flush=True)
            continue
        subs = workload(graph, args.layers, args.parts)
        rng = np.random.default_rng(0)
        x = rng.uniform(0, 255, size=(args.images, size, size, 3)).astype("float32")
        y = np.arange(args.images) % 10
        n_networks = len(subs) * (args.n_random + 1)
        rates, rows = {}, {}
        payload = adapt(model).payload()
        for engine in ("fast",) if args.no_reference else ("fast", "reference"):
            # a fresh copy (same names and weights): no engine inherits the other's compiled calls
            model = KerasAdapter.from_payload(payload).model
            t = time.perf_counter()
            res = lesion_study(model, subs, x, y, n_random=args.n_random, seed=0, engine=engine, progress=False)
            rates[engine] = n_networks * args.images / (time.perf_counter() - t)
            rows[engine] = json.loads(res.to_json())["rows"]
        ref = rates.get("reference")
        ref_cols = ("| | |" if ref is None else
                    f"| {ref:.0f} | {rates['fast'] / ref:.1f}x | "
                    f"{'yes' if rows['fast'] == rows['reference'] else 'NO'} |")
        print(f"| {name} | {size}x{size} | {graph.n_nodes} | {graph.adjacency.nnz // 2} | {t1 - t0:.1f} s "
              f"| {t2 - t1:.1f} s | {t2 - t0:.1f} s "
              f"| {c2 - c0:.1f} s | {rates['fast']:.0f} {ref_cols}", flush=True)
    print(f"at end: {load()}")
    print(f"lesion workload: {args.layers} layers x {args.parts} sub-clusters x {args.n_random + 1} networks "
          f"(true + {args.n_random} controls) on {args.images} images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
