"""`run_eval`: one evaluation run from an EvalConfig — data, model, features, protocols, baselines, report.

Protocols are reported separately (probe-logistic, probe-mlp, zeroshot, finetune, retrieval), each as
mean ± std over folds (and seeds where a protocol has randomness); baselines share the folds and seeds
so every row can show its margin over random weights and over MFCC statistics.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from muser.config import PROBE_FEATURES, EvalConfig, to_dict
from muser.console import make_console
from muser.distributed import choose_device
from muser.eval.baselines import MFCCStats, mfcc_finalize, random_model
from muser.eval.probe import PROBE_HEADS
from muser.eval.protocols import PROTOCOLS, Candidate, Prepared, Rows, confusion, margins, run_protocols
from muser.eval.report import plot_confusion, plot_fewshot, print_table, write_json
from muser.eval.splits import make_folds
from muser.eval.tasks import (
    TaskSpec,
    default_data_dir,
    left_out_by_lists,
    resolve_shards,
    split_lists,
    targets,
    task_spec,
    vocabulary,
)
from muser.features import tracks as feat
from muser.models.load import load_model, random_fingerprint
from muser.shards.cache import cache_root, check_sample_rate
from muser.shards.manifest import ShardFolder
from muser.shards.text import render


def _protocols(name: str) -> list[str]:
    if name == "all":
        return list(PROTOCOLS)
    names = [p.strip() for p in name.split(",") if p.strip()]
    bad = [p for p in names if p not in PROTOCOLS]
    if bad or not names:
        raise ValueError(f"unknown --protocol {name!r}; use one of {', '.join(PROTOCOLS)} or all")
    return names


def _check(cfg: EvalConfig) -> tuple[TaskSpec, list[str]]:
    """The task and protocols of cfg; every option mistake as one ValueError naming the option."""
    spec = task_spec(cfg.task)
    protocols = _protocols(cfg.protocol)
    if not cfg.fractions or any(not 0.0 < f <= 1.0 for f in cfg.fractions):
        raise ValueError(f"--fractions must be numbers in (0, 1], got {cfg.fractions}")
    if cfg.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {cfg.seeds}")
    if not cfg.probes or set(cfg.probes) - set(PROBE_HEADS):
        raise ValueError(f"--probe must be a comma list of {', '.join(PROBE_HEADS)}, got {cfg.probes}")
    if cfg.probe_features not in PROBE_FEATURES:
        raise ValueError(
            f"unknown --probe-features {cfg.probe_features!r}; use one of {', '.join(PROBE_FEATURES)}"
        )
    if cfg.baseline not in (None, "mfcc"):
        raise ValueError(f"unknown --baseline {cfg.baseline!r}; the only baseline is mfcc")
    return spec, protocols


def _features(
    cfg: EvalConfig, folder: ShardFolder, splits: list[str], name: str, chunk_fn: Any
) -> feat.TrackSet:
    """Track features of `chunk_fn` over the folder, through the feature cache (key: `name`, the data,
    the chunk length); a truncated or foreign cache file is recomputed (features.cached), never trusted."""
    path = (
        cache_root(cfg.cache_dir, cfg.output)
        / "features"
        / f"{name}-{folder.fingerprint()[:16]}-c{cfg.chunk_seconds:g}.npz"
    )
    finalize = mfcc_finalize if isinstance(chunk_fn, MFCCStats) else None

    def compute() -> feat.TrackSet:
        return feat.chunk_average(
            folder,
            splits,
            chunk_fn,
            cfg.chunk_seconds,
            cfg.batch_size,
            cfg.num_workers,
            description=f"{name.split('-')[0]} features",
            finalize=finalize,
        )

    return feat.cached(path, compute)[0]


def _model_features(
    cfg: EvalConfig, folder: ShardFolder, splits: list[str], model: Any, fp: str
) -> feat.TrackSet:
    key = f"{fp[:16]}-{model.config.audio_embedding}"
    return _features(cfg, folder, splits, key, feat.model_chunk_fn(model, model.device))


def _candidate(
    cfg: EvalConfig,
    protocols: list[str],
    data: Prepared,
    name: str,
    model: Any,
    fp: str,
    ts: feat.TrackSet,
    **kw: Any,
) -> Candidate:
    """A MUSER model (trained or random) as a report candidate: its embeddings, and the features its probes
    read (cfg.probe_features: the towers' outputs are a second feature pass, cached like the first)."""
    probe_x = None
    if "probe" in protocols and cfg.probe_features == "towers":
        towers = _features(
            cfg,
            data.folder,
            data.splits,
            f"{fp[:16]}-towers-{model.config.audio_embedding}",
            feat.tower_chunk_fn(model, model.device),
        )
        probe_x = feat.align(towers, data.keys)
    return Candidate(name, feat.align(ts, data.keys), model, probe_x=probe_x, **kw)


def _prepare(
    cfg: EvalConfig, spec: TaskSpec, folder: ShardFolder, ts: feat.TrackSet, lists: tuple
) -> Prepared:
    """Targets, folds and captions of the tracks that carry a label of the task; the rest are `excluded`.

    lists: (raw data folder, GTZAN split-list folder or None) for the tracks the lists leave out.
    """
    label_task, classes, multilabel = vocabulary(spec, folder.labels, cfg.label_task)
    labels = targets(ts.meta, label_task, classes, multilabel)
    kept = np.flatnonzero(labels.keep)
    excluded = [
        {"key": ts.keys[i], "reason": f"no {label_task} label among the task's classes"}
        for i in np.flatnonzero(~labels.keep)
    ]
    excluded += _unusable(folder, set(ts.keys), lists)
    try:
        folds = make_folds([ts.splits[i] for i in kept], labels.y[kept], cfg.folds, cfg.seed, folder.splits)
    except ValueError as err:
        raise _with_excluded(err, excluded, Path(cfg.output)) from None
    return Prepared(
        folder=folder,
        splits=folder.splits,
        keys=[ts.keys[i] for i in kept],
        y=labels.y[kept],
        folds=folds,
        label_task=label_task,
        classes=classes,
        multilabel=multilabel,
        captions=[render(ts.meta[i]) for i in kept],
        excluded=excluded,
    )


def _unusable(folder: ShardFolder, read: set[str], lists: tuple) -> list[dict[str, str]]:
    """The tracks that never reached the features: left out by the split lists, failed at sharding
    (errors.jsonl), or in the shards but not decodable now (not in `read`)."""
    data_dir, split_dir = lists
    out = []
    if split_dir is not None:
        out += [
            {"key": rel, "reason": "in no fault-filtered split list"}
            for rel in left_out_by_lists(data_dir, split_dir)
        ]
    out += [
        {"key": str(err.get("id", err.get("path", "?"))), "reason": str(err.get("reason", "unreadable"))}
        for err in folder.errors()
    ]
    out += [
        {"key": key, "reason": "in the shards but unreadable (the reader's warnings say why)"}
        for split in folder.splits
        for key in folder.keys(split) or []
        if key not in read
    ]
    return out


def _with_excluded(err: Exception, excluded: list[dict[str, str]], out: Path) -> Exception:
    """`err` (same type) for a run left without usable tracks, naming OUT/excluded.json, written here:
    every track that was left out and why (results.json, which holds them otherwise, is never written)."""
    path = write_json({"excluded": excluded}, out / "excluded.json").resolve()
    return type(err)(f"{err}; the {len(excluded)} excluded tracks and why: {path}")


def _baselines(
    cfg: EvalConfig, protocols: list[str], data: Prepared, model: Any, main: str, device: torch.device
) -> list[Candidate]:
    """Random weights of the same architecture (for a real checkpoint) and, with --baseline mfcc, MFCCs."""
    out = []
    if main != "random" and cfg.random_baseline:
        rnd = random_model(model, cfg.seed).to(device)
        fp = random_fingerprint(model.config, cfg.seed)
        ts = _model_features(cfg, data.folder, data.splits, rnd, fp)
        out.append(_candidate(cfg, protocols, data, "random", rnd, fp, ts))
    if cfg.baseline == "mfcc":
        mfcc = MFCCStats(data.folder.sample_rate)
        x = feat.align(_features(cfg, data.folder, data.splits, "mfcc", mfcc), data.keys)
        # The MFCC probe is the yardstick of every protocol (zero-shot included), so it always runs.
        out.append(Candidate("mfcc", x, heads=("logistic",), protocols=("probe",)))
    return out


def run_eval(cfg: EvalConfig, console: Console | None = None) -> dict[str, Any]:
    """Evaluate cfg.checkpoint on cfg.task; writes OUT/results.json, confusion.png, fewshot.png.

    Returns the result dict that results.json holds.
    """
    console = console or make_console(stderr=True)
    spec, protocols = _check(cfg)
    data_dir = Path(cfg.data) if cfg.data else default_data_dir(cfg.task)
    if not data_dir.is_dir():
        raise ValueError(f"dataset folder {data_dir} does not exist; {spec.name} expects {spec.layout}")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    device = choose_device(cfg.device)
    split_dir, found = split_lists(spec, data_dir, cfg.split_dir)
    if found:
        console.print(
            f"using the GTZAN fault-filtered split lists in {split_dir} (standard split; "
            "pass --split-dir to use other lists)"
        )

    # Build: the model, the shard folder (raw data is sharded once into the cache), the main features.
    model, ckpt_fp, ckpt_desc = load_model(cfg.checkpoint, cfg.preset, cfg.seed, device)
    cache = cache_root(cfg.cache_dir, out)
    folder = resolve_shards(spec, data_dir, cache, model.config.sample_rate, split_dir=split_dir)
    check_sample_rate(folder.name, folder.sample_rate, model.config.sample_rate)
    main = "random" if cfg.checkpoint == "random" else "muser"
    try:
        ts = _model_features(cfg, folder, folder.splits, model, ckpt_fp)
    except RuntimeError as err:
        if "no readable tracks" not in str(err):  # features.py's words when not one track could be read
            raise
        raise _with_excluded(err, _unusable(folder, set(), (data_dir, split_dir)), out) from None
    data = _prepare(cfg, spec, folder, ts, (data_dir, split_dir))

    # Run: the same protocols, folds and seeds over the evaluated model and its baselines.
    rows = Rows()
    evaluated = _candidate(cfg, protocols, data, main, model, ckpt_fp, ts, evaluated=True)
    for cand in [evaluated, *_baselines(cfg, protocols, data, model, main, device)]:
        run_protocols(rows, cand, data, cfg, protocols, device)

    # Report: results.json, the two plots and the table.
    result_rows = rows.rows()
    margins(result_rows, main)
    result = _result(cfg, spec, data, protocols, result_rows)
    result["checkpoint"] = {"path": ckpt_desc, "fingerprint": ckpt_fp}
    result["data"] = {
        "path": str(data_dir.resolve()),
        "shards": folder.name,
        "fingerprint": folder.fingerprint(),
        "split_dir": str(split_dir.resolve()) if split_dir is not None else None,
        "split_dir_found": found,
    }
    _plots(result, rows, data, main, out)
    result["outputs"] = {
        n: str((out / n).resolve()) for n in ("results.json", "confusion.png", "fewshot.png")
    }
    write_json(result, out / "results.json")
    print_table(result, console)
    return result


def _result(cfg: EvalConfig, spec: TaskSpec, data: Prepared, protocols: list[str], rows: list[dict]) -> dict:
    folds = data.folds
    return {
        "task": spec.name,
        "label_task": data.label_task,
        "type": "multi" if data.multilabel else "single",
        "classes": data.classes,
        "split_scheme": folds[0].name if len(folds) == 1 else f"{len(folds)}-fold stratified",
        "counts": {
            "tracks": len(data.keys),
            "excluded": len(data.excluded),
            "folds": [
                {"name": f.name, "train": len(f.train), "valid": len(f.valid), "test": len(f.test)}
                for f in folds
            ],
        },
        "excluded": data.excluded,
        "protocols": protocols,
        "fractions": sorted({float(f) for f in cfg.fractions}),
        "seeds": cfg.seeds,
        "config": to_dict(cfg),
        "results": rows,
    }


def _plots(result: dict, rows: Rows, data: Prepared, main: str, out: Path) -> None:
    """confusion.png from the evaluated model's first classification protocol, and fewshot.png."""
    name = result["task"]
    source = next(
        (k for k in (f"{main} probe-logistic", f"{main} finetune", f"{main} zeroshot") if k in rows.preds),
        None,
    )
    if source is not None:
        matrix, rlab, clab = confusion(rows.preds[source], data.y, data.classes, data.multilabel)
        plot_confusion(
            matrix, rlab, clab, out / "confusion.png", f"{name}: {source} ({result['split_scheme']})"
        )
    else:  # retrieval only: no class decisions to draw, but the report always has both plots
        n = len(data.classes)
        title = f"{name}: no classification protocol was run"
        plot_confusion(np.zeros((n, n)), data.classes, data.classes, out / "confusion.png", title)
    plot_fewshot(result, out / "fewshot.png", "roc_auc" if data.multilabel else "accuracy")
