"""muser.Catalogue: retrieval sanity after a short pretraining, query by example, `similar`, metadata
filters against a plain-Python reference, the index module's exact/HNSW paths, and refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from muser import Catalogue
from muser.catalogue import index as index_mod
from muser.catalogue.search import filter_mask, parse_years


@pytest.fixture(scope="module")
def cat(catalogue_dir: Path) -> Catalogue:
    return Catalogue.open(catalogue_dir, device="cpu")


def _source_file(corpus: Path, key: str) -> Path:
    """The original FMA-layout file of a catalogue key (fma_000426 -> fma_small/000/000426.mp3)."""
    track = key.removeprefix("fma_")
    return corpus / "fma_small" / track[:3] / f"{track}.mp3"


def test_a_text_query_naming_a_style_ranks_that_style_first(cat):
    from muser.shards.text import label_prompt
    from muser.synth import STYLES

    precision = {}
    for style in STYLES:
        hits = cat.search_text(label_prompt("genre", style), k=5)
        assert len(hits) == 5 and [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
        assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:], strict=False))
        precision[style] = np.mean([style in [g.lower() for g in h["genres"]] for h in hits])
    # chance is 1/6 per slot; a few dozen contrastive steps put most of a style's tracks on top
    assert np.mean(list(precision.values())) >= 0.5, precision


def test_query_by_example_returns_the_track_itself_first(cat, corpus):
    from muser.shards.audio import decode

    for key in cat.keys[::12]:
        hits = cat.search_audio(_source_file(corpus, key), k=3)
        assert hits[0]["key"] == key and hits[0]["score"] > 0.999, (key, hits[0])
    # a waveform in memory at another rate (resampled like `muser shard` does) finds it as well
    key = cat.keys[5]
    wave = decode(_source_file(corpus, key), 22050)
    assert cat.search_audio(wave, k=1, sample_rate=22050)[0]["key"] == key


def test_similar_never_returns_the_query_track(cat):
    n = len(cat)
    for key in cat.keys:
        hits = cat.similar(key, k=n)
        assert len(hits) == n - 1 and key not in {h["key"] for h in hits}
    with pytest.raises(KeyError, match="not a track"):
        cat.similar("no_such_key")


def _reference(rows: list[dict], genre=None, tag=None, artist=None, year=None) -> np.ndarray:
    """The filters written as the Python loop they must never be, to check the column masks against."""
    out = []
    for r in rows:
        ok = True
        if genre:
            ok &= genre.lower() in [g.lower() for g in r["genres"]]
        if tag:
            ok &= tag.lower() in [t.lower() for t in r["tags"]]
        if artist:
            ok &= r["artist"] is not None and artist.lower() in r["artist"].lower()
        if year is not None:
            lo, hi = (year, year) if isinstance(year, int) else year
            ok &= (
                r["year"] is not None and (lo is None or r["year"] >= lo) and (hi is None or r["year"] <= hi)
            )
        out.append(ok)
    return np.array(out)


def test_filters_match_a_plain_python_reference(cat):
    rows = cat.table.to_pylist()
    some = rows[3]
    years = sorted(r["year"] for r in rows)
    cases = [
        {"genre": "TECHNO"},
        {"tag": some["tags"][0]},
        {"artist": some["artist"].split()[-1].lower()},
        {"year": (years[10], years[25])},
        {"year": (None, years[5])},
        {"year": years[0]},
        {"genre": some["genres"][0], "year": (years[3], None)},
        {"genre": "polka"},
    ]
    for case in cases:
        mask = filter_mask(cat.table, **case)
        np.testing.assert_array_equal(mask, _reference(rows, **case), err_msg=str(case))
        hits = cat.similar(some["key"], k=50, **case)
        allowed = {r["key"] for r, m in zip(rows, mask, strict=True) if m} - {some["key"]}
        assert {h["key"] for h in hits} == allowed, case
    assert filter_mask(cat.table) is None
    assert cat.search_text("a song of techno", k=5, genre="polka") == []


def test_records_vectors_and_keys(cat, catalogue_dir):
    key = cat.keys[0]
    rec = cat.record(key)
    assert rec["key"] == key and rec["member"] == f"{key}.flac" and Path(rec["shard"]).is_file()
    assert np.linalg.norm(cat.vector(key)) == pytest.approx(1.0, abs=1e-5)
    assert cat.row_of("nope") is None
    with pytest.raises(KeyError):
        cat.record("nope")
    with pytest.raises(ValueError, match="empty"):
        cat.search_text("   ")


def test_open_refuses_what_is_not_a_finished_catalogue(catalogue_dir, tmp_path):
    with pytest.raises(ValueError, match="not a catalogue"):
        Catalogue.open(tmp_path)
    emb = tmp_path / "emb"
    shutil.copytree(catalogue_dir, emb)
    info = json.loads((emb / "catalogue.json").read_text())
    (emb / "catalogue.json").write_text(json.dumps({**info, "complete": False}))
    with pytest.raises(ValueError, match="incomplete"):
        Catalogue.open(emb)
    (emb / "catalogue.json").write_text(json.dumps({**info, "dimension": 64}))
    with pytest.raises(ValueError, match="rebuild"):
        Catalogue.open(emb)


def test_queries_need_the_model_the_catalogue_was_built_with(catalogue_dir):
    other = Catalogue.open(catalogue_dir, checkpoint="random", device="cpu")
    assert len(other.similar(other.keys[0], k=3)) == 3  # no model needed
    with pytest.raises(ValueError, match="not the one this catalogue was built with"):
        other.search_text("calm piano")


def test_years_parse():
    assert parse_years("1998") == 1998
    assert parse_years("1990-2000") == (1990, 2000)
    assert parse_years("1990-") == (1990, None) and parse_years("-2000") == (None, 2000)
    assert parse_years(None) is None
    for bad in ("19x0", "-", "1990 2000"):
        with pytest.raises(ValueError, match="cannot read years"):
            parse_years(bad)


def _unit(n: int, d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_index_search_with_and_without_a_mask(kind, tmp_path, monkeypatch):
    x = _unit(2000, 32, 0)
    index = index_mod.new_index(kind, 32)
    index.add(x)
    index_mod.write_index(index, tmp_path / "index.faiss")
    index = index_mod.read_index(tmp_path / "index.faiss")
    assert index_mod.kind_of(index) == kind
    exact = np.argsort(-(x @ x[7]), kind="stable")
    scores, rows = index_mod.search(index, x[7], 10)
    assert rows[0] == 7 and scores[0] == pytest.approx(1.0, abs=1e-5)
    assert len(set(rows) & set(exact[:10])) >= 9
    mask = np.zeros(2000, dtype=bool)
    mask[[3, 50, 999]] = True
    scores, rows = index_mod.search(index, x[7], 10, mask)  # fewer rows than k qualify
    assert sorted(rows) == [3, 50, 999] and list(scores) == sorted(scores, reverse=True)
    assert len(index_mod.search(index, x[7], 5, np.zeros(2000, dtype=bool))[1]) == 0
    wide = np.arange(2000) % 2 == 0
    expected = [r for r in exact if r % 2 == 0][:10]
    for exact_below in (index_mod.EXACT_BELOW, 0):  # HNSW: exact over the subset, then the graph's selector
        monkeypatch.setattr(index_mod, "EXACT_BELOW", exact_below)
        _, rows = index_mod.search(index, x[7], 10, wide)
        assert len(rows) == 10 and all(r % 2 == 0 for r in rows)
        assert len(set(rows) & set(expected)) >= 9


def test_a_damaged_index_is_one_sentence(tmp_path):
    (tmp_path / "index.faiss").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="not a readable FAISS index"):
        index_mod.read_index(tmp_path / "index.faiss")
