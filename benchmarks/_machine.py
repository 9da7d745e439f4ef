"""Name the machine a benchmark ran on (benchmarks print ratios; absolute times only with this)."""
from __future__ import annotations

import os
import platform


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        import keras

        backend = keras.backend.backend()
    except Exception:  # noqa: BLE001
        backend = "?"
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, Keras backend {backend}"
