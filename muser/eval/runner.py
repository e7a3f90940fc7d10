"""`run_eval`: one evaluation run from an EvalConfig — data, model, features, protocols, baselines, report.

Protocols are reported separately (probe-logistic, probe-mlp, zeroshot, finetune, retrieval), each as
mean ± std over folds (and seeds where a protocol has randomness); baselines share the folds and seeds
so every row can show its margin over random weights and over MFCC statistics.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from sklearn.metrics import confusion_matrix

from muser.config import EvalConfig, to_dict
from muser.eval import features as feat
from muser.eval.baselines import MFCCStats, mfcc_finalize, random_model
from muser.eval.metrics import score
from muser.eval.probe import fit_predict
from muser.eval.report import plot_confusion, plot_fewshot, print_table, write_json
from muser.eval.retrieval import relevance_from_captions, text_to_audio
from muser.eval.splits import Fold, fraction_subset, make_folds
from muser.eval.tasks import (
    default_data_dir,
    left_out_by_lists,
    resolve_shards,
    split_lists,
    targets,
    task_spec,
    vocabulary,
)
from muser.eval.zeroshot import class_scores, encode_texts, prompts

PROTOCOLS = ("probe", "zeroshot", "finetune", "retrieval")


def _protocols(name: str) -> list[str]:
    if name == "all":
        return list(PROTOCOLS)
    names = [p.strip() for p in name.split(",") if p.strip()]
    bad = [p for p in names if p not in PROTOCOLS]
    if bad or not names:
        raise ValueError(f"unknown --protocol {name!r}; use one of {', '.join(PROTOCOLS)} or all")
    return names


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {name} asked for CUDA but no CUDA device is available")
    return torch.device(name)


def load_checkpoint(spec: str, preset: str, seed: int, device: torch.device) -> tuple[Any, str, str]:
    """(model in eval mode, fingerprint, resolved path or 'random:<preset>') for --checkpoint."""
    from muser.models.muser import MUSER

    if spec == "random":
        torch.manual_seed(seed)
        model = MUSER.from_preset(preset)
        fp = feat.fingerprint_text("random", json.dumps(to_dict(model.config), sort_keys=True), str(seed))
        return model.to(device).eval(), fp, f"random:{preset}"
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"checkpoint {path} does not exist; pass a model/ folder, a run folder or `random`")
    if path.is_dir() and (path / "model" / "config.json").is_file():
        path = path / "model"  # a run folder: its exported model
    if not path.is_dir():
        raise ValueError(
            f"checkpoint {path} is a file; pass the run folder or its model/ folder "
            "(written by MUSER.save_pretrained)"
        )
    model = MUSER.from_pretrained(path, map_location=device)
    fp = feat.fingerprint_files([path / "config.json", path / "model.safetensors"])
    return model.eval(), fp, str(path.resolve())


def _model_features(
    model,
    fp: str,
    shard_dir: Path,
    splits: list[str],
    cfg: EvalConfig,
    cache: Path,
    data_fp: str,
    device: torch.device,
    name: str,
) -> feat.TrackSet:
    which = model.config.audio_embedding
    path = cache / "features" / f"{fp[:16]}-{data_fp[:16]}-c{cfg.chunk_seconds:g}-{which}.npz"
    ts, _ = feat.cached(
        path,
        lambda: feat.chunk_average(
            shard_dir,
            splits,
            feat.model_chunk_fn(model, device),
            cfg.chunk_seconds,
            cfg.batch_size,
            cfg.num_workers,
            description=f"{name} features",
        ),
    )
    return ts


def _mfcc_features(
    shard_dir: Path, splits: list[str], cfg: EvalConfig, cache: Path, data_fp: str, sample_rate: int
) -> feat.TrackSet:
    path = cache / "features" / f"mfcc-{data_fp[:16]}-c{cfg.chunk_seconds:g}.npz"
    mfcc = MFCCStats(sample_rate)
    ts, _ = feat.cached(
        path,
        lambda: feat.chunk_average(
            shard_dir,
            splits,
            mfcc,
            cfg.chunk_seconds,
            cfg.batch_size,
            cfg.num_workers,
            description="mfcc features",
            finalize=mfcc_finalize,
        ),
    )
    return ts


def _align(ts: feat.TrackSet, keys: list[str]) -> np.ndarray:
    """Rows of ts.x in the order of `keys` (every key must be present)."""
    pos = {k: i for i, k in enumerate(ts.keys)}
    missing = [k for k in keys if k not in pos]
    if missing:
        raise RuntimeError(
            f"{len(missing)} tracks have no features (e.g. {missing[0]}); delete the feature cache"
        )
    return ts.x[[pos[k] for k in keys]]


class _Rows:
    """Accumulates (model, protocol, fraction, metric) -> per-run values and turns them into report rows."""

    def __init__(self) -> None:
        self.runs: dict[tuple, list[dict]] = defaultdict(list)

    def add(
        self, model: str, protocol: str, fraction: float | None, metrics: dict[str, float], **where: Any
    ) -> None:
        for metric, value in metrics.items():
            self.runs[(model, protocol, fraction, metric)].append({**where, "value": float(value)})

    def rows(self) -> list[dict]:
        out = []
        for (model, protocol, fraction, metric), runs in self.runs.items():
            values = np.array([r["value"] for r in runs])
            out.append(
                {
                    "model": model,
                    "protocol": protocol,
                    "fraction": fraction,
                    "metric": metric,
                    "mean": float(values.mean()),
                    "std": float(values.std()),
                    "values": values.tolist(),
                    "runs": runs,
                }
            )
        return out


def _margins(rows: list[dict], main: str) -> None:
    """Per main-model row: mean minus the random-weights row of its protocol, and minus the MFCC probe."""
    index = {(r["model"], r["protocol"], r["fraction"], r["metric"]): r for r in rows}
    full = max((r["fraction"] for r in rows if r["fraction"] is not None), default=None)
    for r in rows:
        if r["model"] != main:
            continue
        margins = {}
        rnd = index.get(("random", r["protocol"], r["fraction"], r["metric"]))
        if rnd is not None and main != "random":
            margins["random"] = r["mean"] - rnd["mean"]
        # Zero-shot has no training fraction: it is compared with the MFCC probe on all training data.
        fraction = r["fraction"] if r["fraction"] is not None else full
        mfcc = index.get(("mfcc", "probe-logistic", fraction, r["metric"]))
        if mfcc is not None and r["protocol"] != "retrieval":
            margins["mfcc"] = r["mean"] - mfcc["mean"]
        r["margins"] = margins


def _probe_runs(
    rows: _Rows,
    model: str,
    x: np.ndarray,
    y: np.ndarray,
    folds: list[Fold],
    classes: list[str],
    multilabel: bool,
    fractions: list[float],
    seeds: int,
    heads: tuple[str, ...],
    preds: dict | None = None,
) -> None:
    for head in heads:
        for fraction in fractions:
            for fold in folds:
                for seed in range(seeds):
                    train = fraction_subset(fold.train, y, fraction, seed=seed)
                    valid = (x[fold.valid], y[fold.valid]) if len(fold.valid) else None
                    out = fit_predict(
                        x[train], y[train], x[fold.test], len(classes), head, multilabel, seed, valid
                    )
                    rows.add(
                        model,
                        f"probe-{head}",
                        fraction,
                        score(y[fold.test], out.scores, multilabel),
                        fold=fold.name,
                        seed=seed,
                        train=int(len(train)),
                        hparams=out.hparams,
                    )
                    if preds is not None and head == "logistic" and fraction == max(fractions) and seed == 0:
                        preds.setdefault(f"{model} probe-logistic", []).append((fold.test, out.scores))


def _zeroshot_retrieval(
    rows: _Rows,
    model_name: str,
    model,
    x: np.ndarray,
    y: np.ndarray,
    folds: list[Fold],
    label_task: str,
    classes: list[str],
    multilabel: bool,
    captions: list[str],
    protocols: list[str],
    preds: dict,
) -> None:
    if "zeroshot" in protocols:
        text = encode_texts(model, prompts(label_task, classes))
        for fold in folds:
            s = class_scores(x[fold.test], text)
            rows.add(model_name, "zeroshot", None, score(y[fold.test], s, multilabel), fold=fold.name)
            preds.setdefault(f"{model_name} zeroshot", []).append((fold.test, s))
    if "retrieval" in protocols:
        for fold in folds:
            caps = [captions[i] for i in fold.test]
            queries, _ = relevance_from_captions(caps)
            metrics = text_to_audio(encode_texts(model, queries), torch.from_numpy(x[fold.test]), caps)
            rows.add(model_name, "retrieval", None, metrics, fold=fold.name, queries=len(queries))


def _finetune_runs(
    rows: _Rows,
    name: str,
    model,
    cfg: EvalConfig,
    shard_dir: Path,
    splits: list[str],
    keys: list[str],
    y: np.ndarray,
    folds: list[Fold],
    label_task: str,
    classes: list[str],
    multilabel: bool,
    fractions: list[float],
    device: torch.device,
    preds: dict,
) -> None:
    from muser.eval.finetune import finetune

    def names(i: int) -> list[str]:
        return [classes[j] for j in np.flatnonzero(y[i])] if multilabel else [classes[y[i]]]

    for fraction in fractions:
        for fold in folds:
            train = fraction_subset(fold.train, y, fraction, seed=cfg.seed)
            tuned, losses = finetune(
                model,
                shard_dir,
                splits,
                {keys[i]: names(i) for i in train},
                label_task,
                epochs=cfg.finetune_epochs,
                lr=cfg.finetune_lr,
                batch_size=cfg.batch_size,
                chunk_seconds=cfg.chunk_seconds,
                seed=cfg.seed,
                device=device,
            )
            # Test features of the tuned model are computed fresh: they belong to this fold only.
            ts = feat.chunk_average(
                shard_dir,
                splits,
                feat.model_chunk_fn(tuned, device),
                cfg.chunk_seconds,
                cfg.batch_size,
                cfg.num_workers,
                description=f"finetune {fold.name} features",
            )
            x = _align(ts, keys)
            s = class_scores(x[fold.test], encode_texts(tuned, prompts(label_task, classes)))
            rows.add(
                name,
                "finetune",
                fraction,
                score(y[fold.test], s, multilabel),
                fold=fold.name,
                seed=cfg.seed,
                train=int(len(train)),
                final_loss=losses[-1],
            )
            if fraction == max(fractions):
                preds.setdefault(f"{name} finetune", []).append((fold.test, s))
            del tuned


def _confusion(
    preds: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray, classes: list[str], multilabel: bool
):
    idx = np.concatenate([i for i, _ in preds])
    scores = np.concatenate([s for _, s in preds])
    truth = y[idx]
    if not multilabel:
        return confusion_matrix(truth, scores.argmax(1), labels=range(len(classes))), classes, classes
    # Threshold-free multi-label decision: each track predicts as many top-scored tags as it truly has.
    k = truth.sum(1)
    order = np.argsort(-scores, axis=1)
    pred = np.zeros_like(truth)
    for r in range(len(truth)):
        pred[r, order[r, : k[r]]] = 1
    cells = np.stack([((truth == t) & (pred == p)).sum(0) for t, p in ((0, 0), (0, 1), (1, 0), (1, 1))], 1)
    return cells, classes, ["TN", "FP", "FN", "TP"]


def run_eval(cfg: EvalConfig, console: Console | None = None) -> dict[str, Any]:
    """Evaluate cfg.checkpoint on cfg.task; writes OUT/results.json, confusion.png, fewshot.png.

    Returns the result dict that results.json holds.
    """
    console = console or Console(stderr=True)
    spec = task_spec(cfg.task)
    protocols = _protocols(cfg.protocol)
    fractions = sorted({float(f) for f in cfg.fractions})
    if not fractions or any(not 0.0 < f <= 1.0 for f in fractions):
        raise ValueError(f"--fractions must be numbers in (0, 1], got {cfg.fractions}")
    if cfg.seeds < 1:
        raise ValueError(f"--seeds must be at least 1, got {cfg.seeds}")
    if cfg.baseline not in (None, "mfcc"):
        raise ValueError(f"unknown --baseline {cfg.baseline!r}; the only baseline is mfcc")
    data = Path(cfg.data) if cfg.data else default_data_dir(cfg.task)
    if not data.is_dir():
        raise ValueError(f"dataset folder {data} does not exist; {spec.name} expects {spec.layout}")
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    cache = Path(cfg.cache_dir) if cfg.cache_dir else out.resolve().parent / ".muser_cache"
    device = _device(cfg.device)

    split_dir, found = split_lists(spec, data, cfg.split_dir)
    if found:
        console.print(
            f"using the GTZAN fault-filtered split lists in {split_dir} (standard split; "
            "pass --split-dir to use other lists)"
        )

    model, ckpt_fp, ckpt_desc = load_checkpoint(cfg.checkpoint, cfg.preset, cfg.seed, device)
    sample_rate = model.config.sample_rate
    shard_dir = resolve_shards(spec, data, cache / "shards", sample_rate, split_dir=split_dir)
    manifest = json.loads((shard_dir / "manifest.json").read_text())
    if int(manifest.get("sample_rate", sample_rate)) != sample_rate:
        raise ValueError(
            f"{shard_dir} holds {manifest['sample_rate']} Hz audio but the model expects {sample_rate} Hz; "
            f"re-shard with --sample-rate {sample_rate}"
        )
    label_task, classes, multilabel = vocabulary(spec, manifest, cfg.label_task)
    data_fp = feat.fingerprint_files([shard_dir / "manifest.json"])
    splits = [
        s for s in ("train", "valid", "test", "all") if manifest.get("splits", {}).get(s, {}).get("samples")
    ]

    main = "random" if cfg.checkpoint == "random" else "muser"
    ts = _model_features(model, ckpt_fp, shard_dir, splits, cfg, cache, data_fp, device, main)
    labels = targets(ts.meta, label_task, classes, multilabel)
    kept = np.flatnonzero(labels.keep)
    keys = [ts.keys[i] for i in kept]
    x, y = ts.x[kept], labels.y[kept]
    track_splits = [ts.splits[i] for i in kept]
    from muser.shards.text import render

    captions = [render(ts.meta[i]) for i in kept]
    folds = make_folds(track_splits, y, cfg.folds, cfg.seed)
    excluded = [
        {"key": ts.keys[i], "reason": f"no {label_task} label among the task's classes"}
        for i in np.flatnonzero(~labels.keep)
    ]
    if split_dir is not None:
        excluded += [
            {"key": rel, "reason": "in no fault-filtered split list"}
            for rel in left_out_by_lists(data, split_dir)
        ]
    errors_path = shard_dir / "errors.jsonl"
    if errors_path.is_file():
        for line in errors_path.read_text().splitlines():
            if line.strip():
                err = json.loads(line)
                excluded.append(
                    {
                        "key": str(err.get("id", err.get("path", "?"))),
                        "reason": str(err.get("reason", err.get("error", "unreadable"))),
                    }
                )

    rows, preds = _Rows(), {}
    if "probe" in protocols:
        _probe_runs(
            rows, main, x, y, folds, classes, multilabel, fractions, cfg.seeds, ("logistic", "mlp"), preds
        )
    _zeroshot_retrieval(
        rows, main, model, x, y, folds, label_task, classes, multilabel, captions, protocols, preds
    )
    if "finetune" in protocols:
        _finetune_runs(
            rows,
            main,
            model,
            cfg,
            shard_dir,
            splits,
            keys,
            y,
            folds,
            label_task,
            classes,
            multilabel,
            fractions,
            device,
            preds,
        )
    if main != "random" and cfg.random_baseline:
        rnd = random_model(model.config, cfg.seed).to(device)
        rnd_fp = feat.fingerprint_text(
            "random", json.dumps(to_dict(model.config), sort_keys=True), str(cfg.seed)
        )
        xr = _align(
            _model_features(rnd, rnd_fp, shard_dir, splits, cfg, cache, data_fp, device, "random"), keys
        )
        if "probe" in protocols:
            _probe_runs(
                rows, "random", xr, y, folds, classes, multilabel, fractions, cfg.seeds, ("logistic", "mlp")
            )
        _zeroshot_retrieval(
            rows, "random", rnd, xr, y, folds, label_task, classes, multilabel, captions, protocols, {}
        )
    if cfg.baseline == "mfcc":
        xm = _align(_mfcc_features(shard_dir, splits, cfg, cache, data_fp, sample_rate), keys)
        _probe_runs(rows, "mfcc", xm, y, folds, classes, multilabel, fractions, cfg.seeds, ("logistic",))

    result_rows = rows.rows()
    _margins(result_rows, main)
    result = {
        "task": spec.name,
        "label_task": label_task,
        "type": "multi" if multilabel else "single",
        "classes": classes,
        "split_scheme": folds[0].name if len(folds) == 1 else f"{len(folds)}-fold stratified",
        "checkpoint": {"path": ckpt_desc, "fingerprint": ckpt_fp},
        "data": {
            "path": str(data.resolve()),
            "shards": str(shard_dir.resolve()),
            "fingerprint": data_fp,
            "split_dir": str(split_dir.resolve()) if split_dir is not None else None,
            "split_dir_found": found,
        },
        "counts": {
            "tracks": len(keys),
            "excluded": len(excluded),
            "folds": [
                {"name": f.name, "train": len(f.train), "valid": len(f.valid), "test": len(f.test)}
                for f in folds
            ],
        },
        "excluded": excluded,
        "protocols": protocols,
        "fractions": fractions,
        "seeds": cfg.seeds,
        "config": to_dict(cfg),
        "results": result_rows,
    }
    primary = "roc_auc" if multilabel else "accuracy"
    source = next(
        (k for k in (f"{main} probe-logistic", f"{main} finetune", f"{main} zeroshot") if k in preds), None
    )
    if source is not None:
        matrix, rlab, clab = _confusion(preds[source], y, classes, multilabel)
        plot_confusion(
            matrix, rlab, clab, out / "confusion.png", f"{spec.name}: {source} ({result['split_scheme']})"
        )
    else:  # retrieval only: no class decisions to draw, but the report always has both plots
        plot_confusion(
            np.zeros((len(classes), len(classes))),
            classes,
            classes,
            out / "confusion.png",
            f"{spec.name}: no classification protocol was run",
        )
    plot_fewshot(result, out / "fewshot.png", primary)
    result["outputs"] = {
        name: str((out / name).resolve()) for name in ("results.json", "confusion.png", "fewshot.png")
    }
    write_json(result, out / "results.json")
    print_table(result, console)
    return result
