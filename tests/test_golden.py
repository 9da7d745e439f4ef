"""The paper's protocol returns exactly the rows it returned before (golden file).

``cluster(model, k=12, seed=0)`` then ``lesion_study(model, partition, x, y, n_random=20, seed=0)``
on both shipped models, compared with ``tests/golden/paper_protocol.json`` (written by
``tests/golden/make_paper_protocol.py`` before the redesign): labels, n-cut, every row and every
network-level statistic must be bit-identical.
"""
import json
from pathlib import Path

import pytest

GOLDEN = Path(__file__).parent / "golden"


@pytest.mark.parametrize("model", ["digits_mlp.keras", "digits_cnn.keras"])
def test_paper_protocol_rows_are_unchanged(model):
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_golden", GOLDEN / "make_paper_protocol.py")
    make = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make)
    from modtest.results import _jsonable

    want = json.loads((GOLDEN / "paper_protocol.json").read_text())[model]
    got = json.loads(json.dumps(_jsonable(make.paper_protocol(model)), allow_nan=False))
    assert got["labels"] == want["labels"] and got["ncut"] == want["ncut"]
    assert len(got["rows"]) == len(want["rows"])
    for g, w in zip(got["rows"], want["rows"]):
        assert g == w, (g["name"], {k for k in w if g.get(k) != w[k]})
    assert got["network"] == want["network"]
