"""In-training validation: it reads no more of the valid split than max_tracks needs, and its numbers are
muser.eval's (retrieval over distinct captions, zero-shot over label prompts)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from muser.features import tracks as features
from muser.shards.manifest import ShardFolder
from muser.train.validate import evaluate


class _FirstTwoSamples:
    """A stand-in model: a chunk's embedding is its first two samples (L2-normalised); random text."""

    device = torch.device("cpu")

    def eval(self) -> None:
        pass

    def encode_audio(
        self, audio: torch.Tensor, which: str | None = None, length: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.normalize(audio[:, :2] + 1e-3, dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(torch.randn(len(texts), 2), dim=-1)


def test_evaluate_reads_no_more_of_the_valid_split_than_max_tracks_needs(shards, monkeypatch):
    make_loader, drawn = features.make_loader, []

    def counting(*args, **kwargs):
        for batch in make_loader(*args, **kwargs):
            drawn.append(len(batch["key"]))
            yield batch

    monkeypatch.setattr(features, "make_loader", counting)
    # 4-s tracks in 3-s chunks: two chunks per track, so 2 tracks and the first chunk of a third = 3 batches
    folder = ShardFolder.open(shards)
    out = evaluate(_FirstTwoSamples(), [folder], "valid", chunk_seconds=3.0, batch_size=2, max_tracks=2)
    assert out["tracks"] == 2 and len(drawn) == 3, drawn
    assert 0.0 <= out["r1"] <= out["r5"] <= 1.0
    assert "zs_genre" in out and 0.0 <= out["zs_genre"] <= 1.0


def test_evaluate_without_the_split_is_empty(shards):
    assert evaluate(_FirstTwoSamples(), [ShardFolder.open(shards)], "nosuchsplit") == {}


def test_in_training_validation_chunks_at_evals_chunk_length_not_the_training_crop(monkeypatch):
    """--eval-every claims to mirror `muser eval`: its tracks are cut at EvalConfig.chunk_seconds even
    when the training crop is longer (it used to pass the crop)."""
    from types import SimpleNamespace

    from muser.config import DataConfig, EvalConfig, TrainConfig
    from muser.train import validate
    from muser.train.trainer import _PretrainRun

    seen: dict = {}
    monkeypatch.setattr(validate, "evaluate", lambda *args, **kwargs: seen.update(args=args, **kwargs) or {})
    data = DataConfig(crop_seconds=EvalConfig.chunk_seconds * 3)
    idle = SimpleNamespace(eval=lambda: None, train=lambda: None)
    _PretrainRun._evaluate(SimpleNamespace(rank=0, model=idle, valid=[], data=data, train=TrainConfig()))
    assert seen["args"][3] == EvalConfig.chunk_seconds != data.crop_seconds
