"""Worker -> GPU pinning for ``pytest -n N``.

Worker ``gwI`` gets GPU ``I mod G`` of the GPUs visible to the caller, by setting
``CUDA_VISIBLE_DEVICES`` before any backend is imported. A caller that set
``CUDA_VISIBLE_DEVICES`` is respected: workers are pinned within that list. No GPU -> nothing
changes (CPU). With more workers than GPUs, the workers sharing a GPU allocate its memory as they go
(JAX and TensorFlow otherwise each reserve most of it at start-up), unless the caller chose.
``-n auto`` gives one worker per visible GPU (:func:`auto_num_workers`).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import MutableMapping

_ENV = "CUDA_VISIBLE_DEVICES"


def parse_visible(value: str) -> list[str]:
    """Entries of a ``CUDA_VISIBLE_DEVICES`` value; "" or a leading "-1" mean no GPU."""
    out = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        if part.startswith("-"):  # CUDA stops at the first invalid (negative) index
            break
        out.append(part)
    return out


def count_nvidia_smi(run=subprocess.run) -> int:
    """Number of GPUs ``nvidia-smi -L`` lists (0 when it is missing or fails)."""
    if run is subprocess.run and shutil.which("nvidia-smi") is None:
        return 0
    try:
        proc = run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return 0
    if getattr(proc, "returncode", 1) != 0:
        return 0
    return sum(1 for line in (proc.stdout or "").splitlines() if line.strip().startswith("GPU "))


def visible_gpus(env: MutableMapping[str, str] | None = None, *, count=count_nvidia_smi) -> list[str]:
    """The GPUs a worker may use: ``CUDA_VISIBLE_DEVICES`` entries if set, else ``nvidia-smi``."""
    env = os.environ if env is None else env
    if _ENV in env:
        return parse_visible(env[_ENV])
    return [str(i) for i in range(count())]


def worker_index(worker_id: str | None) -> int | None:
    """``"gw3"`` -> 3; None / "master" / anything else -> None."""
    m = re.fullmatch(r"gw(\d+)", worker_id or "")
    return int(m.group(1)) if m else None


#: what a worker that shares its GPU with other workers sets, unless the caller set it
SHARED_GPU_ENV = {"XLA_PYTHON_CLIENT_PREALLOCATE": "false",  # JAX: no 75% reservation at start-up
                  "TF_FORCE_GPU_ALLOW_GROWTH": "true"}      # TensorFlow: grow instead of taking all


def pin_worker(worker_id: str | None, env: MutableMapping[str, str] | None = None, *,
               gpus: list[str] | None = None) -> str | None:
    """Set ``CUDA_VISIBLE_DEVICES`` in ``env`` to the GPU of ``worker_id``; return it (None: CPU).

    ``gpus`` defaults to :func:`visible_gpus` of ``env``. When ``PYTEST_XDIST_WORKER_COUNT`` (set by
    xdist in every worker) exceeds the number of GPUs, :data:`SHARED_GPU_ENV` is set too, each key
    only where ``env`` does not have it.
    """
    env = os.environ if env is None else env
    idx = worker_index(worker_id)
    if idx is None:
        return None
    if gpus is None:
        gpus = visible_gpus(env)
    if not gpus:
        return None
    chosen = gpus[idx % len(gpus)]
    env[_ENV] = chosen
    try:
        n_workers = int(env.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    except ValueError:
        n_workers = 0
    if n_workers > len(gpus):
        for key, value in SHARED_GPU_ENV.items():
            env.setdefault(key, value)
    return chosen


def auto_num_workers(env: MutableMapping[str, str] | None = None, *, count=count_nvidia_smi) -> int | None:
    """The number of xdist workers for ``-n auto``: one per visible GPU; None without GPUs (then
    xdist counts CPUs)."""
    return len(visible_gpus(env, count=count)) or None
