"""Training throughput: samples/s and the share of step time spent waiting for data, per preset. Target:
the loader keeps up with the model (data wait at most MAX_DATA_WAIT of the steady-state step time).

CPU runs the tiny preset (the size CI and `muser demo` use) with one loader worker, so the trainer and its
worker need both cores: the case skips, saying why, on a loaded machine. The GPU case runs the base preset
with bf16. Results go to benchmarks/results/train.json, one row per case.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks.common import ONE_CORE, TWO_CORES, entry, quiet, sized, still_quiet
from muser.config import DataConfig, ShardConfig, TrainConfig, preset
from muser.train import pretrain

MAX_DATA_WAIT = 0.15  # the model, not the loader, must set the pace


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from muser.shards.writer import write_shards
    from muser.synth import make_corpus

    root = tmp_path_factory.mktemp("bench")
    src = make_corpus(
        root / "src",
        layout="gtzan",
        n_per_class=sized(16, 4),
        seconds=6.0,
        sample_rate=16000,
        split_lists=True,
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


def test_cpu_tiny_data_wait(corpus, tmp_path):
    with entry("train", "cpu_tiny") as row:
        quiet(row, TWO_CORES)
        row.update(
            _measure(corpus, tmp_path / "run", "tiny", gpus=0, batch=16, steps=sized(24, 8), workers=1)
        )
        still_quiet(row, TWO_CORES)
        row.target(
            "share of step time waiting for data, tiny on CPU", row["data_wait_frac"], at_most=MAX_DATA_WAIT
        )


@pytest.mark.gpu
def test_gpu_base_data_wait(corpus, tmp_path):
    workers = max(1, min(8, (os.cpu_count() or 2) - 2))
    with entry("train", "gpu_base_bf16") as row:
        quiet(row, ONE_CORE)
        row.update(_measure(corpus, tmp_path / "run", "base", gpus=1, batch=64, steps=40, workers=workers))
        still_quiet(row, ONE_CORE)
        row.target(
            "share of step time waiting for data, base on one GPU",
            row["data_wait_frac"],
            at_most=MAX_DATA_WAIT,
        )
