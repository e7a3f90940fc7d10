"""Held-out splits by key hash: deterministic, close to the asked fractions, and stable when tracks come
and go (a track never changes split because of another)."""

from __future__ import annotations

import pytest

from muser.shards.sources.base import SourceListing, Track
from muser.shards.sources.holdout import carve, split_of, unit_hash


def _listing(keys: list[str], split: str = "all") -> SourceListing:
    return SourceListing("folder", None, [Track(k, None, "folder", split, {}) for k in keys], {})


def test_fractions_are_met_and_the_rest_is_train():
    keys = [f"folder_song_{i:05d}_{i * 7919 % 10007:04x}" for i in range(20000)]
    splits = [t.split for t in carve(_listing(keys), 0.1, 0.2).tracks]
    assert splits.count("valid") / len(keys) == pytest.approx(0.1, abs=0.01)
    assert splits.count("test") / len(keys) == pytest.approx(0.2, abs=0.01)
    assert set(splits) == {"train", "valid", "test"}


def test_a_track_keeps_its_split_when_others_are_added_or_removed():
    old = [f"folder_a_{i}" for i in range(300)]
    new = old[::2] + [f"folder_b_{i}" for i in range(300)]
    before = {t.id: t.split for t in carve(_listing(old), 0.15, 0.15).tracks}
    after = {t.id: t.split for t in carve(_listing(new), 0.15, 0.15).tracks}
    assert all(after[k] == before[k] for k in old[::2])


def test_the_hash_is_fixed_across_versions():
    # blake2b-64 of the key: a changed hash would move every user's tracks between splits on re-shard
    u = int.from_bytes(bytes.fromhex("9c5c604e5d60428b"), "big") / 2.0**64  # 0.6108
    assert unit_hash("folder_x") == u
    assert [split_of("folder_x", v, t) for v, t in ((0.62, 0.0), (0.6, 0.02), (0.6, 0.01))] == [
        "valid",
        "test",
        "train",
    ]


def test_no_fraction_keeps_the_listing_and_own_splits_are_refused():
    listing = _listing(["a", "b"])
    assert carve(listing, 0.0, 0.0) is listing
    with pytest.raises(ValueError, match="already puts its tracks in train"):
        carve(_listing(["a"], "train"), 0.1, 0.0)
    with pytest.raises(ValueError, match="add up to 1"):
        carve(listing, 0.6, 0.4)
