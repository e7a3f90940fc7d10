"""encode_texts: the one text-batching helper (eval, validation and the catalogue use it)."""

from __future__ import annotations

import torch

from muser.features.text import class_scores, encode_texts, prompts
from tests.models.small import small_model


def test_batches_change_nothing_and_rows_are_unit_length():
    model = small_model()
    texts = [f"A song of style {i}." for i in range(7)]
    whole = encode_texts(model, texts, batch_size=64)
    batched = encode_texts(model, texts, batch_size=3)
    assert whole.shape == (7, model.config.embed_dim)
    assert torch.allclose(whole, batched, atol=1e-5)
    assert torch.allclose(whole.norm(dim=-1), torch.ones(7), atol=1e-5)
    assert encode_texts(model, []).shape == (0, model.config.embed_dim)


def test_zero_shot_scores_rank_a_track_by_its_own_label_sentence():
    model = small_model()
    text = encode_texts(model, prompts("genre", ["blues", "rock"]))
    scores = class_scores(text.numpy()[[1, 0]] * 0.5, text)  # shorter vectors: re-normalised
    assert scores.shape == (2, 2) and list(scores.argmax(axis=1)) == [1, 0]
