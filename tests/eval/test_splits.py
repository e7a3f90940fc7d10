"""Fold bookkeeping: partitions are exact, stratified, and few-shot fractions keep every class."""

from __future__ import annotations

import numpy as np
import pytest

from muser.eval.splits import carve_validation, fraction_subset, make_folds, strata


def test_kfold_partitions_tracks_and_is_stratified():
    y = np.repeat(np.arange(6), 10)
    folds = make_folds(["all"] * len(y), y, folds=5, seed=3)
    assert len(folds) == 5
    tests = np.concatenate([f.test for f in folds])
    assert sorted(tests.tolist()) == list(range(len(y)))  # every track tested exactly once
    for f in folds:
        assert not set(f.train) & set(f.test)
        assert len(f.train) + len(f.test) == len(y)
        assert np.bincount(y[f.test], minlength=6).tolist() == [2] * 6  # stratified


def test_standard_split_is_used_when_present():
    splits = ["train"] * 6 + ["valid"] * 2 + ["test"] * 3
    y = np.arange(11) % 2
    (fold,) = make_folds(splits, y)
    assert fold.name == "standard"
    assert fold.train.tolist() == list(range(6))
    assert fold.valid.tolist() == [6, 7]
    assert fold.test.tolist() == [8, 9, 10]
    (no_test,) = make_folds(["train"] * 4 + ["valid"] * 2, np.arange(6) % 2)
    assert no_test.test.tolist() == [4, 5] and len(no_test.valid) == 0


def test_multilabel_folds_partition_and_stratify_on_rare_tags():
    rng = np.random.default_rng(0)
    y = (rng.random((40, 6)) < 0.3).astype(int)
    y[:5, 5] = 1
    y[5:, 5] = 0
    key = strata(y)
    assert (key[:5] == 5).all()  # the rarest tag is the stratum of its tracks
    folds = make_folds(["all"] * 40, y, folds=5)
    assert sorted(np.concatenate([f.test for f in folds]).tolist()) == list(range(40))
    assert all(y[f.test, 5].sum() == 1 for f in folds)


def test_fractions_are_stratified_subsets_with_every_class():
    y = np.repeat(np.arange(4), [40, 20, 10, 2])
    train = np.arange(len(y))
    sub = fraction_subset(train, y, 0.1, seed=1)
    assert set(sub) <= set(train) and len(set(sub)) == len(sub)
    assert np.bincount(y[sub], minlength=4).tolist() == [4, 2, 1, 1]
    assert fraction_subset(train, y, 1.0).tolist() == train.tolist()
    assert fraction_subset(train, y, 0.5, seed=1).tolist() == fraction_subset(train, y, 0.5, seed=1).tolist()
    with pytest.raises(ValueError, match="fractions"):
        fraction_subset(train, y, 0.0)


def test_carved_validation_is_disjoint_and_stratified():
    y = np.repeat(np.arange(3), 10)
    fit, valid = carve_validation(np.arange(30), y, fraction=0.2, seed=0)
    assert not set(fit) & set(valid) and len(fit) + len(valid) == 30
    assert np.bincount(y[valid], minlength=3).tolist() == [2, 2, 2]


def test_too_many_folds_is_a_clear_error():
    with pytest.raises(ValueError, match="--folds"):
        make_folds(["all"] * 3, np.zeros(3, dtype=int), folds=5)


def test_unreadable_tracks_never_turn_the_standard_split_into_k_fold():
    y = np.array([0, 1, 0, 1, 0, 1])
    # the dataset has a test split, but none of its tracks could be read: an error, not 5-fold
    with pytest.raises(ValueError, match="no usable track in test"):
        make_folds(["train"] * 6, y, folds=2, dataset_splits=["train", "valid", "test"])
    # some test tracks readable: still the standard split (an unreadable valid split is carved from train)
    folds = make_folds(["train"] * 4 + ["test"] * 2, y, dataset_splits=["train", "valid", "test"])
    assert [f.name for f in folds] == ["standard"] and len(folds[0].valid) == 0
