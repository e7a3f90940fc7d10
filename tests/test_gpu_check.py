"""benchmarks/gpu_check.py (`make gpu-check`) on a machine without CUDA: one sentence, exit 2, nothing run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
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
    assert rest[-2:] == ["-m", "gpu"] and not any(arg.startswith("tests/kernels") for arg in rest)
    marked = {
        p.parent.name for p in (ROOT / "tests").rglob("test_*.py") if gpu_check.GPU_MARK.search(p.read_text())
    }
    assert {"kernels", "train", "models"} <= marked  # the tile configs, the training steps, the front end
    # Every gpu-marked file outside tests/kernels, and only those (not all of tests/: a GPU image lacks
    # some dependencies of unrelated modules).
    files = {p.parent.name for p in map(Path, rest[:-2])}
    assert files == marked - {"kernels"} and "tests/catalogue/test_serve.py" not in rest


def _fake_gpu(monkeypatch, tmp_path, name="Fake GPU"):
    monkeypatch.setenv("MUSER_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: name)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=0: (9, 0))


def test_the_report_is_written_after_every_stage(monkeypatch, tmp_path):
    """A lease that ends mid-check keeps the stages it finished: the JSON is rewritten after each one."""
    from benchmarks import common

    _fake_gpu(monkeypatch, tmp_path)
    writes = []
    monkeypatch.setattr(common, "write_result", lambda name, report: writes.append(dict(report)))
    monkeypatch.setattr(gpu_check, "kernel_tests", lambda: {"status": "passed", "seconds": 1.0})
    monkeypatch.setattr(gpu_check, "gpu_tests", lambda: {"status": "failed (exit 1)", "seconds": 2.0})

    def lease_ends():
        raise KeyboardInterrupt

    monkeypatch.setattr(gpu_check, "loss_benchmark", lease_ends)
    with pytest.raises(KeyboardInterrupt):
        gpu_check.main([])
    assert [sorted(k for k in w if k in gpu_check.LIMITS) for w in writes] == [
        ["kernel_tests"],
        ["gpu_tests", "kernel_tests"],
    ]
    assert writes[-1]["device"] == "Fake GPU" and writes[-1]["gpu_tests"]["status"] == "failed (exit 1)"


def test_only_reruns_the_named_stages_and_keeps_the_others(monkeypatch, tmp_path, capsys):
    """After a fix, a short lease reruns the stages that failed; the rest stay as measured on that GPU."""
    from benchmarks import common

    _fake_gpu(monkeypatch, tmp_path)
    earlier = {name: {"status": "passed", "seconds": 1.0} for name in gpu_check.LIMITS}
    common.write_result("gpu_check", {"device": "Fake GPU", **earlier, "pretrain": {"status": "failed"}})
    ran = []
    for stage in ("kernel_tests", "gpu_tests", "loss_benchmark", "pretrain_stage"):
        monkeypatch.setattr(gpu_check, stage, lambda s=stage: ran.append(s) or {"status": "passed"})
    assert gpu_check.main(["--only", "pretrain"]) == 0
    assert ran == ["pretrain_stage"]
    report = common.read_result("gpu_check")
    assert report["pretrain"] == {"status": "passed"} and report["kernel_tests"] == earlier["kernel_tests"]
    # Another GPU's stages are not kept: its report would claim what this GPU never ran.
    _fake_gpu(monkeypatch, tmp_path, name="Other GPU")
    assert gpu_check.main(["--only", "gpu_tests"]) == 1
    assert "kernel_tests" not in common.read_result("gpu_check")
    assert gpu_check.main(["--only", "kernels"]) == 2
    assert "--only takes stages among" in capsys.readouterr().err
