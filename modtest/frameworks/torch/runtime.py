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

import gc
import importlib
import logging
import os
import sys

__all__ = ["import_torch", "device", "triton_blocked", "tensorflow_loaded", "SERIALIZER"]

#: set to "0" to leave the garbage collector alone (the Keras runtime's switch)
_GC_ENV = "MODTEST_GC_FREEZE"
#: what torch.export.save/load/export import on first use
SERIALIZER = ("torch.export", "torch._export.serde.serialize", "torch.export.pt2_archive._package")


def tensorflow_loaded() -> bool:
    """Whether TensorFlow's native library is in this process: imported now, or imported once and
    dropped from ``sys.modules`` since (pytester restores ``sys.modules`` after each test)."""
    if "tensorflow" in sys.modules:
        return True
    try:
        with open("/proc/self/maps") as f:
            return "libtensorflow_framework" in f.read()
    except OSError:  # not Linux: only sys.modules tells
        return False


def triton_blocked() -> bool:
    """Whether :func:`import_torch` made triton unavailable in this process."""
    return "triton" in sys.modules and sys.modules["triton"] is None


def import_torch(*extra: str):
    """``import torch`` (and the modules ``extra``), first making triton unimportable when TensorFlow is
    loaded and triton is not (importing it then would segfault the process; see the module docstring).

    Like :func:`modtest.frameworks.keras.runtime.import_keras`, a first import runs with the cyclic
    garbage collector paused and freezes what it created (``MODTEST_GC_FREEZE=0`` leaves the collector
    alone): torch's import creates hundreds of thousands of long-lived objects, and
    ``torch.export``'s serializer pulls in ``torch._dynamo``.
    """
    if "triton" not in sys.modules and tensorflow_loaded():
        sys.modules["triton"] = None  # ``import triton`` raises ImportError: torch runs without it
        logging.getLogger("torch.utils.flop_counter").setLevel(logging.ERROR)  # "triton not found"
    wanted = ("torch",) + extra
    if all(m in sys.modules for m in wanted) or os.environ.get(_GC_ENV, "1") == "0":
        for m in wanted:
            importlib.import_module(m)
        return sys.modules["torch"]
    enabled = gc.isenabled()
    gc.disable()
    try:
        for m in wanted:
            importlib.import_module(m)
    finally:
        if enabled:
            gc.enable()
    gc.freeze()
    return sys.modules["torch"]


def device():
    """The device a model runs on: the (first visible) GPU when torch sees one, else the CPU. Under
    pytest-xdist the plugin has pinned each worker to its GPU with ``CUDA_VISIBLE_DEVICES``."""
    torch = import_torch()
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")
