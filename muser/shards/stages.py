"""The small, picklable stages of the shard reading pipeline and the per-worker context they share.

A stage is `stage(src, ctx) -> iterator`: the first stage ignores `src` and yields shard URLs, every later
one consumes the previous iterator. Stages keep no state between iterations, so one pipeline object can be
pickled into forkserver workers and iterated again each epoch.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import webdataset as wds

from muser.shards import decode, text

log = logging.getLogger("muser.shards.reader")


@dataclass
class Context:
    """Who is reading (rank and worker), for which epoch, plus the skip counter batches carry home."""

    rank: int
    world_size: int
    worker: int
    num_workers: int
    epoch: int
    seed: int
    skipped: int = 0
    by_sample: bool = False  # eval with fewer shards than readers: split by sample index instead of shard
    on_error: str = "skip"  # skip: log and count a bad member, go on; raise: stop at the first one
    logged: int = 0  # skips this reader has logged (the rest are only counted)
    total_skipped: int = 0  # all skips of this reader (`skipped` is reset at every batch)

    @property
    def unit(self) -> int:
        return self.rank * self.num_workers + self.worker

    @property
    def units(self) -> int:
        return self.world_size * self.num_workers

    def rng(self, purpose: str) -> random.Random:
        # A hash, not seed + rank + worker arithmetic, so (seed=1, rank=0) and (seed=0, rank=1) never collide.
        key = f"{self.seed}/{self.epoch}/{self.rank}/{self.worker}/{purpose}".encode()
        return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))

    def skip(self, key: str, reason: str, error: BaseException | None = None) -> None:
        """A member that cannot be used: counted and logged, or (on_error="raise") the first one raises.

        Logging is rate-limited (the first few, then every 1000th with the running count): a folder of
        broken audio must not fill the disk with warnings.
        """
        if self.on_error == "raise":
            raise ShardReadError(f"{key}: {reason}") from error
        self.skipped += 1
        self.total_skipped += 1
        if self.logged < LOGGED_SKIPS or self.total_skipped % 1000 == 0:
            self.logged += 1
            late = self.logged > LOGGED_SKIPS
            more = f" ({self.total_skipped} skipped by this reader so far)" if late else ""
            log.warning("skipping %s: %s%s", key, reason, more)


# The first skips of each reader are logged one by one, later ones only every 1000th.
LOGGED_SKIPS = 5


class ShardReadError(RuntimeError):
    """Shards the reader cannot use: the first bad member under on_error="raise", or a source that gives
    no sample at all. Raised in the main process with the worker's one-sentence message."""


# --- shard lists --------------------------------------------------------------------------------------


@dataclass
class ResampledShards:
    """Train: an endless stream of shards drawn with replacement (source by weight, then shard uniformly).

    Every worker of every rank draws its own stream, so no reader ever runs dry, however few shards exist.
    """

    groups: Sequence[Sequence[str]]
    weights: Sequence[float]

    def __call__(self, src: Any, ctx: Context) -> Iterator[str]:
        rng = ctx.rng("shards")
        while True:
            group = rng.choices(self.groups, weights=self.weights)[0]
            yield rng.choice(group)


@dataclass
class ExactShards:
    """Eval: each shard to exactly one reader (rank-major, then worker), or every shard to every reader
    with `ctx.by_sample` set when there are fewer shards than readers (ExpandTars then splits samples)."""

    shards: Sequence[str]

    def __call__(self, src: Any, ctx: Context) -> Iterator[str]:
        ctx.by_sample = len(self.shards) < ctx.units
        yield from self.shards if ctx.by_sample else self.shards[ctx.unit :: ctx.units]


# --- tar members -> samples ---------------------------------------------------------------------------


def _split_name(name: str) -> tuple[str, str]:
    # WebDataset convention: the key is everything before the first dot of the file name.
    head, _, base = name.rpartition("/")
    key, _, ext = base.partition(".")
    return (f"{head}/{key}" if head else key), ext.lower()


# A member larger than this is not audio a reader should hold in memory (an hour of 16 kHz PCM is 115 MB).
MAX_MEMBER_BYTES = 1 << 30


@dataclass
class ExpandTars:
    """Shard URLs -> samples {"__key__", "__url__", ext: bytes}; a broken shard is logged, counted, left.

    A member larger than max_member_bytes is never read into memory: its sample is skipped and counted.
    """

    train: bool
    max_empty: int = 200  # train: consecutive shards without one readable sample before we give up
    max_member_bytes: int = MAX_MEMBER_BYTES

    def __call__(self, urls: Iterator[str], ctx: Context) -> Iterator[dict]:
        index, empty_run = 0, 0
        for url in urls:
            got = 0
            for sample, error in read_tar(url, self.max_member_bytes):
                if error is not None:
                    # In by-sample mode every reader sees the same broken shard: only the owner of the
                    # next index counts it, so the total is the same as with one reader.
                    if not ctx.by_sample or index % ctx.units == ctx.unit:
                        ctx.skip(url, error)
                    continue
                mine = not ctx.by_sample or index % ctx.units == ctx.unit
                index += 1
                got += 1
                if mine:
                    yield sample
            empty_run = 0 if got else empty_run + 1
            if self.train and empty_run >= self.max_empty:
                raise ShardReadError(
                    f"{empty_run} shards in a row gave no sample (last {url}); check them with "
                    "`muser inspect --verify`"
                )


def read_tar(url: str, max_member_bytes: int = MAX_MEMBER_BYTES) -> Iterator[tuple[dict | None, str | None]]:
    """(sample, None) for each sample of one shard, (None, reason) for what could not be read: a broken
    tar (what came before the break is kept) or a sample with a member over max_member_bytes, or a .json
    member over the metadata limit (neither is read)."""
    current: dict | None = None
    too_big: str | None = None
    try:
        stream = wds.gopen(url, "rb")
    except Exception as exc:
        yield None, f"cannot open shard ({exc})"
        return
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                key, ext = _split_name(member.name)
                if current is not None and current["__key__"] != key:
                    yield (None, too_big) if too_big else (current, None)
                    current, too_big = None, None
                if current is None:
                    current = {"__key__": key, "__url__": url}
                if member.size > max_member_bytes:
                    too_big = f"{member.name} is {member.size} bytes, over the reader's {max_member_bytes}"
                    continue  # the stream skips the member's bytes without holding them
                if ext == "json":
                    try:  # metadata has a far smaller limit than audio: refuse it from the header, unread
                        text.check_meta_size(member.size)
                    except ValueError as exc:
                        too_big = f"{member.name}: {exc}"
                        continue
                current[ext] = tar.extractfile(member).read()
    except Exception as exc:  # truncated or garbage tar: keep what came before, report the rest
        yield None, f"broken tar ({type(exc).__name__}: {exc})"
        current = None
    finally:
        stream.close()
    if current is not None:
        yield (None, too_big) if too_big else (current, None)


# --- samples -> audio -----------------------------------------------------------------------------------


def _open(sample: dict, rate: int) -> tuple[dict, decode.Track]:
    if "json" not in sample:
        raise decode.DecodeError("no .json member")
    meta = text.load_meta(sample["json"])
    codec = next((ext for ext in decode.AUDIO_EXTS if ext in sample), None)
    if codec is None:
        raise decode.DecodeError("no .flac or .pcm member")
    return meta, decode.Track(sample[codec], codec, int(meta.get("sample_rate") or rate), rate)


@dataclass
class CropAudio:
    """Train: one random crop of at most n samples per track, decoded by seeking (int16 until batching).

    A reader that has decoded nothing at all after `give_up` failures spread over its shards stops the run
    with one sentence naming the folder and the first reasons, instead of skipping forever.
    """

    n: int
    sample_rate: int
    shards: int = 1  # shard URLs the run draws from (a stop needs failures from min(shards, 8) of them)
    give_up: int = 200

    def __call__(self, samples: Iterator[dict], ctx: Context) -> Iterator[dict]:
        rng = ctx.rng("crop")
        failures: dict[str, str] = {}  # shard -> its first reason, while nothing has decoded yet
        failed, decoded = 0, False
        for sample in samples:
            key = sample["__key__"]
            try:
                meta, track = _open(sample, self.sample_rate)
                audio = decode.random_crop(track, self.n, rng)
                track.close()
            except Exception as exc:
                ctx.skip(key, str(exc), exc)
                if not decoded:
                    failed += 1
                    failures.setdefault(sample.get("__url__", "?"), f"{key}: {exc}")
                    if failed >= self.give_up and len(failures) >= min(self.shards, 8):
                        raise ShardReadError(_nothing_decodable(failures, failed)) from None
                continue
            decoded = True
            yield {"key": key, "meta": meta, "audio": audio}


def _nothing_decodable(failures: dict[str, str], failed: int) -> str:
    folders = sorted({os.path.dirname(url) or url for url in failures})
    reasons = "; ".join(list(dict.fromkeys(failures.values()))[:3])
    return (
        f"no training sample of {', '.join(folders)} could be decoded ({failed} tried, none readable; "
        f"first reasons: {reasons}); check the folder with `muser inspect --verify` or re-shard it"
    )


@dataclass
class ChunkAudio:
    """Eval: every track cut into consecutive n-sample chunks (the last one shorter), the key repeated."""

    n: int
    sample_rate: int

    def __call__(self, samples: Iterator[dict], ctx: Context) -> Iterator[dict]:
        for sample in samples:
            key = sample["__key__"]
            try:
                meta, track = _open(sample, self.sample_rate)
                pieces = decode.chunks(track, self.n)
                track.close()
            except Exception as exc:
                ctx.skip(key, str(exc), exc)
                continue
            for audio in pieces:
                yield {"key": key, "meta": meta, "audio": audio}


@dataclass
class Shuffle:
    """Shuffle buffer: starts yielding after `initial` items, then grows to `size` items or `max_bytes`
    of audio, whichever comes first (webdataset's scheme, bounded in memory for very long crops)."""

    size: int
    initial: int = 100
    max_bytes: int = 512 * 1024**2

    def __call__(self, items: Iterator[dict], ctx: Context) -> Iterator[dict]:
        if self.size <= 1:
            yield from items
            return
        rng, buf, initial, held = ctx.rng("shuffle"), [], min(self.initial, self.size), 0
        for item in items:
            buf.append(item)
            held += item["audio"].nbytes
            if len(buf) < self.size and held < self.max_bytes:
                nxt = next(items, None)
                if nxt is not None:
                    buf.append(nxt)
                    held += nxt["audio"].nbytes
            if len(buf) >= initial or held >= self.max_bytes:
                i = rng.randrange(len(buf))
                buf[i], buf[-1] = buf[-1], buf[i]
                out = buf.pop()
                held -= out["audio"].nbytes
                yield out
        rng.shuffle(buf)
        yield from buf


@dataclass
class Caption:
    """Text from metadata: random template + field dropout in train, the fixed template in eval."""

    train: bool
    dropout: float
    templates: Sequence[text.Template] | None

    def __call__(self, items: Iterator[dict], ctx: Context) -> Iterator[dict]:
        rng = ctx.rng("text")
        for item in items:
            # One generator per sample seeded from the stream: captions do not depend on other samples' text.
            sample_rng = random.Random(rng.getrandbits(64)) if self.train else None
            item["text"] = text.render(
                item["meta"], rng=sample_rng, dropout=self.dropout, templates=self.templates
            )
            yield item


# --- batching -------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Collate items into the batch dict of the reader contract, tokenised here so workers do the work.

    labels: task -> {"type": "single"|"multi", "classes": [...]}. tokenize: the model's picklable
    sentences -> {input_ids, attention_mask} function (muser.models.tokenizer.Tokenize), or None.
    `skipped` carries this worker's skip count since its previous batch back to the main process. With
    `partial`, the last short batch and a final count-only dict (no "audio") are emitted too.
    """

    batch_size: int
    labels: Mapping[str, Mapping[str, Any]]
    tokenize: Callable[[list[str]], Mapping[str, torch.Tensor]] | None
    partial: bool
    floor: int = 1  # the shortest padded length (a batch of very short clips still feeds the towers)

    def __call__(self, items: Iterator[dict], ctx: Context) -> Iterator[dict]:
        index = {task: {c: i for i, c in enumerate(v["classes"])} for task, v in self.labels.items()}
        buf: list[dict] = []
        for item in items:
            buf.append(item)
            if len(buf) == self.batch_size:
                yield self.collate(buf, index, ctx)
                buf = []
        if self.partial and buf:
            yield self.collate(buf, index, ctx)
        if self.partial and ctx.skipped:
            yield {"skipped": ctx.skipped}
            ctx.skipped = 0

    def collate(self, items: list[dict], index: Mapping[str, Mapping[str, int]], ctx: Context) -> dict:
        texts = [it["text"] for it in items]
        # Padded to the longest real sample of this batch (at least `floor`), never to the crop length.
        audio, length = decode.pad_stack([it["audio"] for it in items], self.floor)
        batch = {
            "audio": torch.from_numpy(decode.to_float(audio)),
            "length": torch.from_numpy(length),
            "text": texts,
            "caption_id": torch.tensor([text.caption_id(t) for t in texts], dtype=torch.int64),
            "key": [it["key"] for it in items],
            "meta": [it["meta"] for it in items],
        }
        if self.labels:
            batch["labels"] = {
                task: _labels([it["meta"].get("labels", {}).get(task) for it in items], spec, index[task])
                for task, spec in self.labels.items()
            }
        if self.tokenize is not None:
            batch.update(self.tokenize(texts))
        batch["skipped"], ctx.skipped = ctx.skipped, 0
        return batch


def _labels(values: list[Any], spec: Mapping[str, Any], index: Mapping[str, int]) -> torch.Tensor:
    """single: (B,) int64 class index, -1 when missing or unknown; multi: (B, C) float32 multi-hot."""
    if spec["type"] == "multi":
        out = torch.zeros(len(values), len(index), dtype=torch.float32)
        for row, value in enumerate(values):
            for label in value if isinstance(value, list) else [value] if value else []:
                if label in index:
                    out[row, index[label]] = 1.0
        return out
    firsts = [v[0] if isinstance(v, list) and v else v for v in values]
    return torch.tensor([index.get(v, -1) if isinstance(v, str) else -1 for v in firsts], dtype=torch.int64)


@dataclass
class Take:
    """Train: this worker's share of `steps` batches per rank (None = endless), so every rank ends its
    epoch after exactly `steps` batches: the DataLoader takes batches from its workers in turn."""

    steps: int | None

    def __call__(self, batches: Iterator[dict], ctx: Context) -> Iterator[dict]:
        if self.steps is None:
            yield from batches
            return
        quota = self.steps // ctx.num_workers + (ctx.worker < self.steps % ctx.num_workers)
        for _, batch in zip(range(quota), batches, strict=False):
            yield batch
