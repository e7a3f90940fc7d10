"""The small in-training metrics: recall@k with duplicate captions, zero-shot accuracy."""

from __future__ import annotations

import pytest
import torch

from muser.train.validate import recall_at_k, zero_shot_accuracy


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
