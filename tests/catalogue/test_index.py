"""muser.catalogue.index: every index kind against exact search, the automatic choice, per-query
nprobe / efSearch, batched search, filters with IVF, and memory-mapped opening; then the same through a
catalogue (embed --index-key, Catalogue, `muser search --queries`, POST /api/search/batch)."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from muser.catalogue import index as index_mod

KINDS = ["flat", "hnsw", "IVF16,Flat", "IVF16,PQ8x4fs,RFlat", "IVF16,PQ8", "IVF16,SQ8"]
# Lists of compressed codes without re-ranking rank by compressed scores (chance here: 0.0025);
# the other kinds are (near) exact on this data with every list probed.
COMPRESSED = {"IVF16,PQ8": 0.1, "IVF16,SQ8": 0.8}


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    """Unit vectors in 40 clusters of varied spread (neighbourhoods an IVF can find)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, d)).astype(np.float32)
    who = rng.integers(0, 40, n)
    spread = rng.uniform(0.2, 0.8, 40)[who, None]
    x = centres[who] / np.sqrt(d) * 3 + spread * rng.standard_normal((n, d)).astype(np.float32) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _built(key: str, x: np.ndarray, path: Path):
    index = index_mod.new_index(key, x.shape[1])
    size = index_mod.train_size(index, len(x))
    if size:
        index_mod.train(index, x[index_mod.sample_rows(len(x), size)])
    for i in range(0, len(x), 1000):  # filled part by part, as assemble does
        index.add(x[i : i + 1000])
    index_mod.write_index(index, path)
    return index_mod.read_index(path)


def _recall(found: np.ndarray, exact: np.ndarray) -> float:
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact, strict=True)]))


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = _clustered(4000, 32, 0)
    queries = _clustered(4040, 32, 0)[-40:] + 0.01  # nearby held-out points
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    exact = np.argsort(-(queries @ x.T), axis=1, kind="stable")[:, :10]
    return x, queries, exact


@pytest.mark.parametrize("key", KINDS)
def test_each_kind_finds_the_exact_neighbours_and_honours_masks(key, data, tmp_path, monkeypatch):
    x, queries, exact = data
    index = _built(key, x, tmp_path / "index.faiss")
    assert index.ntotal == len(x)
    kind = index_mod.kind_of(index)
    assert kind == {"flat": "flat", "hnsw": "hnsw"}.get(key, "ivf")
    wide = {"nprobe": 16} if kind == "ivf" else {"ef_search": 512} if kind == "hnsw" else {}
    scores, rows = index_mod.search_batch(index, queries, 10, **wide)
    assert rows.shape == (40, 10) and np.all(np.diff(scores, axis=1) <= 1e-6)
    assert _recall(rows, exact) >= COMPRESSED.get(key, 0.97), key
    # one query at a time gives what the batch gave
    for i in (0, 17):
        _, one = index_mod.search(index, queries[i], 10, **wide)
        np.testing.assert_array_equal(one, rows[i])
    # a filter that keeps few rows: exactly those rows, best first, whatever the index
    mask = np.zeros(len(x), dtype=bool)
    mask[[3, 50, 999, 2500]] = True
    scores, rows = index_mod.search(index, queries[0], 10, mask)
    assert sorted(rows) == [3, 50, 999, 2500] and list(scores) == sorted(scores, reverse=True)
    assert len(index_mod.search(index, queries[0], 5, np.zeros(len(x), dtype=bool))[1]) == 0
    # a filter that keeps many rows, through the approximate path too (no exact fallback)
    even = np.arange(len(x)) % 2 == 0
    expected = np.array(
        [[r for r in np.argsort(-(x @ q), kind="stable") if r % 2 == 0][:10] for q in queries]
    )
    for exact_below in (index_mod.EXACT_BELOW, 0):
        monkeypatch.setattr(index_mod, "EXACT_BELOW", exact_below)
        _, rows = index_mod.search_batch(index, queries, 10, even)
        assert np.all(rows % 2 == 0)
        assert _recall(rows, expected) >= COMPRESSED.get(key, 0.95), (key, exact_below)


def test_nprobe_and_ef_search_apply_per_query(data, tmp_path):
    x, queries, exact = data
    ivf = _built("IVF64,Flat", x, tmp_path / "ivf.faiss")
    assert index_mod.describe(ivf)["nprobe"] == index_mod.default_nprobe(64) == 16
    recalls = [_recall(index_mod.search_batch(ivf, queries, 10, nprobe=p)[1], exact) for p in (1, 4, 64)]
    assert recalls[0] < recalls[1] <= recalls[2] == 1.0  # every list scanned: exact
    assert ivf.nprobe == 16  # a query's nprobe never changes the index's default
    hnsw = _built("hnsw", x, tmp_path / "hnsw.faiss")
    low = _recall(index_mod.search_batch(hnsw, queries, 10, ef_search=10)[1], exact)
    high = _recall(index_mod.search_batch(hnsw, queries, 10, ef_search=1000)[1], exact)
    assert low <= high and high >= 0.99
    with pytest.raises(ValueError, match="at least 1"):
        index_mod.search(ivf, queries[0], 10, nprobe=0)


def test_auto_choice_from_size_and_memory_budget():
    assert index_mod.auto_key(10_000, 512) == "Flat"  # exact is fast enough
    assert index_mod.auto_key(100_000, 128) == "Flat"
    # a quarter of the vectors (default budget, >= 256 MiB) holds exact IVF lists at 100k x 512
    assert index_mod.auto_key(100_000, 512) == "IVF512,Flat"
    assert index_mod.auto_key(1_000_000, 512) == "IVF2048,PQ256x4fs,RFlat"
    assert index_mod.auto_key(1_000_000, 512, budget=8 << 30) == "IVF2048,Flat"
    assert index_mod.auto_key(10_000_000, 128) == "IVF8192,PQ64x4fs,RFlat"
    assert index_mod.auto_key(10_000_000, 128, budget=200 << 20) == "IVF8192,PQ16x4fs,RFlat"
    with pytest.raises(ValueError, match="too small"):
        index_mod.auto_key(10_000_000, 128, budget=10 << 20)
    assert index_mod.parse_memory("512M") == 512 << 20 and index_mod.parse_memory("1.5GB") == 3 << 29
    assert index_mod.parse_memory(None) is None and index_mod.parse_memory("4g") == 4 << 30
    with pytest.raises(ValueError, match="memory size"):
        index_mod.parse_memory("lots")
    with pytest.raises(ValueError, match="factory string"):
        index_mod.new_index("IVF,Nonsense", 32)
    with pytest.raises(ValueError, match="fewer lists"):
        index_mod.train_size(index_mod.new_index("IVF1024,Flat", 32), 500)


def _mapped_bytes(path: Path) -> int:
    """Bytes of `path` this process has mapped into memory (from /proc/self/maps)."""
    total = 0
    with open("/proc/self/maps") as f:
        for line in f:
            if line.rstrip().endswith(str(path)):
                start, end = line.split()[0].split("-")
                total += int(end, 16) - int(start, 16)
    return total


def test_large_exact_vectors_are_memory_mapped(tmp_path):
    # Asked of the mappings, not of RSS: freed heap pages are reused or kept by the allocator, so RSS
    # growth says nothing reliable about where 25 MB of vectors live (a CI run once saw 0 for the copy).
    x = np.random.default_rng(0).standard_normal((100_000, 64)).astype(np.float32)  # 25.6 MB
    index = index_mod.new_index("flat", 64)
    index.add(x)
    path = tmp_path / "index.faiss"
    index_mod.write_index(index, path)
    del index
    mapped = index_mod.read_index(path)
    assert _mapped_bytes(path) >= x.nbytes  # the vectors are read from the page cache, not copied
    loaded = index_mod.read_index(path, mmap=False)
    assert _mapped_bytes(path) < 2 * x.nbytes  # the copy added no mapping of its own
    np.testing.assert_array_equal(index_mod.search(mapped, x[5], 3)[1], index_mod.search(loaded, x[5], 3)[1])
    del mapped
    gc.collect()
    assert _mapped_bytes(path) == 0  # dropping the index releases the file


# ---- through a catalogue ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ivf_catalogue(catalogue_dir: Path, shards: Path, pretrained: Path, tmp_path_factory) -> Path:
    """The test catalogue re-assembled with an IVF-PQ index and exact re-ranking (its parts reused)."""
    from muser.catalogue.embed import embed
    from tests.catalogue.conftest import embed_config

    emb = tmp_path_factory.mktemp("ivf") / "emb"
    shutil.copytree(catalogue_dir, emb)
    summary = embed(embed_config(shards, emb, pretrained, index_key="IVF4,PQ8x4fs,RFlat"))
    assert summary["embedded_shards"] == 0 and summary["reused_shards"] > 0
    return emb


def test_an_ivf_catalogue_searches_like_the_flat_one(ivf_catalogue, catalogue_dir):
    from muser import Catalogue

    info = json.loads((ivf_catalogue / "catalogue.json").read_text())
    assert info["index"]["kind"] == "ivf" and info["index"]["key"] == "IVF4,PQ8x4fs,RFlat"
    assert json.loads((catalogue_dir / "catalogue.json").read_text())["index"]["key"] == "Flat"  # auto
    ivf, flat = Catalogue.open(ivf_catalogue, device="cpu"), Catalogue.open(catalogue_dir, device="cpu")
    key = flat.keys[4]
    np.testing.assert_allclose(ivf.vector(key), flat.vector(key), atol=1e-6)
    # every list probed and exact re-ranking: the exact answer
    assert [h["key"] for h in ivf.similar(key, k=5, nprobe=4)] == [h["key"] for h in flat.similar(key, k=5)]
    genre = flat.record(key)["genres"][0]  # a filter keeping few rows: exact over them
    want = {h["key"] for h in flat.similar(key, k=50, genre=genre)}
    assert {h["key"] for h in ivf.similar(key, k=50, genre=genre)} == want and want
    texts = ["calm piano", "a song of techno", "loud rock guitar"]
    batch = flat.search_texts(texts, k=4, nprobe=2)
    assert batch == [flat.search_text(t, k=4) for t in texts]
    assert [len(r) for r in ivf.search_texts(texts, k=4, genre=genre)] == [min(4, len(want) + 1)] * 3


def test_search_many_queries_from_the_cli_and_over_http(ivf_catalogue, tmp_path):
    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    from muser import Catalogue
    from muser.catalogue.serve import create_app
    from muser.cli import main

    texts = ["calm piano", "a song of techno"]
    file = tmp_path / "queries.txt"
    file.write_text("# one query a line\ncalm piano\n\na song of techno\n")
    out = CliRunner().invoke(
        main, ["search", str(ivf_catalogue), "--queries", str(file), "-k", "3", "--nprobe", "4"]
    )
    assert out.exit_code == 0, out.output
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["query"] for line in lines] == texts and all(len(line["results"]) == 3 for line in lines)
    assert "queries/s" in out.stderr
    bad = CliRunner().invoke(main, ["search", str(ivf_catalogue), "piano", "--queries", str(file)])
    assert bad.exit_code == 2 and "only one" in bad.output

    cat = Catalogue.open(ivf_catalogue, device="cpu")
    client = TestClient(create_app(cat))
    got = client.post("/api/search/batch", json={"queries": texts, "k": 3, "nprobe": 4}).json()
    one = [client.get("/api/search", params={"q": t, "k": 3, "nprobe": 4}).json()["results"] for t in texts]
    assert [r["results"] for r in got["results"]] == one
    assert [r["key"] for r in one[0]] == [line["key"] for line in lines[0]["results"]]
    assert client.post("/api/search/batch", json={"queries": [], "k": 3}).status_code == 422
    assert client.post("/api/search/batch", json={"queries": [" "]}).status_code == 400
    assert client.get("/api/search", params={"q": "piano", "nprobe": 0}).status_code == 422
    assert client.get("/api/info").json()["index_key"] == "IVF4,PQ8x4fs,RFlat"
