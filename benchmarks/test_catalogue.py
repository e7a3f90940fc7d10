"""The catalogue: `muser embed` throughput on CPU against the per-file loop a user would otherwise write,
and search recall@10 / latency / memory / build time of every index kind (flat, HNSW, IVF-Flat, IVF-PQ with
exact re-ranking, and `--index auto`) at 100k, 1M and 10M x 128 and 1M x 512.

Embedding: a corpus of 30-s clips sharded as FLAC, the tiny preset with random weights (throughput does
not depend on the weights), through `embed` (reader, chunking, pooling, captions, parts, Parquet and index
included, no reader workers) against the loop a user would otherwise write (soundfile, torchaudio
resample, one forward per whole track: no chunk averaging, no resume, no index), alternating in one
process; target >= 1.5x the loop's tracks/s with vectors within 1e-5 of the model's eval features. The row
also says how long embed waited for the reader and how long it spent in the model.

Search: the catalogue's own search path (muser.catalogue.index.search, k = 10), on two kinds of unit
vectors: "clustered", with the structure of catalogue embeddings (clusters of lognormal sizes and varied
spread around cluster centres that themselves group into a few broad regions, as genres and their styles
do) with queries drawn from the same mixture; and "random" (uniform on the sphere: no neighbourhood
structure, the worst case of every approximate index). Each index is built as `muser embed` builds it
(trained on a seeded sample, filled 100k rows at a time), written, and opened memory-mapped as
Catalogue.open does; its memory is what it holds in RAM: the index file but the exact vectors FAISS maps
from it (those are paged in on demand: the resident-set growth after the queries is recorded as well).
Recall@10 is against the exact answer (faiss.knn) over 200 held-out queries; latency is per single query
(median, p95) along the whole nprobe / efSearch curve, and queries/s of one batched call of all 200.

Tiers: the clustered 100k x 128 case runs by default (under a minute); 1M x 128, 1M x 512 and 10M x 128,
and the random vectors at every size, are the `scale` tier (`pytest benchmarks --scale -k search`; on this
2-core machine when quiet: 1M x 512 3.5 min, 10M x 128 about 15 min and 12 GB of RAM). Rows go to
benchmarks/results/catalogue.json through benchmarks.common.entry.
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


CASES = {
    "100kx128": (100_000, 128),
    "1Mx128": (1_000_000, 128),
    "1Mx512": (1_000_000, 512),
    "10Mx128": (10_000_000, 128),
}
DEFAULT_CASES = ("100kx128",)
QUERIES = 200
BLOCK = 100_000  # rows generated, and added to an index, at a time (as parts are)
NPROBES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
EF_SEARCHES = (16, 32, 64, 128, 256, 512)
HNSW_MAX_N = 200_000  # HNSW builds take 20+ min per million rows on 2 cores: measured below this only
TARGET = {"recall_at_10": 0.95, "median_ms": 10.0, "memory_share_of_flat": 0.25, "build_s": 600.0}


def _random_rows(n: int, d: int, seed: int) -> np.ndarray:
    """(n, d) float32 uniform unit vectors, made in blocks so no float64 copy of the whole matrix exists."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, BLOCK):
        block = rng.standard_normal((min(BLOCK, n - i), d), dtype=np.float32)
        out[i : i + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _clustered_rows(n: int, d: int, seed: int) -> np.ndarray:
    """(n, d) unit vectors shaped like catalogue embeddings: 32 broad regions on the sphere (genres), about
    n / 500 clusters around them (styles, artists), cluster sizes lognormal (a few huge, many small), each
    cluster with its own spread (cosine to its centre from about 0.95 to 0.55), rows in random order."""
    rng = np.random.default_rng(seed)
    regions = _random_rows(32, d, seed + 1)
    c = max(8, n // 500)
    home = rng.integers(0, 32, c)
    centres = regions[home] + 0.9 * rng.standard_normal((c, d), dtype=np.float32) / np.sqrt(d)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    spread = rng.uniform(0.3, 1.5, c).astype(np.float32)  # noise norm: cos to centre = 1/sqrt(1+s^2)
    weights = rng.lognormal(0.0, 1.0, c)
    owner = rng.choice(c, size=n, p=weights / weights.sum())
    out = np.empty((n, d), dtype=np.float32)
    for i in range(0, n, BLOCK):
        who = owner[i : i + BLOCK]
        noise = rng.standard_normal((len(who), d), dtype=np.float32) / np.float32(np.sqrt(d))
        block = centres[who] + spread[who, None] * noise
        out[i : i + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def _data(kind: str, n: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    """The catalogue (n, d) and QUERIES held-out queries from the same distribution."""
    make = _clustered_rows if kind == "clustered" else _random_rows
    x = make(n + QUERIES, d, seed=0)
    return x[QUERIES:], np.ascontiguousarray(x[:QUERIES])


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    hits = [
        len(set(a[a >= 0]) & set(b[b >= 0])) / max(1, (b >= 0).sum())
        for a, b in zip(found, exact, strict=True)
    ]
    return round(float(np.mean(hits)), 4)


def _single(index, queries: np.ndarray, mask=None, **tuning) -> tuple[dict, np.ndarray]:
    """One query at a time through the catalogue's search path: latency stats and the (Q, 10) rows."""
    from muser.catalogue import index as index_mod

    times, found = [], []
    for q in queries:
        start = time.perf_counter()
        _, rows = index_mod.search(index, q, 10, mask, **tuning)
        times.append(time.perf_counter() - start)
        found.append(np.pad(rows, (0, 10 - len(rows)), constant_values=-1))
    ms = np.array(times) * 1000
    return {
        "median_ms": round(float(np.median(ms)), 3),
        "p95_ms": round(float(np.percentile(ms, 95)), 3),
    }, np.array(found)


def _batched_qps(index, queries: np.ndarray, **tuning) -> float:
    from muser.catalogue import index as index_mod

    start = time.perf_counter()
    index_mod.search_batch(index, queries, 10, **tuning)
    return round(len(queries) / (time.perf_counter() - start), 1)


def _build(key: str, x: np.ndarray, path) -> tuple[object, dict, int]:
    """Build as `muser embed` does, write, reopen memory-mapped; returns the index and its costs."""
    import faiss

    from muser.catalogue import index as index_mod

    start = time.perf_counter()
    index = index_mod.new_index(key, x.shape[1])
    size = index_mod.train_size(index, len(x))
    if size:
        index_mod.train(index, x[index_mod.sample_rows(len(x), size)])
    trained = time.perf_counter()
    for i in range(0, len(x), BLOCK):
        index.add(x[i : i + BLOCK])
    build = time.perf_counter() - start
    index_mod.write_index(index, path)
    del index
    before = _rss()
    index = index_mod.read_index(path)
    grown = _rss() - before  # understates what reuses memory the freed build index left in the heap
    storage = index_mod.exact_storage(index)
    mapped = storage.ntotal * storage.d * 4 if storage is not None else 0
    return (
        index,
        {
            "key": key,
            **index_mod.describe(index),
            "train_vectors": size,
            "train_s": round(trained - start, 1),
            "build_s": round(build, 1),
            "file_bytes": path.stat().st_size,
            # In RAM: the whole file but the exact vectors FAISS maps from it (flat, HNSW's, RFlat's).
            "ram_bytes": int(path.stat().st_size - mapped),
            "rss_growth_on_open_bytes": int(grown),
            "faiss_threads": faiss.omp_get_max_threads(),
        },
        before,
    )


def _curve(index, queries, exact, name: str, values) -> list[dict]:
    out = []
    for v in values:
        stats, found = _single(index, queries, **{name: v})
        out.append({name: v, "recall_at_10": _recall(found, exact), **stats})
    return out


def _params() -> list:
    """The size cases: DEFAULT_CASES in the default tier, the rest in the `scale` tier (--scale)."""
    return [c if c in DEFAULT_CASES else pytest.param(c, marks=pytest.mark.scale) for c in CASES]


def _measure(case: str, data: str, tmp_path, row) -> dict:
    """Build every index kind on `data` vectors of size `case` into `row`; returns auto's entry."""
    import faiss

    from muser.catalogue import index as index_mod

    started = time.perf_counter()
    n, d = CASES[case]
    x, queries = _data(data, n, d)
    mask = np.random.default_rng(2).random(n) < 0.1  # a filter that keeps 10% of the catalogue
    _, exact = faiss.knn(queries, x, 10, metric=faiss.METRIC_INNER_PRODUCT)
    kept = np.flatnonzero(mask)
    _, sub = faiss.knn(queries, x[kept], 10, metric=faiss.METRIC_INNER_PRODUCT)
    exact_filtered = kept[sub]
    flat_bytes = n * d * 4
    exact_stats = []
    for q in queries[:20]:  # exact search: one pass over every vector, the cost of a flat index
        t = time.perf_counter()
        faiss.knn(q[None], x, 10, metric=faiss.METRIC_INNER_PRODUCT)
        exact_stats.append(time.perf_counter() - t)
    row.update(n=n, dim=d, data=data, flat_bytes=flat_bytes, indexes={})
    row["exact_median_ms"] = round(float(np.median(exact_stats)) * 1000, 3)
    auto = index_mod.auto_key(n, d)
    keys = {"auto": auto, "ivf_flat": f"IVF{index_mod._nlist(n)},Flat"}
    keys["ivf_pq_refine"] = f"IVF{index_mod._nlist(n)},PQ{d // 2}x4fs,RFlat"
    if n <= HNSW_MAX_N:
        keys["hnsw"] = "hnsw"
    for label, key in keys.items():
        if label != "auto" and key == auto:
            continue  # the same index as auto's
        index, entry_, before = _build(key, x, tmp_path / f"{label}.faiss")
        entry_["memory_share_of_flat"] = round(entry_["ram_bytes"] / flat_bytes, 4)
        default, found = _single(index, queries)
        entry_["default"] = {"recall_at_10": _recall(found, exact), **default}
        entry_["default"]["batched_queries_per_s"] = _batched_qps(index, queries)
        filtered, found = _single(index, queries, mask)
        entry_["filtered_10pct"] = {"recall_at_10": _recall(found, exact_filtered), **filtered}
        if entry_["kind"] == "ivf":
            probes = [p for p in NPROBES if p <= entry_["nlist"]]
            entry_["curve"] = _curve(index, queries, exact, "nprobe", probes)
        elif entry_["kind"] == "hnsw":
            entry_["curve"] = _curve(index, queries, exact, "ef_search", EF_SEARCHES)
        entry_["ram_bytes_after_queries"] = int(_rss() - before)  # with the mapped pages queries touched
        row["indexes"][label] = entry_
        del index
        (tmp_path / f"{label}.faiss").unlink()
        print(case, data, label, entry_["default"], flush=True)
    row["case_s"] = round(time.perf_counter() - started, 1)
    return row["indexes"]["auto"]


@pytest.mark.parametrize("case", _params())
def test_search_recall_latency_memory(case, tmp_path):
    """Clustered vectors (the structure of catalogue embeddings): `--index auto` must reach recall@10 >=
    0.95 against exact search on its own, with index memory <= 1/4 of flat; at 1M x 512 also build <= 10
    min and a median single-query latency <= 10 ms, judged only on a quiet machine (timings under load
    say nothing), while recall and memory, which load cannot change, are judged always."""
    with entry("catalogue", f"search_{case}_clustered") as row:
        chosen = _measure(case, "clustered", tmp_path, row)
        row.target("auto index recall@10 vs exact", chosen["default"]["recall_at_10"], at_least=0.95)
        if chosen["kind"] != "flat":
            share = chosen["memory_share_of_flat"]
            row.target("auto index memory / flat", share, at_most=TARGET["memory_share_of_flat"])
        if case == "1Mx512":
            quiet(row, ONE_CORE)  # skips, with the reason, on a loaded machine
            row.target("auto index build seconds", chosen["build_s"], at_most=TARGET["build_s"])
            row.target(
                "auto single-query median ms", chosen["default"]["median_ms"], at_most=TARGET["median_ms"]
            )
            still_quiet(row, ONE_CORE)


@pytest.mark.scale  # every size: a worst case to read beside the judged clustered rows, not a target
@pytest.mark.measure_only
@pytest.mark.parametrize("case", list(CASES))
def test_measure_search_random(case, tmp_path):
    """Uniform random unit vectors, the worst case of every approximate index: recorded, not judged."""
    with entry("catalogue", f"search_{case}_random", measure_only=True) as row:
        _measure(case, "random", tmp_path, row)
