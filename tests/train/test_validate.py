"""In-training validation: it reads no more of the valid split than max_tracks needs, and its numbers are
muser.eval's (retrieval over distinct captions, zero-shot over label prompts)."""

from __future__ import annotations

import zlib

import numpy as np
import torch
import torch.nn.functional as F

from muser.eval.metrics import accuracy
from muser.features import tracks as features
from muser.features.retrieval import text_to_audio
from muser.features.text import class_scores, encode_texts, prompts
from muser.shards.manifest import ShardFolder
from muser.shards.text import render
from muser.train.validate import evaluate


class _FirstTwoSamples:
    """A stand-in model: a chunk's embedding is its first `dim` samples (L2-normalised); a text's is fixed
    random noise seeded by the text, so the same sentence always embeds the same way."""

    device = torch.device("cpu")

    def __init__(self, dim: int = 2) -> None:
        self.dim = dim

    def eval(self) -> None:
        pass

    def encode_audio(
        self, audio: torch.Tensor, which: str | None = None, length: torch.Tensor | None = None
    ) -> torch.Tensor:
        return F.normalize(audio[:, : self.dim] + 1e-3, dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        rows = [
            torch.randn(self.dim, generator=torch.Generator().manual_seed(zlib.crc32(t.encode())))
            for t in texts
        ]
        return F.normalize(torch.stack(rows), dim=-1)


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


def test_evaluate_gives_muser_evals_numbers_on_the_same_tracks(shards):
    folder = ShardFolder.open(shards)
    model = _FirstTwoSamples(dim=3)
    got = evaluate(model, [folder], "valid", chunk_seconds=3.0, batch_size=4)
    # The same valid tracks through muser.eval: its chunk-averaged features, its retrieval over the distinct
    # captions, its zero-shot over the genre prompts.
    ts = features.chunk_average(folder, ["valid"], features.model_chunk_fn(model, model.device), 3.0, 4)
    captions = [render(meta) for meta in ts.meta]
    queries = list(dict.fromkeys(captions))
    want = text_to_audio(encode_texts(model, queries), torch.from_numpy(ts.x), captions)
    classes = folder.labels["genre"]["classes"]
    targets = np.array([classes.index(meta["labels"]["genre"]) for meta in ts.meta])
    zero_shot = accuracy(targets, class_scores(ts.x, encode_texts(model, prompts("genre", classes))))
    assert got["tracks"] == len(ts.keys) == folder.samples("valid") == 10
    assert (got["r1"], got["r5"], got["zs_genre"]) == (want["R@1"], want["R@5"], zero_shot)
    # ... and by hand, so a metric that is wrong in both places would still show: R@1 is the fraction of
    # distinct captions whose best-scoring track carries that caption.
    text = F.normalize(torch.stack([model.encode_text([q])[0] for q in queries]), dim=-1)
    best = (text @ F.normalize(torch.from_numpy(ts.x), dim=-1).T).argmax(dim=1)
    assert got["r1"] == np.mean([captions[int(b)] == q for b, q in zip(best, queries, strict=True)])
    assert 0.0 < got["r5"] and got["r1"] <= got["r5"]  # not a degenerate case where every value is 0


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
