"""In-training validation on the valid split: text->audio retrieval R@1/R@5 and zero-shot accuracy.

Deliberately small (muser.eval holds the full protocols): a track's embedding is the mean of its chunks'
embeddings weighted by their valid length (as in muser.eval: the zero-padded last chunk counts for what
it holds), and reading stops once max_tracks tracks are complete. Each track's eval caption is a query,
and every track with the identical caption counts as a correct hit (metadata captions repeat, e.g. two
rock songs with no other fields).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from muser.shards import text as text_mod
from muser.shards.reader import make_loader


def recall_at_k(sim: torch.Tensor, relevant: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> dict[str, float]:
    """sim: (Q, N) query-item scores; relevant: (Q, N) bool -> {"r1": fraction of queries whose top-k
    items include a relevant one, ...}."""
    order = sim.argsort(dim=1, descending=True)
    hits = relevant.gather(1, order)
    return {f"r{k}": hits[:, : min(k, sim.shape[1])].any(dim=1).float().mean().item() for k in ks}


def zero_shot_accuracy(audio: torch.Tensor, prompts: torch.Tensor, targets: torch.Tensor) -> float:
    """audio: (N, D), prompts: (C, D) L2-normalised; targets: (N,) class index -> accuracy of argmax."""
    return (audio @ prompts.T).argmax(dim=1).eq(targets).float().mean().item()


def _single_label_tasks(folders: list[str]) -> dict[str, list[str]]:
    tasks: dict[str, set[str]] = defaultdict(set)
    for folder in folders:
        manifest = json.loads((Path(folder) / "manifest.json").read_text(encoding="utf-8"))
        for task, spec in manifest.get("labels", {}).items():
            if spec.get("type", "single") == "single":
                tasks[task] |= set(spec.get("classes", []))
    return {task: sorted(classes) for task, classes in tasks.items() if len(classes) > 1}


@torch.no_grad()
def _encode_texts(model: Any, texts: list[str], batch_size: int) -> torch.Tensor:
    return torch.cat(
        [model.encode_text(texts[i : i + batch_size]).float() for i in range(0, len(texts), batch_size)]
    )


@torch.no_grad()
def track_embeddings(
    model: Any, batches: Iterable[dict[str, Any]], max_tracks: int
) -> tuple[list[str], torch.Tensor, dict[str, dict]]:
    """Length-weighted mean chunk embedding per track, for the first `max_tracks` tracks of `batches`.

    batches: eval-mode reader batches (a track's chunks are consecutive, `length` its valid samples).
    Returns (track keys in order, (N, D) L2-normalised embeddings, key -> metadata). Stops drawing batches
    at the first chunk of track max_tracks + 1, so a large valid split is not decoded for nothing.
    """
    sums: dict[str, torch.Tensor] = {}
    weights: dict[str, float] = defaultdict(float)
    metas: dict[str, dict] = {}
    for key, meta, row, length in _chunks(model, batches):
        if key not in sums and len(sums) >= max_tracks:
            break
        sums[key] = sums.get(key, 0) + row * length
        weights[key] += length
        metas[key] = meta
    keys = list(sums)
    if not keys:
        return [], torch.empty(0), {}
    audio = torch.stack([sums[k] / max(weights[k], 1.0) for k in keys])
    return keys, F.normalize(audio, dim=-1), metas


def _chunks(model: Any, batches: Iterable[dict[str, Any]]) -> Iterator[tuple[str, dict, torch.Tensor, int]]:
    """(key, metadata, embedding, valid samples) per chunk; a batch is encoded only when it is reached."""
    for batch in batches:
        # The padded tail of a track's last chunk is pooled out via length, not averaged in as silence.
        emb = model.encode_audio(batch["audio"].to(model.device), length=batch["length"]).float().cpu()
        yield from zip(batch["key"], batch["meta"], emb, batch["length"].tolist(), strict=True)


def _valid_batches(folders: list[str], split: str, crop_seconds: float, batch_size: int) -> Iterator[dict]:
    for folder in folders:  # each loader opens only when the previous folder is read to the end
        yield from make_loader(
            folder,
            split=split,
            mode="eval",
            batch_size=batch_size,
            crop_seconds=crop_seconds,
            num_workers=0,
            rank=0,
            world_size=1,
        )


@torch.no_grad()
def evaluate(
    model: Any,
    folders: list[str],
    split: str = "valid",
    crop_seconds: float = 3.0,
    batch_size: int = 32,
    max_tracks: int = 1000,
) -> dict[str, float]:
    """Retrieval and zero-shot metrics of `model` (in eval mode) over the `split` tracks of `folders`.

    Returns {"r1", "r5", "tracks", "zs_<task>" per single-label task}; {} when no folder has the split.
    """
    batches = _valid_batches(folders, split, crop_seconds, batch_size)
    keys, audio, metas = track_embeddings(model, batches, max_tracks)
    if not keys:
        return {}
    captions = [text_mod.render(metas[k]) for k in keys]
    ids = torch.tensor([text_mod.caption_id(c) for c in captions])
    queries = _encode_texts(model, captions, batch_size).cpu()
    out: dict[str, float] = {"tracks": float(len(keys))}
    out.update(recall_at_k(queries @ audio.T, ids[:, None] == ids[None, :]))
    for task, classes in _single_label_tasks(folders).items():
        index = {c: i for i, c in enumerate(classes)}
        rows = [
            (i, index[v]) for i, k in enumerate(keys) if (v := metas[k].get("labels", {}).get(task)) in index
        ]
        if not rows:
            continue
        prompts = _encode_texts(model, [text_mod.label_prompt(task, c) for c in classes], batch_size).cpu()
        which = torch.tensor([i for i, _ in rows])
        targets = torch.tensor([t for _, t in rows])
        out[f"zs_{task}"] = zero_shot_accuracy(audio[which], prompts, targets)
    return out
