"""The planted-module GPT-2 example (examples/transformers/planted_modules.py): the shipped trained folder
solves both sub-tasks, one of its heads carries one sub-task only, and the paper's importance test
runs on it (the CLI too). A slow test retrains it from the seed and checks the shipped weights."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modtest.frameworks.torch.runtime import import_torch  # noqa: E402

# through modtest's import: torch imported here may precede TensorFlow (another file of this worker),
# and transformers' model classes import torch._dynamo, whose triton import would then segfault

torch = import_torch()

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "transformers"
MODEL, DATA = EXAMPLE / "planted_gpt2" / "model", EXAMPLE / "planted_gpt2" / "test.npz"


@pytest.fixture(scope="module")
def shipped():
    from modtest._validation import check_data, load_data
    from modtest.frameworks import adapt

    a = adapt(str(MODEL))
    x, y = check_data(a, *load_data(DATA))
    return a, x[:300], y[:300]


def test_the_shipped_model_solves_both_sub_tasks(shipped):
    a, x, y = shipped
    base = a.lesion_engine(x, engine="reference").base_labels()
    assert (base == y).mean() >= 0.99


def test_a_head_carries_one_sub_task_only(shipped):
    """The planted structure, seen through single-head lesions: some block-0 head, lesioned, costs one
    bit (A-mark or B-mark) at least 30 points of accuracy and the other bit nothing."""
    a, x, y = shipped
    lab = a.lesion_engine(x, engine="reference").labels("block0.attn", [[h] for h in range(a.family.n_heads)])
    bit_a, bit_b = (lab // 2 == y // 2).mean(axis=1), (lab % 2 == y % 2).mean(axis=1)
    one_only = ((bit_a <= 0.7) & (bit_b >= 0.98)) | ((bit_b <= 0.7) & (bit_a >= 0.98))
    assert one_only.any(), (bit_a, bit_b)


def test_the_papers_importance_test_runs_on_it(shipped):
    from modtest import cluster, lesion_study

    a, x, y = shipped
    part = cluster(a, k=4, seed=0)
    res = lesion_study(a, part, x[:150], y[:150], n_random=10, seed=0, max_fraction=1.0)
    assert len(res.rows) == len(part.subclusters) and all(len(r["random_drops"]) == 10 for r in res.rows)
    assert {(r["unit_kind"], r["block"]) for r in res.rows} == {("head", 0), ("neuron", 0), ("head", 1),
                                                               ("neuron", 1)}
    imp = res.network["importance"]
    assert 0 <= imp["fisher_p"] <= 1 and 0 <= imp["chi2_p"] <= 1 and imp["n"] == len(res.rows)
    worst = max(res.rows, key=lambda r: r["drop"])  # the head of the planted module above
    assert worst["unit_kind"] == "head" and worst["block"] == 0 and worst["drop"] >= 0.2
    # the MLPs are not needed for presence detection: no neuron sub-cluster's lesion costs accuracy
    assert max(r["drop"] for r in res.rows if r["unit_kind"] == "neuron") <= 0.02


@pytest.mark.slow
def test_training_is_seeded_and_gives_the_shipped_weights():
    """Retrain (about a minute on CPU): the same weights as the shipped folder, up to float noise."""
    sys.path.insert(0, str(EXAMPLE))
    try:
        import planted_modules as pm
    finally:
        sys.path.remove(str(EXAMPLE))
    from modtest.frameworks import adapt

    model = pm.train()
    shipped = adapt(str(MODEL)).model.state_dict()
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(v.detach().numpy(), shipped[k].numpy(), atol=1e-4, err_msg=k)
    ids, y = pm.make_data(500, seed=123)
    assert pm.accuracy(model, ids, y) >= 0.99


def test_cli_audit_of_the_example():
    out = subprocess.run([sys.executable, "-m", "modtest.cli", "audit", str(MODEL), "--data", str(DATA), "--k", "4",
                          "--n-random", "5", "--protocol", "paper", "--clusterability", "0", "--max-examples", "100",
                          "--no-fail"], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert "block0.attn" in out.stdout and "block1.mlp" in out.stdout and "importance" in out.stdout
