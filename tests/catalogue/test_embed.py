"""`muser embed`: deterministic output, the eval features, resuming after kill -9, refusing another
checkpoint, appending sources, unique keys, unreadable tracks, readers other than ours."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from muser.catalogue.embed import embed
from muser.catalogue.parts import part_info, vectors_of
from tests.catalogue.conftest import embed_config

REPO = Path(__file__).resolve().parents[2]


def _table(emb: Path) -> pa.Table:
    return pq.read_table(emb / "embeddings.parquet")


def _shard_count(shards: Path) -> int:
    from muser.shards.manifest import ShardFolder

    return len(ShardFolder.open(shards).shards())


def test_two_runs_write_identical_bytes(catalogue_dir, shards, pretrained, tmp_path):
    summary = embed(embed_config(shards, tmp_path / "again", pretrained))
    assert summary["embedded_shards"] == _shard_count(shards) > 1 and summary["reused_shards"] == 0
    for name in ("embeddings.parquet", "index.faiss"):
        assert (tmp_path / "again" / name).read_bytes() == (catalogue_dir / name).read_bytes(), name


def test_rows_are_the_eval_features_normalised(catalogue_dir, shards, pretrained):
    """The catalogue vectors are muser eval's chunk-averaged features (same chunks, same pooling)."""
    from muser.features import tracks as feat
    from muser.models.load import load_model

    model, _, _ = load_model(str(pretrained), "tiny", 0, torch.device("cpu"))
    ts = feat.chunk_average(shards, ["test"], feat.model_chunk_fn(model, model.device), 3.0, 8)
    expected = ts.x / np.linalg.norm(ts.x, axis=1, keepdims=True)
    table = _table(catalogue_dir)
    keys = table.column("key").to_pylist()
    got = vectors_of(table, "audio_embedding")[[keys.index(k) for k in ts.keys]]
    np.testing.assert_allclose(got, expected, atol=2e-6)
    # and the caption vectors are the model's text embeddings of the eval captions
    from muser.shards.text import render

    row = keys.index(ts.keys[0])
    assert table.column("caption")[row].as_py() == render(ts.meta[0])
    text = model.encode_text([render(ts.meta[0])]).detach().numpy()[0]
    np.testing.assert_allclose(vectors_of(table, "text_embedding")[row], text, atol=2e-6)


def test_parquet_is_readable_by_pandas_and_duckdb(catalogue_dir):
    table = _table(catalogue_dir)
    info = json.loads((catalogue_dir / "catalogue.json").read_text())
    dim = info["dimension"]
    assert table.schema.field("audio_embedding").type == pa.list_(pa.float32(), dim)
    assert table.num_rows == info["counts"]["tracks"] == 36 and info["complete"]
    assert {"format_version", "checkpoint", "model", "tower", "chunk_seconds", "counts"} <= set(info)
    assert info["tower"] == info["model"]["audio_embedding"] and info["chunk_seconds"] == 3.0
    norms = np.linalg.norm(vectors_of(table, "audio_embedding"), axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-5)

    frame = pd_read(catalogue_dir / "embeddings.parquet")
    assert len(frame) == 36 and len(frame["audio_embedding"].iloc[0]) == dim
    assert frame["member"].str.endswith(".flac").all() and frame["year"].notna().all()

    duckdb = pytest.importorskip("duckdb")
    path = str(catalogue_dir / "embeddings.parquet")
    genres = duckdb.sql(f"SELECT count(DISTINCT genres[1]) FROM '{path}'").fetchall()[0][0]
    assert genres == 6
    best = duckdb.sql(
        f"SELECT b.key, list_inner_product(a.audio_embedding, b.audio_embedding) AS s FROM '{path}' a, "
        f"'{path}' b WHERE a.key = '{frame['key'].iloc[0]}' ORDER BY s DESC LIMIT 1"
    ).fetchall()[0]
    assert best[0] == frame["key"].iloc[0] and best[1] == pytest.approx(1.0, abs=1e-5)


def pd_read(path: Path):
    import pandas as pd

    return pd.read_parquet(path)


def test_resume_after_kill_9_redoes_no_finished_shard(catalogue_dir, shards, pretrained, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "muser.cli", "embed", str(shards), "--checkpoint", str(pretrained)]
    cmd += ["-o", str(out), "--workers", "0", "--batch-size", "8", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 300
        while not list(out.glob("parts/*/*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)  # right after the first shard's part was committed
    finally:
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"the run ended before it could be killed: {err.decode()}"
    done = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in out.glob("parts/*/*.parquet")}
    n = _shard_count(shards)
    assert 1 <= len(done) < n and all(part_info(p) is not None for p in done)  # whole parts only
    assert not (out / "embeddings.parquet").exists()

    summary = embed(embed_config(shards, out, pretrained))
    assert summary["reused_shards"] == len(done) and summary["embedded_shards"] == n - len(done)
    assert all((p.stat().st_ino, p.stat().st_mtime_ns) == before for p, before in done.items())
    assert not list(out.glob("parts/*/.*.tmp"))
    # Each shard's forwards depend on the shard alone, so a resumed catalogue is the uninterrupted one.
    _assert_same_bytes(out, catalogue_dir)


def _assert_same_bytes(got: Path, reference: Path) -> None:
    for name in ("embeddings.parquet", "index.faiss"):
        assert (got / name).read_bytes() == (reference / name).read_bytes(), name


def test_reader_workers_change_no_byte(catalogue_dir, shards, pretrained, tmp_path):
    """Two reader processes deliver the shards' chunks interleaved; the catalogue is the same bytes."""
    embed(embed_config(shards, tmp_path / "emb", pretrained, num_workers=2, batch_size=5))
    embed(embed_config(shards, tmp_path / "emb5", pretrained, batch_size=5))
    _assert_same_bytes(tmp_path / "emb", tmp_path / "emb5")


def test_each_part_is_committed_as_soon_as_its_shard_is_embedded(shards, pretrained, tmp_path, monkeypatch):
    """Not at the end of the pass: a shard's audio is let go as soon as its part is written."""
    import muser.catalogue.embed as emb

    forwards, commits = [], []
    forward, commit = emb._forward, emb._commit
    monkeypatch.setattr(emb, "_forward", lambda *a: forwards.append(1) or forward(*a))
    monkeypatch.setattr(emb, "_commit", lambda *a: commits.append(len(forwards)) or commit(*a))
    embed(embed_config(shards, tmp_path / "emb", pretrained))
    assert len(commits) == _shard_count(shards) and commits == sorted(set(commits))
    assert commits[0] < len(forwards)  # the first part came before the last shard's forwards


def test_another_checkpoint_or_setting_is_refused(catalogue_dir, shards, pretrained, tmp_path):
    emb = tmp_path / "emb"
    shutil.copytree(catalogue_dir, emb)
    with pytest.raises(ValueError, match="another checkpoint.*--overwrite"):
        embed(embed_config(shards, emb, "random"))
    with pytest.raises(ValueError, match="chunk_seconds=3.0.*2.0.*--overwrite"):
        embed(embed_config(shards, emb, pretrained, chunk_seconds=2.0))
    assert (emb / "embeddings.parquet").read_bytes() == (catalogue_dir / "embeddings.parquet").read_bytes()
    # --overwrite starts over with the new checkpoint and settings
    summary = embed(embed_config(shards, emb, "random", overwrite=True, tower="waveform", index="hnsw"))
    info = summary["catalogue"]
    assert summary["reused_shards"] == 0 and info["tower"] == "waveform" and info["index"]["kind"] == "hnsw"
    assert info["checkpoint"]["path"] == "random:tiny"


def test_a_second_source_is_appended_and_a_raw_folder_is_sharded(catalogue_dir, shards, pretrained, tmp_path):
    from muser.synth import make_corpus

    raw = make_corpus(tmp_path / "gtzan", layout="gtzan", n_per_class=1, seconds=3.0, seed=3)
    emb = tmp_path / "emb"
    shutil.copytree(catalogue_dir, emb)
    summary = embed(embed_config(raw, emb, pretrained, cache_dir=str(tmp_path / "cache")))
    info = summary["catalogue"]
    assert info["counts"]["tracks"] == 36 + 6 and info["counts"]["sources"] == 2
    assert summary["embedded_shards"] == 1 and (tmp_path / "cache" / "shards").is_dir()
    keys = _table(emb).column("key").to_pylist()
    assert keys[:36] == _table(catalogue_dir).column("key").to_pylist()  # old rows first, unchanged order
    # GTZAN has no titles: a row shows its file's name (genres/blues/blues.00000.wav -> blues.00000)
    titles = _table(emb).column("title").to_pylist()[36:]
    assert sorted(titles) == sorted(p.stem for p in (raw / "genres").glob("*/*.*")), titles
    # the same command again embeds nothing and writes the same bytes
    before = (emb / "embeddings.parquet").read_bytes()
    again = embed(embed_config(raw, emb, pretrained, cache_dir=str(tmp_path / "cache")))
    assert again["embedded_shards"] == 0 and (emb / "embeddings.parquet").read_bytes() == before


def test_colliding_keys_are_refused(catalogue_dir, shards, pretrained, tmp_path):
    twin = tmp_path / "twin"
    shutil.copytree(shards, twin)
    with pytest.raises(ValueError, match="keys must be unique"):
        embed(embed_config([shards, twin], tmp_path / "emb", pretrained))
    emb = tmp_path / "old"
    shutil.copytree(catalogue_dir, emb)
    with pytest.raises(ValueError, match="is in both"):  # against a source embedded by an earlier run
        embed(embed_config(twin, emb, pretrained))


def _corrupt_member(shard: Path, key: str) -> None:
    """Overwrite the FLAC bytes of one member in place (the tar stays valid, the audio does not)."""
    with tarfile.open(shard) as tar:
        member = tar.getmember(f"{key}.flac")
    with open(shard, "r+b") as f:
        f.seek(member.offset_data)
        f.write(b"\x00" * member.size)


def test_an_unreadable_track_is_listed_and_the_rest_embedded(catalogue_dir, shards, pretrained, tmp_path):
    from muser.shards.manifest import ShardFolder

    broken = tmp_path / "broken"
    shutil.copytree(shards, broken)
    folder = ShardFolder.open(broken)
    entry = folder.shards("train")[0]
    bad = entry["keys"][2]
    _corrupt_member(broken / entry["name"], bad)
    info = embed(embed_config(broken, tmp_path / "emb", pretrained))["catalogue"]
    assert info["counts"]["tracks"] == 35 and info["counts"]["unreadable"] == 1
    assert info["unreadable"] == [{"key": bad, "shard": entry["name"]}]
    keys = _table(tmp_path / "emb").column("key").to_pylist()
    assert bad not in keys and len(set(keys)) == 35


def test_bad_options_are_one_sentence(shards, pretrained, tmp_path):
    with pytest.raises(ValueError, match="--tower"):
        embed(embed_config(shards, tmp_path / "a", pretrained, tower="ears"))
    with pytest.raises(ValueError, match="--index"):
        embed(embed_config(shards, tmp_path / "a", pretrained, index="ivf"))
    with pytest.raises(ValueError, match="--index-key"):
        embed(embed_config(shards, tmp_path / "a", pretrained, index_key="IVF16,Nonsense"))
    with pytest.raises(ValueError, match="memory size"):
        embed(embed_config(shards, tmp_path / "a", pretrained, index_memory="lots"))
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a catalogue's"):
        embed(embed_config(shards, tmp_path / "mine", pretrained, overwrite=True))
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="is not a folder"):
        embed(embed_config(tmp_path / "missing", tmp_path / "b", pretrained))


@pytest.mark.slow
@pytest.mark.distributed
def test_two_processes_under_torchrun_embed_every_track_once(catalogue_dir, shards, pretrained, tmp_path):
    summary = embed(embed_config(shards, tmp_path / "emb", pretrained, procs=2))
    assert summary["processes"] == 2 and summary["embedded_shards"] == _shard_count(shards)
    assert not (tmp_path / "emb" / ".launch.json").exists()
    # torchrun gives each worker OMP_NUM_THREADS=1; on the CPU every forward runs in fixed 16-row parts at
    # one intra-op thread whatever the thread count (feat.row_parallel), so the vectors are the same bits.
    got, reference = _table(tmp_path / "emb"), _table(catalogue_dir)
    assert got.column("key").to_pylist() == reference.column("key").to_pylist()
    assert np.array_equal(vectors_of(got, "audio_embedding"), vectors_of(reference, "audio_embedding"))


@pytest.mark.slow
@pytest.mark.distributed
def test_two_nodes_under_torchrun_embed_every_track_once(catalogue_dir, shards, pretrained, tmp_path):
    """Two `muser embed --nnodes 2` commands on this machine stand for two machines sharing EMB."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "emb"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    base = [sys.executable, "-m", "muser.cli", "embed", str(shards), "--checkpoint", str(pretrained)]
    base += ["-o", str(out), "--procs", "1", "--workers", "0", "--batch-size", "8", "--quiet"]
    base += ["--nnodes", "2", "--master-addr", "127.0.0.1", "--master-port", str(port)]
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    nodes = [subprocess.Popen([*base, "--node-rank", str(r)], env=env, **pipes) for r in (0, 1)]
    outputs = [p.communicate(timeout=600) for p in nodes]
    for p, (_, err) in zip(nodes, outputs, strict=True):
        assert p.returncode == 0, err.decode()[-2000:]
    summary = json.loads(outputs[0][0].decode().strip().splitlines()[-1])
    assert summary["processes"] == 2 and summary["embedded_shards"] == _shard_count(shards)
    assert json.loads(outputs[1][0].decode().strip().splitlines()[-1])["assembled_by"] == "node 0"
    got, reference = _table(out), _table(catalogue_dir)
    assert got.column("key").to_pylist() == reference.column("key").to_pylist()
    assert np.array_equal(vectors_of(got, "audio_embedding"), vectors_of(reference, "audio_embedding"))
