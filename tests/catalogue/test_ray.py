"""`muser embed --ray`: each shard a Ray task on a local cluster; the catalogue is the plain run's, byte
for byte, also when a worker is killed mid-run (its shard is retried), and a rerun resumes."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from muser.catalogue.embed import embed
from tests.catalogue.conftest import embed_config


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _kill_first_task(name: str, stop: threading.Event, killed: list[int]) -> None:
    """SIGKILL the first process that runs a task `name` (Ray titles it ray::NAME), once."""
    while not stop.is_set() and not killed:
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(f"ray::{name}".encode()):
                os.kill(int(pid), signal.SIGKILL)
                killed.append(int(pid))
                return
        time.sleep(0.02)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the task's process in /proc")
def test_ray_embed_is_the_plain_catalogue_after_a_killed_worker(
    ray_cluster, catalogue_dir, shards, pretrained, tmp_path
):
    out = tmp_path / "emb"
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_task, args=("embed_unit", stop, killed))
    killer.start()
    try:
        summary = embed(embed_config(shards, out, pretrained, ray="auto"))
    finally:
        stop.set()
        killer.join()
    assert killed, "no embed task was seen running, so none could be killed"
    assert summary["embedded_shards"] == summary["catalogue"]["counts"]["shards"] > 1
    for name in ("embeddings.parquet", "index.faiss"):
        assert (out / name).read_bytes() == (catalogue_dir / name).read_bytes(), name
    again = embed(embed_config(shards, out, pretrained, ray="auto"))
    assert again["embedded_shards"] == 0 and again["reused_shards"] == summary["embedded_shards"]


def test_ray_missing_is_one_sentence(shards, pretrained, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now fails, as where it is not installed
    with pytest.raises(ValueError, match=r"pip install 'muser\[ray\]'"):
        embed(embed_config(shards, tmp_path / "emb", pretrained, ray="auto"))
    assert not (tmp_path / "emb").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the task's process in /proc")
def test_ray_shard_writes_the_plain_shards_after_a_killed_worker(
    ray_cluster, corpus, shards, tmp_path, monkeypatch
):
    import json

    from muser import cluster
    from muser.config import ShardConfig
    from muser.shards.writer import write_shards

    monkeypatch.setattr(cluster, "BLOCK", 4)  # several units, so one is running when the killer looks
    dst = tmp_path / "fma"
    cfg = ShardConfig(src=str(corpus / "fma_small"), dst=str(dst), source="fma", workers=1, max_count=6)
    cfg.ray = "auto"
    stop, killed = threading.Event(), []
    killer = threading.Thread(target=_kill_first_task, args=("_encode_block", stop, killed))
    killer.start()
    try:
        summary = write_shards(cfg, progress=False)
    finally:
        stop.set()
        killer.join()
    assert killed, "no shard task was seen running, so none could be killed"
    assert summary["errors"] == 0
    plain = json.loads((shards / "manifest.json").read_text())
    got = json.loads((dst / "manifest.json").read_text())
    assert got["splits"] == plain["splits"]  # the same shards: names, keys, counts, sha256s
    for tar in sorted(shards.glob("*.tar")):
        assert (dst / tar.name).read_bytes() == tar.read_bytes(), tar.name
    again = write_shards(cfg, progress=False)  # resumes: every track is already in a shard
    assert again["resumed"] == again["tracks"]
