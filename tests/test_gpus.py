"""Worker -> GPU pinning with fake GPU lists (no GPU needed)."""
import subprocess

import pytest

from modtest.plugin import gpus


@pytest.mark.parametrize("value,expected", [
    ("0,1,2", ["0", "1", "2"]), (" 2 , 5 ", ["2", "5"]), ("", []), ("-1", []), ("1,-1,2", ["1"]),
    ("GPU-8f3e,MIG-1", ["GPU-8f3e", "MIG-1"]),
])
def test_parse_visible(value, expected):
    assert gpus.parse_visible(value) == expected


def test_visible_gpus_respects_caller_setting():
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": "3,5"}, count=lambda: 8) == ["3", "5"]
    assert gpus.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, count=lambda: 8) == []


def test_visible_gpus_counts_when_unset():
    assert gpus.visible_gpus({}, count=lambda: 2) == ["0", "1"]
    assert gpus.visible_gpus({}, count=lambda: 0) == []


class _Proc:
    def __init__(self, rc, out):
        self.returncode, self.stdout = rc, out


def test_count_nvidia_smi_parses_and_fails_soft():
    out = "GPU 0: NVIDIA H100 (UUID: GPU-1)\nGPU 1: NVIDIA H100 (UUID: GPU-2)\n  MIG 1g.10gb Device 0: (UUID: MIG-x)\n"
    assert gpus.count_nvidia_smi(run=lambda *a, **k: _Proc(0, out)) == 2
    assert gpus.count_nvidia_smi(run=lambda *a, **k: _Proc(9, out)) == 0

    def missing(*a, **k):
        raise FileNotFoundError("nvidia-smi")

    def hangs(*a, **k):
        raise subprocess.TimeoutExpired("nvidia-smi", 20)

    assert gpus.count_nvidia_smi(run=missing) == 0
    assert gpus.count_nvidia_smi(run=hangs) == 0


@pytest.mark.parametrize("worker,gpu_list,expected", [
    ("gw0", ["0", "1"], "0"), ("gw1", ["0", "1"], "1"), ("gw2", ["0", "1"], "0"), ("gw5", ["0", "1", "2"], "2"),
    ("gw3", ["4", "7"], "7"),  # within the caller's list
])
def test_pin_worker_round_robin(worker, gpu_list, expected):
    env = {}
    assert gpus.pin_worker(worker, env, gpus=gpu_list) == expected
    assert env == {"CUDA_VISIBLE_DEVICES": expected}


def test_pin_worker_within_caller_env():
    env = {"CUDA_VISIBLE_DEVICES": "4,6"}
    assert gpus.pin_worker("gw1", env) == "6" and env["CUDA_VISIBLE_DEVICES"] == "6"


@pytest.mark.parametrize("worker", [None, "", "master", "gwx", "w1"])
def test_not_a_worker_leaves_env(worker):
    env = {"CUDA_VISIBLE_DEVICES": "0,1"}
    assert gpus.pin_worker(worker, env) is None and env == {"CUDA_VISIBLE_DEVICES": "0,1"}


def test_no_gpu_stays_on_cpu():
    env = {}
    assert gpus.pin_worker("gw0", env, gpus=[]) is None and env == {}
    env = {"CUDA_VISIBLE_DEVICES": ""}
    assert gpus.pin_worker("gw1", env) is None and env == {"CUDA_VISIBLE_DEVICES": ""}


@pytest.mark.parametrize("n_workers, gpu_list, shared", [
    ("2", ["0"], True), ("3", ["0", "1"], True), ("2", ["0", "1"], False), ("1", ["0"], False),
    ("x", ["0"], False), (None, ["0"], False),
])
def test_workers_sharing_a_gpu_do_not_reserve_its_memory(n_workers, gpu_list, shared):
    env = {} if n_workers is None else {"PYTEST_XDIST_WORKER_COUNT": n_workers}
    gpus.pin_worker("gw1", env, gpus=gpu_list)
    assert env["CUDA_VISIBLE_DEVICES"] == gpu_list[1 % len(gpu_list)]
    for key, value in gpus.SHARED_GPU_ENV.items():
        assert env.get(key) == (value if shared else None)


def test_sharing_settings_keep_the_callers_choice():
    env = {"PYTEST_XDIST_WORKER_COUNT": "4", "XLA_PYTHON_CLIENT_PREALLOCATE": "true"}
    gpus.pin_worker("gw0", env, gpus=["0"])
    assert env["XLA_PYTHON_CLIENT_PREALLOCATE"] == "true" and env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"


def test_auto_num_workers_is_one_per_visible_gpu():
    assert gpus.auto_num_workers({}, count=lambda: 4) == 4
    assert gpus.auto_num_workers({"CUDA_VISIBLE_DEVICES": "2,3,5"}, count=lambda: 8) == 3
    assert gpus.auto_num_workers({}, count=lambda: 0) is None
    assert gpus.auto_num_workers({"CUDA_VISIBLE_DEVICES": "-1"}, count=lambda: 8) is None
