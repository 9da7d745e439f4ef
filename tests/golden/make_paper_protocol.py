"""Writes tests/golden/paper_protocol.json: the paper protocol's rows on the shipped models.

``cluster(model, k=12, seed=0)`` then ``lesion_study(model, partition, x, y, n_random=20, seed=0)``.
Run once, from the repository root, before a change that must keep these rows bit-identical:
``python tests/golden/make_paper_protocol.py``. ``tests/test_golden.py`` compares against it.
"""
import json
from pathlib import Path


def paper_protocol(path):
    from modtest import cluster, lesion_study, load_model
    from modtest._validation import load_data

    here = Path(__file__).resolve().parents[2] / "examples"
    model = load_model(here / path)
    x, y = load_data(here / "digits_test.npz")
    part = cluster(model, k=12, seed=0)
    res = lesion_study(model, part, x, y, n_random=20, seed=0)
    return {"ncut": part.ncut, "labels": part.labels.tolist(), "rows": res.rows, "network": res.network}


if __name__ == "__main__":
    from modtest.results import _jsonable

    out = {name: _jsonable(paper_protocol(name)) for name in ("digits_mlp.keras", "digits_cnn.keras")}
    Path(__file__).with_name("paper_protocol.json").write_text(json.dumps(out, indent=1, allow_nan=False))
    print("wrote", {k: len(v["rows"]) for k, v in out.items()})
