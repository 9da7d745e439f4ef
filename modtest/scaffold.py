"""``modtest init``: add modularity tests to a project in one command.

Writes a starter ``tests/test_modularity.py`` and the pytest ini keys ``model`` and ``data`` (and
``modtest_k`` when given) into the configuration file pytest will read: an existing ``pytest.ini``,
``pyproject.toml`` with ``[tool.pytest.ini_options]``, ``tox.ini`` with ``[pytest]`` or ``setup.cfg``
with ``[tool:pytest]`` (pytest's order); else a ``[tool.pytest.ini_options]`` table added to an
existing ``pyproject.toml``, else a new ``pytest.ini``. Paths are written relative to that file's
folder, as pytest reads them. The model and data are checked first (the data must fit the model);
nothing is written when a check fails or a file or key already exists (``force`` replaces them).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from modtest.errors import InvalidInput

__all__ = ["init_project", "TEST_FILE", "find_ini"]

TEST_FILE = Path("tests") / "test_modularity.py"

TEST_TEMPLATE = '''"""Modularity tests of {model_name}, written by ``modtest init``: keep the claims you expect to hold.

Run them with ``pytest {test_path}``. The model and data come from the pytest ini keys in {ini_name}
(``model``, ``data``); ``--model``/``--data`` on the command line override them. Every modtest
assertion of a session is one hypothesis: the p-values are corrected together at the end (Holm), and
``--modtest-html report.html`` writes the report.
"""
from modtest.assertions import assert_clusterable, assert_importance


def test_subclusters_are_important(model, eval_data):
    """Lesioning each spectral sub-cluster hurts accuracy more than lesioning random units of the
    same layer (Fisher combination over the sub-clusters, judged over an ensemble of partitions)."""
    assert_importance(model, data=eval_data)


def test_network_is_clusterable(model):
    """The network's n-cut is lower than that of networks with its weights shuffled within each layer
    (re-clusters the network about 20 to 160 times: seconds for small models, minutes for a VGG)."""
    assert_clusterable(model)


# Output coherence (lesioning a sub-cluster hurts some classes much more than others) often does not
# hold; add it when you expect it:
#
# from modtest.assertions import assert_output_coherence
#
# def test_output_coherence(model, eval_data):
#     assert_output_coherence(model, data=eval_data)
'''


@dataclass(frozen=True)
class IniFile:
    """Where the keys go: ``path``, its ``section`` header, whether it is TOML, whether it exists
    and already has the section."""

    path: Path
    section: str
    toml: bool
    has_section: bool


def _has_section(path: Path, section: str) -> bool:
    return path.is_file() and any(line.strip() == section for line in path.read_text().splitlines())


def find_ini(folder: Path) -> IniFile:
    """The configuration file pytest reads in ``folder`` (see the module docstring)."""
    candidates = ((folder / "pytest.ini", "[pytest]", False),
                  (folder / "pyproject.toml", "[tool.pytest.ini_options]", True),
                  (folder / "tox.ini", "[pytest]", False), (folder / "setup.cfg", "[tool:pytest]", False))
    for path, section, toml in candidates:
        if path.name == "pytest.ini" and path.is_file():
            return IniFile(path, section, toml, _has_section(path, section))
        if _has_section(path, section):
            return IniFile(path, section, toml, True)
    if (folder / "pyproject.toml").is_file():
        return IniFile(folder / "pyproject.toml", "[tool.pytest.ini_options]", True, False)
    return IniFile(folder / "pytest.ini", "[pytest]", False, False)


def _value(ini: IniFile, value: str) -> str:
    if ini.toml:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return value


def _with_keys(ini: IniFile, keys: dict, force: bool) -> str:
    """The configuration file's new text: ``keys`` set in its section (added at the section's end)."""
    text = ini.path.read_text() if ini.path.is_file() else ""
    lines = text.splitlines()
    if not ini.has_section:
        block = ([""] if lines and lines[-1].strip() else []) + [ini.section]
        return "\n".join(lines + block + [f"{k} = {_value(ini, v)}" for k, v in keys.items()]) + "\n"
    start = next(i for i, line in enumerate(lines) if line.strip() == ini.section)
    end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    pending = dict(keys)
    for i in range(start + 1, end):
        m = re.match(r"\s*([A-Za-z0-9_.-]+)\s*=", lines[i])
        if m and m.group(1) in pending:
            if not force:
                raise InvalidInput(f"{ini.path.name} already sets {m.group(1)!r} in {ini.section}; edit it, or "
                                   f"pass --force to replace it")
            lines[i] = f"{m.group(1)} = {_value(ini, pending.pop(m.group(1)))}"
    while end > start + 1 and not lines[end - 1].strip():
        end -= 1  # new keys go after the section's last line, before its trailing blank lines
    lines[end:end] = [f"{k} = {_value(ini, v)}" for k, v in pending.items()]
    return "\n".join(lines) + "\n"


def _check_fit(model, data, trust: bool) -> tuple:
    """The model's input shape and output width; raises one line when the data does not fit."""
    from modtest.data import _image_size, check_data_path, image_folder_index, shipped_data_for
    from modtest.frameworks import check_model_file, file_signature

    check_model_file(model, trust=trust)
    if data is not None:
        check_data_path(data)
    sig = file_signature(model)
    if sig is None:  # the framework does not say without loading the model
        from modtest.frameworks import adapt

        adapter = adapt(model, trust=trust)
        sig = (adapter.input_shape, adapter.n_classes)
    shape, n_classes = sig
    if data is None:
        shipped_data_for(shape, n_classes)
    elif Path(data).is_dir():
        _image_size(shape, "channels_last")
        _files, _labels, classes = image_folder_index(data)
        if n_classes is not None and len(classes) > n_classes:
            from modtest.errors import DataError

            raise DataError(f"data folder {data} has {len(classes)} class subfolders but the model has "
                            f"{n_classes} outputs")
    else:
        from modtest._validation import check_data_fits, load_data

        check_data_fits(shape, n_classes, *load_data(data))
    return sig


def _relative(path: Path, folder: Path) -> str:
    return Path(os.path.relpath(Path(path).resolve(), folder.resolve())).as_posix()


def init_project(model, data=None, *, folder=".", k: int | None = None, force: bool = False,
                 trust: bool = False) -> dict:
    """Check ``model`` and ``data``, then write the starter test file and the ini keys; returns
    ``{"test_file": Path, "ini": Path, "keys": dict}``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InvalidInput(f"project folder {folder} does not exist")
    _check_fit(model, data, trust)
    test_file = folder / TEST_FILE
    if test_file.exists() and not force:
        raise InvalidInput(f"{test_file} exists; edit it, or pass --force to replace it")
    ini = find_ini(folder)
    keys = {"model": _relative(model, ini.path.parent)}
    if data is not None:
        keys["data"] = _relative(data, ini.path.parent)
    if k is not None:
        keys["modtest_k"] = str(int(k))
    if trust:
        keys["modtest_trust_model"] = "true"
    new_ini = _with_keys(ini, keys, force)  # raises before anything is written
    from modtest._io import atomic_write_text

    atomic_write_text(test_file, TEST_TEMPLATE.format(model_name=Path(model).name, test_path=TEST_FILE.as_posix(),
                                                      ini_name=ini.path.name))
    atomic_write_text(ini.path, new_ini)
    return {"test_file": test_file, "ini": ini.path, "keys": keys}
