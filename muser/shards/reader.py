"""Streaming reader: shard folders or URLs -> batches of audio crops, captions, token ids and labels.

`make_loader` is the one entry point. It resolves the source (manifests), builds the stage pipeline
(`build_pipeline`, stages in muser.shards.stages) and wraps it in a torch DataLoader whose workers use the
forkserver start method (forked workers deadlock on torchaudio/OpenMP thread pools).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from pathlib import Path
from typing import Any

import braceexpand
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from muser.shards import text as text_mod
from muser.shards.stages import (
    Batch,
    Caption,
    ChunkAudio,
    Context,
    CropAudio,
    ExactShards,
    ExpandTars,
    ResampledShards,
    Shuffle,
    Take,
)

log = logging.getLogger(__name__)
MODES = ("train", "eval")


@dataclass
class Resolved:
    """What the reader needs to know about a source: shard groups, their weights, rate and labels."""

    groups: list[list[str]]
    weights: list[float]
    sample_rate: int
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: int | None = None  # samples in the split over all groups, when every group has a manifest


def _read_manifest(folder: Path, split: str) -> dict:
    path = folder / "manifest.json"
    if not path.is_file():
        raise ValueError(
            f"{folder} has no manifest.json; pass a folder written by `muser shard`, or shard URLs."
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(
            f"{path} is not valid JSON ({exc}); rewrite the shards with `muser shard`."
        ) from None
    splits = manifest.get("splits", {})
    if split not in splits or not splits[split].get("shards"):
        have = ", ".join(s for s, v in splits.items() if v.get("shards")) or "none"
        raise ValueError(f"{folder} has no shards for split {split!r}; its splits are: {have}.")
    if not manifest.get("complete", True):
        log.warning("%s is incomplete (sharding was interrupted); reading the shards written so far", folder)
    return manifest


def _merge_labels(into: dict[str, dict[str, Any]], labels: dict[str, Any], where: Path) -> None:
    for task, spec in labels.items():
        kind = spec.get("type", "single")
        if task in into and into[task]["type"] != kind:
            raise ValueError(
                f"{where}: label task {task!r} is {kind} here but {into[task]['type']} elsewhere."
            )
        prev = into.setdefault(task, {"type": kind, "classes": []})
        prev["classes"] = sorted(set(prev["classes"]) | set(spec.get("classes", [])))


def resolve_source(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    split: str,
    weights: Sequence[float] | None = None,
    sample_rate: int | None = None,
) -> Resolved:
    """A folder, a list of folders (mixed) or shard URLs/brace patterns -> Resolved.

    Folder groups are weighted by their sample counts unless `weights` (one per source item) is given, so a
    mixture without weights is uniform over tracks. URL groups need `sample_rate` (default 16000).
    """
    items = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    if not items:
        raise ValueError("source is empty; pass a shard folder, a list of folders, or shard URLs.")
    if weights is not None and len(weights) != len(items):
        raise ValueError(f"weights has {len(weights)} entries for {len(items)} sources; give one per source.")
    groups, counts, rates, labels = [], [], set(), {}
    all_manifests = True
    for item in items:
        path = Path(item)
        if path.is_dir() or path.name == "manifest.json":
            folder = path if path.is_dir() else path.parent
            manifest = _read_manifest(folder, split)
            groups.append([str(folder / s["name"]) for s in manifest["splits"][split]["shards"]])
            counts.append(float(manifest["splits"][split].get("samples", len(groups[-1]))))
            rates.add(int(manifest.get("sample_rate", 16000)))
            _merge_labels(labels, manifest.get("labels", {}), folder)
        else:
            urls = list(braceexpand.braceexpand(str(item)))
            for url in urls:
                if ":" not in url.split("/")[0] and not Path(url).is_file():
                    raise ValueError(
                        f"shard {url} does not exist; pass a shard folder or existing .tar paths."
                    )
            groups.append(urls)
            counts.append(float(len(urls)))
            all_manifests = False
    if sample_rate is not None:
        rates.add(int(sample_rate))
    if len(rates) > 1:
        raise ValueError(f"sources have different sample rates {sorted(rates)}; reshard them to one rate.")
    return Resolved(
        groups=groups,
        weights=list(weights) if weights is not None else counts,
        sample_rate=rates.pop() if rates else 16000,
        labels=labels,
        samples=int(sum(counts)) if all_manifests else None,
    )


def build_pipeline(
    resolved: Resolved,
    mode: str,
    batch_size: int,
    crop_seconds: float,
    steps: int | None,
    tokenizer: Any,
    templates: Sequence[text_mod.Template] | None,
    max_length: int,
    shuffle_buffer: int,
    field_dropout: float,
) -> list:
    """The reader as a list of stages; each comment says what the iterator holds after that stage."""
    n = max(1, round(crop_seconds * resolved.sample_rate))
    train = mode == "train"
    if train:
        stages: list = [
            # an endless, seeded stream of shard URLs per (rank, worker): nobody runs dry
            ResampledShards(resolved.groups, resolved.weights),
            # samples {"__key__", ext: bytes}; broken shards logged and counted
            ExpandTars(train=True),
            # {"key", "meta", "audio" (n,) int16, "length"}: one random crop, decoded by seeking
            CropAudio(n, resolved.sample_rate),
            # the same, in shuffled order (crops are small, so the buffer holds crops, not whole tracks)
            Shuffle(shuffle_buffer),
        ]
    else:
        stages = [
            # this reader's shards (or all shards, split per sample when shards < ranks x workers)
            ExactShards(list(chain.from_iterable(resolved.groups))),
            # samples {"__key__", ext: bytes} of this reader only
            ExpandTars(train=False),
            # consecutive chunks covering every track, key repeated per chunk
            ChunkAudio(n, resolved.sample_rate),
        ]
    stages += [
        # + "text": a caption rendered from the metadata
        Caption(train=train, dropout=field_dropout if train else 0.0, templates=templates),
        # batch dicts of the reader contract (+ "skipped" for the error count), tokenised in the worker
        Batch(batch_size, resolved.labels, tokenizer, max_length, partial=not train),
    ]
    if train:
        # exactly `steps` batches per rank per epoch, shared among its workers
        stages.append(Take(steps))
    return stages


class ShardStream(IterableDataset):
    """The pipeline as an IterableDataset; each DataLoader worker runs it for its own (rank, worker)."""

    def __init__(self, stages: list, rank: int, world_size: int, seed: int):
        super().__init__()
        self.stages, self.rank, self.world_size, self.seed, self.epoch = stages, rank, world_size, seed, 0

    def iter_split(self, worker: int, num_workers: int) -> Iterator[dict]:
        """Run the pipeline as worker `worker` of `num_workers` (also used to simulate workers in-process)."""
        ctx = Context(self.rank, self.world_size, worker, num_workers, self.epoch, self.seed)
        it: Any = None
        for stage in self.stages:
            it = stage(it, ctx)
        return it

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        return self.iter_split(info.id, info.num_workers) if info is not None else self.iter_split(0, 1)


class Loader:
    """Iterable over batches. `errors` counts skipped members over all passes and workers; `len()` is the
    number of batches per rank per epoch in train mode. Each pass advances the epoch (fresh shard draws,
    crops and captions); `set_epoch(e)` pins the next pass to epoch e."""

    def __init__(self, dataset: ShardStream, num_workers: int, mode: str, steps: int | None):
        self.dataset, self.mode, self.steps, self.num_workers = dataset, mode, steps, num_workers
        self.errors = 0
        self._next_epoch = 0
        self._loader = DataLoader(
            dataset,
            batch_size=None,  # batching happens in the pipeline
            num_workers=num_workers,
            multiprocessing_context="forkserver" if num_workers > 0 else None,
            persistent_workers=False,  # workers re-pickle the dataset each pass and so see the new epoch
            pin_memory=torch.cuda.is_available(),
        )

    @property
    def epoch(self) -> int:
        return self.dataset.epoch

    def set_epoch(self, epoch: int) -> None:
        self._next_epoch = epoch

    def __len__(self) -> int:
        if self.mode != "train" or self.steps is None:
            raise TypeError(
                "this loader's length is unknown (eval mode, or train without a manifest or steps=)"
            )
        return self.steps

    def _advance(self) -> None:
        self.dataset.epoch = self._next_epoch
        self._next_epoch += 1

    def _count(self, batches: Iterator[dict]) -> Iterator[dict]:
        # Workers cannot share a counter with us: each batch carries its worker's skips since the last one.
        for batch in batches:
            self.errors += batch.pop("skipped", 0)
            if "audio" in batch:
                yield batch

    def __iter__(self) -> Iterator[dict]:
        self._advance()
        return self._count(iter(self._loader))

    def iter_worker(self, worker: int, num_workers: int) -> Iterator[dict]:
        """One pass as worker `worker` of `num_workers`, in this process (tests and debugging). The epoch
        does not advance, so the simulated workers of one pass share it."""
        self.dataset.epoch = self._next_epoch
        return self._count(self.dataset.iter_split(worker, num_workers))


def _dist_default(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return (
            torch.distributed.get_rank() if rank is None else rank,
            torch.distributed.get_world_size() if world_size is None else world_size,
        )
    return rank or 0, world_size or 1


def make_loader(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    split: str = "train",
    mode: str = "train",
    batch_size: int = 32,
    crop_seconds: float = 3.0,
    num_workers: int = 2,
    rank: int | None = None,
    world_size: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    tokenizer: Any = None,
    templates: str | os.PathLike | Sequence[text_mod.Template | str] | None = None,
    max_length: int = 64,
    shuffle_buffer: int = 1000,
    field_dropout: float = 0.2,
    weights: Sequence[float] | None = None,
    epoch: int = 0,
    sample_rate: int | None = None,
) -> Loader:
    """Batches of {audio (B, T) float32, length (B,) int64, text, caption_id (B,) int64, key, meta,
    [input_ids, attention_mask (B, L)], [labels {task: (B,) int64 | (B, C) float32}]} from shards.

    batch_size is per rank. train: resampled shards, shuffled random crops, `steps` batches per rank per
    epoch (default: one pass worth, split samples // (batch_size * world_size)). eval: one exact pass in
    chunks of crop_seconds. templates: a templates file or a list of templates (default text.TEMPLATES).
    sample_rate: only for URL sources without a manifest (default 16000).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(MODES)}.")
    if batch_size < 1 or crop_seconds <= 0 or num_workers < 0:
        raise ValueError("batch_size must be >= 1, crop_seconds > 0 and num_workers >= 0.")
    if not 0.0 <= field_dropout < 1.0:
        raise ValueError(f"field_dropout={field_dropout} must be in [0, 1).")
    rank, world_size = _dist_default(rank, world_size)
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size}).")
    if isinstance(templates, (str, os.PathLike)):
        templates = text_mod.load_templates(templates)
    elif templates is not None:
        templates = [t if isinstance(t, text_mod.Template) else text_mod.parse_template(t) for t in templates]
    resolved = resolve_source(source, split, weights, sample_rate)
    if mode == "train" and steps is None and resolved.samples is not None:
        steps = steps_per_epoch(resolved.samples, batch_size, world_size)
    if steps is not None and steps < 1:
        raise ValueError(f"steps={steps} must be >= 1.")
    stages = build_pipeline(
        resolved,
        mode,
        batch_size,
        crop_seconds,
        steps,
        tokenizer,
        templates,
        max_length,
        shuffle_buffer,
        field_dropout,
    )
    dataset = ShardStream(stages, rank, world_size, seed)
    loader = Loader(dataset, num_workers, mode, steps if mode == "train" else None)
    loader.set_epoch(epoch)
    return loader


def steps_per_epoch(samples: int, batch_size: int, world_size: int = 1) -> int:
    """Batches per rank that make one pass over `samples` training samples (at least one)."""
    return max(1, samples // (batch_size * world_size))
