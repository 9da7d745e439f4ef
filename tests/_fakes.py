"""A model adapter without a framework, for tests of the layers above the probes (assertions, the
store, the plugin): it fits the shipped digits data and its fingerprint is its name.

The one copy: this suite imports it, and the conftest files of inner pytester sessions import it
too (the root conftest's ``FAKE_FILES`` head), with :func:`register_fake_files` so that
``--model m.keras`` loads a :class:`FakeModel`.
"""
from __future__ import annotations

from pathlib import Path

from modtest.frameworks import ModelAdapter, register_adapter


class FakeModel:
    def __init__(self, name: str):
        self.name = name


class FakeAdapter(ModelAdapter):
    framework = "fake"
    input_shape = (8, 8, 1)
    n_classes = 10

    def compute_fingerprint(self) -> str:
        return str(self.model.name)

    def graph_spec(self):
        raise NotImplementedError

    def unit_layers(self) -> list[str]:
        return []

    def lesion_engine(self, x, **kw):
        raise NotImplementedError


def register_fake(**kw) -> None:
    """The fake adapter for :class:`FakeModel` objects (and, with ``suffixes`` and ``load``, files)."""
    register_adapter("fake", accepts=lambda m: isinstance(m, FakeModel), wrap=FakeAdapter, **kw)


def register_fake_files(*names: str) -> None:
    """``.keras`` files load as a :class:`FakeModel` named after the file (no framework, no weights;
    its fingerprint is the file's name), and empty files ``names`` are made in the working folder."""
    register_fake(suffixes=(".keras",), load=lambda path, trust=False: FakeModel("fake-" + Path(path).name))
    for name in names:
        Path(name).touch()


register_fake()
