"""The training data: the --shards sources and their splits, tokenizer sentences, and a seekable stream.

The reader is deterministic per (seed, epoch, rank, worker), so micro-batch i of a run is batch i % E of
loader epoch i // E (E batches per epoch). A resumed run re-opens epoch i // E and skips i % E batches,
which reproduces the uninterrupted stream exactly.
"""

from __future__ import annotations

import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from muser.shards import text as text_mod
from muser.shards.manifest import ShardFolder

# Below this many batches per loader epoch the DataLoader's worker start-up (forkserver) dominates, so a
# small corpus is read in longer epochs; resampled shards make an epoch a window, not an exact pass.
MIN_EPOCH_BATCHES = 64


@dataclass(frozen=True)
class TrainSources:
    """The --shards items opened once: each folder with the split it trains on, and the sample count."""

    folders: tuple[ShardFolder, ...]
    splits: tuple[str, ...]  # the split each folder trains on ("" for URL sources: they have none)

    @classmethod
    def open(cls, shards: list[str], split: str | None) -> TrainSources:
        """Open every item; split None trains each folder on `train`, or on `all` when it has no train
        split (a user's own folder sharded without held-out splits). One ValueError naming the item."""
        if not shards:
            raise ValueError("no --shards given; pass at least one folder written by `muser shard`")
        folders, splits = [], []
        for item in shards:
            try:
                folder = ShardFolder.open(item)
                splits.append(folder.choose_split(split) if folder.has_manifest else "")
            except ValueError as err:
                raise ValueError(f"--shards {err}") from None
            folders.append(folder)
        return cls(tuple(folders), tuple(splits))

    @property
    def samples(self) -> int | None:
        """Training samples over all folders; None when a URL source (no manifest) is among them."""
        if any(not f.has_manifest for f in self.folders):
            return None
        return sum(f.samples(s) or 0 for f, s in zip(self.folders, self.splits, strict=True))

    @property
    def sample_rate(self) -> int:
        rates = {f.sample_rate for f in self.folders if f.has_manifest}
        if len(rates) > 1:
            raise ValueError(f"--shards folders have different sample rates {sorted(rates)}; reshard to one")
        return rates.pop() if rates else self.folders[0].sample_rate

    def notes(self) -> list[str]:
        """One line per folder that trains on its `all` split (it was sharded without held-out splits)."""
        return [
            f"{f.name} has no 'train' split: training on its 'all' split ({f.samples('all')} tracks; "
            "shard with --valid-fraction/--test-fraction to hold some out)"
            for f, s in zip(self.folders, self.splits, strict=True)
            if s == "all"
        ]

    def epochs_message(self) -> str:
        """The message for --epochs over sources without a manifest (their sample count is unknown)."""
        streams = [f.source for f in self.folders if not f.has_manifest]
        one = len(streams) == 1
        return (
            f"--epochs needs the sample counts a shard folder's manifest records, but {', '.join(streams)} "
            f"{'is a single .tar / URL source' if one else 'are single .tar / URL sources'} without a "
            "manifest; use --steps, or pass the shard folder that holds the .tar files"
        )

    def read_args(self) -> tuple[list[ShardFolder], str | None]:
        """(sources, split) for make_loader: one split when every folder trains on the same one, else
        None, which the reader resolves per folder exactly as `open` did."""
        return list(self.folders), (self.splits[0] if len(set(self.splits)) == 1 and self.splits[0] else None)


def tokenizer_texts(sources: TrainSources, limit: int = 5000, seed: int = 0) -> tuple[list[str], int]:
    """Sentences for training the built-in WordPiece tokenizer, rendered from the shards' metadata, and
    the number of metadata members skipped (unreadable tar, invalid JSON, fields of the wrong type).

    Each track gives its eval caption and two train-mode captions (random templates, no dropout), so
    every template word and every metadata value becomes part of the vocabulary.
    """
    rng = random.Random(seed)
    local = [(f, s) for f, s in zip(sources.folders, sources.splits, strict=True) if f.has_manifest]
    per_folder = max(1, limit // max(1, len(local)))
    texts: list[str] = []
    skipped = 0
    for folder, split in local:
        metas, bad = _metadata(folder.urls(split), per_folder)
        skipped += bad
        for meta in metas:
            texts.append(text_mod.render(meta))
            texts += [text_mod.render(meta, rng=rng) for _ in range(2)]
    return texts, skipped


def _metadata(paths: list[str], limit: int) -> tuple[list[dict[str, Any]], int]:
    # Random access to the small .json members only: tarfile seeks over the audio without reading it.
    metas, skipped = [], 0
    for path in paths:
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if len(metas) >= limit:
                        return metas, skipped
                    if not (member.isfile() and member.name.endswith(".json")):
                        continue
                    try:
                        text_mod.check_meta_size(member.size)  # from the header, before reading it
                        metas.append(text_mod.load_meta(tar.extractfile(member).read()))
                    except ValueError:
                        skipped += 1  # the reader skips and counts the same members in training
        except (OSError, tarfile.TarError):
            skipped += 1  # a truncated or unreadable shard: keep what came before it
    return metas, skipped


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

    @property
    def skipped(self) -> int:
        """Members the reader skipped so far (unreadable audio, bad metadata, broken tars)."""
        return self.loader.errors

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
