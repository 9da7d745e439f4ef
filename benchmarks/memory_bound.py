"""Peak memory of the fast lesion engine on a VGG-16 at 224x224 as the number of images grows: the
engine's own memory must stay bounded (activation LRU ``cache_bytes``, suffix chunks
``max_elements``), so that peak RSS minus the evaluation data is the same for 32 or 10,000 images.

    python benchmarks/memory_bound.py [--images 32,96] [--layers block1_conv2,block5_conv2]

Each N runs in a fresh process (``ru_maxrss`` is a high-water mark): a randomly initialised
``keras.applications.VGG16(weights=None, input_shape=(224, 224, 3))``, N random images, and the
fast engine lesioning ``--variants`` random unit sets of each of ``--layers`` (block1_conv2: the
largest activations, 12.8 MB an image; block5_conv2: the longest prefix). Printed per N: peak RSS,
the data's bytes, RSS minus data, and the engine's ``peak_cached_bytes``/``peak_stacked_elements``.
The last line extrapolates to 10,000 images: data bytes + the largest RSS-minus-data measured
(EXTRAPOLATED; a forward pass of 10,000 images at 224x224 takes about 35 minutes on a 2-core CPU).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

CHILD = r"""
import json, os, resource, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import keras
from modtest.frameworks.keras.engines import FastEngine

n, layers, variants, cache_bytes, batch = (int(sys.argv[1]), sys.argv[2].split(","), int(sys.argv[3]),
                                           int(sys.argv[4]), int(sys.argv[5]))
keras.utils.set_random_seed(0)
model = keras.applications.VGG16(weights=None, input_shape=(224, 224, 3), classes=10)
x = np.random.default_rng(0).uniform(0, 255, (n, 224, 224, 3)).astype("float32")
eng = FastEngine(model, x, batch_size=batch, cache_bytes=cache_bytes)
rng = np.random.default_rng(1)
t0 = time.perf_counter()
eng.base_labels()
for layer in layers:
    width = model.get_layer(layer).kernel.shape[-1]
    eng.labels(layer, [np.sort(rng.choice(width, 8, replace=False)) for _ in range(variants)])
print(json.dumps({"n": n, "seconds": time.perf_counter() - t0, "data_bytes": int(x.nbytes),
                  "peak_rss": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024),
                  "peak_cached_bytes": int(eng.peak_cached_bytes),
                  "peak_stacked_elements": int(eng.peak_stacked_elements)}))
"""


def _gib(b) -> str:
    return f"{b / 2**30:6.2f} GiB"


def main(argv=None) -> int:
    from _machine import machine

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", default="32,96", help="comma-separated numbers of images")
    ap.add_argument("--layers", default="block1_conv2,block5_conv2")
    ap.add_argument("--variants", type=int, default=3, help="lesion variants per layer")
    ap.add_argument("--cache-bytes", type=int, default=1 << 30, help="engine activation budget")
    ap.add_argument("--batch-size", type=int, default=16)
    args = ap.parse_args(argv)
    print(f"machine: {machine()}")
    print(f"VGG-16 224x224 random weights; fast engine, layers {args.layers}, {args.variants} variants "
          f"each, cache_bytes {_gib(args.cache_bytes)}, batch {args.batch_size}")
    env = dict(os.environ, PYTHONPATH=str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rows = []
    for n in (int(v) for v in args.images.split(",")):
        out = subprocess.run([sys.executable, "-c", CHILD, str(n), args.layers, str(args.variants),
                              str(args.cache_bytes), str(args.batch_size)],
                             capture_output=True, text=True, env=env)
        if out.returncode:
            print(out.stderr[-3000:])
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        rows.append(r)
        print(f"  N={n:>6}: {r['seconds']:7.1f} s  peak RSS {_gib(r['peak_rss'])}  data {_gib(r['data_bytes'])}  "
              f"RSS - data {_gib(r['peak_rss'] - r['data_bytes'])}  engine cache peak "
              f"{_gib(r['peak_cached_bytes'])}  stacked suffix input peak {r['peak_stacked_elements']:,} floats")
    over = [r["peak_rss"] - r["data_bytes"] for r in rows]
    if len(rows) > 1:
        print(f"RSS - data, largest N vs smallest N: {over[-1] / over[0]:.2f} x "
              f"(data grew {rows[-1]['n'] / rows[0]['n']:.1f} x)")
    per_image = rows[-1]["data_bytes"] / rows[-1]["n"]
    print(f"EXTRAPOLATED to N=10,000: data {_gib(per_image * 10000)} + engine and model "
          f"{_gib(max(over))} = {_gib(per_image * 10000 + max(over))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
