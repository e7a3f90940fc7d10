"""The small in-training metrics: recall@k with duplicate captions, zero-shot accuracy, and the
length-weighted track embeddings that stop reading at max_tracks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from muser.train import validate
from muser.train.validate import evaluate, recall_at_k, track_embeddings, zero_shot_accuracy


class _FirstTwoSamples:
    """A stand-in model: a chunk's embedding is its first two samples (L2-normalised); random text."""

    device = torch.device("cpu")

    def encode_audio(self, audio: torch.Tensor, length: torch.Tensor | None = None) -> torch.Tensor:
        return F.normalize(audio[:, :2] + 1e-3, dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(torch.randn(len(texts), 2), dim=-1)


def _batch(chunks: list[tuple[str, list[float], int]]) -> dict:
    return {
        "audio": torch.tensor([audio for _, audio, _ in chunks]),
        "length": torch.tensor([length for _, _, length in chunks]),
        "key": [key for key, _, _ in chunks],
        "meta": [{"id": key} for key, _, _ in chunks],
    }


def test_recall_at_k_counts_any_relevant_item_in_the_top_k():
    sim = torch.tensor([[0.9, 0.1, 0.0], [0.8, 0.7, 0.1], [0.1, 0.2, 0.3]])
    relevant = torch.eye(3, dtype=torch.bool)
    assert recall_at_k(sim, relevant, ks=(1, 2, 5)) == pytest.approx({"r1": 2 / 3, "r2": 1.0, "r5": 1.0})
    relevant[1, 0] = True  # a duplicate caption: item 0 is a correct answer for query 1 too
    assert recall_at_k(sim, relevant, ks=(1,))["r1"] == pytest.approx(1.0)


def test_zero_shot_accuracy_is_argmax_over_prompts():
    audio = torch.nn.functional.normalize(torch.tensor([[1.0, 0.1], [0.1, 1.0], [1.0, 0.0]]), dim=-1)
    prompts = torch.eye(2)
    assert zero_shot_accuracy(audio, prompts, torch.tensor([0, 1, 1])) == pytest.approx(2 / 3)


def test_track_embeddings_weight_chunks_by_valid_length_and_stop_at_max_tracks():
    drawn = []

    def batches():
        # track a: a full chunk pointing at x, then a mostly padded one (1 of 4 samples) pointing at y
        for batch in (
            _batch([("a", [1.0, 0.0, 0.0, 0.0], 4), ("a", [0.0, 1.0, 0.0, 0.0], 1)]),
            _batch([("b", [0.0, 1.0, 0.0, 0.0], 4), ("c", [1.0, 0.0, 0.0, 0.0], 4)]),
            _batch([("d", [1.0, 0.0, 0.0, 0.0], 4)]),
        ):
            drawn.append(batch["key"])
            yield batch

    keys, audio, metas = track_embeddings(_FirstTwoSamples(), batches(), max_tracks=2)
    assert keys == ["a", "b"] and set(metas) == {"a", "b"}
    expected_a = F.normalize(torch.tensor([4.0, 1.0]) + 5e-3, dim=0)  # not the equal-weight [1, 1] / sqrt(2)
    torch.testing.assert_close(audio[0], expected_a, atol=1e-3, rtol=0)
    assert drawn == [["a", "a"], ["b", "c"]]  # the batch after the first chunk of track 3 is never read


def test_evaluate_reads_no_more_of_the_valid_split_than_max_tracks_needs(shards, monkeypatch):
    make_loader, drawn = validate.make_loader, []

    def counting(*args, **kwargs):
        for batch in make_loader(*args, **kwargs):
            drawn.append(len(batch["key"]))
            yield batch

    monkeypatch.setattr(validate, "make_loader", counting)
    # 4-s tracks in 3-s chunks: two chunks per track, so 2 tracks and the first chunk of a third = 3 batches
    out = evaluate(_FirstTwoSamples(), [str(shards)], "valid", crop_seconds=3.0, batch_size=2, max_tracks=2)
    assert out["tracks"] == 2 and len(drawn) == 3, drawn
