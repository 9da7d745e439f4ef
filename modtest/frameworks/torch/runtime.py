"""Importing torch in a process that may also hold TensorFlow, and the device a model runs on.

Measured (TF 2.21, torch 2.14.1 with triton 3.8, this machine): once TensorFlow is imported, the first
import of triton's native library segfaults the process. ``torch.export.export`` and
``torch.export.load`` import triton (through ``torch._dynamo``), so both crash after ``import
tensorflow``; running a module does not. Importing triton *before* TensorFlow is fine, and so is
torch without triton (CPU wheels ship none). :func:`import_torch` therefore marks triton as
unavailable when TensorFlow is already loaded and triton is not: torch then treats it as not
installed (no triton kernels for ``torch.compile`` on GPUs in that process), instead of crashing it.
"""
from __future__ import annotations

import sys

__all__ = ["import_torch", "device", "triton_blocked"]


def triton_blocked() -> bool:
    """Whether :func:`import_torch` made triton unavailable in this process."""
    return "triton" in sys.modules and sys.modules["triton"] is None


def import_torch():
    """``import torch``, first making triton unimportable when TensorFlow is loaded and triton is not
    (importing it then would segfault the process; see the module docstring)."""
    if "tensorflow" in sys.modules and "triton" not in sys.modules:
        sys.modules["triton"] = None  # ``import triton`` raises ImportError: torch runs without it
    import torch

    return torch


def device():
    """The device a model runs on: the (first visible) GPU when torch sees one, else the CPU. Under
    pytest-xdist the plugin has pinned each worker to its GPU with ``CUDA_VISIBLE_DEVICES``."""
    torch = import_torch()
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
