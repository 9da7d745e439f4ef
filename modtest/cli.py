"""Command line: ``modtest cluster``, ``modtest audit``, ``modtest init``, ``modtest compare``,
``modtest report``.

The settings shared with the pytest plugin come from one table (:mod:`modtest.options`), so a value
gets the same check and the same message in both. Exit status of ``modtest audit``: 0 when every
claim holds, 1 when a claim fails (after correction; an inconclusive claim too with
``--inconclusive fail``), 2 for a usage error; ``--no-fail`` reports without failing.
"""
from __future__ import annotations

import argparse
import json
import sys

from modtest.errors import ModtestError
from modtest.options import BY_DEST
from modtest.settings import Settings

EXIT_OK, EXIT_CLAIM_FAILED, EXIT_USAGE = 0, 1, 2
#: what a MODEL argument may be (every kind an adapter reads)
MODEL_HELP = ("model file (.keras or .h5; .pt2 from torch.export) or a Hugging Face model folder "
              "(config.json + *.safetensors)")


def _add(p: argparse.ArgumentParser, dest: str, **kw) -> None:
    """An option of the shared table, under its ``modtest`` flag (parsed and checked after argparse)."""
    opt = BY_DEST[dest]
    if opt.kind == "bool":
        p.add_argument(opt.cli, dest=dest, action="store_true", help=opt.help)
    else:
        p.add_argument(opt.cli, dest=dest, default=None, metavar=kw.pop("metavar", dest.split("_")[-1].upper()),
                       help=opt.help)


def _settings(args, dests) -> Settings:
    """The checked settings ``dests`` (:class:`modtest.settings.Settings`: one-line errors name the
    command's flag; the checks across options, such as the ensemble's quorum, made there too)."""
    return Settings.from_args(args, dests)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", help=MODEL_HELP + "; default: the shipped digits MLP")
    for dest in ("modtest_k", "modtest_seed", "modtest_json", "modtest_trust_model"):
        _add(p, dest)


def _model_file(model, trust: bool):
    """The model file to audit (the shipped example without a MODEL), checked without importing a
    framework: a missing or unsafe file is reported at once."""
    from modtest._examples import EXAMPLE_MODEL, example_path
    from modtest.frameworks import check_model_file

    if model is None:
        path = example_path(EXAMPLE_MODEL)
        print(f"no MODEL given: using the shipped example {path.name}")
        return path
    check_model_file(model, trust=trust, auditable=True)
    return model


def _resolve_model(model, trust: bool):
    """The model adapter and the name to print (the shipped example without a MODEL)."""
    from modtest.frameworks import adapt

    path = _model_file(model, trust)
    return adapt(path, trust=trust), str(path)


def _reporter(mode: str):
    """Progress on stderr: live lines on a terminal, heartbeat lines otherwise (or as asked)."""
    from modtest.progress import ConsoleReporter, NullReporter

    return NullReporter() if mode == "off" else ConsoleReporter(mode, file=sys.stderr)


def cmd_cluster(args) -> int:
    from modtest._io import atomic_write_text
    from modtest.cluster import cluster

    s = _settings(args, ("modtest_k", "modtest_seed", "modtest_json", "modtest_trust_model"))
    if s["modtest_json"]:
        from modtest._validation import check_output_path

        check_output_path(BY_DEST["modtest_json"].cli, s["modtest_json"])
    model, name = _resolve_model(args.model, s["modtest_trust_model"])
    part = cluster(model, k=s["modtest_k"], seed=s["modtest_seed"])
    g = part.graph
    print(f"{name}: {g.n_nodes} nodes ({g.kind}), k={part.k}, seed={part.seed}, n-cut={part.ncut:.4f}")
    print("  per layer: units in each cluster (cluster:units); 'isolated' units have no edges "
          "(dead or pruned) and belong to no cluster")
    w = max([16] + [len(str(n)) for n in g.layer_names])  # a long layer name widens the column
    for layer, size, role in zip(g.layer_names, g.layer_sizes, g.roles):
        lab = part.layer_labels(layer)
        counts = {int(c): int((lab == c).sum()) for c in sorted(set(lab.tolist()))}
        text = "  ".join(f"{'isolated' if c < 0 else c}:{n}" for c, n in counts.items())
        print(f"  {layer:<{w}} {role:<6} {size:>5} units   {text}")
    if s["modtest_json"]:
        d = part.to_dict()
        out = {"k": d["k"], "ncut": d["ncut"], "n_nodes": d["n_nodes"],
               "layers": [{"name": layer["name"], "units": layer["units"]} for layer in d["layers"]],
               "subclusters": [{key: sub[key] for key in ("cluster", "layer", "units", "size", "fraction")}
                               for sub in d["subclusters"]]}
        atomic_write_text(s["modtest_json"], json.dumps(out, indent=2))
        print(f"wrote {s['modtest_json']}")
    return EXIT_OK


_AUDIT = ("modtest_k", "modtest_seed", "modtest_json", "modtest_trust_model", "data", "modtest_max_examples",
          "modtest_alpha", "modtest_correction", "modtest_protocol", "modtest_ensemble", "modtest_max_random",
          "modtest_inconclusive", "modtest_progress", "modtest_html", "modtest_scheduler",
          "modtest_scheduler_timeout", "modtest_probes")


def _clusterability_arg(raw):
    """``--clusterability``: "auto" or a number of shuffles >= 0."""
    from modtest.errors import InvalidInput

    text = str(raw).strip().lower()
    if text == "auto":
        return "auto"
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise InvalidInput(f"--clusterability must be auto or an integer >= 0, got {raw!r}")
    return n


def _shipped_data_path():
    from modtest._examples import EXAMPLE_DATA

    return EXAMPLE_DATA


def _print_data(audit, data, max_examples) -> None:
    """What the audit runs on: the shipped data (a notice), classes the data lacks, a subsample."""
    from modtest.audit import coverage_note

    if data is None:
        print(f"no --data given: using the shipped digits data ({len(audit.x)} examples), which fits the model")
    else:
        note = coverage_note(audit)
        if note:
            print(f"note: {note}")
    if max_examples is not None and len(audit.x) == max_examples:
        print(f"using a stratified subsample of {len(audit.x)} examples (--max-examples)")


def cmd_audit(args) -> int:
    """Cluster the model, run the lesion study and print one line per tested sub-cluster."""
    from modtest._validation import check_choice, check_int
    from modtest.context import current
    from modtest.probes import load_probes

    s = _settings(args, _AUDIT)
    n_random = check_int("--n-random", args.n_random, minimum=1)
    registry = current().registry
    for spec in s["modtest_probes"] or ():  # their measures become claimable (and claimed: audit=True)
        load_probes(spec, registry)
    claims = (registry.audit_measures() if args.claims is None else
              [check_choice("--claims entry", c.strip(), registry.measures) for c in args.claims.split(",")
               if c.strip()])
    clusterability = _clusterability_arg(args.clusterability)
    # the files first, before anything slow is imported: a typo is reported at once
    model_file = _model_file(args.model, s["modtest_trust_model"])
    data, preloaded = s["data"], None
    if data is not None and data.is_dir():
        from modtest.data import image_folder_index

        image_folder_index(data)  # its images are read at the model's input size, once it is loaded
    elif data is not None:
        from modtest._validation import load_data

        preloaded = load_data(data)
    elif args.model is not None:
        from modtest.data import shipped_data_for
        from modtest.frameworks import file_signature

        sig = file_signature(model_file)  # the model's input and output from its config: no import
        if sig is not None:
            shipped_data_for(*sig)
    from modtest._validation import check_output_path

    for dest in ("modtest_json", "modtest_html"):
        if s[dest]:
            check_output_path(BY_DEST[dest].cli, s[dest])
    executor = None
    if s["modtest_scheduler"] is not None:  # reached before the slow model load (a bounded wait)
        from modtest.executors.dask import DaskExecutor

        executor = DaskExecutor(s["modtest_scheduler"], timeout=s["modtest_scheduler_timeout"],
                                trust=s["modtest_trust_model"]).connect()
    from modtest.audit import Audit

    try:  # the front door: the model loaded and the data checked once
        name = str(model_file)
        audit = Audit.open(model_file, data, trust=s["modtest_trust_model"], max_examples=s["modtest_max_examples"],
                           preloaded=preloaded, k=s["modtest_k"], seed=s["modtest_seed"], n_random=n_random,
                           alpha=s["modtest_alpha"], correction=s["modtest_correction"],
                           protocol=s["modtest_protocol"], ensemble=s["modtest_ensemble"],
                           max_random=s["modtest_max_random"], executor=executor,
                           progress=_reporter(s["modtest_progress"]), registry=registry)
        _print_data(audit, data, s["modtest_max_examples"])
        report, part, res = audit.run(claims, clusterability=clusterability, double_lesion=args.double_lesion,
                                      double_n_random=args.double_n_random, model_path=name,
                                      data_path=data if data is not None else _shipped_data_path())
    finally:
        if executor is not None:
            executor.close()
    _print_audit(report, part, res, name)
    if s["modtest_json"]:
        from modtest._io import atomic_write_text

        out = report.to_dict()
        from modtest.results import _jsonable

        if res is not None:
            imp, coh = res.network["importance"], res.network["output_coherence"]
            out.update(_jsonable({  # the keys of earlier versions, for their readers
                "ncut": float(part.ncut), "subclusters": res.rows,
                "importance": {"fisher_p": imp["fisher_p"], "chi2_p": imp["chi2_p"]},
                "output_coherence": {"fisher_p": coh["fisher_p"], "chi2_p": coh["chi2_p"]}}))
        atomic_write_text(s["modtest_json"], json.dumps(out, indent=2, allow_nan=False))
        print(f"wrote {s['modtest_json']}")
    if s["modtest_html"]:
        from modtest.report.html import write_html

        write_html(report, s["modtest_html"])
        print(f"wrote {s['modtest_html']}")
    failed = report.n_failed + (report.n_inconclusive if s["modtest_inconclusive"] == "fail" else 0)
    if failed and not args.no_fail:
        print(f"modtest: {failed} claim(s) not shown (exit status 1; --no-fail reports without failing)",
              file=sys.stderr)
        return EXIT_CLAIM_FAILED
    return EXIT_OK


def _fmt_p(p) -> str:
    return "-" if p is None else f"{p:.3f}"


def _print_audit(report, part, res, name) -> None:
    if res is None:  # no lesion measure claimed
        print(f"{name}: k={part.k}, seed={part.seed}, n-cut={part.ncut:.4f}, protocol={report.protocol}")
    else:
        _print_lesion(report, part, res, name)
    for c in report.claims:  # the measures of other probes (declared ones: docs/extending.md)
        if c["measure"] not in ("importance", "output_coherence", "clusterability"):
            label = c["measure"].replace("_", " ") + ":"
            print(f"{label:<18}raw p={_fmt_p(c.get('p_raw'))}" + (f"  ({c['detail']})" if c.get("detail") else ""))
    cl = report.probe("clusterability")
    if cl is not None:
        net = cl["network"]["clusterability"]
        claimed = any(c["measure"] == "clusterability" for c in report.claims)
        print(f"clusterability:   n-cut={net['ncut']:.4f}  shuffle p={net['p']:.3g}  (n={net['n']}"
              + ("" if claimed else "; for the report, not a claim: --clusterability N makes it one") + ")")
    for note in (report.extra or {}).get("notes", []):
        print(f"note: {note}")
    if report.double_lesion is not None:
        pairs = report.double_lesion["pairs"]
        print(f"double lesions:   {len(pairs)} pair(s) of important sub-clusters in different layers")
    print(f"claims ({report.correction} correction, alpha={report.alpha:g}): " + ", ".join(
        f"{c['measure']} {c['verdict']} (corrected p="
        f"{'-' if c['p_corrected'] is None else format(c['p_corrected'], '.3g')})" for c in report.claims))
    from modtest.report.build import cost_lines

    for line in cost_lines(report):
        print(line)
    hints = [h for c in report.claims if c.get("verdict") != "pass" for h in (c.get("hints") or [])]
    for h in dict.fromkeys(hints):  # each once, in order
        print(f"why: {h}")


def _print_lesion(report, part, res, name) -> None:
    print(f"{name}: k={part.k}, seed={part.seed}, n-cut={part.ncut:.4f}, "
          f"base accuracy={res.extras['base_accuracy']:.4f}, protocol={report.protocol}")
    w = max([16] + [len(str(r["layer"])) for r in res.rows])  # a long layer name widens the column
    print(f"  {'layer':<{w}} {'cluster':>7} {'size':>5} {'fraction':>8} {'drop':>8} "
          f"{'p_importance':>12} {'p_coherence':>11} {'controls':>8}  category")
    for r in res.rows:
        print(f"  {r['layer']:<{w}} {r['cluster']:>7} {r['size']:>5} {r['fraction']:>8.3f} "
              f"{r['drop']:>8.4f} {_fmt_p(r['p_importance']):>12} {_fmt_p(r['p_coherence']):>11} "
              f"{len(r['random_drops']):>8}  {r['category']}")
    for measure in ("importance", "output_coherence"):
        net = res.network[measure]
        label = measure.replace("_", " ") + ":"
        if "partitions" in net:
            from modtest.robust import partition_counts

            print(f"{label:<18}raw p={net['p']:.3g} in [{net['p_low']:.3g}, {net['p_high']:.3g}] (before "
                  f"correction), {partition_counts(net['holds'], net['fails'], net['ensemble'])} "
                  f"(quorum {net['quorum']}; raw chi2 p={net['chi2_p']:.3g})")
            print("    " + "  ".join(f"seed {e['seed']}: {e['p']:.2g}" for e in net["partitions"]))
        else:
            print(f"{label:<18}raw Fisher p={net['fisher_p']:.3g}  raw chi2 p={net['chi2_p']:.3g}  (n={net['n']}"
                  + (f", excluded={net['n_excluded']}" if net.get("n_excluded") else "") + ")")
    if res.network["n_filtered"]:
        print(f"{res.network['n_filtered']} of {res.network['n_subclusters']} sub-clusters filtered out")


def cmd_init(args) -> int:
    """Write tests/test_modularity.py and the pytest ini keys for MODEL and --data."""
    from pathlib import Path

    from modtest.scaffold import TEST_FILE, init_project

    s = _settings(args, ("modtest_trust_model",))
    k = None if args.modtest_k is None else _settings(args, ("modtest_k",))["modtest_k"]
    out = init_project(args.model, args.data, folder=args.dir, k=k, force=args.force, trust=s["modtest_trust_model"])
    print(f"wrote {out['test_file']}")
    print(f"wrote {out['ini']}: " + ", ".join(f"{key} = {v}" for key, v in out["keys"].items()))
    where = "" if Path(args.dir).resolve() == Path.cwd() else f" in {args.dir}"
    print(f"next: pytest {TEST_FILE.as_posix()}{where} (add --modtest-html report.html for the report)")
    return EXIT_OK


def cmd_compare(args) -> int:
    """Compare two audit JSON files; exit 1 when a claim stopped holding or a rule broke."""
    from modtest.report.compare import compare_reports, parse_rules
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
    return EXIT_OK if cmp.ok else EXIT_CLAIM_FAILED


def cmd_report(args) -> int:
    """Render the HTML report of a saved audit JSON."""
    from modtest.report.html import write_html
    from modtest.report.schema import load_report

    write_html(load_report(args.report), args.html)
    print(f"wrote {args.html}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="modtest", description="Audit neural networks for modularity.",
                                 epilog="exit status: 0 every claim holds, 1 a claim fails (modtest audit) or a "
                                        "comparison finds a regression (modtest compare), 2 usage error")
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("cluster", help="partition a model with spectral clustering")
    _add_model_args(p)
    p.set_defaults(func=cmd_cluster)
    p = sub.add_parser("audit", help="cluster a model and run the lesion study (importance, coherence)",
                       epilog="exit status: 0 when every claim holds, 1 when a claim fails after correction "
                              "(an inconclusive one too with --inconclusive fail), 2 for a usage error; "
                              "--no-fail always exits 0 after a completed audit")
    _add_model_args(p)
    for dest in _AUDIT[4:]:
        _add(p, dest)
    p.add_argument("--n-random", type=int, default=20,
                   help="random controls per sub-cluster (the robust protocol's first round; default 20)")
    p.add_argument("--clusterability", default="auto", metavar="N",
                   help="also claim that the n-cut is lower than that of N within-layer weight shuffles; "
                        "default auto: 20 shuffles for the report only (not a claim) when the graph has at most "
                        "250,000 edges; 0: skip")
    p.add_argument("--double-lesion", action="store_true",
                   help="also lesion pairs of important sub-clusters (paper A.10, Figure 9)")
    p.add_argument("--double-n-random", type=int, default=20, metavar="N",
                   help="random controls per double-lesion test (default 20)")
    p.add_argument("--claims", default=None, metavar="M,...",
                   help="claims to judge: importance, output_coherence, or any measure of a probe of --probes "
                        "(default: importance and output_coherence, and the measures of --probes' probes "
                        "declared with audit=True; the lesion study's two are computed and printed either way)")
    p.add_argument("--no-fail", action="store_true", help="exit 0 even when a claim fails (report only)")
    p.set_defaults(func=cmd_audit)
    p = sub.add_parser("init", help="add modularity tests to a project: tests/test_modularity.py and the "
                                    "pytest ini keys for a model and its data",
                       description="Check MODEL and DATA (the data must fit the model), then write "
                                   "tests/test_modularity.py and the ini keys model, data (and modtest_k) into the "
                                   "file pytest reads: pytest.ini, pyproject.toml [tool.pytest.ini_options], tox.ini "
                                   "or setup.cfg; a new pytest.ini when there is none. Nothing is overwritten "
                                   "without --force.")
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--data", metavar="PATH",
                   help="evaluation data: .npz with x and y, or a folder of class subfolders of images "
                        "(default: the shipped digits data, when it fits the model)")
    p.add_argument("--dir", default=".", metavar="DIR", help="the project's root folder (default: .)")
    p.add_argument("--k", dest="modtest_k", default=None, metavar="K",
                   help="number of clusters, written as modtest_k (default: not written; the sessions use 12)")
    p.add_argument("--trust-model", dest="modtest_trust_model", action="store_true",
                   help=BY_DEST["modtest_trust_model"].help)
    p.add_argument("--force", action="store_true", help="replace an existing test file and ini keys")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("compare", help="compare two audit JSON files (baseline, current)")
    p.add_argument("baseline", help="audit JSON of the baseline (--modtest-json / modtest audit --json)")
    p.add_argument("current", help="audit JSON to check against it")
    p.add_argument("--fail", metavar="EXPR", help="comma-separated rules, e.g. p:10x,important:-2 "
                   "(default: the recommended noise-aware rules)")
    p.add_argument("--html", metavar="PATH", help="write the current audit's HTML report with the comparison")
    p.set_defaults(func=cmd_compare)
    p = sub.add_parser("report", help="render the HTML report of an audit JSON")
    p.add_argument("report", help="audit JSON")
    p.add_argument("--html", metavar="PATH", required=True, help="HTML file to write")
    p.set_defaults(func=cmd_report)
    return ap


def main(argv=None) -> int:
    import logging

    from modtest.frameworks import quiet_startup

    quiet_startup()  # no TensorFlow start-up lines on stderr
    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # retracing notices are not for users
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ModtestError as exc:
        from modtest._validation import for_interface

        print(f"modtest: error: {for_interface(exc, 'cli')}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    raise SystemExit(main())
