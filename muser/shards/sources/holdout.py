"""Held-out splits carved from a source without splits of its own (a folder, GTZAN without lists): each track
goes to valid, test or train by a hash of its key alone, so re-sharding, or adding and removing other
tracks, never moves a track from one split to another."""

from __future__ import annotations

import dataclasses
import hashlib
import math

from muser.shards.sources.base import SourceListing


def check_fractions(valid: float, test: float) -> None:
    """ValueError naming the option when a fraction is outside [0, 1) or both together leave no training."""
    for name, value in (("--valid-fraction", valid), ("--test-fraction", test)):
        if not (math.isfinite(value) and 0.0 <= value < 1.0):
            raise ValueError(f"{name} is a fraction of the tracks in [0, 1), got {value}")
    if valid + test >= 1.0:
        raise ValueError(
            f"--valid-fraction {valid} and --test-fraction {test} add up to {valid + test:g}, which leaves "
            "no tracks for train; keep their sum below 1"
        )


def unit_hash(key: str) -> float:
    """A uniform number in [0, 1) from the key alone (blake2b, stable across runs, machines and versions)."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2.0**64


def split_of(key: str, valid: float, test: float) -> str:
    """valid when the key's hash u < valid, test when u < valid + test, else train."""
    u = unit_hash(key)
    return "valid" if u < valid else "test" if u < valid + test else "train"


def carve(listing: SourceListing, valid: float, test: float) -> SourceListing:
    """The listing with its tracks assigned to train/valid/test by `split_of` (unchanged when both fractions
    are 0). ValueError when the source already gives its tracks splits of their own."""
    check_fractions(valid, test)
    if valid == 0.0 and test == 0.0:
        return listing
    own = sorted({t.split for t in listing.tracks} - {"all"})
    if own:
        raise ValueError(
            f"--valid-fraction/--test-fraction carve splits only from tracks without one, but this "
            f"{listing.source} source already puts its tracks in {', '.join(own)}; drop the two options "
            "to keep its own splits"
        )
    tracks = [dataclasses.replace(t, split=split_of(t.id, valid, test)) for t in listing.tracks]
    counts = {s: sum(t.split == s for t in tracks) for s in ("train", "valid", "test")}
    note = (
        f"held-out splits by key hash: {counts['train']} train, {counts['valid']} valid, "
        f"{counts['test']} test (--valid-fraction {valid:g}, --test-fraction {test:g})"
    )
    return dataclasses.replace(listing, tracks=tracks, notes=[*listing.notes, note])
