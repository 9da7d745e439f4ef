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
    from modtest._runtime import import_keras
    from modtest.model import load_model

    import_keras()

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


def cmd_audit(args) -> int:
    """Cluster the model, run the lesion study and print one line per tested sub-cluster."""
    from modtest._examples import EXAMPLE_DATA, example_path
    from modtest._validation import load_data
    from modtest.report.audit import run_audit

    if args.html or args.json:
        _check_writable(args.json, args.html)
    model, name = _resolve_model(args)
    if args.data is None:
        data = example_path(EXAMPLE_DATA)
        print(f"no --data given: using the shipped example {data.name}")
    else:
        data = args.data
    x, y = load_data(data)
    report, part, res = run_audit(model, x, y, k=args.k, seed=args.seed, n_random=args.n_random,
                                  alpha=args.alpha, clusterability=args.clusterability,
                                  double_lesion=args.double_lesion, double_n_random=args.double_n_random,
                                  model_path=name, data_path=data)
    print(f"{name}: k={part.k}, seed={part.seed}, n-cut={part.ncut:.4f}, "
          f"base accuracy={res.extras['base_accuracy']:.4f}, n_random={args.n_random}")
    print(f"  {'layer':<16} {'cluster':>7} {'size':>5} {'fraction':>8} {'drop':>8} "
          f"{'p_importance':>12} {'p_coherence':>11}  category")

    def fmt_p(p):
        return "-" if p is None else f"{p:.3f}"

    for r in res.rows:
        print(f"  {r['layer']:<16} {r['cluster']:>7} {r['size']:>5} {r['fraction']:>8.3f} "
              f"{r['drop']:>8.4f} {fmt_p(r['p_importance']):>12} {fmt_p(r['p_coherence']):>11}  "
              f"{r['category']}")
    imp, coh = res.network["importance"], res.network["output_coherence"]
    print(f"importance:       Fisher p={imp['fisher_p']:.3g}  chi2 p={imp['chi2_p']:.3g}  "
          f"(n={imp['n']})")
    print(f"output coherence: Fisher p={coh['fisher_p']:.3g}  chi2 p={coh['chi2_p']:.3g}  "
          f"(n={coh['n']}, excluded={coh['n_excluded']})")
    if res.network["n_filtered"]:
        print(f"{res.network['n_filtered']} of {res.network['n_subclusters']} sub-clusters filtered out")
    cl = report.probe("clusterability")
    if cl is not None:
        net = cl["network"]["clusterability"]
        print(f"clusterability:   n-cut={net['ncut']:.4f}  shuffle p={net['p']:.3g}  (n={net['n']})")
    if report.double_lesion is not None:
        pairs = report.double_lesion["pairs"]
        print(f"double lesions:   {len(pairs)} pair(s) of important sub-clusters in different layers")
    print(f"claims ({report.correction} correction, alpha={report.alpha:g}): " + ", ".join(
        f"{c['measure']} {c['verdict']} (p={c['p_corrected']:.3g})" for c in report.claims))
    if args.json:
        from modtest.results import _jsonable

        out = report.to_dict()
        out.update(_jsonable({"k": part.k, "ncut": float(part.ncut), "subclusters": res.rows,
                              "importance": {"fisher_p": imp["fisher_p"], "chi2_p": imp["chi2_p"]},
                              "output_coherence": {"fisher_p": coh["fisher_p"], "chi2_p": coh["chi2_p"]}}))
        from modtest._io import atomic_write_text

        atomic_write_text(args.json, json.dumps(out, indent=2, allow_nan=False))
        print(f"wrote {args.json}")
    if args.html:
        from modtest.report.html import write_html

        write_html(report, args.html)
        print(f"wrote {args.html}")
    return 0


def _check_writable(*paths) -> None:
    """Fail before the (slow) audit when an output folder cannot hold the file."""
    from pathlib import Path

    for p in paths:
        if p is None:
            continue
        parent = Path(p).expanduser().resolve().parent
        if parent.exists() and not parent.is_dir():
            raise ModtestError(f"cannot write {p}: {parent} is not a folder")


def cmd_compare(args) -> int:
    """Compare two audit JSON files; exit 1 when a claim stopped holding or a --fail rule broke."""
    from modtest.compare import compare_reports, parse_rules
    from modtest.report.schema import load_report

    rules = parse_rules(args.fail)
    base, cur = load_report(args.baseline), load_report(args.current)
    cmp = compare_reports(base, cur, rules, baseline_name="baseline", current_name="current")
    print(f"baseline: {args.baseline}\ncurrent:  {args.current}")
    print(cmp.table())
    for n in cmp.notes:
        print(f"note: {n}")
    print(cmp.summary())
    if args.html:
        from modtest.report.html import write_html

        write_html(cur, args.html, cmp)
        print(f"wrote {args.html}")
    return 0 if cmp.ok else 1


def cmd_report(args) -> int:
    """Render the HTML report of a saved audit JSON."""
    from modtest.report.html import write_html
    from modtest.report.schema import load_report

    write_html(load_report(args.report), args.html)
    print(f"wrote {args.html}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="modtest", description="Audit neural networks for modularity.")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cluster", help="partition a model with spectral clustering")
    _add_model_args(p)
    p.set_defaults(func=cmd_cluster)
    p = sub.add_parser("audit", help="cluster a model and run the lesion study (importance, coherence)")
    _add_model_args(p)
    p.add_argument("--data", metavar="D.npz", help="evaluation data with arrays x and y; default: the "
                   "shipped digits test set")
    p.add_argument("--n-random", type=int, default=20, help="random controls per sub-cluster (default 20)")
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the claims (default 0.05)")
    p.add_argument("--clusterability", type=int, default=0, metavar="N",
                   help="also compare the n-cut with N within-layer weight shuffles (default 0: skip)")
    p.add_argument("--double-lesion", action="store_true",
                   help="also lesion pairs of important sub-clusters (paper A.10, Figure 9)")
    p.add_argument("--double-n-random", type=int, default=20, metavar="N",
                   help="random controls per double-lesion test (default 20)")
    p.add_argument("--html", metavar="PATH", help="write the self-contained HTML report")
    p.set_defaults(func=cmd_audit)
    p = sub.add_parser("compare", help="compare two audit JSON files (baseline, current)")
    p.add_argument("baseline", help="audit JSON of the baseline (--modtest-json / modtest audit --json)")
    p.add_argument("current", help="audit JSON to check against it")
    p.add_argument("--fail", metavar="EXPR", help="comma-separated rules, e.g. p:10x,important:-2")
    p.add_argument("--html", metavar="PATH", help="write the current audit's HTML report with the comparison")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("report", help="render the HTML report of an audit JSON")
    p.add_argument("report", help="audit JSON")
    p.add_argument("--html", metavar="PATH", required=True, help="HTML file to write")
    p.set_defaults(func=cmd_report)
    return ap


def main(argv=None) -> int:
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices are not for users
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ModtestError as exc:
        print(f"modtest: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
