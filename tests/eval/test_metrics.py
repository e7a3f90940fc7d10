"""Metrics agree with scikit-learn and refuse malformed inputs."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score

from muser.eval.metrics import accuracy, macro_pr_auc, macro_roc_auc, score


def test_accuracy_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, size=200)
    s = rng.normal(size=(200, 7))
    assert accuracy(y, s) == pytest.approx(accuracy_score(y, s.argmax(1)))


def test_macro_aucs_match_sklearn():
    rng = np.random.default_rng(1)
    y = (rng.random((300, 12)) < 0.2).astype(int)
    s = rng.normal(size=(300, 12)) + y  # informative, so the numbers are away from 0.5
    roc, used = macro_roc_auc(y, s)
    pr, _ = macro_pr_auc(y, s)
    assert used == 12
    assert roc == pytest.approx(roc_auc_score(y, s, average="macro"))
    assert pr == pytest.approx(average_precision_score(y, s, average="macro"))
    assert 0.6 < roc < 1.0


def test_classes_without_positives_are_skipped():
    rng = np.random.default_rng(2)
    y = (rng.random((50, 5)) < 0.3).astype(int)
    y[:, 3] = 0
    s = rng.normal(size=(50, 5))
    roc, used = macro_roc_auc(y, s)
    assert used == 4
    keep = [0, 1, 2, 4]
    assert roc == pytest.approx(roc_auc_score(y[:, keep], s[:, keep], average="macro"))


def test_score_dispatch():
    y = np.array([0, 1, 2, 1])
    s = np.eye(3, dtype=np.float32)[y]  # perfect scores: one-hot rows
    assert score(y, s, multilabel=False) == {"accuracy": 1.0}
    out = score(s, s, multilabel=True)
    assert out == {"roc_auc": 1.0, "pr_auc": 1.0}


@pytest.mark.parametrize(
    "y, s, match",
    [
        (np.array([0, 1]), np.zeros((3, 2)), "labels"),
        (np.array([0, 5]), np.zeros((2, 2)), "class indices"),
        (np.array([0, 1]), np.array([[0.0, np.nan], [1.0, 0.0]]), "NaN"),
        (np.array([], dtype=int), np.zeros((0, 2)), "empty"),
    ],
)
def test_bad_inputs_are_clear_errors(y, s, match):
    with pytest.raises(ValueError, match=match):
        accuracy(y, s)


def test_undefined_auc_is_an_error():
    with pytest.raises(ValueError, match="undefined"):
        macro_roc_auc(np.ones((4, 2)), np.zeros((4, 2)))
