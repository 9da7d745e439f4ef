"""A model adapter without a framework, for tests of the layers above the probes (assertions, the
store, the plugin): it fits the shipped digits data and its fingerprint is its name."""
from __future__ import annotations

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


register_adapter("fake", accepts=lambda m: isinstance(m, FakeModel), wrap=FakeAdapter)
