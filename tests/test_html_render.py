"""The HTML report: structure (html.parser, always) and a real browser screenshot (when chromium exists).

Uses a synthetic report (no keras): every section, including Figure 9 and visualization grids.
"""
import base64
import io
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from modtest.report import Report, add_visualization, render_html, write_html

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CATS = ["important", "other", "small", "diff-but-not-sig", "prunable"]


def synthetic_report(seed: int = 0, n_claims_failed: int = 0) -> Report:
    rng = np.random.default_rng(seed)
    rows = []
    for li, layer in enumerate(["dense_1", "dense_2", "dense_3"]):
        for c in range(4):
            drop = float(rng.uniform(0, 0.2))
            rows.append({"layer": layer, "cluster": c, "name": f"{layer}-{c}", "size": 10 + c,
                         "layer_size": 64, "fraction": (10 + c) / 64, "drop": drop,
                         "class_drops": rng.uniform(0, 0.3, 10).tolist(),
                         "random_class_drops": rng.uniform(0, 0.1, (5, 10)).tolist(),
                         "p_importance": 1 / 6, "p_coherence": 0.5, "category": CATS[(li + c) % 5]})
    net = {"fisher_p": 1e-4, "fisher_stat": 30.0, "chi2_p": 2e-4, "chi2_stat": 20.0, "n": 12, "n_excluded": 0}
    probes = [
        {"probe": "lesion", "k": 4, "seed": 0, "model_hash": "m" * 16, "data_hash": "d" * 16, "settings": {},
         "network": {"importance": net, "output_coherence": dict(net, fisher_p=0.6, chi2_p=0.5)},
         "rows": rows, "seconds": 1.0, "source": "computed",
         "extras": {"base_accuracy": 0.97, "taxonomy": {c: sum(r["category"] == c for r in rows) for c in CATS}}},
        {"probe": "clusterability", "k": 4, "seed": 0, "rows": [], "settings": {}, "seconds": 2.0,
         "network": {"clusterability": {"p": 0.05, "fisher_p": 0.05, "chi2_p": 0.05, "ncut": 1.2,
                                        "z_score": -3.0, "n": 19, "n_excluded": 0}},
         "extras": {"shuffled_ncuts": rng.uniform(1.5, 2.0, 19).tolist()}},
    ]
    names = ["dense_1-0", "dense_2-1", "dense_3-2"]
    vals = [[0.1, 0.05, 0.02], [0.03, 0.12, None], [0.01, None, 0.08]]
    sig = [[None, True, False], [False, None, None], [True, None, None]]
    claims = [{"name": "importance[k=4,seed=0]", "measure": "importance", "method": "fisher",
               "statistic": 30.0, "p_raw": 1e-4, "p_corrected": 2e-4, "alpha": 0.05, "passed": True,
               "verdict": "pass", "nodeid": "test_x.py::test_imp", "n_subclusters": 12},
              {"name": "clusterability[k=4,seed=0]", "measure": "clusterability", "method": "shuffle",
               "statistic": -3.0, "p_raw": 0.05, "p_corrected": 0.05 if not n_claims_failed else 0.1,
               "alpha": 0.05, "passed": not n_claims_failed, "verdict": "fail" if n_claims_failed else "pass",
               "nodeid": "test_x.py::test_cl", "n_subclusters": 0}]
    part = {"model_hash": "m" * 16, "k": 4, "seed": 0, "ncut": 1.2, "n_nodes": 202, "n_isolated": 2,
            "layers": [{"name": n, "units": u, "role": r, "cluster_sizes": {"-1": 1, "0": u // 2, "1": u - u // 2 - 1}}
                       for n, u, r in (("input", 10, "input"), ("dense_1", 64, "hidden"),
                                       ("dense_2", 64, "hidden"), ("dense_3", 64, "hidden"))]}
    rep = Report.new(source="pytest", model={"path": "m.keras", "name": "synthetic", "hash": "m" * 16},
                     data={"path": "d.npz", "hash": "d" * 16, "n_examples": 100}, k=4, seed=0, alpha=0.05,
                     correction="holm", partitions=[part], probes=probes, claims=claims,
                     double_lesion={"pairs": [], "matrix": {"names": names, "values": vals, "significant": sig}},
                     timings={"total_seconds": 3.0, "probes": {"lesion[k=4]": 1.0}})
    return rep


class _Parser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sections, self.imgs, self.stack = [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
            self.stack.append(a.get("id"))
        if tag == "img":
            self.imgs.append((self.stack[-1] if self.stack else None, a))

    def handle_endtag(self, tag):
        if tag == "section" and self.stack:
            self.stack.pop()


def parse(text: str) -> _Parser:
    p = _Parser()
    p.feed(text)
    p.close()
    return p


def check_images(parser) -> dict:
    """Every <img> is a non-empty base64 PNG that decodes; returns {section: [ids]}."""
    seen = {}
    for section, a in parser.imgs:
        src = a.get("src", "")
        assert src.startswith("data:image/png;base64,"), src[:40]
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert len(raw) > 1000 and raw[:8] == PNG_MAGIC
        seen.setdefault(section, []).append(a.get("id"))
    return seen


@pytest.fixture(scope="module")
def html_file(tmp_path_factory):
    rep = synthetic_report()
    grid = tmp_path_factory.mktemp("grid") / "grid.png"
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 1))
    FigureCanvasAgg(fig)
    fig.add_subplot(1, 1, 1).imshow(np.arange(64).reshape(8, 8), cmap="gray")
    fig.savefig(grid, format="png")
    add_visualization(rep, "dense_1 visualizations", grid)
    path = tmp_path_factory.mktemp("html") / "report.html"
    write_html(rep, path)
    return path


def test_structure_and_every_figure(html_file):
    text = html_file.read_text()
    p = parse(text)
    assert p.sections == ["summary", "claims", "partition", "clusterability", "importance", "profiles",
                          "dependencies", "visualizations", "network", "details"]
    seen = check_images(p)
    assert seen == {"partition": ["fig-partition"], "clusterability": ["fig-clusterability"],
                    "importance": ["fig-importance"], "profiles": ["fig-profiles"],
                    "dependencies": ["fig-dependencies"], "visualizations": ["fig-vis-0"]}
    assert "PASS: 2 claim(s), 0 failed" in text and "test_x.py::test_imp" in text
    assert "<script" not in text and "http://" not in text and "https://" not in text  # self-contained


def test_failed_claim_and_missing_optional_sections():
    rep = synthetic_report(n_claims_failed=1)
    rep.double_lesion = None
    rep.probes = [p for p in rep.probes if p["probe"] != "clusterability"]
    rep.refresh_counts()
    p = parse(render_html(rep))
    assert "dependencies" not in p.sections and "clusterability" not in p.sections
    assert "importance" in p.sections and len(p.imgs) == 3


def test_rendering_error_leaves_no_file(tmp_path, monkeypatch):
    from modtest.report import figures

    def boom(rows):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(figures, "scatter_figure", boom)
    out = tmp_path / "r.html"
    with pytest.raises(RuntimeError, match="drawing failed"):
        write_html(synthetic_report(), out)
    assert list(tmp_path.iterdir()) == []


def test_no_pyplot_state():
    """Rendering draws on matplotlib's object API (Figure + Agg canvas), never pyplot's global state:
    checked in a fresh interpreter, where nothing else could have imported pyplot."""
    code = ("import sys; sys.path.insert(0, 'tests')\n"
            "from test_html_render import synthetic_report\n"
            "from modtest.report.html import render_html\n"
            "text = render_html(synthetic_report(n_claims_failed=1))\n"
            "assert 'FAIL: 2 claim(s), 1 failed' in text and '<img' in text\n"
            "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot was imported'\n")
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed (headless render check)")
def test_renders_in_headless_chromium(html_file, tmp_path):
    shot = tmp_path / "shot.png"
    cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}", "--window-size=1200,2400",
           html_file.as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.exists() and shot.read_bytes()[:8] == PNG_MAGIC
    from matplotlib.image import imread

    img = imread(io.BytesIO(shot.read_bytes()), format="png")
    assert img.shape[0] == 2400 and img.shape[1] == 1200
    # not a blank page: many distinct colours (figures drawn), not just white
    assert len(np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
    keep = os.environ.get("MODTEST_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)
