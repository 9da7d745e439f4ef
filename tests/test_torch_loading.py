"""Loading torch models: .pt2 programs read safely, everything else refused with how to export.

What ``torch.export.load`` would execute or unpickle (see modtest/frameworks/torch/files.py) is
refused without trust: operators outside aten, pickled weights or constants, Python objects in the
sample inputs, symbolic-shape expressions that are more than arithmetic (torch evaluates them with
sympy.sympify), pytree specs that import modules, AOTInductor packages. The checks run without
importing torch.
"""
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import _torch_models as tm
import numpy as np
import pytest

from modtest.errors import DataError, ModelLoadError, UnsafeModelError, UnsupportedModelError
from modtest.frameworks import adapt, check_model_file, load_model

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """An MLP's program saved as .pt2, and its module and data."""
    path = tmp_path_factory.mktemp("torch") / "mlp.pt2"
    model = tm.mlp(seed=0)
    x = tm.data((6,), n=40)
    tm.save(tm.export(model, x), path)
    return path, model, x


def _rewrite(src: Path, dst: Path, edit) -> Path:
    """Copy a .pt2 archive, passing each (name, bytes) through ``edit`` (return None to drop it)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = edit(info.filename, zin.read(info.filename))
            if data is not None:
                zout.writestr(info.filename, data)
    return dst


def _edit_json(suffix, change):
    def edit(name, data):
        if name.endswith(suffix):
            doc = json.loads(data)
            change(doc)
            return json.dumps(doc).encode()
        return data
    return edit


def test_pt2_loads_and_runs_like_the_module(saved):
    torch = tm.torch()
    path, model, x = saved
    program = load_model(path)
    assert type(program).__name__ == "ExportedProgram"
    adapter = adapt(path)
    assert adapter.framework == "torch" and adapter.layout == "channels_first"
    assert adapter.input_shape == (6,) and adapter.n_classes == 4 and adapter.unit_layers() == ["h1", "h2"]
    with torch.no_grad():
        want = model(torch.as_tensor(x)).argmax(1).numpy()
    np.testing.assert_array_equal(adapter.lesion_engine(x).base_labels(), want)
    assert adapter.fingerprint() == adapt(path).fingerprint() == adapt(model).fingerprint()


def test_module_exported_with_data_or_inferred(saved):
    """An nn.Module is exported with an example from the data (check_data) or, for a module starting with
    a Linear, a zero vector; a CNN module without data gets a one-line error saying what to pass."""
    from modtest._validation import check_data

    _, model, x = saved
    adapter = adapt(model)
    assert adapter.input_shape == (6,)  # inferred from h1
    cnn = tm.cnn(seed=0)
    with pytest.raises(ModelLoadError, match="without an example input: pass data first"):
        adapt(cnn).graph_spec()
    xc = tm.data(tm.input_shape("plain"), n=12)
    check_data(cnn, xc, np.arange(12) % 2)  # two classes: data of one class is refused
    assert adapt(cnn).input_shape == (2, 8, 8)  # the export is kept for this module object


def test_layout_mismatch_is_one_line(saved):
    from modtest._validation import check_data

    cnn = tm.cnn(seed=0)
    xc = tm.data(tm.input_shape("plain"), n=12)
    program = tm.export(cnn, xc)
    nhwc = xc.transpose(0, 2, 3, 1)
    with pytest.raises(DataError, match=r"channels last \(N, H, W, C\), but this torch model reads channels "
                                        r"first \(N, C, H, W\) = \(N, 2, 8, 8\); pass x.transpose\(0, 3, 1, 2\)"):
        check_data(program, nhwc, np.zeros(12, dtype=int))
    with pytest.raises(DataError, match="channels last"):  # a module not exported yet: the same message
        check_data(tm.cnn(seed=1), nhwc, np.zeros(12, dtype=int))


@pytest.mark.parametrize("kind", ["state_dict", "torchscript", "pickled_module", "legacy_pickle"])
def test_other_torch_files_are_refused_with_how_to_export(tmp_path, kind):
    torch = tm.torch()
    model = tm.mlp(seed=0)
    path = tmp_path / "model.pt"
    if kind == "state_dict":
        torch.save(model.state_dict(), path)
        match = "holds only tensors \\(a state dict: weights without the graph\\)"
    elif kind == "torchscript":
        torch.jit.save(torch.jit.trace(model, torch.zeros(2, 6)), path)
        match = "is a TorchScript archive"
    elif kind == "pickled_module":
        torch.save(torch.nn.Sequential(torch.nn.Linear(6, 4)), path)
        match = "is a pickled Python object .*unpickling it would run code"
    else:
        torch.save(model.state_dict(), path, _use_new_zipfile_serialization=False)
        match = "holds only tensors"
    for p in (path, path.with_suffix(".pth")):
        if p != path:
            p.write_bytes(path.read_bytes())
        with pytest.raises(ModelLoadError, match=match) as err:
            load_model(p)
        assert "torch.export.save(program, 'model.pt2')" in str(err.value) or "state dict" in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(ModelLoadError, match="pt2"):
        adapt(path.with_suffix(".pth"))


def test_custom_op_refused_without_trust(tmp_path):
    """A program calling a custom operator is refused before loading; with trust it loads (the operator's
    library is imported here) but modtest does not run operators it does not know."""
    torch = tm.torch()

    @torch.library.custom_op("modtest_test::scale", mutates_args=())
    def scale(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @scale.register_fake
    def _(x):
        return torch.empty_like(x)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.h = torch.nn.Linear(4, 3)

        def forward(self, x):
            return self.h(scale(x))

    path = tm.save(torch.export.export(Net().eval(), (torch.zeros(2, 4),)), tmp_path / "custom.pt2")
    with pytest.raises(UnsafeModelError, match=r"operators from outside torch's aten library: "
                                               r"torch.ops.modtest_test.scale.default; .*trust=True"):
        check_model_file(path)
    with pytest.raises(UnsafeModelError, match="modtest_test"):
        load_model(path)
    program = load_model(path, trust=True)
    with pytest.raises(UnsupportedModelError, match="modtest_test"):
        adapt(program).graph_spec()


def test_code_in_the_archive_is_refused(saved, tmp_path):
    """Pickled weights, Python objects among the sample inputs, sympy expressions that are code, pytree
    specs that import modules and compiled AOTInductor code are refused, each naming what it found."""
    torch = tm.torch()
    path = saved[0]

    def pickled_weight(doc):
        first = next(iter(doc["config"]))
        doc["config"][first]["use_pickle"] = True

    def code_expression(doc):
        doc["graph_module"]["graph"]["sym_int_values"] = {"evil": {"as_expr": {
            "expr_str": "__import__('os').system('echo pwned')", "hint": None}}}

    def enum_spec(doc):
        sig = doc["graph_module"]["module_call_graph"][0]["signature"]
        sig["in_spec"] = sig["in_spec"].replace('"context": "null"', '"context": "{\\"__enum__\\": 1}"', 1)

    buf = io.BytesIO()
    torch.save({"x": torch.zeros(1), "o": Path("x")}, buf)
    cases = [
        ("weights_config.json", _edit_json("model_weights_config.json", pickled_weight), "is a pickle"),
        ("model.json", _edit_json("models/model.json", code_expression), "sympy.sympify"),
        ("in_spec", _edit_json("models/model.json", enum_spec), "pytree spec that imports modules"),
        ("sample", lambda n, d: buf.getvalue() if n.endswith("sample_inputs/model.pt") else d,
         "sample inputs importing pathlib"),
    ]
    for name, edit, match in cases:
        bad = _rewrite(path, tmp_path / f"{name}.pt2", edit)
        with pytest.raises(UnsafeModelError, match=match):
            check_model_file(bad)
        with pytest.raises(UnsafeModelError, match=match):
            load_model(bad)
    aoti = _rewrite(path, tmp_path / "aoti.pt2", lambda n, d: d)
    with zipfile.ZipFile(aoti, "a") as zf:
        root = zf.namelist()[0].split("/")[0]
        zf.writestr(f"{root}/data/aotinductor/model/model.so", b"\x7fELF")
    with pytest.raises(ModelLoadError, match="AOTInductor package"):
        check_model_file(aoti, trust=True)
    junk = tmp_path / "junk.pt2"
    junk.write_bytes(b"not a zip")
    with pytest.raises(ModelLoadError, match="not a .pt2 archive"):
        load_model(junk)
    other = tmp_path / "other.pt2"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("a.txt", "x")
    with pytest.raises(ModelLoadError, match="not a torch.export archive"):
        load_model(other)


def test_guard_code_is_dropped(saved):
    """``ExportedProgram.module()`` would exec the file's guards_code: modtest drops it without trust."""
    program = load_model(saved[0])
    assert program._guards_code == []


def test_checks_import_no_torch_and_audit_imports_no_tensorflow(saved, tmp_path):
    """check_model_file reads .pt2/.pt files without importing torch; `modtest cluster model.pt2` and
    `modtest audit` on a torch model never import TensorFlow or Keras; a .pt gets one line."""
    torch = tm.torch()
    path, model, x = saved
    with torch.no_grad():
        y = model(torch.as_tensor(x)).argmax(1).numpy()
    y[::2] = (y[::2] + 1) % 4  # at least two classes (data of one class is refused)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    state = tmp_path / "weights.pt"
    tm.torch().save(tm.mlp().state_dict(), state)
    code = (
        "import sys\n"
        "from modtest.frameworks import check_model_file\n"
        f"check_model_file({str(path)!r})\n"
        "try:\n"
        f"    check_model_file({str(state)!r})\n"
        "except Exception as exc:\n"
        "    print('refused:', exc)\n"
        "assert 'torch' not in sys.modules, 'torch imported by the file checks'\n"
        "from modtest.cli import main\n"
        f"assert main(['cluster', {str(path)!r}, '--k', '3']) == 0\n"
        f"main(['audit', {str(path)!r}, '--data', {str(tmp_path / 'd.npz')!r}, '--k', '3', '--protocol', 'paper',"
        " '--n-random', '3', '--no-fail'])\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not bad, bad[:5]\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert "refused: weights.pt holds only tensors" in res.stdout
    assert "mlp.pt2: 32 nodes (mlp), k=3" in res.stdout
    assert "claims (holm correction" in res.stdout
    res = subprocess.run([sys.executable, "-m", "modtest.cli", "cluster", str(state)], capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 2
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "holds only tensors" in err[0] and "torch.export.save" in err[0]


@pytest.mark.parametrize("dropped", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["imported", "dropped_from_sys_modules"])
def test_export_after_tensorflow_does_not_crash(tmp_path, dropped):
    """TensorFlow first, then modtest exports and loads a torch program: import_torch keeps triton (whose
    native library segfaults the process when loaded after TensorFlow's) out of the process, also when
    TensorFlow's modules were dropped from sys.modules since (as pytester does after a test)."""
    drop = "for m in [m for m in sys.modules if m.startswith('tensorflow')]: del sys.modules[m]\n"
    code = (
        "import sys, numpy as np\n"
        "sys.path.insert(0, 'tests')\n"
        "import tensorflow\n"
        + (drop if dropped else "") +
        "import _torch_models as tm\n"
        "from modtest.frameworks import adapt\n"
        "x = tm.data((6,), n=8)\n"
        f"tm.save(tm.export(tm.mlp(), x), {str(tmp_path / 'm.pt2')!r})\n"
        f"a = adapt({str(tmp_path / 'm.pt2')!r})\n"
        "print(a.unit_layers(), sys.modules.get('triton', 'absent'))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "['h1', 'h2'] None" in res.stdout  # triton blocked
