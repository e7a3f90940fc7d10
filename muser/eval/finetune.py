"""MUSER's PT+FT protocol: continue contrastive training of a copy of the model on label sentences of the
training tracks, then classify every test track by prompt similarity (as in zero-shot).

The training pairs are (chunk of a training track, label sentence of that track); caption ids are the
hash of the sentence, so chunks that share a label are positives of each other rather than negatives
(the duplicate-aware objective of pretraining). Multi-label tracks draw one of their tags per chunk and
epoch, which matches the single-tag prompts used to classify.
"""

from __future__ import annotations

import copy
import random
from pathlib import Path

import torch

from muser.config import EvalConfig
from muser.features.tracks import eval_batches
from muser.shards.manifest import ShardFolder
from muser.shards.text import caption_id, label_prompt


def _chunks(folder: ShardFolder, splits: list[str], keys: set[str], chunk_seconds: float, batch_size: int):
    """(audio (T,), valid samples, key) for every chunk of the wanted tracks, in reader order.

    The reader pads each of its batches only to that batch's longest chunk, so chunks from different
    batches differ in width: each is yielded as its batch's row and re-padded per training step (`_stack`).
    """
    for _, batch in eval_batches(folder, splits, chunk_seconds, batch_size):
        for i, key in enumerate(batch["key"]):
            if key in keys:
                yield batch["audio"][i], int(batch["length"][i]), key


def _stack(items: list[tuple[torch.Tensor, int, str]]) -> torch.Tensor:
    """(B, T) zero-padded to the widest row among items (rows keep the reader's minimum width)."""
    out = torch.zeros(len(items), max(a.shape[0] for a, _, _ in items), dtype=items[0][0].dtype)
    for row, (a, n, _) in enumerate(items):
        out[row, :n] = a[:n]
    return out


def finetune(
    model: torch.nn.Module,
    folder: ShardFolder | str | Path,
    splits: list[str],
    labels: dict[str, list[str]],
    label_task: str,
    epochs: int = EvalConfig.finetune_epochs,
    lr: float = EvalConfig.finetune_lr,
    batch_size: int = EvalConfig.batch_size,
    chunk_seconds: float = EvalConfig.chunk_seconds,
    seed: int = EvalConfig.seed,
    device: torch.device | str = "cpu",
) -> tuple[torch.nn.Module, list[float]]:
    """A fine-tuned copy of `model` and its per-step losses; the original model is left untouched.

    labels: track key -> its labels (one for single-label tasks) for the training tracks only.
    """
    from muser.losses import TriModalLoss

    folder = folder if isinstance(folder, ShardFolder) else ShardFolder.open(folder)

    if not labels:
        raise ValueError("fine-tuning needs at least one labelled training track")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    tuned = copy.deepcopy(model).to(device).train()
    loss_fn = TriModalLoss(terms=("at", "st")).to(device)
    params = [p for p in tuned.parameters() if p.requires_grad] + list(loss_fn.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    # A shuffle buffer of a few batches mixes tracks without holding the whole training audio in memory.
    buffer_size = 8 * batch_size
    losses: list[float] = []

    def step(items: list[tuple[torch.Tensor, int, str]]) -> None:
        texts = [label_prompt(label_task, rng.choice(labels[key])) for _, _, key in items]
        enc = tuned.tokenize(texts)
        batch = {
            "audio": _stack(items).to(device),
            "length": torch.tensor([n for _, n, _ in items], dtype=torch.int64),  # padding is pooled out
            "input_ids": enc["input_ids"].to(device),
            "attention_mask": enc["attention_mask"].to(device),
        }
        ids = torch.tensor([caption_id(t) for t in texts], dtype=torch.int64, device=device)
        total, _ = loss_fn(tuned(batch), ids)
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        loss_fn.clamp_()
        losses.append(float(total.detach()))

    keys = set(labels)
    for _ in range(epochs):
        buffer: list[tuple[torch.Tensor, int, str]] = []
        for item in _chunks(folder, splits, keys, chunk_seconds, batch_size):
            buffer.append(item)
            if len(buffer) >= buffer_size:
                rng.shuffle(buffer)
                step(buffer[:batch_size])
                buffer = buffer[batch_size:]
        rng.shuffle(buffer)
        # The tail: full batches, then a last one only if it has at least two pairs (a loss needs negatives).
        while len(buffer) >= 2:
            step(buffer[:batch_size])
            buffer = buffer[batch_size:]
    if not losses:
        raise ValueError("fine-tuning found fewer than two training chunks")
    return tuned.eval(), losses
