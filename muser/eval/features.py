"""Frozen track features: deterministic chunks of every track, embedded and averaged, cached on disk.

A track is cut by the reader (eval mode) into consecutive chunks covering all of it; each chunk is
embedded and the track feature is the mean over its chunks weighted by valid samples (a short, zero-padded
last chunk counts for what it holds). Caches are .npz files (no pickle) keyed by a fingerprint of the
checkpoint and of the shard data, so a second run on the same model and data reads them back at once.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

ChunkFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (audio (B, T), length (B,)) -> (B, D)


@dataclass
class TrackSet:
    keys: list[str]  # track keys, in first-seen order
    x: np.ndarray  # (N, D) float32 track features
    splits: list[str]  # shard split of each track (train/valid/test/all)
    meta: list[dict]  # metadata JSON of each track (labels, captions...)


def fingerprint_files(paths: list[Path]) -> str:
    """sha256 over the names and bytes of files (model weights + config, or a manifest)."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def fingerprint_text(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        transient=True,
    )


def _split_samples(manifest: dict, split: str) -> int:
    return int(manifest.get("splits", {}).get(split, {}).get("samples", 0))


def eval_batches(
    shard_dir: str | Path, splits: list[str], chunk_seconds: float, batch_size: int = 32, num_workers: int = 0
) -> Iterator[tuple[str, dict]]:
    """(split, batch) over every deterministic chunk of every track of the given splits, in reader order.

    The one place that builds the eval-mode loader, so features and fine-tuning see the same chunks.
    """
    from muser.shards.reader import make_loader

    for split in splits:
        loader = make_loader(
            str(shard_dir),
            split=split,
            mode="eval",
            batch_size=batch_size,
            crop_seconds=chunk_seconds,
            num_workers=num_workers,
        )
        for batch in loader:
            yield split, batch


def chunk_average(
    shard_dir: str | Path,
    splits: list[str],
    chunk_fn: ChunkFn,
    chunk_seconds: float,
    batch_size: int = 32,
    num_workers: int = 0,
    description: str = "features",
    finalize: Callable[[np.ndarray], np.ndarray] | None = None,
) -> TrackSet:
    """Run chunk_fn over every chunk of every track of the given splits and pool per track.

    Returns the TrackSet with x (N, D), where D is chunk_fn's output width (after `finalize`).
    """
    import time

    manifest = json.loads((Path(shard_dir) / "manifest.json").read_text())
    sums: dict[str, torch.Tensor] = {}
    weights: dict[str, float] = {}
    split_of: dict[str, str] = {}
    meta_of: dict[str, dict] = {}
    total = sum(_split_samples(manifest, s) for s in splits)
    with _progress() as bar:
        task = bar.add_task(description, total=total or None, rate="")
        start = time.monotonic()
        for split, batch in eval_batches(shard_dir, splits, chunk_seconds, batch_size, num_workers):
            with torch.no_grad():
                emb = chunk_fn(batch["audio"], batch["length"]).detach().float().cpu()
            for i, key in enumerate(batch["key"]):
                w = float(batch["length"][i])
                if key not in sums:
                    sums[key] = torch.zeros_like(emb[i])
                    weights[key] = 0.0
                    split_of[key] = split
                    meta_of[key] = batch["meta"][i]
                    elapsed = max(time.monotonic() - start, 1e-6)
                    bar.update(task, advance=1, rate=f"{len(sums) / elapsed:.1f} tracks/s")
                sums[key] += w * emb[i]
                weights[key] += w
    keys = list(sums)
    if not keys:
        raise RuntimeError(f"no readable tracks in split(s) {', '.join(splits)} of {shard_dir}")
    x = torch.stack([sums[k] / max(weights[k], 1.0) for k in keys]).numpy().astype(np.float32)
    if finalize is not None:
        x = finalize(x)
    return TrackSet(keys=keys, x=x, splits=[split_of[k] for k in keys], meta=[meta_of[k] for k in keys])


def save_trackset(ts: TrackSet, path: str | Path) -> Path:
    """Atomic .npz write; strings are stored as unicode arrays and metadata as JSON text (no pickle)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        x=ts.x,
        keys=np.array(ts.keys, dtype=str),
        splits=np.array(ts.splits, dtype=str),
        meta=np.array([json.dumps(m) for m in ts.meta], dtype=str),
    )
    os.replace(tmp, path)
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
        except (OSError, ValueError, KeyError):
            pass  # a truncated or foreign file is recomputed, never trusted
    ts = compute()
    save_trackset(ts, path)
    return ts, False


def model_chunk_fn(model: torch.nn.Module, device: torch.device) -> ChunkFn:
    """Chunk embeddings from model.encode_audio: (B, T), length (B,) -> (B, D) L2-normalised; the zero
    padding of a track's last chunk is left out of the model's pooling."""

    def run(audio: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        return model.encode_audio(audio.to(device), length=length)

    return run
