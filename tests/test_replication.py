"""The digits replication (examples/replication), reduced: tables/marks, and the directions that
must hold by construction -- a pruned MLP has important sub-clusters, its untrained copy does not.

The full replication (8 families x 5 replicates, visualization included) is
``python -m examples.replication``; see docs/replication.md.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # ``examples`` is a folder of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from examples.replication import table as T  # noqa: E402

# ------------------------------------------------------------------------------ tables (no Keras)


def _rec(fp, cp):
    return {"measures": {m: {"fisher_p": fp, "chi2_p": cp} for m, _ in T.MEASURES}}


def test_median_cells_over_replicates_ignores_missing():
    reps = [_rec(0.01, 0.2), _rec(0.03, None), _rec(0.5, 0.4)]
    cells = T.median_cells(reps)
    assert cells[("lesion_importance", "fisher_p")] == pytest.approx(0.03)
    assert cells[("lesion_importance", "chi2_p")] == pytest.approx(0.3)
    assert math.isnan(T.median_cells([{"measures": {}}])[("lesion_importance", "fisher_p")])


def test_marks_bh_per_column_and_holm_over_table():
    cols = [("a", "fisher_p"), ("b", "fisher_p")]
    rows = [{cols[0]: 0.001, cols[1]: 0.04}, {cols[0]: 0.04, cols[1]: 0.9}, {cols[0]: math.nan, cols[1]: 0.03}]
    bh, holm = T.marks(rows, cols)
    # column a: p = (0.001, 0.04) -> BH thresholds 0.025, 0.05: both rejected; NaN never rejected
    assert bh[(0, cols[0])] and bh[(1, cols[0])] and not bh[(2, cols[0])]
    # column b: (0.04, 0.9, 0.03): sorted 0.03 <= 0.05/3? no; 0.04 <= 0.1/3? no -> none
    assert not any(bh[(i, cols[1])] for i in range(3))
    # Holm over the 5 finite cells: only 0.001 <= 0.05/5
    assert [k for k, v in holm.items() if v] == [(0, cols[0])]
    md = T.markdown_table(["x", "y", "z"], rows, [("a", "A"), ("b", "B")][:1])
    assert "**0.001** BH" in md and "| z | -- |" in md.replace("  ", " ")


def test_fmt_and_cov_of_median_network():
    assert T.fmt_p(1.234e-7) == "1.23e-7" and T.fmt_p(0.5) == "0.500" and T.fmt_p(float("nan")) == "--"
    reps = [{"cov_quartiles": [1, 3, 4]}, {"cov_quartiles": [0, 1, 2]}, {"cov_quartiles": [2, 2, 9]}]
    assert T.cov_of_median_network(reps) == [2, 2, 9]


# ------------------------------------------------------------------------------ end to end (reduced)

keras = pytest.importorskip("keras")


@pytest.fixture(scope="module")
def pruned():
    from examples.replication.families import FAMILIES, family_data, train_family

    fam = FAMILIES["mlp_pruned"]
    xtr, ytr, xte, yte = family_data(fam)
    model = train_family(fam, xtr, ytr, seed=0)
    return model, xte, yte


def test_pruned_mlp_important_untrained_copy_not(pruned, tmp_path):
    """Replication in miniature: 1 replicate, 9 random controls, tiny visualization on the trained net."""
    from examples.digits import accuracy
    from examples.replication.__main__ import audit, build_tables, save_figure2
    from modtest.probes.visualization import untrained_control

    model, xte, yte = pruned
    assert accuracy(model, xte, yte) > 0.9
    rec, les, _ = audit(model, xte, yte, k=12, seed=0, n_lesion=9, n_vis=2, steps=8)
    assert rec["measures"]["lesion_importance"]["fisher_p"] < 0.05
    assert set(rec["measures"]) == {m for m, _ in T.MEASURES}
    assert len(rec["cov_quartiles"]) == 3
    urec, _, _ = audit(untrained_control(model, seed=100), xte, yte, k=12, seed=0, n_lesion=9, vis=False)
    assert urec["measures"]["lesion_importance"]["fisher_p"] > 0.05
    for r in (rec, urec):
        r["accuracy"] = 0.0
    md = build_tables({"mlp_pruned": {"trained": [rec], "untrained": [urec]}},
                      {"replicates": 1, "k": 12, "sensitivity_ks": []})
    assert "| MLP + pruning |" in md and "| MLP + pruning (untrained) |" in md
    assert save_figure2(les, tmp_path / "f2.png", "t").stat().st_size > 0


@pytest.mark.slow
def test_untrained_controls_rarely_reject_across_seeds(pruned):
    """Untrained copies: lesion importance is at chance, so Fisher rejections at 0.05 stay rare
    (0 of 12 seeds when this was written; allow 1 of 6)."""
    from examples.replication.__main__ import audit
    from modtest.probes.visualization import untrained_control

    model, xte, yte = pruned
    ps = [audit(untrained_control(model, seed=s), xte, yte, k=12, seed=s, n_lesion=9,
                vis=False)[0]["measures"]["lesion_importance"]["fisher_p"] for s in range(6)]
    assert np.mean(np.asarray(ps) < 0.05) <= 1 / 6
