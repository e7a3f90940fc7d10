"""`muser embed`, `muser search` and `muser serve` through the click entry point, in-process."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

from muser.cli import main


def _run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_embed_resumes_an_existing_catalogue(catalogue_dir, shards, pretrained, tmp_path):
    emb = tmp_path / "emb"
    shutil.copytree(catalogue_dir, emb)
    result = _run("embed", str(shards), "--checkpoint", str(pretrained), "-o", str(emb), "--workers", "0")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["embedded_shards"] == 0 and summary["reused_shards"] > 0
    refused = _run("embed", str(shards), "--checkpoint", "random", "-o", str(emb), "-q")
    assert (
        refused.exit_code == 2
        and "another checkpoint" in refused.output
        and "Traceback" not in refused.output
    )
    assert _run("embed", str(shards), "--checkpoint", "random", "-o", str(emb), "--tower", "x").exit_code == 2


def test_search_prints_a_table_or_json(catalogue_dir, corpus):
    table = _run("search", str(catalogue_dir), "a song of waltz", "--top", "3")
    assert table.exit_code == 0, table.output
    assert "score" in table.output and "genres" in table.output and "Waltz" in table.output
    out = json.loads(_run("search", str(catalogue_dir), "a song of waltz", "--top", "4", "--json").stdout)
    assert out["kind"] == "text" and len(out["results"]) == 4 and out["results"][0]["rank"] == 1
    key = out["results"][0]["key"]
    similar = json.loads(_run("search", str(catalogue_dir), "--similar", key, "--json").stdout)
    assert key not in {r["key"] for r in similar["results"]} and len(similar["results"]) == 10
    track = key.removeprefix("fma_")
    audio = corpus / "fma_small" / track[:3] / f"{track}.mp3"
    by_example = json.loads(
        _run("search", str(catalogue_dir), "--audio", str(audio), "--json", "-k", "1").stdout
    )
    assert by_example["results"][0]["key"] == key
    year = out["results"][0]["year"]
    filtered = json.loads(_run("search", str(catalogue_dir), "waltz", "--year", f"{year}-", "--json").stdout)
    assert all(r["year"] >= year for r in filtered["results"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["waltz", "--similar", "fma_000001"], "exactly one query"),
        ([], "exactly one query"),
        (["--similar", "no_such_key"], "is not a track"),
        (["waltz", "--year", "soon"], "cannot read years"),
        (["waltz", "--top", "0"], "--top"),
    ],
)
def test_search_mistakes_are_usage_errors(catalogue_dir, args, message):
    result = _run("search", str(catalogue_dir), *args)
    assert result.exit_code == 2 and message in result.output, result.output


def test_serve_binds_loopback_and_refuses_other_hosts(catalogue_dir, monkeypatch, tmp_path):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    assert _run("serve", str(catalogue_dir)).exit_code == 0
    app, kw = calls[-1]
    assert kw["host"] == "127.0.0.1" and kw["port"] == 8000
    assert kw["http"].send_400_response.__module__ == "muser.catalogue.protocol"  # JSON parse errors
    from fastapi.testclient import TestClient

    client = TestClient(app, base_url="http://127.0.0.1:8000")
    assert client.get("/api/info").status_code == 200
    assert client.get("/api/info", headers={"host": "attacker.example"}).status_code == 400
    missing = _run("serve", str(tmp_path))
    assert missing.exit_code == 2 and "not a catalogue" in missing.output


def test_search_audio_refuses_a_bad_file_before_loading_the_model(catalogue_dir, tmp_path, monkeypatch):
    from muser import Catalogue

    def loaded(self):
        raise AssertionError("the model was loaded before the audio file was checked")

    monkeypatch.setattr(Catalogue, "_load_model", loaded)
    bad = tmp_path / "notes.mp3"
    bad.write_text("not audio at all")
    done = _run("search", str(catalogue_dir), "--audio", str(bad))
    assert done.exit_code == 2 and "cannot read the audio query" in done.output, done.output
    assert "Traceback" not in done.output
