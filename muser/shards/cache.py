"""A raw folder sharded once into a cache: the `.muser_cache` rule that `muser eval` and `muser embed`
share. A folder of audio (any layout `muser shard` reads) is sharded into CACHE/shards/<name>-<key>, where
the key hashes the folder's listing (paths, sizes, modification times), the layout, the sample rate and
any split lists; a later run on the same data finds the cached shards, an edited folder is re-sharded.

Also the one check that shards hold the sample rate a model expects.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from muser.shards.manifest import ShardFolder, is_shard_folder

CACHE = ".muser_cache"


def cache_root(cache_dir: str | Path | None, output: str | Path) -> Path:
    """The cache folder: cache_dir when given, else .muser_cache beside the output folder (OUT/../)."""
    return Path(cache_dir) if cache_dir else Path(output).resolve().parent / CACHE


def check_sample_rate(what: str, rate: int, expected: int) -> None:
    """Refuse shards at another rate than the model's; what: the shards' name in the message."""
    if rate != expected:
        raise ValueError(
            f"{what} holds {rate} Hz audio but the model expects {expected} Hz; "
            f"re-shard with --sample-rate {expected}"
        )


def _listing_fingerprint(root: Path, extra: str) -> str:
    """Cheap fingerprint of a raw dataset: relative paths, sizes and modification times of every file."""
    h = hashlib.sha256(extra.encode())
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            st = os.stat(os.path.join(dirpath, name))
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _split_lists_fingerprint(split_dir: Path) -> str:
    """Names and contents of the list files the GTZAN reader may use, so edited lists re-shard."""
    h = hashlib.sha256(str(split_dir.resolve()).encode())
    for split in ("train", "valid", "test"):
        for name in (f"{split}_filtered.txt", f"{split}.txt"):
            path = split_dir / name
            if path.is_file():
                h.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()


def shard_once(
    data: Path,
    cache: Path,
    sample_rate: int,
    source: str = "auto",
    name: str = "shards",
    layout: str = "a folder of audio files `muser shard` reads",
    progress: bool = True,
    split_dir: Path | None = None,
) -> ShardFolder:
    """The shard folder for `data`: itself when it is one, else its sharding under cache/shards/.

    source: the layout (ShardConfig.source); name: the cache folder's prefix and the name in errors;
    layout: what `data` should look like (for errors); split_dir: GTZAN fault-filtered split lists used to
    shard a raw GTZAN folder (part of the cache key).
    """
    if is_shard_folder(data):
        return ShardFolder.open(data)
    from muser.config import ShardConfig
    from muser.shards.writer import write_shards

    lists = _split_lists_fingerprint(split_dir) if split_dir is not None else "no-lists"
    key = _listing_fingerprint(data, f"{source}\0{sample_rate}\0{lists}")[:16]
    dst = cache / "shards" / f"{name}-{key}"
    if is_shard_folder(dst):
        try:
            cached = ShardFolder.open(dst)
        except ValueError:
            cached = None  # a damaged cache is re-sharded below (write_shards resumes or refuses clearly)
        if cached is not None and cached.complete:
            return cached
    cfg = ShardConfig(
        src=str(data),
        dst=str(dst),
        source=source,
        sample_rate=sample_rate,
        split_dir=str(split_dir) if split_dir is not None else None,
    )
    try:
        write_shards(cfg, progress=progress)
    except ValueError as err:
        raise ValueError(f"could not read {data} as {name} ({layout}): {err}") from err
    return ShardFolder.open(dst)
