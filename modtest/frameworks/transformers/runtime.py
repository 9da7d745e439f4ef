"""Importing transformers (through modtest's torch import: triton is kept out next to TensorFlow)."""
from __future__ import annotations

import importlib
import os

from modtest.errors import BackendMissing

__all__ = ["import_transformers"]


def import_transformers():
    from modtest.frameworks.torch.runtime import import_torch

    import_torch()
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        return importlib.import_module("transformers")
    except ImportError:
        raise BackendMissing("Hugging Face models need transformers and safetensors: "
                             "pip install 'pytest-modtest[transformers]'") from None
