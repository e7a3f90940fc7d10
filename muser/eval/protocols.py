"""The evaluation protocols run over one candidate model: probe, zero-shot, retrieval and PT+FT fine-tuning.

Each protocol adds its per-fold (and per-seed) scores to `Rows`, which turns them into the report's rows
(mean ± std); `margins` then sets every row of the evaluated model against random weights and MFCCs.
The evaluated model's predictions are kept (`Rows.preds`) for the confusion plot.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from sklearn.metrics import confusion_matrix

from muser.config import EvalConfig
from muser.eval.metrics import score
from muser.eval.probe import fit_predict
from muser.eval.splits import Fold, fraction_subset
from muser.features import tracks as feat
from muser.features.retrieval import relevance_from_captions, text_to_audio
from muser.features.text import class_scores, encode_texts, prompts
from muser.shards.manifest import ShardFolder

PROTOCOLS = ("probe", "zeroshot", "finetune", "retrieval")


@dataclass(frozen=True)
class Prepared:
    """What every protocol and candidate shares, prepared once: the tracks, targets, folds and captions."""

    folder: ShardFolder  # the shard folder evaluated
    splits: list[str]  # its splits that were read
    keys: list[str]  # evaluated tracks (those with a label of the task), in feature order
    y: np.ndarray  # (N,) class index or (N, C) multi-hot over `classes`
    folds: list[Fold]
    label_task: str
    classes: list[str]
    multilabel: bool
    captions: list[str]  # each track's eval caption (retrieval queries)
    excluded: list[dict[str, str]]  # {key, reason} of every track left out


@dataclass(frozen=True)
class Candidate:
    """One model of the report: its name, its features over Prepared.keys, and what it is run through."""

    name: str  # muser | random | mfcc
    x: np.ndarray  # (N, D) track embeddings (zero-shot, retrieval)
    model: Any = None  # the MUSER model; None (MFCC) means no text tower: no zero-shot, retrieval, PT+FT
    heads: tuple[str, ...] | None = None  # probe heads; None = those asked for (EvalConfig.probes)
    evaluated: bool = False  # the checkpoint under evaluation (fine-tuned, its predictions plotted)
    protocols: tuple[str, ...] | None = None  # what it always runs (MFCC: the probe); None = what was asked
    probe_x: np.ndarray | None = None  # (N, D') what the probes read (EvalConfig.probe_features); None = x


@dataclass
class Rows:
    """Accumulates (model, protocol, fraction, metric) -> per-run values; `rows()` makes the report rows."""

    runs: dict[tuple, list[dict]] = field(default_factory=lambda: defaultdict(list))
    preds: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)

    def add(
        self, model: str, protocol: str, fraction: float | None, metrics: dict[str, float], **where: Any
    ) -> None:
        for metric, value in metrics.items():
            self.runs[(model, protocol, fraction, metric)].append({**where, "value": float(value)})

    def keep(self, cand: Candidate, protocol: str, test: np.ndarray, scores: np.ndarray) -> None:
        """Remember the evaluated model's test scores of one fold (for the confusion plot)."""
        if cand.evaluated:
            self.preds.setdefault(f"{cand.name} {protocol}", []).append((test, scores))

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


def run_protocols(
    rows: Rows, cand: Candidate, data: Prepared, cfg: EvalConfig, protocols: list[str], device: torch.device
) -> None:
    """Every requested protocol that applies to this candidate."""
    protocols = list(cand.protocols) if cand.protocols is not None else protocols
    fractions = sorted({float(f) for f in cfg.fractions})
    if "probe" in protocols:
        for head in cand.heads if cand.heads is not None else cfg.probes:
            _probe(rows, cand, data, head, fractions, cfg.seeds)
    if cand.model is None:
        return
    if "zeroshot" in protocols:
        text = encode_texts(cand.model, prompts(data.label_task, data.classes))
        for fold in data.folds:
            s = class_scores(cand.x[fold.test], text)
            rows.add(
                cand.name, "zeroshot", None, score(data.y[fold.test], s, data.multilabel), fold=fold.name
            )
            rows.keep(cand, "zeroshot", fold.test, s)
    if "retrieval" in protocols:
        for fold in data.folds:
            caps = [data.captions[i] for i in fold.test]
            queries, _ = relevance_from_captions(caps)
            metrics = text_to_audio(
                encode_texts(cand.model, queries), torch.from_numpy(cand.x[fold.test]), caps
            )
            rows.add(cand.name, "retrieval", None, metrics, fold=fold.name, queries=len(queries))
    if "finetune" in protocols and cand.evaluated:
        for fraction in fractions:
            for fold in data.folds:
                _finetune(rows, cand, data, cfg, fold, fraction, device)


def _probe(
    rows: Rows, cand: Candidate, data: Prepared, head: str, fractions: list[float], seeds: int
) -> None:
    x, y = cand.x if cand.probe_x is None else cand.probe_x, data.y
    for fraction in fractions:
        for fold in data.folds:
            for seed in range(seeds):
                train = fraction_subset(fold.train, y, fraction, seed=seed)
                valid = (x[fold.valid], y[fold.valid]) if len(fold.valid) else None
                out = fit_predict(
                    x[train], y[train], x[fold.test], len(data.classes), head, data.multilabel, seed, valid
                )
                metrics = score(y[fold.test], out.scores, data.multilabel)
                where = {"fold": fold.name, "seed": seed, "train": int(len(train)), "hparams": out.hparams}
                rows.add(cand.name, f"probe-{head}", fraction, metrics, **where)
                if head == "logistic" and fraction == fractions[-1] and seed == 0:
                    rows.keep(cand, "probe-logistic", fold.test, out.scores)


def _finetune(
    rows: Rows,
    cand: Candidate,
    data: Prepared,
    cfg: EvalConfig,
    fold: Fold,
    fraction: float,
    device: torch.device,
) -> None:
    """PT+FT on this fold's training tracks, then prompt classification of its test tracks."""
    from muser.eval.finetune import finetune

    def names(i: int) -> list[str]:
        return (
            [data.classes[j] for j in np.flatnonzero(data.y[i])]
            if data.multilabel
            else [data.classes[data.y[i]]]
        )

    train = fraction_subset(fold.train, data.y, fraction, seed=cfg.seed)
    tuned, losses = finetune(
        cand.model,
        data.folder,
        data.splits,
        {data.keys[i]: names(i) for i in train},
        data.label_task,
        epochs=cfg.finetune_epochs,
        lr=cfg.finetune_lr,
        batch_size=cfg.batch_size,
        chunk_seconds=cfg.chunk_seconds,
        seed=cfg.seed,
        device=device,
    )
    # Test features of the tuned model are computed fresh: they belong to this fold only.
    ts = feat.chunk_average(
        data.folder,
        data.splits,
        feat.model_chunk_fn(tuned, device),
        cfg.chunk_seconds,
        cfg.batch_size,
        cfg.num_workers,
        description=f"finetune {fold.name} features",
    )
    x = feat.align(ts, data.keys)
    s = class_scores(x[fold.test], encode_texts(tuned, prompts(data.label_task, data.classes)))
    where = {"fold": fold.name, "seed": cfg.seed, "train": int(len(train)), "final_loss": losses[-1]}
    rows.add(cand.name, "finetune", fraction, score(data.y[fold.test], s, data.multilabel), **where)
    if fraction == max(cfg.fractions):
        rows.keep(cand, "finetune", fold.test, s)


def margins(rows: list[dict], main: str) -> None:
    """Per row of the evaluated model: its mean minus the random-weights row of its protocol, and minus
    the MFCC probe."""
    index = {(r["model"], r["protocol"], r["fraction"], r["metric"]): r for r in rows}
    full = max((r["fraction"] for r in rows if r["fraction"] is not None), default=None)
    for r in rows:
        if r["model"] != main:
            continue
        out = {}
        rnd = index.get(("random", r["protocol"], r["fraction"], r["metric"]))
        if rnd is not None and main != "random":
            out["random"] = r["mean"] - rnd["mean"]
        # Zero-shot has no training fraction: it is compared with the MFCC probe on all training data.
        fraction = r["fraction"] if r["fraction"] is not None else full
        mfcc = index.get(("mfcc", "probe-logistic", fraction, r["metric"]))
        if mfcc is not None and r["protocol"] != "retrieval":
            out["mfcc"] = r["mean"] - mfcc["mean"]
        r["margins"] = out


def confusion(
    preds: list[tuple[np.ndarray, np.ndarray]], y: np.ndarray, classes: list[str], multilabel: bool
) -> tuple[np.ndarray, list[str], list[str]]:
    """(matrix, row labels, column labels) of pooled fold predictions; per-tag TN/FP/FN/TP for multi-label."""
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
