"""``modtest init``: a starter test file and the pytest ini keys, in the file pytest reads."""
import shutil
from pathlib import Path

import pytest

from modtest.cli import main
from modtest.scaffold import find_ini

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "digits_mlp.keras"
DATA = ROOT / "examples" / "digits_test.npz"


@pytest.fixture
def project(tmp_path):
    (tmp_path / "models").mkdir()
    shutil.copy(MODEL, tmp_path / "models" / "m.keras")
    shutil.copy(DATA, tmp_path / "models" / "val.npz")
    return tmp_path


def test_new_pytest_ini_and_test_file(project, capsys):
    assert main(["init", str(project / "models" / "m.keras"), "--data", str(project / "models" / "val.npz"),
                 "--dir", str(project), "--k", "8"]) == 0
    ini = (project / "pytest.ini").read_text()
    assert ini == "[pytest]\nmodel = models/m.keras\ndata = models/val.npz\nmodtest_k = 8\n"
    test = (project / "tests" / "test_modularity.py").read_text()
    assert "def test_subclusters_are_important(model, eval_data):" in test and "pytest.ini" in test
    compile(test, "test_modularity.py", "exec")
    assert "next: pytest tests/test_modularity.py" in capsys.readouterr().out


@pytest.mark.parametrize("name, text, section", [
    ("pyproject.toml",
     '[project]\nname = "x"\n\n[tool.pytest.ini_options]\naddopts = "-q"\n\n[tool.ruff]\nline-length = 100\n',
     "[tool.pytest.ini_options]"),
    ("tox.ini", "[tox]\nenvlist = py311\n\n[pytest]\naddopts = -q\n", "[pytest]"),
    ("setup.cfg", "[metadata]\nname = x\n\n[tool:pytest]\naddopts = -q\n", "[tool:pytest]"),
])
def test_keys_go_into_the_existing_section(project, name, text, section):
    (project / name).write_text(text)
    assert find_ini(project).path.name == name
    assert main(["init", str(project / "models" / "m.keras"), "--data", str(project / "models" / "val.npz"),
                 "--dir", str(project)]) == 0
    got = (project / name).read_text()
    body = got.split(section, 1)[1].split("\n[", 1)[0]
    quote = '"' if name.endswith(".toml") else ""
    assert f"model = {quote}models/m.keras{quote}" in body and f"data = {quote}models/val.npz{quote}" in body
    assert got.startswith(text.split(section)[0])  # the rest of the file is untouched
    assert not (project / "pytest.ini").exists()
    if name == "pyproject.toml":
        import tomllib

        opts = tomllib.loads(got)["tool"]["pytest"]["ini_options"]
        assert opts == {"addopts": "-q", "model": "models/m.keras", "data": "models/val.npz"}


def test_pyproject_without_pytest_section_gets_one(project):
    (project / "pyproject.toml").write_text('[project]\nname = "x"\n')
    assert main(["init", str(project / "models" / "m.keras"), "--dir", str(project)]) == 0  # shipped data fits
    import tomllib

    assert tomllib.loads((project / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"] == {
        "model": "models/m.keras"}


def test_nothing_is_written_when_a_check_fails(project, capsys):
    (project / "pytest.ini").write_text("[pytest]\nmodel = other.keras\n")
    args = ["init", str(project / "models" / "m.keras"), "--data", str(project / "models" / "val.npz"),
            "--dir", str(project)]
    assert main(args) == 2
    assert "pytest.ini already sets 'model' in [pytest]; edit it, or pass --force" in capsys.readouterr().err
    assert not (project / "tests").exists()
    assert (project / "pytest.ini").read_text() == "[pytest]\nmodel = other.keras\n"
    assert main(args + ["--force"]) == 0
    assert (project / "pytest.ini").read_text() == "[pytest]\nmodel = models/m.keras\ndata = models/val.npz\n"
    assert main(args) == 2 and "test_modularity.py exists" in capsys.readouterr().err
    bad = project / "models" / "bad.npz"
    import numpy as np

    np.savez(bad, x=np.zeros((20, 5), "float32"), y=np.zeros(20, int))
    before = (project / "pytest.ini").read_text()
    assert main(["init", str(project / "models" / "m.keras"), "--data", str(bad), "--dir", str(project),
                 "--force"]) == 2
    assert "model expects (N, 8, 8, 1)" in capsys.readouterr().err and (project / "pytest.ini").read_text() == before


def test_the_written_project_runs_under_pytest(project, pytester):
    """The keys are read by the plugin: a session started in the project uses the model and data."""
    assert main(["init", str(project / "models" / "m.keras"), "--data", str(project / "models" / "val.npz"),
                 "--dir", str(project)]) == 0
    (project / "tests" / "test_keys.py").write_text(
        "def test_keys(request, eval_data):\n"
        "    from modtest.plugin import get_session\n"
        "    s = get_session(request.config)\n"
        "    assert s.model_path.name == 'm.keras' and s.data_path.name == 'val.npz' and s.data_explicit\n"
        "    assert eval_data[0].shape == (540, 8, 8, 1)\n")
    res = pytester.runpytest_subprocess("-p", "modtest", "-p", "no:cacheprovider", "--rootdir", str(project),
                                        "-c", str(project / "pytest.ini"), str(project / "tests" / "test_keys.py"))
    res.assert_outcomes(passed=1)


@pytest.mark.slow
def test_the_starter_tests_run_on_the_shipped_model(project, pytester):
    """The generated file as written, on the shipped MLP: importance holds; clusterability at k=12
    does not on this model (README: p = 0.15), which the test reports as a failure, not an error."""
    assert main(["init", str(project / "models" / "m.keras"), "--data", str(project / "models" / "val.npz"),
                 "--dir", str(project)]) == 0
    res = pytester.runpytest_subprocess("-p", "modtest", "-p", "no:cacheprovider", "--rootdir", str(project),
                                        "-c", str(project / "pytest.ini"), str(project / "tests"))
    res.assert_outcomes(passed=1, failed=1)
    assert any("clusterability not shown" in line for line in res.outlines)
