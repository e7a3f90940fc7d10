"""In-training validation on the valid split: text->audio retrieval R@1/R@5 and zero-shot accuracy.

Deliberately small (muser.eval holds the full protocols): track embeddings are chunk-averaged, each
track's eval caption is a query, and every track with the identical caption counts as a correct hit
(metadata captions repeat, e.g. two rock songs with no other fields).
"""

from __future__ import annotations

import json
from collections import defaultdict
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
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = defaultdict(int)
    metas: dict[str, dict] = {}
    device = model.device
    for folder in folders:
        loader = make_loader(
            folder,
            split=split,
            mode="eval",
            batch_size=batch_size,
            crop_seconds=crop_seconds,
            num_workers=0,
            rank=0,
            world_size=1,
        )
        for batch in loader:
            emb = model.encode_audio(batch["audio"].to(device)).float().cpu()
            for key, meta, row in zip(batch["key"], batch["meta"], emb, strict=True):
                if key not in sums and len(sums) >= max_tracks:
                    continue
                sums[key] = sums.get(key, 0) + row
                counts[key] += 1
                metas[key] = meta
    if not sums:
        return {}
    keys = list(sums)
    audio = F.normalize(torch.stack([sums[k] / counts[k] for k in keys]), dim=-1)
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
