"""Lesion study of a randomly initialised VGG-16: fast engine vs reference engine, and the fast
engine's images per second against a plain ``model.predict`` of the same images (the forward-pass
limit: one lesioned network can never be cheaper than a forward pass of its suffix).

    python benchmarks/lesion_vgg.py [--images 10000] [--size 32|224] [--max-subclusters M]
    KERAS_BACKEND=jax python benchmarks/lesion_vgg.py ...   (also runs on a JAX GPU machine)

The model is ``keras.applications.VGG16(weights=None, input_shape=(S, S, 3), classes=10)``, the
data random images with random labels, the partition ``cluster(model, k)``, ``--n-random`` controls
per sub-cluster. What is subsampled is printed:

* ``--max-subclusters M``: only M sub-clusters, spread evenly over the layers (in layer order), are
  lesioned by the fast engine; images/s figures are per lesioned network actually run, and the
  whole study's time is EXTRAPOLATED (measured time x all sub-clusters / M).
* the reference engine (zero weights, ``model.predict``, restore) runs only ``--reference-lesions``
  lesions, spread over the same layers; its time for the whole study is EXTRAPOLATED per lesion
  (mean seconds per reference lesion x number of lesions of the study), and the ratio uses that.

On a 2-core CPU use e.g. ``--images 256 --max-subclusters 8``; the defaults (10000 images, all
sub-clusters) are meant for a GPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from _machine import machine  # noqa: E402


def _spread(items, m):
    """``m`` items spread evenly over ``items`` (all when m is None or >= len)."""
    if m is None or m >= len(items):
        return list(items)
    idx = np.unique(np.linspace(0, len(items) - 1, m).round().astype(int))
    return [items[i] for i in idx]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--size", type=int, default=32, choices=[32, 224])
    ap.add_argument("--k", type=int, default=12)
    ap.add_argument("--n-random", type=int, default=20)
    ap.add_argument("--max-subclusters", type=int, default=None,
                    help="lesion only this many sub-clusters, spread over the layers (default: all)")
    ap.add_argument("--reference-lesions", type=int, default=3,
                    help="reference-engine lesions actually run (the rest is extrapolated)")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--max-elements", type=int, default=None, help="fast engine: stacked-input bound")
    ap.add_argument("--cache-bytes", type=int, default=None, help="fast engine: activation cache budget")
    args = ap.parse_args(argv)

    import keras

    from modtest.cluster import cluster
    from modtest.frameworks.keras.engines import FastEngine, ReferenceEngine
    from modtest.frameworks.keras.model import unit_layers
    from modtest.probes.lesion import lesion_study

    print(f"machine: {machine()}")
    try:
        load = os.getloadavg()
        print(f"load average at start: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} (shared machine: "
              f"absolute times are only indicative)")
    except OSError:
        pass
    keras.utils.set_random_seed(0)
    model = keras.applications.VGG16(weights=None, input_shape=(args.size, args.size, 3), classes=10)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (args.images, args.size, args.size, 3)).astype("float32")
    y = rng.integers(0, 10, args.images)

    t0 = time.perf_counter()
    part = cluster(model, k=args.k, seed=0)
    t_cluster = time.perf_counter() - t0
    order = {n: i for i, n in enumerate(unit_layers(model))}
    subs = sorted([s for s in part.subclusters if s.layer in order and s.fraction <= 0.9],
                  key=lambda s: (order[s.layer], s.cluster))
    chosen = _spread(subs, args.max_subclusters)
    n_lesions = len(chosen) * (args.n_random + 1)
    print(f"VGG-16 {args.size}x{args.size}, random weights, {len(order)} unit layers; k={args.k}: "
          f"{len(subs)} testable sub-clusters (cluster {t_cluster:.1f}s)")
    if len(chosen) < len(subs):
        print(f"SUBSAMPLED: {len(chosen)} of {len(subs)} sub-clusters lesioned "
              f"(layers {sorted({s.layer for s in chosen}, key=order.get)})")
    print(f"{len(chosen)} sub-clusters x (1 + {args.n_random} random) = {n_lesions} lesioned networks, "
          f"{args.images} images each")

    # forward-pass limit: plain predict of the same images (warm-up call first)
    model.predict(x[:args.batch_size], batch_size=args.batch_size, verbose=0)
    t0 = time.perf_counter()
    model.predict(x, batch_size=args.batch_size, verbose=0)
    t_predict = time.perf_counter() - t0

    kw = {}
    if args.max_elements:
        kw["max_elements"] = args.max_elements
    if args.cache_bytes:
        kw["cache_bytes"] = args.cache_bytes
    t0 = time.perf_counter()
    lesion_study(model, chosen, x, y, n_random=args.n_random, seed=0, engine="fast",
                 batch_size=args.batch_size, progress=False, **kw)
    t_fast = time.perf_counter() - t0

    # reference engine on a few lesions, checked against the fast engine's labels
    ref = ReferenceEngine(model, x, batch_size=args.batch_size)
    fast = FastEngine(model, x, batch_size=args.batch_size, **kw)
    ref.base_labels()
    picks = _spread(chosen, args.reference_lesions)
    t_ref, same = [], True
    for s in picks:
        units = [np.asarray(s.units)]
        t0 = time.perf_counter()
        lab_ref = ref.labels(s.layer, units)
        t_ref.append(time.perf_counter() - t0)
        same &= bool(np.array_equal(lab_ref, fast.labels(s.layer, units)))
    per_ref = float(np.mean(t_ref))
    t_ref_total = per_ref * n_lesions
    fast_ips = n_lesions * args.images / t_fast
    plain_ips = args.images / t_predict

    print(f"plain model.predict:     {t_predict:8.2f} s  -> {plain_ips:10.1f} images/s (forward-pass limit)")
    print(f"fast engine, study:      {t_fast:8.2f} s  -> {fast_ips:10.1f} lesioned images/s "
          f"({n_lesions} lesions incl. prefix passes and scoring)")
    print(f"reference engine:        {per_ref:8.2f} s per lesion, measured on {len(picks)} lesions "
          f"(layers {[s.layer for s in picks]}); EXTRAPOLATED to {n_lesions} lesions: {t_ref_total:8.1f} s")
    print(f"speed-up fast vs reference (extrapolated): {t_ref_total / t_fast:6.1f} x")
    print(f"fast images/s vs plain predict images/s:   {fast_ips / plain_ips:6.2f} x "
          f"(>1: cheaper than a full forward pass per lesion, thanks to cached prefixes)")
    if len(chosen) < len(subs):
        full = t_fast * len(subs) / len(chosen)
        print(f"EXTRAPOLATED full study ({len(subs)} sub-clusters, from {len(chosen)} spread over the "
              f"layers): {full:8.1f} s = {full / 60:.1f} min")
    print(f"reference and fast labels identical on the sampled lesions: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
