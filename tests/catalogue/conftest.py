"""A small synthetic catalogue shared by the catalogue tests: an FMA-layout corpus (titles, artists, years,
genres, tags) in several shards, a model contrastively trained on it for a few dozen steps, and the
catalogue `muser embed` builds from the two."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from muser.catalogue.config import EmbedConfig

# 60 steps align text and audio on this corpus well beyond chance (as in tests/eval/test_run_eval.py).
PRETRAIN_STEPS = 60
N_PER_STYLE = 6  # 6 styles: 36 tracks of 4 s, six to a shard


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from muser.synth import make_corpus

    root = tmp_path_factory.mktemp("catalogue-corpus")
    return make_corpus(root / "fma", layout="fma", n_per_class=N_PER_STYLE, seconds=4.0, seed=1)


@pytest.fixture(scope="session")
def shards(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from muser.config import ShardConfig
    from muser.shards.writer import write_shards

    dst = tmp_path_factory.mktemp("catalogue-shards") / "fma"
    cfg = ShardConfig(src=str(corpus / "fma_small"), dst=str(dst), source="fma", workers=1, max_count=6)
    write_shards(cfg, progress=False)
    return dst


@pytest.fixture(scope="session")
def pretrained(shards: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model/ folder trained for PRETRAIN_STEPS contrastive steps on every track (seconds on CPU)."""
    from muser.losses import TriModalLoss
    from muser.models.muser import MUSER
    from muser.models.tokenizer import music_vocabulary
    from muser.shards.reader import make_loader
    from muser.synth import STYLES

    torch.manual_seed(0)
    model = MUSER.from_preset("tiny", tokenizer_texts=music_vocabulary(STYLES))
    loss_fn = TriModalLoss()
    opt = torch.optim.AdamW(list(model.parameters()) + list(loss_fn.parameters()), lr=2e-3)
    loader = make_loader(
        [str(shards)],
        split=None,
        mode="train",
        batch_size=12,
        crop_seconds=2.0,
        num_workers=0,
        steps=PRETRAIN_STEPS,
        tokenizer=model.tokenizer,
        field_dropout=0.0,
    )
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model gains nothing from a second thread on a busy 2-core machine
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
    out = tmp_path_factory.mktemp("catalogue-run") / "model"
    model.eval().save_pretrained(out)
    return out


def embed_config(
    shards: Path | list[Path], output: Path, checkpoint: Path | str, **options: object
) -> EmbedConfig:
    """A quiet in-process embed of the test shards (no reader workers: the tests stay in one process)."""
    sources = [str(s) for s in (shards if isinstance(shards, list) else [shards])]
    base = {"num_workers": 0, "progress": False, "batch_size": 8}
    return EmbedConfig(sources=sources, output=str(output), checkpoint=str(checkpoint), **{**base, **options})


@pytest.fixture(scope="session")
def catalogue_dir(shards: Path, pretrained: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from muser.catalogue.embed import embed

    out = tmp_path_factory.mktemp("catalogue") / "emb"
    embed(embed_config(shards, out, pretrained))
    return out
