"""Linear and MLP probes on frozen track embeddings, with a small hyperparameter grid chosen on validation.

Heads: scikit-learn logistic regression (one-vs-rest for multi-label; the grid is over C, the inverse
weight decay), a one-hidden-layer torch MLP (grid over learning rate and weight decay), and `marble`, the
probe of the MARBLE benchmark (Yuan et al. 2023) so that results can be set beside published ones: one
hidden layer of 512, dropout 0.2, Adam, batch 64, a learning-rate grid chosen on validation data, and
early stopping on the validation score. Features are standardised with training statistics. The chosen
hyperparameters (for `marble` also the number of epochs early stopping kept) are refit on all training
tracks (fit + validation) before scoring the test tracks.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier

from muser.eval.metrics import macro_roc_auc
from muser.eval.splits import carve_validation

LOGISTIC_GRID: tuple[dict, ...] = tuple({"C": c} for c in (0.01, 0.1, 1.0, 10.0))
MLP_GRID: tuple[dict, ...] = tuple(
    {"lr": lr, "weight_decay": wd} for lr in (1e-3, 1e-2) for wd in (1e-4, 1e-2)
)
# MARBLE's probe: its published configuration, with its learning-rate search narrowed to five values.
MARBLE_GRID: tuple[dict, ...] = tuple({"lr": lr} for lr in (1e-4, 5e-4, 1e-3, 5e-3, 1e-2))
MARBLE_HIDDEN = 512
MARBLE_DROPOUT = 0.2
MARBLE_BATCH = 64
MARBLE_MAX_EPOCHS = 100
MARBLE_PATIENCE = 10  # epochs without a better validation score before training stops
PROBE_HEADS = ("logistic", "mlp", "marble")


@dataclass
class ProbeResult:
    scores: np.ndarray  # (N_test, C) class scores (probabilities for logistic, logits for the MLP)
    hparams: dict = field(default_factory=dict)  # the grid point chosen on validation data
    valid_score: float = 0.0  # its validation score (accuracy or macro ROC-AUC)


def _standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    mean = train.mean(axis=0, keepdims=True)
    std = train.std(axis=0, keepdims=True) + 1e-6
    return [((x - mean) / std).astype(np.float32) for x in (train, *others)]


def _fit_logistic(x: np.ndarray, y: np.ndarray, num_classes: int, multilabel: bool, hp: dict, seed: int):
    def predict(xq: np.ndarray) -> np.ndarray:
        out = np.zeros((len(xq), num_classes), dtype=np.float64)
        if multilabel:
            out[:] = model.predict_proba(xq)
        elif len(present) == 1:
            out[:, present[0]] = 1.0  # a one-class training set can only predict that class
        else:
            out[:, model.classes_] = model.predict_proba(xq)
        return out

    with warnings.catch_warnings():
        # One-vs-rest warns about tags absent from a small training set (they predict a constant).
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        present = np.unique(y) if not multilabel else None
        model = None
        if multilabel:
            model = OneVsRestClassifier(LogisticRegression(C=hp["C"], max_iter=500, random_state=seed))
            model.fit(x, y)
        elif len(present) > 1:
            model = LogisticRegression(C=hp["C"], max_iter=500, random_state=seed)
            model.fit(x, y)
    return predict


@contextmanager
def _one_thread() -> Iterator[None]:
    """Train a probe head on one intra-op thread, restoring the caller's setting afterwards.

    Each step is a few small matmuls, far below the size where threads pay off: extra threads only add
    synchronisation, and on a busy machine a descheduled worker stalls every step (a grid of MLP fits
    measured ~10x slower with 2 threads than with 1 on 2 loaded cores).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fit_mlp(x: np.ndarray, y: np.ndarray, num_classes: int, multilabel: bool, hp: dict, seed: int):
    with _one_thread():
        return _train_mlp(x, y, num_classes, multilabel, hp, seed)


def _train_mlp(x: np.ndarray, y: np.ndarray, num_classes: int, multilabel: bool, hp: dict, seed: int):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    hidden = 256
    net = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], hidden),
        torch.nn.ReLU(),
        torch.nn.Dropout(0.2),
        torch.nn.Linear(hidden, num_classes),
    )
    opt = torch.optim.AdamW(net.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"])
    xt = torch.from_numpy(x)
    yt = torch.from_numpy(y).float() if multilabel else torch.from_numpy(y).long()
    loss_fn = torch.nn.BCEWithLogitsLoss() if multilabel else torch.nn.CrossEntropyLoss()
    batch = 256
    # A fixed budget of optimiser steps rather than epochs keeps few-shot fits from being starved.
    steps = 200
    net.train()
    for _ in range(steps):
        pick = torch.randint(len(xt), (min(batch, len(xt)),), generator=gen)
        opt.zero_grad(set_to_none=True)
        loss_fn(net(xt[pick]), yt[pick]).backward()
        opt.step()
    net.eval()

    def predict(xq: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return net(torch.from_numpy(xq)).double().numpy()

    return predict


def _fit_marble(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    multilabel: bool,
    hp: dict,
    seed: int,
    valid: tuple[np.ndarray, np.ndarray] | None = None,
):
    """MARBLE's probe. With `valid`: epochs until the validation score has not improved for
    MARBLE_PATIENCE epochs, keeping the best epoch's weights; returns (predict, best epoch count, its
    score). Without: exactly hp["epochs"] epochs (the refit on all training tracks)."""
    with _one_thread():
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        net = torch.nn.Sequential(
            torch.nn.Linear(x.shape[1], MARBLE_HIDDEN),
            torch.nn.ReLU(),
            torch.nn.Dropout(MARBLE_DROPOUT),
            torch.nn.Linear(MARBLE_HIDDEN, num_classes),
        )
        opt = torch.optim.Adam(net.parameters(), lr=hp["lr"])
        xt = torch.from_numpy(x)
        yt = torch.from_numpy(y).float() if multilabel else torch.from_numpy(y).long()
        loss_fn = torch.nn.BCEWithLogitsLoss() if multilabel else torch.nn.CrossEntropyLoss()

        def predict(xq: np.ndarray) -> np.ndarray:
            net.eval()
            with torch.no_grad():
                return net(torch.from_numpy(xq)).double().numpy()

        epochs = MARBLE_MAX_EPOCHS if valid is not None else int(hp["epochs"])
        best, best_epoch, best_state, stale = -np.inf, 0, None, 0
        for epoch in range(1, epochs + 1):
            net.train()
            for pick in torch.randperm(len(xt), generator=gen).split(MARBLE_BATCH):
                opt.zero_grad(set_to_none=True)
                loss_fn(net(xt[pick]), yt[pick]).backward()
                opt.step()
            if valid is None:
                continue
            value = _validation_score(valid[1], predict(valid[0]), multilabel)
            if value > best:
                best, best_epoch, stale = value, epoch, 0
                best_state = {k: v.clone() for k, v in net.state_dict().items()}
            else:
                stale += 1
                if stale >= MARBLE_PATIENCE:
                    break
        if best_state is not None:
            net.load_state_dict(best_state)
    return predict, best_epoch, best


def _validation_score(y: np.ndarray, scores: np.ndarray, multilabel: bool) -> float:
    if multilabel:
        try:
            return macro_roc_auc(y, scores)[0]
        except ValueError:
            return 0.0
    # Accuracy, with the mean true-class rank score as a tie-break for tiny validation sets.
    acc = float((scores.argmax(axis=1) == y).mean())
    ranks = (scores < scores[np.arange(len(y)), y][:, None]).mean()
    return acc + 1e-3 * float(ranks)


def fit_predict(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    num_classes: int,
    head: str = "logistic",
    multilabel: bool = False,
    seed: int = 0,
    valid: tuple[np.ndarray, np.ndarray] | None = None,
) -> ProbeResult:
    """Choose hyperparameters on validation data, refit on all training tracks, score the test tracks.

    x_train: (N, D) features; y_train: (N,) class indices or (N, C) multi-hot; x_test: (M, D).
    valid: optional (x, y) validation set; by default 20% of the training tracks, stratified.
    """
    if head not in PROBE_HEADS:
        raise ValueError(f"unknown probe head {head!r}; use one of {', '.join(PROBE_HEADS)}")
    if valid is None:
        fit_idx, val_idx = carve_validation(np.arange(len(x_train)), y_train, fraction=0.2, seed=seed)
        x_fit, y_fit, x_val, y_val = x_train[fit_idx], y_train[fit_idx], x_train[val_idx], y_train[val_idx]
        x_all, y_all = x_train, y_train
    else:
        x_fit, y_fit, (x_val, y_val) = x_train, y_train, valid
        x_all, y_all = np.concatenate([x_train, x_val]), np.concatenate([y_train, y_val])
    x_fit_s, x_val_s = _standardise(x_fit, x_val)
    if head == "marble":
        return _marble(x_fit_s, y_fit, x_val_s, y_val, x_all, y_all, x_test, num_classes, multilabel, seed)
    fitter, grid = (_fit_logistic, LOGISTIC_GRID) if head == "logistic" else (_fit_mlp, MLP_GRID)
    best_hp, best = grid[0], -np.inf
    for hp in grid:
        predict = fitter(x_fit_s, y_fit, num_classes, multilabel, hp, seed)
        value = _validation_score(y_val, predict(x_val_s), multilabel)
        if value > best:
            best_hp, best = hp, value
    x_all_s, x_test_s = _standardise(x_all, x_test)
    predict = fitter(x_all_s, y_all, num_classes, multilabel, best_hp, seed)
    return ProbeResult(scores=predict(x_test_s), hparams=dict(best_hp), valid_score=float(best))


def _marble(
    x_fit: np.ndarray,
    y_fit: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    x_all: np.ndarray,
    y_all: np.ndarray,
    x_test: np.ndarray,
    num_classes: int,
    multilabel: bool,
    seed: int,
) -> ProbeResult:
    """MARBLE's protocol on standardised fit/validation features: each learning rate trained with early
    stopping on validation, the best (lr, epochs) refit on all training tracks for that many epochs."""
    best_hp, best = {**MARBLE_GRID[0], "epochs": 1}, -np.inf
    for hp in MARBLE_GRID:
        _, epochs, value = _fit_marble(x_fit, y_fit, num_classes, multilabel, hp, seed, (x_val, y_val))
        if value > best:
            best_hp, best = {**hp, "epochs": max(1, epochs)}, value
    x_all_s, x_test_s = _standardise(x_all, x_test)
    predict, _, _ = _fit_marble(x_all_s, y_all, num_classes, multilabel, best_hp, seed)
    return ProbeResult(scores=predict(x_test_s), hparams=best_hp, valid_score=float(best))
