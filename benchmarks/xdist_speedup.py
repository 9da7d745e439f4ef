"""Wall time of the example audit with ``pytest -n 1`` vs ``pytest -n 2`` (cold probe cache), and the
work-split speed-up of lesion_study over 1 vs 2 processes.

    python benchmarks/xdist_speedup.py [--workers 2] [--skip-pytest] [--skip-workshare]

Three measurements, each printed as a ratio measured in this run, with the machine:

1. ``pytest examples/test_digits_modularity.py -n 1`` vs ``-n W``, the plugin as it is, cold cache.
2. The same with a ``conftest.py`` that makes every xdist worker join the lesion probe at session
   start (``modtest.executors.workshare.prefetch_lesion`` with a shared workshare folder under the cache
   folder) -- what the plugin's ``--modtest-prefetch importance,output_coherence`` option does once
   wired in (the conftest emulates it, so this runs before the plugin change lands).
3. lesion_study of the example MLP (k=12, 20 random) run by 1 process vs W processes sharing one
   workshare folder; time from a common start signal (imports and model loading excluded) to the
   last process's result.
4. The same for visualization_study of the example CNN (batch_size 16, so 11 work units): the
   probe whose work outweighs start-up even on the small example.

Target (issue 9): >= 1.6x at 2 workers. On a 2-core machine that other jobs share the ratio is
capped by the free cores: the load average is printed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from _machine import machine  # noqa: E402

PREFETCH_CONFTEST = textwrap.dedent('''
    import pytest

    @pytest.fixture(scope="session", autouse=True)
    def _modtest_prefetch(request):
        """Emulates --modtest-prefetch importance,output_coherence: every worker joins the probe."""
        from modtest.plugin import get_session as _state
        from modtest.executors.workshare import prefetch_lesion

        st = _state(request.config)
        model = st.get_model()
        x, y = st.data_for(model)
        settings = st.collector.defaults.settings.get("lesion", {})
        prefetch_lesion(st.store, model, x, y, st.k, st.seed, settings,
                        workshare=st.cache_dir / "workshare")
''')

WORKER = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path
    import numpy as np
    from modtest._examples import EXAMPLE_DATA, EXAMPLE_MODEL
    from modtest.cluster import cluster
    from modtest.probes.lesion import lesion_study
    from modtest.frameworks.keras.model import load_model
    from modtest.executors.workshare import WorkShare

    tmp, name = Path(sys.argv[1]), sys.argv[2]
    model = load_model(EXAMPLE_MODEL)
    d = np.load(EXAMPLE_DATA)
    part = cluster(model, k=12, seed=0)
    share = WorkShare(tmp / "share")
    (tmp / (name + ".ready")).write_text("1")
    while not (tmp / "go").exists():
        time.sleep(0.005)
    res = lesion_study(model, part, d["x"], d["y"], n_random=20, seed=0, progress=False, workshare=share)
    (tmp / (name + ".json")).write_text(json.dumps({"end": time.time(), "computed": share.stats.computed,
        "rows": json.loads(res.to_json())["rows"]}))
''')


VIS_WORKER = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path
    from modtest._examples import EXAMPLE_CNN
    from modtest.cluster import cluster
    from modtest.frameworks.keras.model import load_model
    from modtest.probes.visualization import visualization_study
    from modtest.executors.workshare import WorkShare

    tmp, name = Path(sys.argv[1]), sys.argv[2]
    model = load_model(EXAMPLE_CNN)
    part = cluster(model, k=12, seed=0)
    share = WorkShare(tmp / "share")
    (tmp / (name + ".ready")).write_text("1")
    while not (tmp / "go").exists():
        time.sleep(0.005)
    res = visualization_study(model, part, seed=0, batch_size=16, workshare=share)
    (tmp / (name + ".json")).write_text(json.dumps({"end": time.time(), "computed": share.stats.computed,
        "rows": json.loads(res.to_json())["rows"]}))
''')


def _load() -> str:
    try:
        return f"load average {os.getloadavg()[0]:.1f}"
    except OSError:
        return "load average ?"


def _pytest(n: int, workdir: Path, prefetch: bool) -> float:
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    shutil.copy(ROOT / "examples" / "test_digits_modularity.py", workdir / "test_digits_modularity.py")
    wired = _plugin_has_prefetch()
    if prefetch and not wired:
        (workdir / "conftest.py").write_text(PREFETCH_CONFTEST)
    (workdir / "pytest.ini").write_text("[pytest]\n")
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", str(n),
           "--modtest-cache", str(workdir / "cache"), "test_digits_modularity.py"]
    if prefetch and wired:
        cmd += ["--modtest-prefetch", "importance,output_coherence"]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    last = (r.stdout.strip().splitlines() or ["?"])[-1]
    if r.returncode not in (0, 1):
        print(r.stdout[-2000:], r.stderr[-2000:])
        raise SystemExit(f"pytest failed with exit code {r.returncode}")
    print(f"    pytest -n {n}{' + prefetch' if prefetch else ''}: {dt:7.1f} s  ({last}; {_load()})")
    return dt


def _plugin_has_prefetch() -> bool:
    """Whether the installed plugin has --modtest-prefetch (else a conftest emulates it)."""
    try:
        import modtest.plugin as plugin
    except ImportError:
        return False
    return any(o[0] == "--modtest-prefetch" for o in getattr(plugin, "_OPTIONS", ()))


def _workshare(n: int, tmp: Path, script: str = WORKER, what: str = "lesion_study") -> tuple[float, list]:
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    (tmp / "worker.py").write_text(script)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [subprocess.Popen([sys.executable, str(tmp / "worker.py"), str(tmp), f"w{i}"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(n)]
    while not all((tmp / f"w{i}.ready").exists() for i in range(n)):
        for p in procs:
            if p.poll() not in (None, 0):
                raise SystemExit(p.stderr.read().decode()[-2000:])
        time.sleep(0.02)
    t0 = time.time()
    (tmp / "go").write_text("1")
    for p in procs:
        _, err = p.communicate()
        if p.returncode:
            raise SystemExit(err.decode()[-2000:])
    outs = [json.loads((tmp / f"w{i}.json").read_text()) for i in range(n)]
    dt = max(o["end"] for o in outs) - t0
    same = all(o["rows"] == outs[0]["rows"] for o in outs)
    print(f"    {what}, {n} process(es): {dt:7.1f} s  (units computed per process "
          f"{[o['computed'] for o in outs]}, same rows in all: {same}; {_load()})")
    return dt, outs


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--skip-pytest", action="store_true")
    ap.add_argument("--skip-workshare", action="store_true")
    args = ap.parse_args(argv)
    w = args.workers
    print(f"machine: {machine()}; {_load()}")
    tmp = Path(tempfile.mkdtemp(prefix="modtest-xdist-"))
    try:
        if not args.skip_pytest:
            print("1. example audit, plugin as it is (cold cache):")
            t1 = _pytest(1, tmp / "a1", False)
            tw = _pytest(w, tmp / "aw", False)
            print(f"   speed-up -n {w} vs -n 1: {t1 / tw:.2f} x")
            how = "--modtest-prefetch" if _plugin_has_prefetch() else "prefetch emulated by a conftest"
            print(f"2. example audit, every worker joins the lesion probe ({how}):")
            p1 = _pytest(1, tmp / "p1", True)
            pw = _pytest(w, tmp / "pw", True)
            print(f"   speed-up -n {w} vs -n 1: {p1 / pw:.2f} x   (vs plain -n 1: {t1 / pw:.2f} x)")
        if not args.skip_workshare:
            print("3. lesion_study of the example MLP (k=12, 20 random), shared through a workshare folder:")
            s1, o1 = _workshare(1, tmp / "s1")
            sw, ow = _workshare(w, tmp / "sw")
            print(f"   speed-up {w} processes vs 1: {s1 / sw:.2f} x   (results identical: "
                  f"{o1[0]['rows'] == ow[0]['rows']})")
            print("4. visualization_study of the example CNN (k=12, 9 random, batch_size 16: one unit per "
                  "16 images), shared through a workshare folder:")
            v1, q1 = _workshare(1, tmp / "v1", VIS_WORKER, "visualization_study")
            vw, qw = _workshare(w, tmp / "vw", VIS_WORKER, "visualization_study")
            print(f"   speed-up {w} processes vs 1: {v1 / vw:.2f} x   (results identical: "
                  f"{q1[0]['rows'] == qw[0]['rows']})")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
