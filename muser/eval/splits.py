"""Train/valid/test bookkeeping for downstream evaluation: standard splits, stratified K-fold, fractions.

Everything works on track indices (never on chunks), so a track can never land on both sides of a split.
Multi-label tasks stratify on each track's rarest positive label, the usual approximation of iterative
stratification that keeps rare tags present in every fold.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import KFold, StratifiedKFold


@dataclass
class Fold:
    name: str  # "standard" or "fold0".."foldK-1"
    train: np.ndarray  # track indices used to fit heads / fine-tune
    valid: np.ndarray  # track indices for hyperparameter choice; empty = carve from train
    test: np.ndarray  # track indices scored


def strata(y: np.ndarray) -> np.ndarray:
    """(N,) stratification key: the class of single-label y (N,), the rarest positive of multi-hot (N, C)."""
    y = np.asarray(y)
    if y.ndim == 1:
        return y.astype(np.int64)
    counts = y.sum(axis=0)
    # Rarer classes get smaller ranks; tracks with no positive share the key -1.
    ranked = np.where(y > 0, counts[None, :], np.inf)
    key = ranked.argmin(axis=1).astype(np.int64)
    key[~(y > 0).any(axis=1)] = -1
    return key


def _stratified_split(idx: np.ndarray, key: np.ndarray, n_splits: int, seed: int) -> list[np.ndarray]:
    """Test parts of an n_splits partition of idx, stratified on key[idx].

    Strata smaller than n_splits cannot be in every part; they are pooled into one stratum that is
    spread as evenly as it allows. If no stratum reaches n_splits, a shuffled plain split still
    partitions the tracks exactly, which is the property that matters.
    """
    sub = key[idx].copy()
    values, counts = np.unique(sub, return_counts=True)
    small = values[counts < n_splits]
    if len(small):
        sub[np.isin(sub, small)] = np.iinfo(np.int64).min
    _, counts = np.unique(sub, return_counts=True)
    if counts.max() >= n_splits:
        splitter = StratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "least populated class" is the pool, by design
            return [idx[test] for _, test in splitter.split(idx, sub)]
    splitter = KFold(n_splits=n_splits, shuffle=True, random_state=seed)
    return [idx[test] for _, test in splitter.split(idx)]


def make_folds(
    splits: list[str] | np.ndarray,
    y: np.ndarray,
    folds: int = 5,
    seed: int = 0,
    dataset_splits: list[str] | None = None,
) -> list[Fold]:
    """Folds for a dataset whose tracks carry shard split names (train/valid/test/all).

    With a `test` split the standard split is used once (valid, when present, chooses hyperparameters);
    with train + valid only, valid is the test set; otherwise stratified K-fold over all tracks.
    dataset_splits: the splits the dataset has (its manifest), which decide the scheme; the tracks that
    could be read never do, so unreadable tracks can not turn a standard split into K-fold unnoticed.
    """
    splits = np.asarray(splits)
    names = set(splits.tolist()) if dataset_splits is None else set(dataset_splits)
    scored = {"train", "test"} if "test" in names else {"train", "valid"}  # an empty valid is carved
    empty_parts = sorted(n for n in scored if not (splits == n).any())
    if "train" in names and ("test" in names or "valid" in names) and empty_parts:
        raise ValueError(
            f"the dataset's standard split has no usable track in {', '.join(empty_parts)} (all unreadable "
            "or unlabelled); fix those tracks rather than evaluate on another split"
        )
    idx = np.arange(len(splits))
    empty = np.zeros(0, dtype=np.int64)
    if "train" in names and ("test" in names or "valid" in names):
        train = idx[splits == "train"]
        if "test" in names:
            return [Fold("standard", train, idx[splits == "valid"], idx[splits == "test"])]
        return [Fold("standard", train, empty, idx[splits == "valid"])]
    if folds < 2:
        raise ValueError(f"--folds must be at least 2 for a dataset without a test split, got {folds}")
    if len(idx) < folds:
        raise ValueError(f"{len(idx)} tracks cannot be split into {folds} folds; lower --folds")
    parts = _stratified_split(idx, strata(y), folds, seed)
    out = []
    for i, test in enumerate(parts):
        train = np.sort(np.concatenate([p for j, p in enumerate(parts) if j != i]))
        out.append(Fold(f"fold{i}", train, empty, np.sort(test)))
    return out


def carve_validation(
    train: np.ndarray, y: np.ndarray, fraction: float = 0.2, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Split train indices into (fit, valid), stratified, with at least one validation track."""
    if len(train) < 2:
        raise ValueError(f"need at least 2 training tracks to carve a validation set, got {len(train)}")
    n_splits = max(2, int(round(1.0 / fraction)))
    n_splits = min(n_splits, len(train))
    valid = _stratified_split(train, strata(y), n_splits, seed)[0]
    fit = np.setdiff1d(train, valid)
    return fit, np.sort(valid)


def fraction_subset(train: np.ndarray, y: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """A stratified subset of train with round(fraction * n_c) tracks per stratum (at least one each)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fractions must lie in (0, 1], got {fraction}")
    if fraction == 1.0:
        return np.sort(train)
    rng = np.random.default_rng(seed)
    key = strata(y)[train]
    chosen = []
    for value in np.unique(key):
        members = train[key == value]
        n = max(1, int(round(fraction * len(members))))
        chosen.append(rng.choice(members, size=n, replace=False))
    return np.sort(np.concatenate(chosen))
