"""Retrieval metrics with repeated captions (several relevant tracks per query)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from muser.features.retrieval import relevance_from_captions, retrieval_metrics, text_to_audio


def test_relevance_groups_repeated_captions():
    queries, rel = relevance_from_captions(["a", "b", "a", "c"])
    assert queries == ["a", "b", "c"]
    assert rel.tolist() == [
        [True, False, True, False],
        [False, True, False, False],
        [False, False, False, True],
    ]


def test_metrics_by_hand():
    # query 0: relevant items 0 and 2 are ranked 4th and 2nd -> AP = (1/2 + 2/4) / 2
    sim = np.array([[0.1, 0.9, 0.8, 0.5], [0.9, 0.1, 0.2, 0.3]])
    rel = np.array([[1, 0, 1, 0], [1, 0, 0, 0]], dtype=bool)
    m = retrieval_metrics(sim, rel, ks=(1, 2))
    assert m["R@1"] == 0.5 and m["R@2"] == 1.0
    assert m["mAP"] == pytest.approx(((1 / 2 + 2 / 4) / 2 + 1.0) / 2)


def test_perfect_and_random_embeddings():
    captions = ["x", "y", "x", "z", "y"]
    queries, _ = relevance_from_captions(captions)
    basis = torch.eye(3)
    audio = torch.stack([basis[queries.index(c)] for c in captions])
    m = text_to_audio(basis, audio, captions)
    assert m == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0, "mAP": 1.0}
    rnd = text_to_audio(torch.randn(3, 8), torch.randn(5, 8), captions)
    assert all(0.0 <= v <= 1.0 for v in rnd.values())


def test_shape_errors():
    with pytest.raises(ValueError, match="same"):
        retrieval_metrics(np.zeros((2, 3)), np.ones((3, 2), dtype=bool))
    with pytest.raises(ValueError, match="relevant"):
        retrieval_metrics(np.zeros((1, 2)), np.zeros((1, 2), dtype=bool))


def test_recall_counts_any_relevant_item_in_the_top_k():
    sim = np.array([[0.9, 0.1, 0.0], [0.8, 0.7, 0.1], [0.1, 0.2, 0.3]])
    relevant = np.eye(3, dtype=bool)
    m = retrieval_metrics(sim, relevant, ks=(1, 2, 5))
    assert (m["R@1"], m["R@2"], m["R@5"]) == pytest.approx((2 / 3, 1.0, 1.0))
    relevant[1, 0] = True  # a duplicate caption: item 0 is a correct answer for query 1 too
    assert retrieval_metrics(sim, relevant, ks=(1,))["R@1"] == pytest.approx(1.0)
