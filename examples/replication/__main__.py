"""Run the replication: ``python -m examples.replication [--replicates 5] [--out docs/replication] [--quick]``.

For every family of :mod:`.families` and replicate r (training seed r): train, then audit the trained
model and an untrained copy (:func:`modtest.probes.visualization.untrained_control`, seed 100 + r) with
k=12 clusters (cluster seed r): lesion importance and output coherence (20 random controls), feature-
visualization input and output coherence and activational variance (9 random controls, CoV quartiles).
The trained MLP families are also lesioned at k=8 and k=18 (Table 3). Writes ``results.json``,
``table.md`` and the PNG figures under ``--out``.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

from examples.replication import table as T  # noqa: E402
from examples.replication.families import FAMILIES, MLP_FAMILIES, family_data, train_family  # noqa: E402

NET_KEYS = ("fisher_p", "chi2_p", "fisher_stat", "chi2_stat", "n", "n_excluded")


def _net(d: dict) -> dict:
    return {k: d.get(k) for k in NET_KEYS}


def untrained_seed(family_index: int, replicate: int) -> int:
    """Seed of the untrained copy: distinct per family and replicate (same-architecture families would
    otherwise share one random network)."""
    return 100 + 10 * family_index + replicate


def audit(model, x, y, *, k: int = 12, seed: int = 0, n_lesion: int = 20, n_vis: int = 9,
          steps: int = 256, vis: bool = True, sensitivity_ks=(), return_images: bool = False):
    """Cluster ``model`` into ``k`` and run the lesion (and visualization) probes.

    Returns ``(record, lesion_result, images)``: record holds ``measures`` (network-level dicts),
    ``cov_quartiles``, ``taxonomy``, ``sensitivity`` ({k: measures}) and ``seconds``.
    """
    import modtest
    from modtest.errors import NoTestableSubclusters
    from modtest.probes.lesion import lesion_study
    from modtest.probes.visualization import visualization_study

    t0 = time.perf_counter()
    rec = {"measures": {}, "cov_quartiles": None, "sensitivity": {}, "errors": []}
    part = modtest.cluster(model, k, seed)
    rec["ncut"] = part.ncut
    les = lesion_study(model, part, x, y, n_random=n_lesion, seed=seed, progress=False)
    rec["measures"]["lesion_importance"] = _net(les.network["importance"])
    rec["measures"]["lesion_output_coherence"] = _net(les.network["output_coherence"])
    rec["taxonomy"] = les.extras.get("taxonomy")
    images = vres = None
    if vis:
        try:
            out = visualization_study(model, part, n_random=n_vis, seed=seed, steps=steps,
                                      return_images=return_images)
            vres, images = out if return_images else (out, None)
            for m in ("input_coherence", "output_coherence", "activational_variance"):
                rec["measures"][f"vis_{m}"] = _net(vres.network[m])
            rec["cov_quartiles"] = vres.extras["cov_quartiles"]
        except NoTestableSubclusters as e:
            rec["errors"].append(f"visualization: {e}")
    for k2 in sensitivity_ks:
        p2 = modtest.cluster(model, k2, seed)
        l2 = lesion_study(model, p2, x, y, n_random=n_lesion, seed=seed, progress=False)
        rec["sensitivity"][str(k2)] = {"lesion_importance": _net(l2.network["importance"]),
                                       "lesion_output_coherence": _net(l2.network["output_coherence"])}
    rec["seconds"] = time.perf_counter() - t0
    return rec, les, (vres, images)


# ------------------------------------------------------------------------------------------ figures

def save_vis_grid(vres, images, path, title=None, max_cols: int = 12, n_rand_rows: int = 3):
    """Figure-1-style grid: up to 3 largest sub-clusters per layer, true on top, 3 random controls below."""
    from modtest.report.figures_vis import save_grid

    names = list(images)
    rows = vres.rows
    by_layer = {}
    for r, name in zip(rows, names):
        by_layer.setdefault(r["layer"], []).append((r["size"], name, r))
    chosen = []
    for items in by_layer.values():
        items.sort(key=lambda t: -t[0])
        chosen += [(name, r) for _, name, r in items[:3]]
    chosen = chosen[:max_cols]
    true = [images[n][0] for n, _ in chosen]
    rand = [images[n][1:1 + n_rand_rows] for n, _ in chosen]
    layers = [r["layer"] for _, r in chosen]
    titles = [f"{n} ({r['size']}) p={r['p_input']:.1f}" for n, r in chosen]
    return save_grid(true, rand, layers, path, titles=titles, cell_inches=1.2)


def save_figure2(lesion_result, path, title: str):
    """Figure 2: sub-cluster fraction of its layer vs accuracy drop, coloured by taxonomy category."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    pts = lesion_result.extras.get("figure2") or [[r["fraction"], r["drop"], r["category"], r["name"]]
                                                   for r in lesion_result.rows]
    colors = {"important": "tab:red", "sig-but-not-diff": "tab:orange", "diff-but-not-sig": "tab:purple",
              "complete": "tab:brown", "prunable": "tab:green", "small": "tab:gray", "other": "tab:blue"}
    fig = Figure(figsize=(6.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    seen = set()
    for frac, drop, cat, name in pts:
        key = str(cat).lower().replace("_", "-")
        c = colors.get(key, "black")
        ax.scatter([frac], [drop], color=c, s=30, label=None if cat in seen else cat)
        seen.add(cat)
        if key == "important":
            ax.annotate(name, (frac, drop), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axhline(0.01, color="k", lw=0.5, ls="--")
    ax.axvline(0.05, color="k", lw=0.5, ls=":")
    ax.set_xlabel("fraction of layer's units in sub-cluster")
    ax.set_ylabel("accuracy drop under lesion")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


# ------------------------------------------------------------------------------------------ tables

def build_tables(results: dict, settings: dict) -> str:
    labels, rows, extra = [], [], []
    for name, fam in FAMILIES.items():
        for cond in ("trained", "untrained"):
            reps = results.get(name, {}).get(cond)
            if not reps:
                continue
            labels.append(fam.label + ("" if cond == "trained" else " (untrained)"))
            rows.append(T.median_cells(reps))
            acc = np.median([r["accuracy"] for r in reps])
            q = T.cov_of_median_network(reps)
            extra.append([f"{acc:.3f}", " / ".join("--" if q_ is None or math.isnan(q_) else f"{q_:.2f}"
                                                    for q_ in q)])
    n = settings["replicates"]
    out = [f"### Table 1 (digits): medians over {n} replicate(s), k={settings['k']}", "",
           T.markdown_table(labels, rows, extra_cols=(["test acc.", "CoV Q1 / median / Q3"], extra)), "",
           "Bold: median p < 0.05. B: significant under Benjamini-Hochberg (FDR 0.05) within its column "
           "across all rows (Table 4). H: significant under Holm (FWER 0.05) over the whole table "
           "(Table 5). CoV quartiles: of the replicate with the median median-CoV (Table 6).", ""]
    for k2 in settings["sensitivity_ks"]:
        labs, rws = [], []
        for name in MLP_FAMILIES:
            reps = results.get(name, {}).get("trained")
            if not reps:
                continue
            labs.append(FAMILIES[name].label)
            rws.append(T.median_cells([{"measures": r["sensitivity"].get(str(k2), {})} for r in reps],
                                      T.LESION_MEASURES))
        if labs:
            out += [f"### Sensitivity (Table 3): lesion measures at k={k2}, trained MLP families", "",
                    T.markdown_table(labs, rws, T.LESION_MEASURES), ""]
    return "\n".join(out)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {len(os.sched_getaffinity(0))} usable cores, {platform.platform()}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m examples.replication", description=__doc__.splitlines()[0])
    ap.add_argument("--replicates", type=int, default=5)
    ap.add_argument("--out", default="docs/replication")
    ap.add_argument("--quick", action="store_true",
                    help="1 replicate, 10 lesion / 4 visualization controls, 128 steps (development)")
    ap.add_argument("--steps", type=int, default=None, help="visualization steps (default 256, quick 128)")
    ap.add_argument("--families", default=",".join(FAMILIES), help="comma-separated subset")
    args = ap.parse_args(argv)

    import keras

    settings = {"replicates": 1 if args.quick else args.replicates, "k": 12, "sensitivity_ks": [8, 18],
                "n_lesion": 10 if args.quick else 20, "n_vis": 4 if args.quick else 9,
                "steps": args.steps or (128 if args.quick else 256), "quick": args.quick,
                "split_seed": 0, "families": args.families.split(","),
                "command": "python -m examples.replication " + " ".join(argv if argv is not None else sys.argv[1:]),
                "machine": machine(), "keras": keras.__version__, "backend": keras.backend.backend()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    results: dict = {}
    timing: dict = {}

    def log(msg):
        print(f"[{time.perf_counter() - t_start:7.1f}s] {msg}", flush=True)

    log(f"settings: {json.dumps(settings)}")
    for name in settings["families"]:
        fam = FAMILIES[name]
        fam_index = list(FAMILIES).index(name)
        xtr, ytr, xte, yte = family_data(fam, settings["split_seed"])
        results[name] = {"trained": [], "untrained": []}
        timing[name] = {"train": 0.0, "audit": 0.0}
        for r in range(settings["replicates"]):
            from examples.digits import accuracy
            from modtest.probes.visualization import untrained_control

            t0 = time.perf_counter()
            model = train_family(fam, xtr, ytr, seed=r)
            timing[name]["train"] += time.perf_counter() - t0
            first = r == 0
            ks = settings["sensitivity_ks"] if fam.arch == "mlp" else ()
            kw = dict(k=settings["k"], seed=r, n_lesion=settings["n_lesion"], n_vis=settings["n_vis"],
                      steps=settings["steps"])
            untrained = untrained_control(model, seed=untrained_seed(fam_index, r))
            for cond, m in (("trained", model), ("untrained", untrained)):
                t0 = time.perf_counter()
                want_img = first and cond == "trained" and fam.task != "digits"
                rec, les, (vres, imgs) = audit(m, xte, yte, sensitivity_ks=ks if cond == "trained" else (),
                                               return_images=want_img, **kw)
                timing[name]["audit"] += time.perf_counter() - t0
                rec["seed"] = r
                rec["accuracy"] = accuracy(m, xte, yte)
                results[name][cond].append(rec)
                imp = rec["measures"]["lesion_importance"]
                log(f"{name} r={r} {cond}: acc={rec['accuracy']:.3f} importance fisher_p={imp['fisher_p']:.3g} "
                    f"chi2_p={imp['chi2_p']:.3g} ({rec['seconds']:.1f}s)")
                if want_img and imgs:
                    save_vis_grid(vres, imgs, out / f"vis_{name}.png")
                if first and cond == "trained" and name == "mlp_pruned":
                    save_figure2(les, out / "figure2_mlp_pruned.png",
                                 f"Pruned MLP on digits (replicate 0), k={settings['k']}: "
                                 f"sub-cluster size vs accuracy drop")
            del model
            keras.backend.clear_session()
            gc.collect()
        log(f"{name} done: train {timing[name]['train']:.0f}s, audit {timing[name]['audit']:.0f}s")
        _write(out, settings, results, timing, time.perf_counter() - t_start)
    total = time.perf_counter() - t_start
    md = _write(out, settings, results, timing, total)
    print(md)
    log(f"total {total:.0f}s")
    return 0


def _write(out: Path, settings, results, timing, total) -> str:
    from modtest.results import _jsonable

    md = build_tables(results, settings)
    (out / "table.md").write_text(md + f"\n\nTotal time: {total:.0f} s on {settings['machine']}.\n")
    (out / "results.json").write_text(json.dumps(_jsonable(
        {"settings": settings, "seconds": total, "timing": timing, "results": results}), indent=1))
    return md


if __name__ == "__main__":
    sys.exit(main())
