"""Packaging: the distribution is pytest-modtest (import package, plugin and command stay modtest),
backends are extras, and a missing backend is one line saying what to install."""
import os
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parent.parent


def test_distribution_name_extras_and_entry_points():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["name"] == "pytest-modtest"
    assert meta["scripts"] == {"modtest": "modtest.cli:main"}
    assert meta["entry-points"]["pytest11"] == {"modtest": "modtest.plugin"}
    deps = " ".join(meta["dependencies"])
    assert "tensorflow" not in deps and "jax" not in deps  # backends are extras
    extras = meta["optional-dependencies"]
    assert {"tensorflow", "tensorflow-cpu", "jax", "test"} <= set(extras)
    assert any(d.startswith("pytest-modtest[tensorflow-cpu") for d in extras["test"])  # CI gets a backend


def _run(code, env=None):
    full = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(env or {})}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=full)


def test_missing_backend_is_one_line_with_what_to_install():
    # sys.modules[name] = None hides an installed package from the import system
    out = _run("import sys; sys.modules['tensorflow'] = None\n"
               "from modtest.cli import main\nsys.exit(main(['cluster']))", env={"KERAS_BACKEND": "tensorflow"})
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert lines[0].startswith("modtest: error: the Keras backend 'tensorflow' (KERAS_BACKEND) is not installed")
    assert "pip install 'pytest-modtest[tensorflow-cpu]'" in lines[0]
    assert "KERAS_BACKEND=jax" in lines[0]  # jax is installed here: say so


def test_backend_name_follows_keras_rules(tmp_path, monkeypatch):
    from modtest.frameworks.keras.runtime import keras_backend_name

    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    assert keras_backend_name() == "tensorflow"
    (tmp_path / "keras.json").write_text('{"backend": "jax"}')
    assert keras_backend_name() == "jax"
    monkeypatch.setenv("KERAS_BACKEND", "torch")
    assert keras_backend_name() == "torch"
