"""In-training validation on the valid split: text->audio retrieval R@1/R@5 and zero-shot accuracy.

Deliberately small, and built from the pieces `muser eval` uses (muser.features) so the numbers mean
what eval's mean: track embeddings are the track features (chunks averaged by valid length,
muser.features.tracks), reading stops once max_tracks tracks are complete, queries are the tracks'
distinct captions with every track of an identical caption relevant (muser.features.retrieval), and
zero-shot scores tracks against label prompts (muser.features.text).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from muser.config import DataConfig, EvalConfig, TrainConfig
from muser.features import tracks as feat
from muser.features.retrieval import relevance_from_captions, text_to_audio
from muser.features.text import class_scores, encode_texts, prompts
from muser.shards.manifest import ShardFolder
from muser.shards.text import render


def _single_label_tasks(folders: list[ShardFolder]) -> dict[str, list[str]]:
    tasks: dict[str, set[str]] = {}
    for folder in folders:
        for task, spec in folder.labels.items():
            if spec.get("type", "single") == "single":
                tasks.setdefault(task, set()).update(spec.get("classes", []))
    return {task: sorted(classes) for task, classes in tasks.items() if len(classes) > 1}


def _track_features(
    model: Any, folders: list[ShardFolder], split: str, chunk_seconds: float, batch_size: int, max_tracks: int
) -> feat.TrackSet:
    sets, chunk_fn = [], feat.model_chunk_fn(model, model.device)
    for folder in folders:  # each folder is opened only when the previous one is read to the end
        left = max_tracks - sum(len(ts.keys) for ts in sets)
        if left <= 0:
            break
        batches = feat.eval_batches(folder, [split], chunk_seconds, batch_size)
        sets.append(feat.pool_chunks(batches, chunk_fn, max_tracks=left))
    return feat.concat(sets)


@torch.no_grad()
def evaluate(
    model: Any,
    folders: list[ShardFolder],
    split: str = DataConfig.valid_split,
    chunk_seconds: float = EvalConfig.chunk_seconds,
    batch_size: int = EvalConfig.batch_size,
    max_tracks: int = TrainConfig.eval_tracks,
) -> dict[str, float]:
    """Retrieval and zero-shot metrics of `model` (in eval mode) over the `split` tracks of `folders`.

    Tracks are cut into chunks of chunk_seconds, `muser eval`'s chunk length (not the training crop), so
    the numbers mirror eval's. Returns {"tracks", "r1", "r5", "zs_<task>" per single-label task}; {} when
    no track was readable.
    """
    ts = _track_features(
        model, [f for f in folders if f.has(split)], split, chunk_seconds, batch_size, max_tracks
    )
    if not ts.keys:
        return {}
    audio = torch.from_numpy(ts.x)
    captions = [render(meta) for meta in ts.meta]
    queries, _ = relevance_from_captions(captions)
    recall = text_to_audio(encode_texts(model, queries, batch_size), audio, captions)
    out = {"tracks": float(len(ts.keys)), "r1": recall["R@1"], "r5": recall["R@5"]}
    for task, classes in _single_label_tasks(folders).items():
        index = {c: i for i, c in enumerate(classes)}
        values = [(meta.get("labels") or {}).get(task) for meta in ts.meta]
        rows = [i for i, v in enumerate(values) if isinstance(v, str) and v in index]
        if rows:
            targets = np.array([index[values[i]] for i in rows])
            text = encode_texts(model, prompts(task, classes), batch_size)
            out[f"zs_{task}"] = float(np.mean(class_scores(ts.x[rows], text).argmax(axis=1) == targets))
    return out
