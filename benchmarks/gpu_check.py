"""`make gpu-check`: everything in MUSER that only a CUDA GPU can show, in one prepared run (< 10 minutes).

1. `pytest tests/kernels` natively: the fused kernels compiled for this GPU against the float64 formulas,
   every tile configuration of both losses among them (tests/kernels/test_gpu.py), then every other test
   marked `gpu`: bf16 and fp16 training steps with the loss recorded as Triton's, nnAudio on the GPU
   against the CPU.
2. The loss benchmark (benchmarks/test_loss_kernel.py) at D = 512, bf16, N = 1k .. 64k, softmax and
   sigmoid: forward + backward time and peak memory of the fused kernels, the naive loss, a chunked loss
   and the floor of 4 plain matmuls.
3. 100 steps of `base` pretraining on a synthetic corpus, spectrograms computed on the GPU inside the model
   (with the sigmoid loss and gradient checkpointing when this trainer offers them).

Writes benchmarks/results/gpu_check.json with the device name, each stage's status, time and numbers.
`--only STAGE,...` reruns those stages and keeps the others' results from the JSON (the same device).
Without CUDA it exits with status 2 at once, before doing anything. See CONTRIBUTING.md ("GPU check").
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "gpu_check.json"
# Seconds each stage may take (each runs in its own process); together under the 10-minute budget.
LIMITS = {"kernel_tests": 180, "gpu_tests": 90, "loss_benchmark": 180, "pretrain": 150}
NO_CUDA = (
    "gpu-check needs a CUDA GPU and this machine has none (torch.cuda.is_available() is False); run it on "
    "a GPU machine as CONTRIBUTING.md describes"
)


def _run(cmd: list[str], limit: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run one stage in a subprocess (its own CUDA context, a hard time limit); status, seconds, summary
    (the last line of its output)."""
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit, env={**os.environ, **(env or {})}
        )
    except subprocess.TimeoutExpired as exc:
        tail = (exc.stdout or b"")[-2000:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {"status": f"timed out after {limit} s", "seconds": limit, "output_tail": tail}
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return {
        "status": "passed" if proc.returncode == 0 else f"failed (exit {proc.returncode})",
        "seconds": round(time.perf_counter() - start, 1),
        "summary": lines[-1] if lines else "",
        "output_tail": "" if proc.returncode == 0 else (proc.stdout + proc.stderr)[-4000:],
    }


def _pytest(args: list[str], limit: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    return _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], limit, env)


def kernel_tests() -> dict[str, Any]:
    # One tile config per kernel (MUSER_AUTOTUNE=0): correctness needs no timing of every config, and
    # compiling each for each test shape would not fit the budget. The benchmark below autotunes.
    return _pytest(["tests/kernels", "-m", "not slow"], LIMITS["kernel_tests"], {"MUSER_AUTOTUNE": "0"})


GPU_MARK = re.compile(r"^(pytestmark = pytest\.mark\.gpu|@pytest\.mark\.gpu)", re.M)


def gpu_test_files() -> list[str]:
    """The test files outside tests/kernels (which the stage above runs) that hold `gpu` tests: training
    steps, the front end. Named one by one: collecting all of tests/ imports every module's dependencies,
    and a GPU image without faiss or fastapi (an H200's had neither) stopped the stage at collection."""
    return sorted(
        p.relative_to(ROOT).as_posix()
        for p in (ROOT / "tests").rglob("test_*.py")
        if "kernels" not in p.parts and GPU_MARK.search(p.read_text(encoding="utf-8"))
    )


def gpu_tests() -> dict[str, Any]:
    return _pytest([*gpu_test_files(), "-m", "gpu"], LIMITS["gpu_tests"])


def loss_benchmark() -> dict[str, Any]:
    result = _pytest(
        ["benchmarks/test_loss_kernel.py", "-s", "-k", "test_gpu and d512 and not n262144"],
        LIMITS["loss_benchmark"],
    )
    path = ROOT / "benchmarks" / "results" / "loss_kernel.json"
    rows = json.loads(path.read_text()).get("rows", {}) if path.is_file() else {}
    result["rows"] = {key: row for key, row in rows.items() if key.startswith("gpu_") and row.get("d") == 512}
    return result


def pretrain_stage() -> dict[str, Any]:
    """The pretraining stage in its own process (this script with --pretrain), which prints its JSON last."""
    with tempfile.TemporaryDirectory(prefix="muser-gpu-check-") as work:
        result = _run([sys.executable, __file__, "--pretrain", work], LIMITS["pretrain"])
    if result["status"] != "passed":
        return result
    try:
        result.update(json.loads(result.pop("summary")))
    except json.JSONDecodeError:
        return {**result, "status": "failed: the pretraining process printed no result"}
    falling = (result.get("last_loss") or float("inf")) < (result.get("first_loss") or float("-inf"))
    result["status"] = "passed" if falling else "loss did not fall"
    return result


def pretrain_base(work: Path) -> dict[str, Any]:
    """100 steps of the base preset on a synthetic FMA-layout corpus, one GPU."""
    from muser.config import DataConfig, ShardConfig, TrainConfig, preset
    from muser.shards.writer import write_shards
    from muser.synth import make_corpus
    from muser.train import pretrain

    start = time.perf_counter()
    corpus = make_corpus(work / "corpus", layout="fma", n_per_class=16, seconds=8.0, seed=0, difficulty=0.4)
    shards = work / "shards"
    write_shards(
        ShardConfig(src=str(corpus), dst=str(shards), source="fma", workers=min(8, os.cpu_count() or 1))
    )
    prepared = time.perf_counter() - start
    # The sigmoid loss and gradient checkpointing are what this check most needs to see on a GPU; a trainer
    # without those options still runs its defaults (the JSON says which ran).
    offered = {f.name for f in dataclasses.fields(TrainConfig)}
    options = {k: v for k, v in {"loss": "sigmoid", "grad_checkpointing": True}.items() if k in offered}
    train = TrainConfig(
        output=str(work / "run"), gpus=1, steps=100, warmup=10, save_every=100, log_every=10, **options
    )
    data = DataConfig(shards=[str(shards)], batch_size=64, crop_seconds=3.0, num_workers=4)
    result = pretrain(data, preset("base"), train)
    keep = ("steps", "first_loss", "last_loss", "samples_per_s", "stopped")
    return {
        "train_seconds": round(time.perf_counter() - start - prepared, 1),
        "corpus_and_shards_seconds": round(prepared, 1),
        "options": options,
        "batch_size": data.batch_size,
        **{k: result.get(k) for k in keep},
    }


def main(argv: list[str]) -> int:
    try:
        import torch
    except ImportError:
        print(
            f"gpu-check needs PyTorch, which {sys.executable} cannot import; see CONTRIBUTING.md",
            file=sys.stderr,
        )
        return 2
    if not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    sys.path.insert(0, str(ROOT))
    if argv[:1] == ["--pretrain"]:
        print(json.dumps(pretrain_base(Path(argv[1]))))
        return 0
    from benchmarks.common import machine_info, read_result, write_result

    only = argv[1].split(",") if argv[:1] == ["--only"] and len(argv) > 1 else list(LIMITS)
    if set(only) - set(LIMITS):
        print(f"--only takes stages among {','.join(LIMITS)}, got {','.join(only)}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    report: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0),
        "capability": "sm_{}{}".format(*torch.cuda.get_device_capability(0)),
        "machine": machine_info(),
    }
    previous = read_result("gpu_check")
    if previous.get("device") == report["device"]:
        # --only reruns some stages (after a fix, in a short lease); the others stay as they were measured.
        report |= {name: previous[name] for name in LIMITS if name in previous and name not in only}
    stages = {
        "kernel_tests": kernel_tests,
        "gpu_tests": gpu_tests,
        "loss_benchmark": loss_benchmark,
        "pretrain": pretrain_stage,
    }
    for name in (name for name in LIMITS if name in only):  # in LIMITS' order, whatever --only's
        report[name] = stages[name]()
        report["seconds"] = round(time.perf_counter() - start, 1)
        # Written after every stage: device time is scarce, and a lease that ends mid-check keeps the
        # stages it finished.
        write_result("gpu_check", report)
        print(f"{name}: {report[name]['status']} ({report[name].get('seconds')} s)", flush=True)
    failed = [name for name in LIMITS if report.get(name, {}).get("status") != "passed"]
    print(json.dumps({k: v.get("status") if isinstance(v, dict) else v for k, v in report.items()}, indent=1))
    print(f"wrote {OUT.relative_to(ROOT)}" + (f"; not passed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
