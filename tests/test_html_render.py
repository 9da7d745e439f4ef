"""The HTML report: structure (html.parser, always) and a real browser screenshot (when chromium exists).

Uses a synthetic report (no keras): every section, including Figure 9 and visualization grids.
"""
import base64
import html
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


def test_scatter_labels_top_subclusters_without_overlap_inside_the_axes():
    from modtest.report.figures import scatter_fig

    rng = np.random.default_rng(3)
    # 30 important sub-clusters crowded together and against the edges (fraction 1, largest drop)
    rows = [{"name": f"conv2d_{i % 3}-{i}", "category": "important", "fraction": float(f), "drop": float(d)}
            for i, (f, d) in enumerate(zip(np.r_[rng.uniform(0.05, 0.15, 25), [1.0] * 5],
                                           np.r_[rng.uniform(0.10, 0.14, 25), np.linspace(0.2, 0.3, 5)]))]
    rows += [{"name": f"dense-{i}", "category": "other", "fraction": 0.5, "drop": 0.0} for i in range(5)]
    fig, labels = scatter_fig(rows, max_labels=8)
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in labels]
    ax_box = fig.axes[0].get_window_extent(renderer)
    assert 3 <= len(labels) <= 8
    top8 = {r["name"] for r in sorted(rows, key=lambda r: -r["drop"])[:8]}
    assert {t.get_text() for t in labels} <= top8
    for i, a in enumerate(boxes):
        assert ax_box.x0 <= a.x0 and a.x1 <= ax_box.x1 and ax_box.y0 <= a.y0 and a.y1 <= ax_box.y1
        assert not any(a.overlaps(b) for b in boxes[i + 1:])
    legend = fig.axes[0].get_legend().get_window_extent(renderer)
    assert not any(a.overlaps(legend) for a in boxes)


@pytest.mark.parametrize("k", [4, 12, 30])
def test_partition_legend_is_readable_and_inside_the_figure(k):
    from modtest.report.figures import partition_fig

    layers = [{"name": f"dense_{i}", "cluster_sizes": {str(c): 3 for c in range(-1, k)}} for i in range(4)]
    fig = partition_fig({"k": k, "ncut": 1.0, "layers": layers})
    renderer = fig.canvas.get_renderer()
    legend = fig.axes[0].get_legend()
    assert min(t.get_fontsize() for t in legend.get_texts()) >= 9
    box = legend.get_window_extent(renderer)
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width and box.y0 >= 0 and box.y1 <= fig.bbox.height


def test_no_empty_figures():
    rep = synthetic_report()
    rep.double_lesion = {"pairs": [], "matrix": {"names": ["dense_1-0"], "values": [[0.1]],
                                                  "significant": [[None]]}}
    for p in rep.probes:
        for r in p.get("rows", []):
            r.pop("class_drops", None)
    text = render_html(rep)
    p = parse(text)
    seen = check_images(p)
    assert "dependencies" in p.sections and "dependencies" not in seen and "profiles" not in seen
    assert "no pairs: double lesions need two important sub-clusters in different layers" in text
    assert "no class-wise drops in this report" in text


def test_clusterability_shown_for_reference_is_marked_as_not_a_claim():
    rep = synthetic_report()
    rep.claims = [c for c in rep.claims if c["measure"] != "clusterability"]
    rep.refresh_counts()
    assert "Shown for reference, not a claim" in render_html(rep)
    assert "Shown for reference, not a claim" not in render_html(synthetic_report())


def _chromium():
    """The browser, or a skip; with MODTEST_REQUIRE_BROWSER=1 (set by .ci/run) a missing one fails."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("MODTEST_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is not installed (MODTEST_REQUIRE_BROWSER=1): apt-get install chromium")
        pytest.skip("chromium is not installed (headless render check; .ci/run installs it)")
    return exe


def _browser(tmp_path, *args, timeout=180):
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


CHECK_SCRIPT = """<script>
window.addEventListener('load', () => {
  const html = document.documentElement;
  const imgs = [...document.images].map(i => {
    const r = i.getBoundingClientRect();
    return {id: i.id, decoded: i.complete && i.naturalWidth > 0, left: r.left, right: r.right, width: r.width};
  });
  const out = document.createElement('pre');
  out.id = 'modtest-check';
  out.textContent = JSON.stringify({imgs, scrollWidth: html.scrollWidth, clientWidth: html.clientWidth});
  document.body.appendChild(out);
});
</script></body>"""


@pytest.mark.parametrize("width", [1280, 800])
def test_page_layout_in_headless_chromium(html_file, tmp_path, width):
    """In a real browser: every figure decodes and fits the window, and the page does not scroll
    sideways (the check runs in a copy of the page with a script added; the report has none)."""
    import json
    import re

    probe = tmp_path / "probe.html"
    probe.write_text(html_file.read_text().replace("</body>", CHECK_SCRIPT))
    out = _browser(tmp_path, f"--window-size={width},900", "--virtual-time-budget=10000", "--dump-dom",
                   probe.as_uri())
    found = re.search(r'<pre id="modtest-check">(.*?)</pre>', out.stdout, re.S)
    assert found, out.stderr[-2000:]
    got = json.loads(html.unescape(found.group(1)))
    want = [a.get("id") for _section, a in parse(html_file.read_text()).imgs]
    assert [i["id"] for i in got["imgs"]] == want and all(i["decoded"] for i in got["imgs"]), got["imgs"]
    assert got["scrollWidth"] <= got["clientWidth"], got
    assert all(0 <= i["left"] and i["right"] <= got["clientWidth"] for i in got["imgs"]), got["imgs"]


def test_renders_in_headless_chromium(html_file, tmp_path):
    shot = tmp_path / "shot.png"
    _browser(tmp_path, f"--screenshot={shot}", "--window-size=1200,2400", html_file.as_uri())
    assert shot.exists() and shot.read_bytes()[:8] == PNG_MAGIC
    from matplotlib.image import imread

    img = imread(io.BytesIO(shot.read_bytes()), format="png")
    assert img.shape[0] == 2400 and img.shape[1] == 1200
    # not a blank page: many distinct colours (figures drawn), not just white
    assert len(np.unique((img[..., :3] * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
    keep = os.environ.get("MODTEST_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def test_failure_hints_are_listed_under_the_claims():
    rep = synthetic_report(n_claims_failed=1)
    rep.claims[1]["hints"] = ["the model's base accuracy is 0.113, at or near chance (0.100)"]
    text = render_html(rep)
    assert "Why claims could not be shown:" in text and "at or near chance (0.100)" in text
    assert "Why claims could not be shown" not in render_html(synthetic_report())


def test_title_k_and_timings_read_right():
    """Titled with the file the user named (not the model's internal name), k from the claims (a
    test may pass its own), durations in seconds and minutes, never 1.71e+03."""
    rep = synthetic_report()
    rep.k = 12  # the session's default; every claim ran at k=4
    for c in rep.claims:
        c["k"] = 4
    rep.timings = {"total_seconds": 1712.0, "probes": {"lesion[k=4]": 0.42}}
    text = render_html(rep)
    assert "<title>modtest audit: m.keras</title>" in text and "synthetic</title>" not in text
    assert "<td>k</td><td>4</td>" in text.replace(" ", "")
    assert "1,712 s (28.5 min)" in text and "0.42 s" in text and "e+03" not in text
