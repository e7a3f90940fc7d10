"""Training throughput: samples/s and the share of step time spent waiting for data, per preset.

CPU runs the tiny preset (the size CI and `muser demo` use); the GPU case runs the base preset with bf16.
Results go to benchmarks/results/train.json, one entry per case, with the machine they were measured on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.common import machine_info, read_result, write_result
from muser.config import DataConfig, ShardConfig, TrainConfig, preset
from muser.train import pretrain


def _record(case: str, entry: dict) -> None:
    """One entry per case, each with its own machine: the CPU and GPU cases run on different machines."""
    results = read_result("train")
    results[case] = {**entry, "machine": machine_info()}
    write_result("train", results)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from muser.shards.writer import write_shards
    from muser.synth import make_corpus

    root = tmp_path_factory.mktemp("bench")
    src = make_corpus(
        root / "src", layout="gtzan", n_per_class=16, seconds=6.0, sample_rate=16000, split_lists=True
    )
    write_shards(
        ShardConfig(src=str(src), dst=str(root / "shards"), codec="flac", split_dir=str(src)), progress=False
    )
    return root / "shards"


def _measure(
    corpus: Path, out: Path, model_preset: str, gpus: int, batch: int, steps: int, workers: int
) -> dict:
    data = DataConfig(shards=[str(corpus)], batch_size=batch, crop_seconds=3.0, num_workers=workers)
    train = TrainConfig(output=str(out), gpus=gpus, steps=steps, warmup=2, log_every=1, save_every=10_000)
    result = pretrain(data, preset(model_preset), train)
    # The first steps pay for worker start-up and kernel selection: report the steady state after them.
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steady = lines[len(lines) // 4 :]
    return {
        "preset": model_preset,
        "batch_size": batch,
        "steps": steps,
        "num_workers": workers,
        "samples_per_s": sum(x["samples_per_s"] for x in steady) / len(steady),
        "data_wait_frac": sum(x["data_wait_frac"] for x in steady) / len(steady),
        "first_loss": result["first_loss"],
        "last_loss": result["last_loss"],
        "wall_s": result["wall_s"],
    }


def test_cpu_tiny_throughput(corpus, tmp_path):
    entry = _measure(corpus, tmp_path / "run", "tiny", gpus=0, batch=16, steps=24, workers=1)
    _record("cpu_tiny", entry)
    assert entry["samples_per_s"] > 0 and 0.0 <= entry["data_wait_frac"] <= 1.0


@pytest.mark.gpu
def test_gpu_base_throughput(corpus, tmp_path):
    workers = max(1, min(8, (os.cpu_count() or 2) - 2))
    entry = _measure(corpus, tmp_path / "run", "base", gpus=1, batch=64, steps=40, workers=workers)
    _record("gpu_base_bf16", entry)
    assert entry["samples_per_s"] > 0
