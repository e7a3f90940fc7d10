"""The training data stream: shard-folder checks, tokenizer sentences, and a seekable micro-batch stream.

The reader is deterministic per (seed, epoch, rank, worker), so micro-batch i of a run is batch i % E of
loader epoch i // E (E batches per epoch). A resumed run re-opens epoch i // E and skips i % E batches,
which reproduces the uninterrupted stream exactly.
"""

from __future__ import annotations

import json
import random
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from muser.shards import text as text_mod

# Below this many batches per loader epoch the DataLoader's worker start-up (forkserver) dominates, so a
# small corpus is read in longer epochs; resampled shards make an epoch a window, not an exact pass.
MIN_EPOCH_BATCHES = 64


def _is_url(item: str) -> bool:
    """A source the reader opens as a tar stream (a URL, a brace pattern or one local .tar): no manifest."""
    return "://" in item or "{" in item or item.endswith(".tar")


def epochs_need_manifests(shards: list[str]) -> str:
    """The message for --epochs over sources without a manifest (their sample count is unknown)."""
    streams = [s for s in shards if _is_url(s)]
    return (
        f"--epochs needs the sample counts in the manifest.json of shard folders, but {', '.join(streams)} "
        f"{'is a single .tar / URL source' if len(streams) == 1 else 'are single .tar / URL sources'} "
        "without a manifest; use --steps, or pass the shard folder that holds the .tar files"
    )


def check_sources(shards: list[str], split: str) -> int | None:
    """Validate every --shards item; returns the number of training samples (None for URL sources).

    A missing path, a folder without manifest.json (empty, or not written by `muser shard`) and a folder
    without samples in `split` are each one clear ValueError naming the folder.
    """
    if not shards:
        raise ValueError("no --shards given; pass at least one folder written by `muser shard`")
    total: int | None = 0
    for item in shards:
        if _is_url(item):
            total = None
            continue
        path = Path(item)
        if not path.exists():
            raise ValueError(f"--shards {item}: no such folder")
        if not path.is_dir():
            raise ValueError(f"--shards {item}: not a folder; pass a folder written by `muser shard`")
        manifest_path = path / "manifest.json"
        if not manifest_path.is_file():
            what = "is empty" if not any(path.iterdir()) else "has no manifest.json"
            raise ValueError(f"--shards {item} {what}; pass a folder written by `muser shard`")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ValueError(f"--shards {item}: manifest.json is not valid JSON ({err})") from None
        samples = int(manifest.get("splits", {}).get(split, {}).get("samples", 0) or 0)
        if samples < 1:
            have = ", ".join(s for s, v in manifest.get("splits", {}).items() if v.get("samples")) or "none"
            raise ValueError(f"--shards {item} has no {split!r} samples (splits with samples: {have})")
        if total is not None:
            total += samples
    return total


def has_split(folder: str, split: str) -> bool:
    """True when `folder` is a shard folder whose manifest lists samples in `split`."""
    path = Path(folder) / "manifest.json"
    if _is_url(folder) or not path.is_file():
        return False
    splits = json.loads(path.read_text(encoding="utf-8")).get("splits", {})
    return bool(splits.get(split, {}).get("samples"))


def _metadata(folder: Path, split: str, limit: int) -> Iterator[dict[str, Any]]:
    # Only the small .json members are read (tarfile skips over audio members without decoding them).
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    count = 0
    for shard in manifest["splits"][split]["shards"]:
        with tarfile.open(folder / shard["name"]) as tar:
            for member in tar:
                if count >= limit:
                    return
                if member.isfile() and member.name.endswith(".json"):
                    f = tar.extractfile(member)
                    if f is None:
                        continue
                    try:
                        meta = json.loads(f.read())
                    except (json.JSONDecodeError, UnicodeDecodeError):
                        continue  # the reader skips and counts these; the tokenizer just needs sentences
                    count += 1
                    yield meta


def tokenizer_texts(shards: list[str], split: str, limit: int = 5000, seed: int = 0) -> list[str]:
    """Sentences for training the built-in WordPiece tokenizer, rendered from the shards' metadata.

    Each track gives its eval caption and two train-mode captions (random templates, no dropout), so
    every template word and every metadata value becomes part of the vocabulary.
    """
    rng = random.Random(seed)
    folders = [Path(s) for s in shards if not _is_url(s)]
    per_folder = max(1, limit // max(1, len(folders)))
    texts: list[str] = []
    for folder in folders:
        for meta in _metadata(folder, split, per_folder):
            texts.append(text_mod.render(meta))
            texts += [text_mod.render(meta, rng=rng) for _ in range(2)]
    return texts


class MicroBatches:
    """Micro-batches of a loader by global index, seekable for resume.

    loader: a muser.shards.reader Loader in train mode with a known length (batches per epoch).
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.per_epoch = len(loader)
        self.position = 0  # micro-batches consumed so far
        self._it: Iterator[dict] | None = None

    def _open(self) -> Iterator[dict]:
        # Starting DataLoader workers draws a base seed from the global torch RNG; isolate it so that the
        # model's random ops (SpecAugment, dropout) see the same RNG stream in a resumed run.
        with torch.random.fork_rng(devices=[]):
            return iter(self.loader)

    def seek(self, position: int) -> None:
        """Continue at micro-batch `position`: open its epoch and skip the batches already consumed."""
        epoch, skip = divmod(position, self.per_epoch)
        self.loader.set_epoch(epoch)
        self._it = self._open()
        for _ in range(skip):
            next(self._it)
        self.position = position

    @property
    def epoch(self) -> float:
        return self.position / self.per_epoch

    def __iter__(self) -> MicroBatches:
        return self

    def __next__(self) -> dict:
        if self._it is None:
            self.seek(self.position)
        assert self._it is not None
        try:
            batch = next(self._it)
        except StopIteration:
            # the loader advances its own epoch on every new pass, which is exactly position // per_epoch
            self._it = self._open()
            batch = next(self._it)
        self.position += 1
        return batch
