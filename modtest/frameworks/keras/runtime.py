"""Process start-up for the processes modtest owns (a pytest session, each xdist worker, the CLI).

Importing Keras with TensorFlow creates about half a million long-lived objects (modules, op
registries). CPython's cyclic garbage collector walks all of them in every full collection: eight
during the import itself, more later, and again at interpreter exit, which together cost about 2.5 s
per process on a 2-core EPYC (0.2 s a collection, 1 s at exit), with nothing collected. Importing with
the collector paused and then freezing what exists (``gc.freeze``: the permanent generation, still
freed by reference counting, only skipped by the cyclic collector) removes that work. Objects created
afterwards (models, activations, results) are collected as usual.
"""
from __future__ import annotations

import gc
import os
import sys

__all__ = ["import_keras"]

#: set to "0" to leave the garbage collector alone
ENV = "MODTEST_GC_FREEZE"


def import_keras():
    """``import keras`` (and its backend) with the cyclic collector paused, then ``gc.freeze()``.

    Does nothing special when Keras is already imported or ``MODTEST_GC_FREEZE=0``.
    """
    if "keras" in sys.modules or os.environ.get(ENV, "1") == "0":
        import keras

        return keras
    enabled = gc.isenabled()
    gc.disable()
    try:
        import keras
    finally:
        if enabled:
            gc.enable()
    gc.freeze()
    return keras
