"""Frozen track features: deterministic chunks of every track, embedded and averaged, cached on disk.

A track is cut by the reader (eval mode) into consecutive chunks covering all of it; each chunk is
embedded and the track feature is the mean over its chunks weighted by valid samples (a short, zero-padded
last chunk counts for what it holds). Caches are .npz files (no pickle) keyed by a fingerprint of the
checkpoint and of the shard data, so a second run on the same model and data reads them back at once.
"""

from __future__ import annotations

import json
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from muser.atomic import atomic_write
from muser.shards.manifest import ShardFolder
from muser.shards.reader import Loader, make_loader

ChunkFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (audio (B, T), length (B,)) -> (B, D)


@dataclass
class TrackSet:
    keys: list[str]  # track keys, in first-seen order
    x: np.ndarray  # (N, D) float32 track features
    splits: list[str]  # shard split of each track (train/valid/test/all)
    meta: list[dict]  # metadata JSON of each track (labels, captions...)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        transient=True,
    )


def eval_loader(
    source: ShardFolder | str | Path | list[ShardFolder],
    split: str | None,
    chunk_seconds: float,
    batch_size: int = 32,
    num_workers: int = 0,
    sample_rate: int | None = None,
) -> Loader:
    """The eval-mode loader every feature reader uses, so features, validation, fine-tuning and the
    catalogue see the same chunks. One process reads everything (rank 0 of 1), whatever torch.distributed
    says. sample_rate: only for shard URLs without a manifest (the catalogue reads shards one by one)."""
    return make_loader(
        source,
        split=split,
        mode="eval",
        batch_size=batch_size,
        crop_seconds=chunk_seconds,
        num_workers=num_workers,
        rank=0,
        world_size=1,
        sample_rate=sample_rate,
    )


def eval_batches(
    folder: ShardFolder | str | Path,
    splits: list[str],
    chunk_seconds: float,
    batch_size: int = 32,
    num_workers: int = 0,
) -> Iterator[tuple[str, dict]]:
    """(split, batch) over every deterministic chunk of every track of the given splits, in reader order."""
    folder = folder if isinstance(folder, ShardFolder) else ShardFolder.open(folder)
    for split in splits:
        for batch in eval_loader(folder, split, chunk_seconds, batch_size, num_workers):
            yield split, batch


class ChunkPool:
    """Running length-weighted sums of chunk embeddings per track, in first-seen order; `take` hands
    finished tracks out (pool_chunks takes all at the end)."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.weights: dict[str, float] = {}
        self.split_of: dict[str, str] = {}
        self.meta_of: dict[str, dict] = {}

    def __len__(self) -> int:
        return len(self.sums)

    def __contains__(self, key: str) -> bool:
        return key in self.sums

    def add(self, key: str, split: str, meta: dict, emb: torch.Tensor, weight: float) -> bool:
        """Add one chunk embedding (D,) of `weight` valid samples; True when `key` is a new track."""
        new = key not in self.sums
        if new:
            self.sums[key] = torch.zeros_like(emb)
            self.weights[key] = 0.0
            self.split_of[key], self.meta_of[key] = split, meta
        self.sums[key] += weight * emb
        self.weights[key] += weight
        return new

    def take(self, keys: Iterable[str] | None = None) -> TrackSet:
        """Remove `keys` (all when None; keys never seen are left out) and return their pooled features."""
        keys = list(self.sums) if keys is None else [k for k in keys if k in self.sums]
        if not keys:
            return TrackSet([], np.zeros((0, 0), dtype=np.float32), [], [])
        x = torch.stack([self.sums[k] / max(self.weights[k], 1.0) for k in keys]).numpy().astype(np.float32)
        out = TrackSet(keys, x, [self.split_of[k] for k in keys], [self.meta_of[k] for k in keys])
        for k in keys:
            del self.sums[k], self.weights[k], self.split_of[k], self.meta_of[k]
        return out


def embed_chunks(chunk_fn: ChunkFn, batch: dict) -> torch.Tensor:
    """(B, D) float32 CPU chunk embeddings of one eval batch; the padded tail of a last chunk is pooled
    out by the model via length."""
    with torch.no_grad():
        return chunk_fn(batch["audio"], batch["length"]).detach().float().cpu()


def pool_chunks(
    batches: Iterable[tuple[str, dict]],
    chunk_fn: ChunkFn,
    max_tracks: int | None = None,
    on_track: Callable[[int], None] | None = None,
) -> TrackSet:
    """Per track, the mean of chunk_fn's chunk embeddings weighted by valid samples.

    batches: (split, eval-mode batch) with each track's chunks consecutive. max_tracks: stop drawing
    batches at the first chunk of track max_tracks + 1 (a large split is not decoded for nothing).
    on_track(n): called with the running track count (progress). Returns a TrackSet (x (N, D) float32;
    N = 0 when nothing was readable).
    """
    pool = ChunkPool()
    for split, batch in batches:
        emb = embed_chunks(chunk_fn, batch)  # encoded only when reached
        for i, key in enumerate(batch["key"]):
            if key not in pool and max_tracks is not None and len(pool) >= max_tracks:
                return pool.take()
            if pool.add(key, split, batch["meta"][i], emb[i], float(batch["length"][i])) and on_track:
                on_track(len(pool))
    return pool.take()


def chunk_average(
    folder: ShardFolder | str | Path,
    splits: list[str],
    chunk_fn: ChunkFn,
    chunk_seconds: float,
    batch_size: int = 32,
    num_workers: int = 0,
    description: str = "features",
    finalize: Callable[[np.ndarray], np.ndarray] | None = None,
) -> TrackSet:
    """Run chunk_fn over every chunk of every track of the given splits and pool per track, with a
    progress bar. Returns the TrackSet with x (N, D), where D is chunk_fn's output width (after
    `finalize`); a RuntimeError when no track was readable."""
    folder = folder if isinstance(folder, ShardFolder) else ShardFolder.open(folder)
    total = sum(folder.samples(s) or 0 for s in splits)
    with _progress() as bar:
        task = bar.add_task(description, total=total or None, rate="")
        start = time.monotonic()

        def advance(n: int) -> None:
            bar.update(task, completed=n, rate=f"{n / max(time.monotonic() - start, 1e-6):.1f} tracks/s")

        batches = eval_batches(folder, splits, chunk_seconds, batch_size, num_workers)
        ts = pool_chunks(batches, chunk_fn, on_track=advance)
    if not ts.keys:
        raise RuntimeError(f"no readable tracks in split(s) {', '.join(splits)} of {folder.name}")
    if finalize is not None:
        ts.x = finalize(ts.x)
    return ts


def concat(sets: list[TrackSet]) -> TrackSet:
    """TrackSets of several folders as one (rows in order)."""
    sets = [ts for ts in sets if ts.keys]
    if not sets:
        return TrackSet([], np.zeros((0, 0), dtype=np.float32), [], [])
    return TrackSet(
        keys=[k for ts in sets for k in ts.keys],
        x=np.concatenate([ts.x for ts in sets]),
        splits=[s for ts in sets for s in ts.splits],
        meta=[m for ts in sets for m in ts.meta],
    )


def save_trackset(ts: TrackSet, path: str | Path) -> Path:
    """Atomic .npz write; strings are stored as unicode arrays and metadata as JSON text (no pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:  # a file, not a name: np.savez would append .npz to the name
        np.savez(
            f,
            x=ts.x,
            keys=np.array(ts.keys, dtype=str),
            splits=np.array(ts.splits, dtype=str),
            meta=np.array([json.dumps(m) for m in ts.meta], dtype=str),
        )
    return path


def load_trackset(path: str | Path) -> TrackSet:
    with np.load(path, allow_pickle=False) as z:
        return TrackSet(
            keys=z["keys"].tolist(),
            x=z["x"].astype(np.float32),
            splits=z["splits"].tolist(),
            meta=[json.loads(m) for m in z["meta"].tolist()],
        )


def cached(path: Path, compute: Callable[[], TrackSet]) -> tuple[TrackSet, bool]:
    """Load `path` when it exists and reads back, else compute and save. Returns (features, was_cached)."""
    if path.is_file():
        try:
            return load_trackset(path), True
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # a truncated or foreign file is recomputed, never trusted
    ts = compute()
    save_trackset(ts, path)
    return ts, False


def align(ts: TrackSet, keys: list[str]) -> np.ndarray:
    """Rows of ts.x in the order of `keys` (every key must be present)."""
    pos = {k: i for i, k in enumerate(ts.keys)}
    missing = [k for k in keys if k not in pos]
    if missing:
        raise RuntimeError(
            f"{len(missing)} tracks have no features (e.g. {missing[0]}); delete the feature cache"
        )
    return ts.x[[pos[k] for k in keys]]


PART_ROWS = 16  # rows per part of a batch split across CPU threads (a fixed size: the same bits everywhere)


@contextmanager
def row_parallel(chunk_fn: ChunkFn, threads: int) -> Iterator[ChunkFn]:
    """chunk_fn with each batch cut into parts of PART_ROWS rows, each part run at one intra-op thread, on
    up to `threads` Python threads at once (for the CPU). Measured on this project's 2-core machine (tiny
    preset, 32 3-s chunks): 136 ms this way against 192 ms for one forward on two intra-op threads, whose
    many small convolutions leave the second core mostly idle. Neither the parts nor the intra-op thread
    count depend on `threads`, so the vectors are the same bits on any core count. The caller's intra-op
    thread count is restored after each batch (text encoding and the rest of a run keep it)."""
    pool = ThreadPoolExecutor(threads, thread_name_prefix="muser-rows") if threads > 1 else None
    mapper = pool.map if pool is not None else map

    def part(audio: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():  # grad mode is per thread: a pool thread starts with it on
            return chunk_fn(audio, length)

    def run(audio: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        n = -(-audio.shape[0] // PART_ROWS)
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return torch.cat(list(mapper(part, audio.tensor_split(n), length.tensor_split(n))))
        finally:
            torch.set_num_threads(before)

    try:
        yield run
    finally:
        if pool is not None:
            pool.shutdown()


def model_chunk_fn(model: torch.nn.Module, device: torch.device, which: str | None = None) -> ChunkFn:
    """Chunk embeddings from model.encode_audio: (B, T), length (B,) -> (B, D) L2-normalised; the zero
    padding of a track's last chunk is left out of the model's pooling. which: the audio tower
    (waveform | spectrogram | both; None = the model's config.audio_embedding)."""

    def run(audio: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        return model.encode_audio(audio.to(device), which=which, length=length)

    return run


def tower_chunk_fn(model: torch.nn.Module, device: torch.device) -> ChunkFn:
    """Chunk features from model.encode_towers (the model's audio towers before their projections):
    (B, T), length (B,) -> (B, tower widths); what `muser eval`'s probes read by default."""

    def run(audio: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        return model.encode_towers(audio.to(device), length=length)

    return run
