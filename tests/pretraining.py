"""A brief contrastive pretraining of the tiny model on synthetic shards, for tests that need a model
which has learnt something (eval protocols, catalogue search) without running the trainer."""

from __future__ import annotations

from pathlib import Path

import torch

# 60 contrastive steps separate a trained model from random weights by a wide margin on the synthetic
# corpora (zero-shot 0.8-1.0 vs 1/6, retrieval mAP 0.95-1.0 vs 0.27 over seeds); 30 are not reliably enough.
PRETRAIN_STEPS = 60


def pretrain_briefly(shards: Path, out: Path, split: str | None = None, steps: int = PRETRAIN_STEPS) -> Path:
    """Train MUSER's tiny preset for `steps` steps on `split` of the shard folder and save it to out (a
    model/ folder, loadable with from_pretrained). Seconds on CPU; deterministic (seed 0)."""
    from muser.losses import TriModalLoss
    from muser.models.muser import MUSER
    from muser.models.tokenizer import music_vocabulary
    from muser.shards.reader import make_loader
    from muser.synth import STYLES

    torch.manual_seed(0)
    # The vocabulary is passed in, as the trainer does with the corpus' own sentences: the style names
    # become whole tokens.
    model = MUSER.from_preset("tiny", tokenizer_texts=music_vocabulary(STYLES))
    loss_fn = TriModalLoss()
    opt = torch.optim.AdamW(list(model.parameters()) + list(loss_fn.parameters()), lr=2e-3)
    loader = make_loader(
        str(shards),
        split=split,
        mode="train",
        batch_size=12,
        crop_seconds=2.0,
        num_workers=0,
        steps=steps,
        tokenize=model.tokenize,
        field_dropout=0.0,
    )
    model.train()
    # One intra-op thread: the tiny model's ops gain little from a second one, and on a busy shared CI
    # machine two spinning threads per step made this over ten times slower (9 s -> 140 s).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for batch in loader:
            emb = model({k: batch[k] for k in ("audio", "input_ids", "attention_mask")})
            total, _ = loss_fn(emb, batch["caption_id"])
            opt.zero_grad()
            total.backward()
            opt.step()
            loss_fn.clamp_()
    finally:
        torch.set_num_threads(threads)
    model.eval().save_pretrained(out)
    return out
