"""Probes learn separable features, pick hyperparameters on validation data and handle multi-label tasks."""

from __future__ import annotations

import numpy as np
import pytest

from muser.eval.metrics import accuracy, macro_roc_auc
from muser.eval.probe import MARBLE_GRID, MARBLE_MAX_EPOCHS, MARBLE_PATIENCE, fit_predict


def _blobs(n_per: int, classes: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, dim))
    y = np.repeat(np.arange(classes), n_per)
    return (centres[y] + rng.normal(size=(len(y), dim))).astype(np.float32), y


@pytest.mark.parametrize("head", ["logistic", "mlp", "marble"])
def test_probe_beats_chance_on_separable_classes(head):
    x, y = _blobs(20, 4, 16, seed=0)
    xt, yt = _blobs(10, 4, 16, seed=0)
    out = fit_predict(x, y, xt, num_classes=4, head=head, seed=0)
    assert out.scores.shape == (40, 4)
    assert accuracy(yt, out.scores) > 0.9
    assert out.hparams


def test_multilabel_probe():
    rng = np.random.default_rng(0)
    y = (rng.random((120, 5)) < 0.4).astype(np.int64)
    x = (y @ rng.normal(size=(5, 12)) + 0.3 * rng.normal(size=(120, 12))).astype(np.float32)
    out = fit_predict(x[:80], y[:80], x[80:], num_classes=5, head="logistic", multilabel=True)
    assert macro_roc_auc(y[80:], out.scores)[0] > 0.9


def test_explicit_validation_set_and_missing_train_class():
    x, y = _blobs(6, 3, 8, seed=1)
    keep = y != 2  # class 2 never seen in training: its column must still exist (score 0)
    out = fit_predict(x[keep], y[keep], x, num_classes=3, valid=(x[keep][:4], y[keep][:4]))
    assert out.scores.shape == (18, 3)
    assert (out.scores[:, 2] == 0).all()


def test_marble_probe_stops_early_and_refits_the_kept_epochs():
    # Separable classes: validation accuracy saturates within a few epochs, so early stopping must end
    # training long before the cap, and the refit keeps the epoch count and learning rate it found.
    x, y = _blobs(30, 4, 16, seed=2)
    xt, yt = _blobs(10, 4, 16, seed=2)
    out = fit_predict(x, y, xt, num_classes=4, head="marble", seed=0)
    assert {"lr": out.hparams["lr"]} in MARBLE_GRID
    assert 1 <= out.hparams["epochs"] <= MARBLE_MAX_EPOCHS - MARBLE_PATIENCE
    assert accuracy(yt, out.scores) > 0.9
    again = fit_predict(x, y, xt, num_classes=4, head="marble", seed=0)
    np.testing.assert_array_equal(out.scores, again.scores)  # seeded: the same choice and weights


def test_marble_probe_multilabel():
    rng = np.random.default_rng(0)
    y = (rng.random((160, 5)) < 0.4).astype(np.int64)
    x = (y @ rng.normal(size=(5, 12)) + 0.3 * rng.normal(size=(160, 12))).astype(np.float32)
    out = fit_predict(x[:120], y[:120], x[120:], num_classes=5, head="marble", multilabel=True)
    assert macro_roc_auc(y[120:], out.scores)[0] > 0.9


def test_unknown_head():
    x, y = _blobs(4, 2, 4, seed=0)
    with pytest.raises(ValueError, match="probe head"):
        fit_predict(x, y, x, num_classes=2, head="svm")
