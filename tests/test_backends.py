"""Backend parity: the core probes give identical accuracies and p-values on TensorFlow and JAX.

Keras picks its backend at import, so each backend runs in its own subprocess.
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest

SCRIPT = r"""
import json, sys
import numpy as np
import keras, modtest
from modtest.probes.lesion import lesion_study
from modtest.probes.visualization import visualization_study
from modtest._examples import EXAMPLE_MODEL, EXAMPLE_CNN, EXAMPLE_DATA
out = {"backend": keras.backend.backend()}
d = np.load(EXAMPLE_DATA)
x, y = d["x"][:300], d["y"][:300]
for name, path in (("mlp", EXAMPLE_MODEL), ("cnn", EXAMPLE_CNN)):
    m = modtest.load_model(path)
    part = modtest.cluster(m, k=12, seed=0)
    les = lesion_study(m, part, x, y, n_random=10, seed=0)
    out[name] = {
        "labels": part.labels.tolist(), "ncut": part.ncut,
        "acc": [r["acc"] for r in les.rows], "random_drops": [r["random_drops"] for r in les.rows],
        "p_importance": [r["p_importance"] for r in les.rows],
        "p_coherence": [r["p_coherence"] for r in les.rows],
        "network": les.network,
    }
m = modtest.load_model(EXAMPLE_CNN)
vis = visualization_study(m, modtest.cluster(m, k=6, seed=0), n_random=3, steps=16, seed=0)
out["vis"] = {"scores": [r["score"] for r in vis.rows], "p_input": [r["p_input"] for r in vis.rows]}
json.dump(out, sys.stdout)
"""


def run_backend(backend):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("jax") is None,
                    reason="jax is not installed (pip install -e '.[test]' installs it)")
def test_tensorflow_and_jax_agree():
    tf, jx = run_backend("tensorflow"), run_backend("jax")
    assert tf["backend"] == "tensorflow" and jx["backend"] == "jax"
    for name in ("mlp", "cnn"):
        a, b = tf[name], jx[name]
        assert a["labels"] == b["labels"]
        assert a["ncut"] == pytest.approx(b["ncut"], rel=1e-9)
        assert a["acc"] == b["acc"]  # same predicted labels -> identical accuracies
        assert a["random_drops"] == b["random_drops"]
        assert a["p_importance"] == b["p_importance"] and a["p_coherence"] == b["p_coherence"]
        for measure in ("importance", "output_coherence"):
            assert a["network"][measure]["fisher_p"] == pytest.approx(b["network"][measure]["fisher_p"], rel=1e-9)
            assert a["network"][measure]["chi2_p"] == pytest.approx(b["network"][measure]["chi2_p"], rel=1e-9)
    # feature visualization: float32 optimisation on two backends agrees closely, not bit for bit
    assert jx["vis"]["scores"] == pytest.approx(tf["vis"]["scores"], rel=1e-3, abs=1e-4)
    assert jx["vis"]["p_input"] == tf["vis"]["p_input"]
