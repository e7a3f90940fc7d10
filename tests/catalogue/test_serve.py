"""`muser serve` through FastAPI's TestClient: search, similar, audio with and without Range, and every
bad request answered with a 4xx JSON error."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from muser import Catalogue
from muser.catalogue.serve import MAX_K, MAX_QUERY, create_app


@pytest.fixture(scope="module")
def cat(catalogue_dir: Path) -> Catalogue:
    return Catalogue.open(catalogue_dir, device="cpu")


@pytest.fixture(scope="module")
def client(cat: Catalogue) -> TestClient:
    return TestClient(create_app(cat), raise_server_exceptions=False)


def _member_bytes(cat: Catalogue, key: str) -> bytes:
    rec = cat.record(key)
    with tarfile.open(rec["shard"]) as tar:
        return tar.extractfile(rec["member"]).read()


def _error(response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == status and isinstance(body["error"], str) and "Traceback" not in body["error"]
    return body


def test_page_and_info(client, cat):
    page = client.get("/")
    assert page.status_code == 200 and "<audio" not in page.text  # players are built per result
    csp = page.headers["content-security-policy"]
    assert "script-src 'sha256-" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    info = client.get("/api/info").json()
    assert info["tracks"] == len(cat) and info["max_k"] == MAX_K


def test_search_and_similar(client, cat):
    body = client.get("/api/search", params={"q": "a song of waltz", "k": 5}).json()
    results = body["results"]
    assert len(results) == 5 and results[0]["rank"] == 1
    assert all("shard" not in r and "member" not in r for r in results)  # no server paths leave
    assert results[0]["audio"] == f"/api/audio/{results[0]['key']}"
    key = cat.keys[0]
    similar = client.get(f"/api/similar/{key}", params={"k": MAX_K}).json()["results"]
    assert len(similar) == len(cat) - 1 and key not in {r["key"] for r in similar}
    genre = cat.record(key)["genres"][0]
    filtered = client.get(f"/api/similar/{key}", params={"genre": genre, "k": 50}).json()["results"]
    assert filtered and all(genre in r["genres"] for r in filtered)
    assert client.get(f"/api/track/{key}").json()["key"] == key


def test_audio_whole_and_ranges(client, cat):
    key = cat.keys[1]
    data = _member_bytes(cat, key)
    whole = client.get(f"/api/audio/{key}")
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["content-type"] == "audio/flac" and whole.headers["accept-ranges"] == "bytes"
    part = client.get(f"/api/audio/{key}", headers={"Range": "bytes=100-299"})
    assert part.status_code == 206 and part.content == data[100:300]
    assert part.headers["content-range"] == f"bytes 100-299/{len(data)}"
    assert part.headers["content-length"] == "200"
    tail = client.get(f"/api/audio/{key}", headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == data[-10:]
    head = client.head(f"/api/audio/{key}")
    assert head.status_code == 200 and head.headers["content-length"] == str(len(data)) and not head.content
    bad = client.get(f"/api/audio/{key}", headers={"Range": f"bytes={len(data)}-"})
    _error(bad, 416)
    assert bad.headers["content-range"] == f"bytes */{len(data)}"
    _error(client.get(f"/api/audio/{key}", headers={"Range": "bytes=9-3"}), 416)


@pytest.mark.parametrize(
    "path",
    [
        "/api/audio/no_such_track",
        "/api/audio/..%2F..%2Fetc%2Fpasswd",
        "/api/audio/%2E%2E",
        "/api/audio/fma_000001.flac",
        "/api/similar/..",
        "/api/track/%00",
        "/api/nothing",
    ],
)
def test_unknown_keys_and_paths_are_404(client, path):
    _error(client.get(path), 404)


def test_bad_parameters_are_4xx_json(client, cat):
    assert "k" in _error(client.get("/api/search", params={"q": "piano", "k": 10**9}), 422)["error"]
    _error(client.get("/api/search", params={"q": "piano", "k": 0}), 422)
    _error(client.get("/api/search", params={"q": "piano", "k": "many"}), 422)
    _error(client.get(f"/api/similar/{cat.keys[0]}", params={"k": MAX_K + 1}), 422)
    assert "empty" in _error(client.get("/api/search", params={"q": "   "}), 400)["error"]
    _error(client.get("/api/search"), 422)
    _error(client.get("/api/search", params={"q": "x" * (MAX_QUERY + 1)}), 422)
    _error(client.get("/api/search", params={"q": "piano", "genre": "g" * 1000}), 422)
    _error(client.get("/api/search", params={"q": "piano", "year_min": "soon"}), 422)
    _error(client.post("/api/search", params={"q": "piano"}), 405)


def test_a_vanished_shard_is_410_and_other_hosts_are_refused(catalogue_dir, cat, tmp_path):
    import shutil

    from muser.catalogue.folder import CatalogueFolder

    emb = tmp_path / "emb"
    shutil.copytree(catalogue_dir, emb)
    moved = Catalogue.open(emb, device="cpu")
    key = moved.keys[0]
    shard = Path(moved.record(key)["shard"])
    hidden = shard.with_name(shard.name + ".away")
    shard.rename(hidden)
    try:
        _error(TestClient(create_app(moved)).get(f"/api/audio/{key}"), 410)
    finally:
        hidden.rename(shard)
    assert CatalogueFolder(emb).embeddings.is_file()
    local = TestClient(create_app(cat, allowed_hosts=["127.0.0.1", "localhost"]), base_url="http://127.0.0.1")
    assert local.get("/api/info").status_code == 200
    assert local.get("/api/info", headers={"host": "evil.example"}).status_code == 400  # DNS rebinding


def test_a_crash_is_a_json_500_without_a_traceback(cat, monkeypatch):
    client = TestClient(create_app(cat), raise_server_exceptions=False)
    monkeypatch.setattr(Catalogue, "search_text", lambda *a, **k: 1 / 0)
    body = _error(client.get("/api/search", params={"q": "piano"}), 500)
    assert "ZeroDivision" not in body["error"]
