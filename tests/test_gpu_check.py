"""benchmarks/gpu_check.py (`make gpu-check`) on a machine without CUDA: one sentence, exit 2, nothing run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks import gpu_check

ROOT = Path(__file__).resolve().parents[1]


def test_without_cuda_it_stops_before_any_stage(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    def must_not_run(*args, **kwargs):
        raise AssertionError("a GPU stage ran without CUDA")

    for stage in ("kernel_tests", "gpu_tests", "loss_benchmark", "pretrain_stage", "pretrain_base"):
        monkeypatch.setattr(gpu_check, stage, must_not_run)
    assert gpu_check.main([]) == 2
    err = capsys.readouterr().err.strip()
    assert err == gpu_check.NO_CUDA and "\n" not in err


def test_the_script_exits_non_zero_with_one_line():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == gpu_check.NO_CUDA
    assert proc.stdout == ""


def test_the_gpu_stages_run_every_gpu_test(monkeypatch):
    runs = []
    monkeypatch.setattr(gpu_check, "_pytest", lambda args, limit, env=None: runs.append(args) or {})
    gpu_check.kernel_tests()
    gpu_check.gpu_tests()
    kernels, rest = runs
    assert kernels[0] == "tests/kernels" and "gpu" not in " ".join(kernels)  # all of it, gpu tests included
    assert rest == ["tests", "-m", "gpu", "--ignore=tests/kernels"]
    marked = {p.parent.name for p in (ROOT / "tests").rglob("test_*.py") if "mark.gpu" in p.read_text()}
    assert {"kernels", "train", "models"} <= marked  # the tile configs, the training steps, the front end
