"""Downstream metrics: accuracy for single-label tasks, macro ROC-AUC and macro PR-AUC for multi-label ones.

Thin, checked wrappers over scikit-learn so that every protocol scores the same way. Multi-label macro
averages skip classes that have no positive (or no negative) in the evaluated set, because their AUC is
undefined; how many were skipped is reported so a reader can tell a small test split from a bug.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, average_precision_score, roc_auc_score


def _check_scores(y_true: np.ndarray, scores: np.ndarray, multilabel: bool) -> None:
    if scores.ndim != 2:
        raise ValueError(f"scores must be (N, C), got shape {scores.shape}")
    if len(y_true) != len(scores):
        raise ValueError(f"{len(y_true)} labels but {len(scores)} score rows")
    if len(y_true) == 0:
        raise ValueError("cannot score an empty evaluation set")
    if multilabel and y_true.shape != scores.shape:
        raise ValueError(
            f"multi-hot labels {y_true.shape} and scores {scores.shape} must have the same shape"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("scores contain NaN or infinite values")


def accuracy(y_true: np.ndarray, scores: np.ndarray) -> float:
    """y_true: (N,) class indices; scores: (N, C) any monotone class scores (argmax is the prediction)."""
    y_true = np.asarray(y_true)
    scores = np.asarray(scores)
    _check_scores(y_true, scores, multilabel=False)
    if y_true.min() < 0 or y_true.max() >= scores.shape[1]:
        raise ValueError(
            f"class indices must lie in [0, {scores.shape[1]}), got {y_true.min()}..{y_true.max()}"
        )
    return float(accuracy_score(y_true, scores.argmax(axis=1)))


def _valid_columns(y_true: np.ndarray) -> np.ndarray:
    positives = y_true.sum(axis=0)
    return (positives > 0) & (positives < len(y_true))


def macro_roc_auc(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    """Macro ROC-AUC over the classes that have both positives and negatives.

    y_true: (N, C) multi-hot {0, 1}; scores: (N, C). Returns (auc, number of classes used).
    """
    y_true = np.asarray(y_true).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    _check_scores(y_true, scores, multilabel=True)
    keep = _valid_columns(y_true)
    if not keep.any():
        raise ValueError("no class has both positive and negative examples; ROC-AUC is undefined")
    return float(roc_auc_score(y_true[:, keep], scores[:, keep], average="macro")), int(keep.sum())


def macro_pr_auc(y_true: np.ndarray, scores: np.ndarray) -> tuple[float, int]:
    """Macro average precision (PR-AUC) over the classes with at least one positive and one negative."""
    y_true = np.asarray(y_true).astype(np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    _check_scores(y_true, scores, multilabel=True)
    keep = _valid_columns(y_true)
    if not keep.any():
        raise ValueError("no class has both positive and negative examples; PR-AUC is undefined")
    return float(average_precision_score(y_true[:, keep], scores[:, keep], average="macro")), int(keep.sum())


def score(y_true: np.ndarray, scores: np.ndarray, multilabel: bool) -> dict[str, float]:
    """All metrics of a task: {"accuracy"} for single-label, {"roc_auc", "pr_auc"} for multi-label."""
    if multilabel:
        roc, _ = macro_roc_auc(y_true, scores)
        pr, _ = macro_pr_auc(y_true, scores)
        return {"roc_auc": roc, "pr_auc": pr}
    return {"accuracy": accuracy(y_true, scores)}
