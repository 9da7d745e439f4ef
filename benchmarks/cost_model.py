"""The cost model of a lesion audit: lesioned images, and device-hours from a MEASURED throughput.

    python benchmarks/cost_model.py --throughput 3000 [--devices 1] [--subclusters 60] [--images 50000]

Measures nothing: it multiplies counts (see docs/scale.md). Give ``--throughput`` as lesioned images
per second per device measured on that device (``benchmarks/lesion_vgg.py`` prints it for the fast
engine; a plain forward pass's images/s is a conservative stand-in, since the fast engine runs only
the part of the network after the lesioned layer and was measured at >= 1.9x a forward pass on
CPU). Counts:

* paper protocol: ``S * (R + 1) * N`` lesioned images (S sub-clusters, R controls, N images), plus
  one intact forward pass of N;
* robust protocol: ``E * S * (R0 + 1) * N`` in its first round (E partitions), at most
  ``E * S * (R_max + 1) * N`` when every sub-cluster needs the most controls (only undecided
  ones get more);
* double lesions: ``P * 2 * (R_d + 1) * N`` for P pairs of important sub-clusters.

Time on D devices (one Dask worker each): lesioned images / (D * throughput) + the start-up each
worker pays once (imports and model load, ``--startup`` seconds; measured by
``benchmarks/dask_scaling.py``), as units are independent and the per-unit overhead (one task, a
few ms) is small next to a unit of thousands of lesioned images.
"""
from __future__ import annotations

import argparse


def lesioned_images(subclusters: int, controls: int, images: int, partitions: int = 1) -> int:
    """Images run through a lesioned network: every sub-cluster of every partition, itself and its controls."""
    return int(partitions) * int(subclusters) * (int(controls) + 1) * int(images)


def device_hours(n_lesioned: int, throughput: float, devices: int = 1, startup: float = 0.0) -> float:
    """Wall hours on ``devices`` devices of ``throughput`` lesioned images/s each, plus start-up."""
    return (n_lesioned / (devices * throughput) + startup) / 3600.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--throughput", type=float, required=True,
                    help="MEASURED lesioned images/s per device (or forward images/s: an upper bound on time)")
    ap.add_argument("--devices", type=int, default=1)
    ap.add_argument("--subclusters", type=int, default=60, help="tested sub-clusters per partition")
    ap.add_argument("--controls", type=int, default=20, help="random controls per sub-cluster (R, R0)")
    ap.add_argument("--images", type=int, default=50000, help="evaluation images N")
    ap.add_argument("--ensemble", type=int, default=10, help="partitions E of the robust protocol")
    ap.add_argument("--max-random", type=int, default=320, help="most controls per sub-cluster (robust)")
    ap.add_argument("--startup", type=float, default=60.0, help="seconds each worker spends starting")
    args = ap.parse_args(argv)

    rows = [("paper protocol", lesioned_images(args.subclusters, args.controls, args.images)),
            ("robust, first round", lesioned_images(args.subclusters, args.controls, args.images, args.ensemble)),
            ("robust, every sub-cluster at max", lesioned_images(args.subclusters, args.max_random, args.images,
                                                                  args.ensemble))]
    print(f"S={args.subclusters} sub-clusters, R={args.controls} controls, N={args.images} images, "
          f"E={args.ensemble}, R_max={args.max_random}; {args.throughput:g} lesioned images/s per device "
          f"(as given), {args.devices} device(s), {args.startup:g} s start-up per worker")
    for name, n in rows:
        h1 = device_hours(n, args.throughput, 1)
        hd = device_hours(n, args.throughput, args.devices, args.startup)
        print(f"  {name:<34} {n / 1e6:10.1f} M lesioned images  {h1:8.2f} device-hours  "
              f"{hd:8.2f} h wall on {args.devices}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
