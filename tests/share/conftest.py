"""A real (tiny, few-step) pretraining run with an evaluation under it, shared by the card, push and hub
tests: the card must show the numbers this run wrote."""

from __future__ import annotations

from pathlib import Path

import pytest

from muser.config import DataConfig, EvalConfig, ShardConfig, TrainConfig, preset


@pytest.fixture(scope="session")
def share_shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from muser.shards.writer import write_shards
    from muser.synth import make_corpus

    root = tmp_path_factory.mktemp("share-corpus")
    src = make_corpus(root / "src", layout="gtzan", n_per_class=4, seconds=3.0, sample_rate=16000)
    dst = root / "shards"
    write_shards(ShardConfig(src=str(src), dst=str(dst), workers=1, codec="pcm"), progress=False)
    return dst


@pytest.fixture(scope="session")
def trained_run(share_shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """RUN/ after 4 steps of `muser pretrain`, with RUN/eval/results.json from a 2-fold probe of it."""
    from muser.eval.runner import run_eval
    from muser.train.trainer import pretrain

    run = tmp_path_factory.mktemp("share-run") / "run"
    data = DataConfig(
        shards=[str(share_shards)], batch_size=8, crop_seconds=2.0, num_workers=0, shuffle_buffer=16
    )
    train = TrainConfig(output=str(run), steps=4, warmup=1, log_every=1, save_every=100)
    pretrain(data, preset("tiny"), train)
    run_eval(
        EvalConfig(
            task="shards",
            checkpoint=str(run),
            data=str(share_shards),
            protocol="probe",
            folds=2,
            seeds=1,
            output=str(run / "eval"),
            random_baseline=False,
            label_task="genre",
            chunk_seconds=2.0,
            batch_size=8,
        )
    )
    return run
