"""Command line: ``modtest cluster``, ``modtest audit``; options shared with the pytest plugin."""
from __future__ import annotations

import argparse
import json
import sys

from modtest.errors import ModtestError


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help="model file (.keras or .h5); default: the shipped digits MLP")
    p.add_argument("--k", type=int, default=12, help="number of clusters (default 12)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--json", metavar="PATH", help="write the result as JSON")
    p.add_argument("--trust-model", action="store_true",
                   help="allow Lambda layers / custom objects (runs code from the model file)")


def _resolve_model(args):
    from modtest._examples import EXAMPLE_MODEL, example_path
    from modtest.model import load_model

    if args.model is None:
        path = example_path(EXAMPLE_MODEL)
        print(f"no MODEL given: using the shipped example {path.name}")
        return load_model(path), str(path)
    return load_model(args.model, trust=args.trust_model), args.model


def cmd_cluster(args) -> int:
    from modtest._io import atomic_write_text
    from modtest.cluster import cluster

    model, name = _resolve_model(args)
    part = cluster(model, k=args.k, seed=args.seed)
    g = part.graph
    print(f"{name}: {g.n_nodes} nodes ({g.kind}), k={part.k}, seed={part.seed}, n-cut={part.ncut:.4f}")
    for layer, size, role in zip(g.layer_names, g.layer_sizes, g.roles):
        lab = part.layer_labels(layer)
        counts = {int(c): int((lab == c).sum()) for c in sorted(set(lab.tolist()))}
        text = "  ".join(f"{'iso' if c < 0 else c}:{n}" for c, n in counts.items())
        print(f"  {layer:<16} {role:<6} {size:>5} units   {text}")
    if args.json:
        d = part.to_dict()
        out = {"k": d["k"], "ncut": d["ncut"], "n_nodes": d["n_nodes"],
               "layers": [{"name": l["name"], "units": l["units"]} for l in d["layers"]],
               "subclusters": [{key: s[key] for key in ("cluster", "layer", "units", "size", "fraction")}
                               for s in d["subclusters"]]}
        atomic_write_text(args.json, json.dumps(out, indent=2))
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="modtest", description="Audit neural networks for modularity.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cluster", help="partition a model with spectral clustering")
    _add_model_args(p)
    p.set_defaults(func=cmd_cluster)
    return ap


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ModtestError as exc:
        print(f"modtest: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
