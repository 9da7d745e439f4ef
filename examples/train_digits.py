"""Train and save the shipped example models: a pruned digits MLP (4x256) and a digits CNN with BN.

Usage: python examples/train_digits.py [--out examples/] [--seed 0]
Writes digits_mlp.keras, digits_cnn.keras and digits_test.npz (x: (N, 8, 8, 1), y: (N,)).
Seeded; runs in well under a minute on 2 CPU cores.
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
from digits import accuracy, digits_split, train_cnn, train_mlp  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    xtr, ytr, xte, yte = digits_split(seed=args.seed)
    t0 = time.time()
    mlp = train_mlp(xtr, ytr, seed=args.seed)
    t1 = time.time()
    cnn = train_cnn(xtr, ytr, seed=args.seed)
    t2 = time.time()
    mlp.save(out / "digits_mlp.keras")
    cnn.save(out / "digits_cnn.keras")
    np.savez_compressed(out / "digits_test.npz", x=xte, y=yte)
    sparsity = np.mean([np.mean(layer.kernel.numpy() == 0) for layer in mlp.layers if hasattr(layer, "kernel")])
    print(f"digits_mlp: test accuracy {accuracy(mlp, xte, yte):.3f}, kernel sparsity {sparsity:.2f}, "
          f"trained in {t1 - t0:.1f}s")
    print(f"digits_cnn: test accuracy {accuracy(cnn, xte, yte):.3f}, trained in {t2 - t1:.1f}s")
    print(f"test split: {len(xte)} examples -> {out / 'digits_test.npz'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
