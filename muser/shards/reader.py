"""Streaming reader: shard folders or URLs -> batches of audio crops, captions, token ids and labels.

`make_loader` is the one entry point. It resolves the source (manifests), builds the stage pipeline
(`build_pipeline`, stages in muser.shards.stages) and wraps it in a torch DataLoader whose workers use the
forkserver start method (forked workers deadlock on torchaudio/OpenMP thread pools).
"""

from __future__ import annotations

import ast
import functools
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from muser.config import SAMPLE_RATE, DataConfig, TrainConfig
from muser.lifeline import Lifeline
from muser.shards import text as text_mod
from muser.shards.manifest import ShardFolder
from muser.shards.stages import (
    Batch,
    Caption,
    ChunkAudio,
    Context,
    CropAudio,
    ExactShards,
    ExpandTars,
    ResampledShards,
    ShardReadError,
    Shuffle,
    Take,
)

log = logging.getLogger(__name__)
MODES = ("train", "eval")
ON_ERROR = ("skip", "raise")


@dataclass
class Resolved:
    """What the reader needs to know about a source: shard groups, their weights, rate and labels."""

    groups: list[list[str]]
    weights: list[float]
    sample_rate: int
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: int | None = None  # samples in the split over all groups, when every group has a manifest
    splits: list[str] = field(default_factory=list)  # the split read from each folder ("" for URLs)


def _merge_labels(into: dict[str, dict[str, Any]], labels: dict[str, Any], where: str) -> None:
    for task, spec in labels.items():
        kind = spec.get("type", "single")
        if task in into and into[task]["type"] != kind:
            raise ValueError(
                f"{where}: label task {task!r} is {kind} here but {into[task]['type']} elsewhere."
            )
        prev = into.setdefault(task, {"type": kind, "classes": []})
        prev["classes"] = sorted(set(prev["classes"]) | set(spec.get("classes", [])))


Source = str | os.PathLike | ShardFolder


def resolve_source(
    source: Source | Sequence[Source],
    split: str | None,
    weights: Sequence[float] | None = None,
    sample_rate: int | None = None,
) -> Resolved:
    """A folder, a list of folders (mixed) or shard URLs/brace patterns -> Resolved.

    split: the split to read from every folder; None reads each folder's `train` split, or `all` when it
    has no train split (a folder sharded without held-out splits), so differently split folders mix.
    Folder groups are weighted by their sample counts unless `weights` (one per source item) is given, so a
    mixture without weights is uniform over tracks. URL groups need `sample_rate` (default SAMPLE_RATE).
    """
    items = [source] if isinstance(source, (str, os.PathLike, ShardFolder)) else list(source)
    if not items:
        raise ValueError("source is empty; pass a shard folder, a list of folders, or shard URLs.")
    if weights is not None and len(weights) != len(items):
        raise ValueError(f"weights has {len(weights)} entries for {len(items)} sources; give one per source.")
    groups, counts, rates, labels, splits = [], [], set(), {}, []
    all_manifests = True
    for item in items:
        folder = item if isinstance(item, ShardFolder) else ShardFolder.open(item, sample_rate)
        if not folder.has_manifest:
            groups.append(folder.urls())
            counts.append(float(len(groups[-1])))
            splits.append("")
            all_manifests = False
            continue
        chosen = split if split is not None else folder.choose_split(None)
        groups.append(folder.urls(chosen))
        counts.append(float(folder.samples(chosen) or len(groups[-1])))
        rates.add(folder.sample_rate)
        splits.append(chosen)
        _merge_labels(labels, folder.labels, folder.name)
        if not folder.complete:
            log.warning("%s is incomplete (sharding was interrupted); reading the shards so far", folder.name)
    if sample_rate is not None:
        rates.add(int(sample_rate))
    if len(rates) > 1:
        raise ValueError(f"sources have different sample rates {sorted(rates)}; reshard them to one rate.")
    return Resolved(
        groups=groups,
        weights=list(weights) if weights is not None else counts,
        sample_rate=rates.pop() if rates else SAMPLE_RATE,
        labels=labels,
        samples=int(sum(counts)) if all_manifests else None,
        splits=splits,
    )


@dataclass(frozen=True)
class ReadOptions:
    """How a pipeline reads, batches and tokenises; make_loader builds it from its arguments."""

    mode: str  # train | eval
    batch_size: int  # per rank
    crop_seconds: float  # train: random crop length; eval: chunk length
    steps: int | None  # train: batches per rank per epoch (None = endless)
    tokenize: Callable[[list[str]], Any] | None  # muser.models.tokenizer.Tokenize, run in the workers
    templates: Sequence[text_mod.Template] | None  # caption templates (None = text.TEMPLATES)
    shuffle_buffer: int
    field_dropout: float
    on_error: str  # skip | raise


def build_pipeline(resolved: Resolved, opts: ReadOptions) -> list:
    """The reader as a list of stages; each comment says what the iterator holds after that stage."""
    n = max(1, round(opts.crop_seconds * resolved.sample_rate))
    train = opts.mode == "train"
    if train:
        stages: list = [
            # an endless, seeded stream of shard URLs per (rank, worker): nobody runs dry
            ResampledShards(resolved.groups, resolved.weights),
            # samples {"__key__", ext: bytes}; broken shards logged and counted
            ExpandTars(train=True),
            # {"key", "meta", "audio" (<= n,) int16}: one random crop, decoded by seeking
            CropAudio(n, resolved.sample_rate, shards=sum(len(g) for g in resolved.groups)),
            # the same, in shuffled order (crops are small, so the buffer holds crops, not whole tracks)
            Shuffle(opts.shuffle_buffer),
        ]
    else:
        stages = [
            # this reader's shards (or all shards, split per sample when shards < ranks x workers)
            ExactShards(list(chain.from_iterable(resolved.groups))),
            # samples {"__key__", ext: bytes} of this reader only
            ExpandTars(train=False),
            # consecutive chunks (<= n,) int16 covering every track, key repeated per chunk
            ChunkAudio(n, resolved.sample_rate),
        ]
    stages += [
        # + "text": a caption rendered from the metadata
        Caption(train=train, dropout=opts.field_dropout if train else 0.0, templates=opts.templates),
        # batch dicts of the reader contract (+ "skipped" for the error count), tokenised in the worker;
        # audio padded to the batch's longest sample, at least a second (or the crop when shorter)
        Batch(
            opts.batch_size,
            resolved.labels,
            opts.tokenize,
            partial=not train,
            floor=min(n, resolved.sample_rate),
        ),
    ]
    if train:
        # exactly `steps` batches per rank per epoch, shared among its workers
        stages.append(Take(opts.steps))
    return stages


class ShardStream(IterableDataset):
    """The pipeline as an IterableDataset; each DataLoader worker runs it for its own (rank, worker)."""

    def __init__(self, stages: list, rank: int, world_size: int, seed: int, on_error: str = "skip"):
        super().__init__()
        self.stages, self.rank, self.world_size, self.seed, self.epoch = stages, rank, world_size, seed, 0
        self.on_error = on_error

    def iter_split(self, worker: int, num_workers: int) -> Iterator[dict]:
        """Run the pipeline as worker `worker` of `num_workers` (also used to simulate workers in-process)."""
        ctx = Context(
            self.rank, self.world_size, worker, num_workers, self.epoch, self.seed, on_error=self.on_error
        )
        it: Any = None
        for stage in self.stages:
            it = stage(it, ctx)
        return _fatal_as_batch(it)

    def __iter__(self) -> Iterator[dict]:
        info = get_worker_info()
        return self.iter_split(info.id, info.num_workers) if info is not None else self.iter_split(0, 1)


def _fatal_as_batch(batches: Iterator[dict]) -> Iterator[dict]:
    # A worker's exception reaches the main process wrapped in a traceback; our own one-sentence errors
    # travel as a batch instead, so the main process raises them as they were written.
    try:
        yield from batches
    except ShardReadError as exc:
        yield {"fatal": str(exc)}


def _workers_can_start(num_workers: int) -> int:
    """num_workers, or 0 with a warning where forkserver workers cannot start: they re-import the main
    script, which is impossible for one read from standard input, and re-runs a script without an
    `if __name__ == "__main__":` guard (building loaders inside the workers). Either would end in
    "DataLoader worker exited unexpectedly"; reading in the main process works, only slower."""
    if num_workers == 0:
        return 0
    main_file = getattr(sys.modules.get("__main__"), "__file__", None)
    if main_file is None:  # an interactive session or a notebook: workers start without re-importing
        return num_workers
    why = None
    if not os.path.isfile(main_file):
        why = f"this program runs from {main_file}, which loader worker processes cannot re-import"
    elif main_file.endswith(".py") and not _has_main_guard(main_file):
        why = f"{main_file} has no `if __name__ == '__main__':` guard, so loader workers would re-run it"
    if why is None:
        return num_workers
    warnings.warn(
        f"{why}; reading in the main process instead (save the script to a file with the guard to use "
        "worker processes)",
        RuntimeWarning,
        stacklevel=3,
    )
    return 0


@functools.cache
def _has_main_guard(path: str) -> bool:
    try:
        tree = ast.parse(open(path, encoding="utf-8").read())
    except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
        return True  # cannot tell: trust the script
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and isinstance(node.left, ast.Name) and node.left.id == "__name__":
            if any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.comparators):
                return True
    return False


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
            worker_init_fn=Lifeline(),  # workers exit when this process dies, even by SIGKILL
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
            if "fatal" in batch:
                raise ShardReadError(batch["fatal"])
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
    source: Source | Sequence[Source],
    split: str | None = None,
    mode: str = "train",
    batch_size: int = DataConfig.batch_size,
    crop_seconds: float = DataConfig.crop_seconds,
    num_workers: int = DataConfig.num_workers,
    rank: int | None = None,
    world_size: int | None = None,
    steps: int | None = None,
    seed: int = TrainConfig.seed,
    tokenize: Callable[[list[str]], Any] | None = None,
    templates: str | os.PathLike | Sequence[text_mod.Template | str] | None = None,
    shuffle_buffer: int = DataConfig.shuffle_buffer,
    field_dropout: float = DataConfig.field_dropout,
    weights: Sequence[float] | None = None,
    epoch: int = 0,
    sample_rate: int | None = None,
    on_error: str = "skip",
) -> Loader:
    """Batches of {audio (B, T) float32, length (B,) int64, text, caption_id (B,) int64, key, meta,
    [input_ids, attention_mask (B, L)], [labels {task: (B,) int64 | (B, C) float32}]} from shards.

    split: the split of every folder to read; None reads `train`, or `all` in a folder without held-out
    splits. batch_size is per rank. train: resampled shards, shuffled random crops, `steps` batches per
    rank per epoch (default: one pass worth, split samples // (batch_size * world_size)). eval: one exact
    pass in chunks of crop_seconds. tokenize: any picklable sentences ->
    {input_ids, attention_mask} callable, run in the workers (the model's `tokenize`; the data floor
    knows no model), or None for no token ids. templates: a templates file or a list of
    templates (default text.TEMPLATES). sample_rate: only for URL sources without a manifest (default
    SAMPLE_RATE). on_error: "skip" logs and counts an unreadable member (Loader.errors) and goes on; "raise"
    stops at the first one with a ShardReadError naming it (for debugging a shard).
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is not one of {', '.join(MODES)}.")
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r} is not one of {', '.join(ON_ERROR)}.")
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
    opts = ReadOptions(
        mode, batch_size, crop_seconds, steps, tokenize, templates, shuffle_buffer, field_dropout, on_error
    )
    dataset = ShardStream(build_pipeline(resolved, opts), rank, world_size, seed, on_error)
    loader = Loader(dataset, _workers_can_start(num_workers), mode, steps if mode == "train" else None)
    loader.set_epoch(epoch)
    return loader


def steps_per_epoch(samples: int, batch_size: int, world_size: int = 1) -> int:
    """Batches per rank that make one pass over `samples` training samples (at least one)."""
    return max(1, samples // (batch_size * world_size))
