"""Every command a user types, chained through the CLI on the real excerpts of ../shared/data/real/music:
shard -> inspect -> pretrain -> eval -> embed -> search (text, --audio with a real file, --similar) -> serve
as a real subprocess on a free port, queried over HTTP and stopped with SIGINT.

The commands run in-process through click's runner (what a user sees: exit code and output), except
`muser serve`, which must bind a port, answer real HTTP requests and stop on Ctrl-C like a user's server.
Each step reads the previous step's output folder, so the steps share one module-scoped chain. It holds
what tests/test_own_folder.py checked (a plain folder's only split is `all`; pretrain and eval never name
a split), now with the eval values read and required finite.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner

from muser.cli import main

REPO = Path(__file__).resolve().parent.parent


def _ok(*args: str) -> str:
    done = CliRunner().invoke(main, list(args))
    assert done.exit_code == 0, f"muser {' '.join(args)}\n{done.output}"
    assert "Traceback" not in done.output
    return done.output


@pytest.fixture(scope="module")
def music(real_audio_dir: Path) -> Path:
    return real_audio_dir / "music"


@pytest.fixture(scope="module")
def chain(music: Path, tmp_path_factory) -> dict[str, Path]:
    """shard -> pretrain -> embed of the real excerpts; each step's folder, for the tests below."""
    root = tmp_path_factory.mktemp("chain")
    paths = {name: root / name for name in ("shards", "run", "eval", "catalogue")}
    _ok("shard", str(music), str(paths["shards"]), "--workers", "1", "-q")
    pretrain = ["pretrain", "--shards", str(paths["shards"]), "--output", str(paths["run"])]
    few = ["--steps", "3", "--batch-size", "4", "--crop-seconds", "2", "--workers", "0", "--warmup", "1"]
    paths["pretrain_output"] = _ok(*pretrain, *few)
    _ok("embed", str(paths["shards"]), "--checkpoint", str(paths["run"]), "-o", str(paths["catalogue"]))
    _ok("embed", str(paths["shards"]), "--checkpoint", str(paths["run"]), "-o", str(paths["catalogue"]), "-q")
    return paths


def test_inspect_reports_every_excerpt(chain, music):
    report = json.loads(_ok("inspect", str(chain["shards"]), "--json", "--verify"))
    excerpts = sorted(p.stem for p in music.glob("*.ogg"))
    assert report["complete"] and report["verify"] == [] and report["errors"]["count"] == 0
    assert report["splits"].keys() == {"all"} and report["samples"] == len(excerpts) == 8
    # The real durations (5 s to 2 min each): no excerpt was cut short or dropped.
    assert 0.05 < report["hours"] < 8 * 130 / 3600
    sample = report["sample"]["meta"]
    assert sample["title"] and sample["artist"] and sample["description"]  # from the tags and .txt notes
    assert "Traceback" not in _ok("inspect", str(chain["shards"]))  # the rich tables print too


def test_pretrain_trains_on_the_all_split(chain):
    output = chain["pretrain_output"]
    assert "has no 'train' split: training on its 'all' split" in output  # the one-line note
    result = json.loads((chain["run"] / "result.json").read_text())
    assert result["steps"] == 3 and not result["stopped"]
    assert math.isfinite(result["first_loss"]) and math.isfinite(result["last_loss"])
    assert (chain["run"] / "model" / "model.safetensors").is_file()


def test_eval_of_the_run_without_naming_a_split(chain):
    out = chain["eval"]
    args = ["eval", "shards", "--data", str(chain["shards"]), "--checkpoint", str(chain["run"])]
    protocol = ["--protocol", "zeroshot,retrieval", "--folds", "2", "--seeds", "1", "--no-random-baseline"]
    _ok(*args, "--output", str(out), *protocol)
    report = json.loads((out / "results.json").read_text())
    counts = report["counts"]
    # The excerpts with a genre tag are scored; the others are listed as excluded, none is lost.
    assert report["split_scheme"] == "2-fold stratified" and counts["tracks"] >= 2
    assert counts["tracks"] + counts["excluded"] == 8
    assert {r["protocol"] for r in report["results"]} == {"zeroshot", "retrieval"}
    values = [v for r in report["results"] for v in r["values"]]
    assert values and all(0.0 <= v <= 1.0 for v in values)  # finite scores, never inf or NaN


def test_embed_holds_every_track_once(chain):
    import pandas as pd

    table = pd.read_parquet(chain["catalogue"] / "embeddings.parquet")
    assert len(table) == 8 and table["key"].is_unique
    meta = json.loads((chain["catalogue"] / "catalogue.json").read_text())
    assert meta["complete"] and meta["checkpoint"]["path"] == str(chain["run"] / "model")  # RUN resolved
    assert meta["dimension"] == len(table["audio_embedding"].iloc[0])
    assert (chain["catalogue"] / "index.faiss").stat().st_size > 0


def _search(chain, *args: str) -> dict:
    return json.loads(_ok("search", str(chain["catalogue"]), *args, "--json"))


def test_search_by_text_audio_and_similar(chain, music):
    text = _search(chain, "a waltz for strings", "--top", "5")
    scores = [r["score"] for r in text["results"]]
    assert text["kind"] == "text" and len(scores) == 5 and scores == sorted(scores, reverse=True)
    # A real file as the query: an excerpt of the catalogue finds itself first (its embedding is the same
    # whole-track feature the catalogue stored).
    waltz = music / "147793__setuniman__sweet-waltz-0i-22mi.ogg"
    by_audio = _search(chain, "--audio", str(waltz), "--top", "8")
    assert by_audio["kind"] == "audio" and len(by_audio["results"]) == 8
    first = by_audio["results"][0]
    assert "waltz" in (first.get("title") or "").lower(), first
    assert first["score"] > 0.99 and first["score"] >= by_audio["results"][1]["score"]
    similar = _search(chain, "--similar", first["key"], "--top", "10")
    keys = [r["key"] for r in similar["results"]]
    assert similar["kind"] == "similar" and len(keys) == 7 and first["key"] not in keys  # never itself
    # the same query by text through the table output: one clear sentence for an unknown key
    done = CliRunner().invoke(main, ["search", str(chain["catalogue"]), "--similar", "no_such_key"])
    assert done.exit_code == 2 and "no_such_key" in done.output and "Traceback" not in done.output


def _member_size(catalogue: Path, key: str) -> int:
    """Bytes of a track's audio member inside its shard, as the catalogue records where it lies."""
    import tarfile

    import pandas as pd

    row = pd.read_parquet(catalogue / "embeddings.parquet").set_index("key").loc[key]
    with tarfile.open(row["shard"]) as tar:
        return tar.getmember(row["member"]).size


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, bytes, dict]:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.status, response.read(), dict(response.headers)


def test_serve_as_a_real_process_answers_http_and_stops_on_sigint(chain):
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "muser.cli", "serve", str(chain["catalogue"]), "--port", str(port)]
    proc = subprocess.Popen(cmd, env={**env, "OMP_NUM_THREADS": "1"}, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        announced = ""
        while f"{base}" not in announced:  # the model is loaded once this line appears
            line = proc.stderr.readline()
            assert line, f"muser serve exited ({proc.poll()}) before announcing its URL: {announced}"
            announced += line
        deadline, info = time.monotonic() + 60, None
        while info is None:  # uvicorn binds the port just after the announcement
            try:
                info = json.loads(_get(f"{base}/api/info")[1])
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "muser serve never answered"
                time.sleep(0.2)
        assert info["tracks"] == 8
        status, page, _ = _get(f"{base}/")
        assert status == 200 and b"<html" in page.lower()
        hits = json.loads(_get(f"{base}/api/search?q=ragtime%20piano&k=3")[1])["results"]
        assert len(hits) == 3 and all(h["audio"] == f"/api/audio/{h['key']}" for h in hits)
        similar = json.loads(_get(f"{base}/api/similar/{hits[0]['key']}?k=20")[1])["results"]
        assert len(similar) == 7 and hits[0]["key"] not in {h["key"] for h in similar}
        status, audio, _ = _get(f"{base}{hits[0]['audio']}")
        assert status == 200 and audio[:4] == b"fLaC"  # the shard member as stored (FLAC by default)
        assert len(audio) == _member_size(chain["catalogue"], hits[0]["key"])
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(timeout=30) == 0
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
