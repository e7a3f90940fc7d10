"""A tiny synthetic shard folder (muser.synth corpus -> write_shards) shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from muser.config import DataConfig, ShardConfig, TrainConfig


@pytest.fixture(scope="session")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six styles x 8 tracks of 4 s at 16 kHz, GTZAN layout with split lists: train 28, valid 10, test 9."""
    from muser.shards.writer import write_shards
    from muser.synth import make_corpus

    root = tmp_path_factory.mktemp("corpus")
    src = make_corpus(
        root / "src", layout="gtzan", n_per_class=8, seconds=4.0, sample_rate=16000, split_lists=True
    )
    dst = root / "shards"
    write_shards(
        ShardConfig(src=str(src), dst=str(dst), workers=1, codec="pcm", split_dir=str(src)), progress=False
    )
    return dst


def small_run(shards: Path, out: Path, **train: object) -> tuple[DataConfig, TrainConfig]:
    """Configs of a few-step CPU run: batch 8, 2-s crops, no loader workers, a metrics line per step."""
    data = DataConfig(shards=[str(shards)], batch_size=8, crop_seconds=2.0, num_workers=0, shuffle_buffer=16)
    options = {"output": str(out), "steps": 8, "warmup": 2, "log_every": 1, "save_every": 100, **train}
    return data, TrainConfig(**options)  # type: ignore[arg-type]
