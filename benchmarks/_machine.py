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
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, Keras backend {backend}"
            f"{_accelerator(backend)}")


def _accelerator(backend: str) -> str:
    """", on <GPU name>" when the backend runs on a GPU (JAX or torch), else ""."""
    try:
        if backend == "jax":
            import jax

            dev = jax.devices()[0]
            return "" if dev.platform == "cpu" else f", on {dev.device_kind} ({len(jax.devices())} device(s))"
        if backend == "torch":
            import torch

            return f", on {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    except Exception:  # noqa: BLE001 - naming the machine must never fail a benchmark
        return ""
    return ""
