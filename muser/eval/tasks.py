"""Downstream tasks: which label vocabulary each task scores, how, and where its data comes from.

gtzan: single-label "genre", accuracy. fma: single-label "genre_top", accuracy on the 8 most frequent top
genres (the 8 of FMA-small). mtt: multi-label "tags", macro ROC-AUC and PR-AUC over the 50 most frequent
tags. shards: any shard folder with a label vocabulary (the first one, or EvalConfig.label_task).
A raw dataset folder is sharded once into a cache folder and reused by later runs; a raw GTZAN folder
uses its fault-filtered split lists (given, or found beside the audio) and so gets the standard split.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from muser.config import EVAL_TASKS
from muser.shards.cache import shard_once
from muser.shards.manifest import ShardFolder, is_shard_folder


@dataclass(frozen=True)
class TaskSpec:
    name: str
    label_task: str | None  # label vocabulary in the manifest; None = the shard folder's own
    source: str  # ShardConfig.source for raw folders
    top_k: int | None  # keep the K most frequent classes (None = all)
    layout: str  # what a raw dataset folder must look like (for error messages)


TASKS: dict[str, TaskSpec] = {
    "gtzan": TaskSpec("gtzan", "genre", "gtzan", None, "genres/<genre>/<genre>.000NN.wav (GTZAN layout)"),
    "fma": TaskSpec(
        "fma", "genre_top", "fma", 8, "fma_small/NNN/NNNNNN.mp3 with fma_metadata/tracks.csv (FMA layout)"
    ),
    "mtt": TaskSpec(
        "mtt", "tags", "mtt", 50, "annotations_final.csv with mp3 folders 0-9, a-f (MagnaTagATune layout)"
    ),
    "shards": TaskSpec("shards", None, "auto", None, "a shard folder written by `muser shard`"),
}
assert set(TASKS) == set(EVAL_TASKS), "config.EVAL_TASKS names the tasks described here"


@dataclass
class Labels:
    label_task: str  # the manifest vocabulary used
    multilabel: bool
    classes: list[str]  # kept classes, in index order
    y: np.ndarray  # (N,) int64 class index or (N, C) int64 multi-hot over the kept classes
    keep: np.ndarray  # (N,) bool: tracks that have at least one kept label


def task_spec(name: str) -> TaskSpec:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    return TASKS[name]


def default_data_dir(task: str) -> Path:
    """$MUSER_DATA/<task>; a clear error when the variable is unset."""
    root = os.environ.get("MUSER_DATA")
    if not root:
        raise ValueError(
            f"no --data given and $MUSER_DATA is not set; pass --data DIR or set MUSER_DATA so that "
            f"$MUSER_DATA/{task} holds the dataset"
        )
    return Path(root) / task


SPLIT_LIST_NAMES = tuple(f"{split}_filtered.txt" for split in ("train", "valid", "test"))


def split_lists(spec: TaskSpec, data: Path, given: str | None) -> tuple[Path | None, bool]:
    """(folder of the GTZAN fault-filtered split lists, whether it was found rather than given).

    Without --split-dir, a raw GTZAN folder holding train/valid/test_filtered.txt (in its root, or beside
    it when --data is the genres/ folder itself) uses them: the standard split beats K-fold whenever
    it exists, and the lists drop the known-faulty files.
    """
    if given is not None:
        if spec.source != "gtzan":
            raise ValueError(f"--split-dir only applies to the gtzan task, not {spec.name}")
        if is_shard_folder(data):
            raise ValueError(
                f"--split-dir applies to a raw GTZAN folder but {data} is already sharded; "
                "re-shard it with `muser shard --split-dir` or point --data at the raw dataset"
            )
        folder = Path(given)
        if not folder.is_dir():
            raise ValueError(f"--split-dir {folder} is not a folder")
        return folder, False
    if spec.source != "gtzan" or not data.is_dir() or is_shard_folder(data):
        return None, False
    from muser.shards.sources.gtzan import GENRE_DIRS

    for folder in (data, data.parent) if data.name in GENRE_DIRS else (data,):
        if any((folder / name).is_file() for name in SPLIT_LIST_NAMES):
            return folder, True
    return None, False


def left_out_by_lists(data: Path, split_dir: Path) -> list[str]:
    """Audio files under GTZAN's genres/ that no split list names (the fault-filtered ones), as genre/file."""
    from muser.shards.sources.base import is_audio
    from muser.shards.sources.gtzan import find_genres, read_split_lists

    genres_dir = find_genres(data, bare=True)
    if genres_dir is None:
        return []
    listed = read_split_lists(split_dir)
    return [
        f"{d.name}/{f.name}"
        for d in sorted(x for x in genres_dir.iterdir() if x.is_dir())
        for f in sorted(d.iterdir())
        if is_audio(f) and f"{d.name}/{f.stem}" not in listed  # the key the GTZAN reader matches on
    ]


def resolve_shards(
    spec: TaskSpec,
    data: Path,
    cache: Path,
    sample_rate: int,
    progress: bool = True,
    split_dir: Path | None = None,
) -> ShardFolder:
    """The shard folder for `data`: itself when it is one, else a cached sharding of the raw dataset
    (muser.shards.cache). split_dir: GTZAN fault-filtered split lists (part of the cache key)."""
    if not data.exists():
        raise ValueError(f"dataset folder {data} does not exist; {spec.name} expects {spec.layout}")
    if not data.is_dir():
        raise ValueError(f"--data {data} is not a folder; {spec.name} expects {spec.layout}")
    if spec.name == "shards" and not is_shard_folder(data):
        raise ValueError(f"{data} is not a shard folder; the shards task expects {spec.layout}")
    return shard_once(data, cache, sample_rate, spec.source, spec.name, spec.layout, progress, split_dir)


def vocabulary(
    spec: TaskSpec, vocabularies: dict[str, Any], label_task: str | None = None
) -> tuple[str, list[str], bool]:
    """(label task, kept classes, multilabel) of the task on a shard folder's label vocabularies
    (ShardFolder.labels); errors on a task/data mismatch."""
    wanted = label_task or spec.label_task
    if wanted is None:
        if not vocabularies:
            raise ValueError("the shard folder has no label vocabulary (its manifest lists no labels)")
        wanted = sorted(vocabularies)[0]
    if wanted not in vocabularies:
        found = ", ".join(sorted(vocabularies)) or "none"
        raise ValueError(
            f"task {spec.name} needs a {wanted!r} label vocabulary but the data has: {found}; "
            f"point --data at a {spec.name} dataset or use the shards task with --label-task"
        )
    vocab = vocabularies[wanted]
    counts = vocab.get("counts") or {}
    classes = list(vocab["classes"])
    if spec.top_k is not None and len(classes) > spec.top_k:
        # Most frequent first; ties by name so the selection is stable across runs.
        classes = sorted(sorted(classes, key=lambda c: (-counts.get(c, 0), c))[: spec.top_k])
    if len(classes) < 2:
        raise ValueError(f"the {wanted!r} vocabulary has {len(classes)} class(es); a task needs at least 2")
    return wanted, classes, vocab.get("type") == "multi"


def targets(metas: list[dict], label_task: str, classes: list[str], multilabel: bool) -> Labels:
    """Targets over the tracks' metadata; tracks with no kept label are marked in `keep` (excluded)."""
    index = {c: i for i, c in enumerate(classes)}
    n = len(metas)
    if multilabel:
        y = np.zeros((n, len(classes)), dtype=np.int64)
        for i, meta in enumerate(metas):
            for tag in (meta.get("labels") or {}).get(label_task) or []:
                if tag in index:
                    y[i, index[tag]] = 1
        keep = y.any(axis=1)
    else:
        y = np.full(n, -1, dtype=np.int64)
        for i, meta in enumerate(metas):
            value = (meta.get("labels") or {}).get(label_task)
            if isinstance(value, str) and value in index:
                y[i] = index[value]
        keep = y >= 0
    if keep.sum() < 2:
        raise ValueError(f"fewer than 2 tracks carry a {label_task!r} label; nothing to evaluate")
    return Labels(label_task, multilabel, classes, y, keep)
