"""The catalogue: `muser embed` throughput on CPU against the per-file loop a user would otherwise write,
and search latency, memory and HNSW recall@10 for 10k / 100k / 1M random unit vectors at D = 128 and 512.

Embedding: a corpus of 30-s clips sharded as FLAC, the tiny preset with random weights (throughput does
not depend on the weights), through `embed` (reader, chunking, pooling, captions, parts, Parquet and index
included, no reader workers) against the loop a user would otherwise write (soundfile, torchaudio
resample, one forward per whole track: no chunk averaging, no resume, no index), alternating in one
process; target >= 1.5x the loop's tracks/s with vectors within 1e-5 of the model's eval features. The row
also says how long embed waited for the reader and how long it spent in the model.

Search: the catalogue's own search path (muser.catalogue.index.search: one query at a time, k = 10), exact
inner product vs HNSW (M 32, efConstruction 80, efSearch 128), with HNSW's recall@10 against the exact
answer over held-out random queries, and a filtered search keeping 10% of the rows. Random vectors in
high dimension have no neighbourhood structure, the hardest case for HNSW's recall. Memory is the growth
of this process's resident set while the index is built (the vectors themselves excluded).

Writes benchmarks/results/catalogue.json (merged: `MUSER_BENCH_SIZES=10k,100k` runs a subset and keeps
the rest of the file).
"""

from __future__ import annotations

import os
import time

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
import torchaudio.functional as AF

from benchmarks.common import (
    ONE_CORE,
    alternate,
    entry,
    quiet,
    record,
    sized,
    speedup,
    still_quiet,
    timings,
)

RATE = 16000
SIZES = {"10k": 10_000, "100k": 100_000, "1M": 1_000_000}
QUERIES = 200


def _rss() -> int:
    """Resident set size of this process in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_embed_throughput(tmp_path):
    """`muser embed` (reader, chunking, pooling, captions, parts, Parquet, index, and the model built
    from --checkpoint random each call) against the naive loop on the same tracks and model, alternating
    in this process; the catalogue vectors must stay the model's eval features (within 1e-5)."""
    from muser.catalogue.embed import embed
    from muser.catalogue.parts import vectors_of
    from muser.config import EmbedConfig, ShardConfig
    from muser.features import tracks as feat
    from muser.models.load import load_model
    from muser.shards.writer import write_shards
    from muser.synth import make_corpus

    per_class = sized(4, 1)  # x 6 classes of 30-s tracks
    src = make_corpus(tmp_path / "gtzan", layout="gtzan", n_per_class=per_class, seconds=30.0, seed=0)
    shards = tmp_path / "shards"
    write_shards(ShardConfig(src=str(src), dst=str(shards), workers=2, max_count=6), progress=False)
    files = sorted(p for p in src.rglob("*") if p.suffix in (".wav", ".au"))
    hours = sum(sf.info(p).duration for p in files) / 3600
    model, _, _ = load_model("random", "tiny", 0, torch.device("cpu"))
    model.eval()
    summaries: list[dict] = []

    def run_embed() -> None:
        # No reader workers: on a 2-core CPU they would only compete with the model for the cores.
        cfg = EmbedConfig([str(shards)], str(tmp_path / "emb"), "random", num_workers=0, overwrite=True)
        cfg.progress, cfg.gpus = False, 0
        summaries.append(embed(cfg))

    def run_naive() -> None:
        with torch.no_grad():
            for path in files:
                x, rate = sf.read(path, dtype="float32", always_2d=True)
                wave = AF.resample(torch.from_numpy(x.mean(axis=1)), rate, RATE)
                model.encode_audio(wave.clamp(-1, 1)[None])

    with entry("catalogue", "embed_cpu") as row:
        row.update({"tracks": len(files), "audio_hours": round(hours, 4), "preset": "tiny", "workers": 0})
        quiet(row, ONE_CORE)
        t = alternate({"embed": run_embed, "naive": run_naive}, repeats=sized(3, 1))
        still_quiet(row, ONE_CORE)
        row["timing"] = timings(t)
        row["tracks_per_s"] = {k: round(len(files) / v.median, 3) for k, v in t.items()}
        last = summaries[-1]
        # Where embed's time went (last run): waiting for the reader, in the model, and the rest.
        row["embed_breakdown_s"] = {k: last[k] for k in ("embed_s", "data_wait_s", "model_s", "elapsed_s")}
        ts = feat.chunk_average(shards, ["all"], feat.model_chunk_fn(model, model.device), 3.0, 32)
        table = pq.read_table(tmp_path / "emb" / "embeddings.parquet")
        keys = table.column("key").to_pylist()
        got = vectors_of(table, "audio_embedding")[[keys.index(k) for k in ts.keys]]
        want = ts.x / np.linalg.norm(ts.x, axis=1, keepdims=True)
        row["max_abs_diff_vs_model_features"] = float(np.abs(got - want).max())
        row.target(
            "catalogue vectors vs the model's eval features", float(np.abs(got - want).max()), at_most=1e-5
        )
        row.target(
            "embed vs naive loop (tracks/s, median)", speedup(t, "embed", "naive")["median"], at_least=1.5
        )
        print(dict(row))


def _unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    """(n, d) float32 random unit vectors, made in blocks so no float64 copy of the whole matrix exists."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - i), d), dtype=np.float32)
        out[i : i + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _latency(index, queries: np.ndarray, mask: np.ndarray | None = None, ef: int | None = None) -> tuple:
    from muser.catalogue import index as index_mod

    ef = ef or index_mod.HNSW_EF_SEARCH
    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        _, rows = index_mod.search(index, q, 10, mask, ef_search=ef)
        times.append(time.perf_counter() - start)
        found.append(np.pad(rows, (0, 10 - len(rows)), constant_values=-1))
    ms = np.array(times) * 1000
    stats = {"median_ms": round(float(np.median(ms)), 3), "p95_ms": round(float(np.percentile(ms, 95)), 3)}
    return stats, np.array(found)


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return round(float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact, strict=True)])), 4)


def _sizes() -> list[str]:
    chosen = os.environ.get("MUSER_BENCH_SIZES")
    return [s.strip() for s in chosen.split(",")] if chosen else list(SIZES)


@pytest.mark.parametrize("dim", [128, 512])
@pytest.mark.parametrize("size", list(SIZES))
def test_search_latency_memory_recall(size, dim):
    import faiss

    from muser.catalogue import index as index_mod

    if size not in _sizes():
        pytest.skip(f"{size} not in MUSER_BENCH_SIZES")
    started = time.perf_counter()
    n = SIZES[size]
    x = _unit_rows(n, dim, seed=0)
    queries = _unit_rows(QUERIES, dim, seed=1)
    mask = np.random.default_rng(2).random(n) < 0.1  # a filter that keeps 10% of the catalogue
    row: dict = {
        "n": n,
        "dim": dim,
        "vectors_bytes": int(x.nbytes),
        "faiss_threads": faiss.omp_get_max_threads(),
    }
    exact_rows = None
    for kind in ("flat", "hnsw"):
        before = _rss()
        start = time.perf_counter()
        index = index_mod.new_index(kind, dim)
        index.add(x)
        build = time.perf_counter() - start
        grown = _rss() - before
        latency, found = _latency(index, queries)
        filtered, _ = _latency(index, queries, mask)
        entry = {"build_s": round(build, 2), "index_memory_bytes": int(grown), **latency}
        entry["filtered_10pct"] = filtered
        if kind == "flat":
            exact_rows = found
        else:
            assert exact_rows is not None
            entry["ef_search"] = index_mod.HNSW_EF_SEARCH
            entry["recall_at_10"] = _recall(found, exact_rows)
            wide, found = _latency(index, queries, ef=4 * index_mod.HNSW_EF_SEARCH)
            entry[f"ef_search_{4 * index_mod.HNSW_EF_SEARCH}"] = {
                **wide,
                "recall_at_10": _recall(found, exact_rows),
            }
        row[kind] = entry
        del index
        # Written after each index: a 1M x 512 HNSW build takes most of an hour on 2 cores.
        row["case_s"] = round(time.perf_counter() - started, 1)  # data, the indexes so far, their queries
        data = record("catalogue", "search", f"{size}x{dim}", row)
        print(size, dim, data["search"][f"{size}x{dim}"])
    assert row["flat"]["median_ms"] > 0 and 0.0 <= row["hnsw"]["recall_at_10"] <= 1.0
