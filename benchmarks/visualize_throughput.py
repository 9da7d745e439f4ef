"""Feature-visualization throughput on a randomly initialised VGG-16: objectives per second of
``modtest.frameworks.keras.visualize.render`` (one batch of objectives optimised together), at 32x32 and 224x224.

    python benchmarks/visualize_throughput.py [--objectives 8] [--steps 4] [--sizes 32 224]
    KERAS_BACKEND=jax python benchmarks/visualize_throughput.py ...   (also on a JAX GPU machine)

Objectives are sets of 3 feature maps of conv layers spread over the network (as a study's true and
random sub-clusters would be). Each size is timed warm: a 1-step render with the same batch shape
first (tracing/compilation), then the timed render. Reported: objectives/s and objective-steps/s
(one objective advanced by one Adam step, i.e. one forward+backward pass of one image); a real
study uses hundreds of steps, so objectives/s at the study's step count is
objective-steps/s / steps. Step counts here are small so that a CPU finishes in minutes.
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

LAYERS = ("block1_conv2", "block2_conv2", "block3_conv3", "block4_conv3", "block5_conv3")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objectives", type=int, default=8)
    ap.add_argument("--steps", type=int, default=4, help="Adam steps per render (small on CPU)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[32, 224])
    ap.add_argument("--batch-size", type=int, default=None, help="default: all objectives in one batch")
    ap.add_argument("--param", default="pixel", choices=["pixel", "fft"])
    args = ap.parse_args(argv)

    import keras

    from modtest.frameworks.keras import visualize

    print(f"machine: {machine()}")
    try:
        load = os.getloadavg()
        print(f"load average at start: {load[0]:.1f} (shared machine: absolute rates are only indicative)")
    except OSError:
        pass
    rng = np.random.default_rng(0)
    bs = args.batch_size or args.objectives
    rates = {}
    for size in args.sizes:
        keras.utils.set_random_seed(0)
        model = keras.applications.VGG16(weights=None, input_shape=(size, size, 3), classes=10)
        objs = []
        for i in range(args.objectives):
            layer = LAYERS[i % len(LAYERS)]
            width = int(model.get_layer(layer).output.shape[-1])
            objs.append((layer, np.sort(rng.choice(width, 3, replace=False))))
        kw = dict(param=args.param, transforms="auto", batch_size=bs, value_range=(0.0, 255.0))
        t0 = time.perf_counter()
        visualize.render(model, objs, steps=1, seed=0, **kw)  # warm: trace/compile this batch shape
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        images, scores = visualize.render(model, objs, steps=args.steps, seed=0, **kw)
        dt = time.perf_counter() - t0
        ok = bool(np.isfinite(scores).all()) and images.shape == (len(objs), size, size, 3)
        rates[size] = (len(objs) / dt, len(objs) * args.steps / dt)
        print(f"VGG-16 {size:>3}x{size:<3}: {len(objs)} objectives x {args.steps} steps (batch {bs}) in "
              f"{dt:7.2f} s (warm-up {warm:.1f} s) -> {rates[size][0]:8.3f} objectives/s, "
              f"{rates[size][1]:8.2f} objective-steps/s; finite scores: {ok}")
    if 32 in rates and 224 in rates:
        r = rates[32][1] / rates[224][1]
        print(f"32x32 vs 224x224 objective-steps/s: {r:.1f} x (pixel count ratio {(224 / 32) ** 2:.0f} x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
