"""Batched vs one-objective-at-a-time feature visualization on a small digits CNN.

Trains a small CNN on scikit-learn's 8x8 digits for a second, then renders ``--objectives`` images
(sets of 3 units in two conv layers and a dense layer, as a study's true and random sub-clusters
would be) both ways, checks that the images agree (atol 1e-4) and prints the speed-up. Both ways are
timed warm (the compiled step is built before the clock starts), so the ratio is the batching gain
alone, not tracing overhead.

    python benchmarks/visualize_speed.py [--objectives 40] [--steps 128] [--backend tensorflow]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objectives", type=int, default=40)
    ap.add_argument("--steps", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--param", default="pixel", choices=["pixel", "fft"])
    ap.add_argument("--backend", default=None, help="Keras backend (default: the configured one)")
    args = ap.parse_args(argv)
    if args.backend:
        os.environ["KERAS_BACKEND"] = args.backend
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    from modtest.frameworks.keras import visualize

    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu", name="dense"),
        keras.layers.Dense(10, activation="softmax", name="out"),
    ])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    t0 = time.perf_counter()
    hist = model.fit(x, digits.target, epochs=3, batch_size=64, verbose=0)
    train_s = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    widths = {"conv1": 32, "conv2": 32, "dense": 64}
    names = list(widths)
    objectives = [(names[i % 3], np.sort(rng.choice(widths[names[i % 3]], 3, replace=False)))
                  for i in range(args.objectives)]
    kw = dict(steps=args.steps, param=args.param, transforms="auto")

    # warm both code paths (tracing for a batch and for a single image)
    visualize.render(model, objectives, seed=0, batch_size=args.batch_size, **{**kw, "steps": 2})
    visualize.render(model, objectives[:1], seed=[(0, 0)], **{**kw, "steps": 2})

    t0 = time.perf_counter()
    batched, scores = visualize.render(model, objectives, seed=0, batch_size=args.batch_size, **kw)
    batched_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    singles = [visualize.render(model, [obj], seed=[(0, i)], **kw) for i, obj in enumerate(objectives)]
    single_s = time.perf_counter() - t0

    one = np.concatenate([im for im, _ in singles])
    one_scores = np.concatenate([s for _, s in singles])
    max_diff = float(np.abs(one - batched).max())
    same = bool(np.allclose(one, batched, atol=1e-4))

    print(f"machine: {platform.processor() or platform.machine()} ({platform.machine()}), "
          f"{os.cpu_count()} cpus, python {platform.python_version()}, keras {keras.__version__} "
          f"backend {keras.backend.backend()}")
    print(f"model: digits CNN 8x8, train acc {hist.history['accuracy'][-1]:.3f} in {train_s:.1f}s")
    print(f"objectives: {len(objectives)}, steps {args.steps}, param {args.param}, "
          f"batch_size {args.batch_size}")
    print(f"batched:            {batched_s:8.2f} s")
    print(f"one at a time:      {single_s:8.2f} s")
    print(f"speed-up:           {single_s / batched_s:8.1f} x")
    print(f"same images:        {same} (max |diff| {max_diff:.2e}, "
          f"max score diff {float(np.abs(one_scores - scores).max()):.2e})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
