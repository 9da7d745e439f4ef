"""modtest._runtime: Keras imported with the cyclic collector paused, then frozen (fresh processes)."""
import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import gc, json, os, sys, weakref
from modtest.frameworks.keras.runtime import import_keras

before = gc.get_freeze_count()
keras = import_keras()
frozen = gc.get_freeze_count()

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a          # a reference cycle created after the freeze
ref = weakref.ref(a)
del a, b
gc.collect()
print(json.dumps({"before": before, "frozen": frozen, "enabled": gc.isenabled(),
                  "keras": keras is sys.modules["keras"], "cycle_collected": ref() is None}))
"""


def _run(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env})
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("setting, freezes", [(None, True), pytest.param("0", False, marks=pytest.mark.slow)])
def test_import_keras_freezes_the_import_and_still_collects_later_garbage(setting, freezes):
    env = {} if setting is None else {"MODTEST_GC_FREEZE": setting}
    got = _run(**env)
    assert got["before"] == 0 and got["keras"] and got["enabled"]
    assert (got["frozen"] > 100_000) is freezes, got  # TensorFlow + Keras: about half a million objects
    assert got["cycle_collected"], got
