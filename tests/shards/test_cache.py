"""shard_once: a raw folder sharded once into the cache, reused while the folder is unchanged; and the one
shard-vs-model sample-rate check."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from muser.shards.cache import cache_root, check_sample_rate, shard_once


def _raw(folder, n=3):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        sf.write(folder / f"song{i}.wav", rng.uniform(-0.5, 0.5, 8000).astype(np.float32), 8000)
    return folder


def test_a_raw_folder_is_sharded_once_and_reused_until_it_changes(tmp_path):
    raw = _raw(tmp_path / "raw")
    cache = cache_root(None, tmp_path / "out")
    assert cache == tmp_path / ".muser_cache"
    first = shard_once(raw, cache, 8000, name="embed", progress=False)
    assert first.root.parent == cache / "shards" and first.root.name.startswith("embed-")
    assert sum(first.samples(s) or 0 for s in first.splits) == 3
    again = shard_once(raw, cache, 8000, name="embed", progress=False)
    assert again.root == first.root
    assert shard_once(first.root, cache, 8000).root == first.root  # a shard folder is itself
    other_rate = shard_once(raw, cache, 16000, name="embed", progress=False)
    assert other_rate.root != first.root and other_rate.sample_rate == 16000


def test_the_rate_check_names_the_shards_and_the_fix():
    check_sample_rate("x", 16000, 16000)
    with pytest.raises(
        ValueError, match="x holds 8000 Hz audio but the model expects 16000 Hz.*--sample-rate 16000"
    ):
        check_sample_rate("x", 8000, 16000)
