"""A small synthetic catalogue shared by the catalogue tests: an FMA-layout corpus (titles, artists, years,
genres, tags) in several shards, a model contrastively trained on it for a few dozen steps, and the
catalogue `muser embed` builds from the two."""

from __future__ import annotations

from pathlib import Path

import pytest

from muser.config import EmbedConfig
from tests.pretraining import pretrain_briefly

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
    """A model/ folder trained for a few dozen contrastive steps on every track (seconds on CPU)."""
    return pretrain_briefly(shards, tmp_path_factory.mktemp("catalogue-run") / "model")


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
