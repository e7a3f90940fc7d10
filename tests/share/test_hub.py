"""Hub ids: a local path wins, hf-hub:/local-dir: force either, offline loads come from the cache without a
socket, an uncached id offline is one sentence; `muser push` to a stand-in hub sends one commit with the
model and its card, and a fresh process with the network disabled loads the id and embeds the same."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from muser import hub
from muser.cli import main
from muser.models.muser import MUSER
from tests.share.standin import install

# Run in the fresh process: count every socket connect (and refuse it), load the id, embed, report.
OFFLINE_LOAD = """
import socket, sys, json
attempts = []
def refuse(self, address):
    attempts.append(str(address))
    raise OSError("network disabled by the test")
socket.socket.connect = refuse
import numpy as np, torch
from muser.models.load import load_model
from muser.models.muser import MUSER
model = MUSER.from_pretrained(sys.argv[1]).eval()
same, _, _ = load_model(sys.argv[1], "tiny", 0, torch.device("cpu"))
wave = torch.from_numpy(np.load(sys.argv[2]))
with torch.no_grad():
    np.save(sys.argv[3], model.encode_audio(wave).numpy())
    assert torch.equal(same.encode_audio(wave), model.encode_audio(wave))
print(json.dumps({"attempts": attempts}))
"""


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_CACHE", str(folder))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return folder


def test_hub_id_spelling():
    assert hub.parse_hub_id("org/name") == ("org/name", None)
    assert hub.parse_hub_id("hf-hub:org/my-model.v2@v1.0") == ("org/my-model.v2", "v1.0")
    assert hub.parse_hub_id("/abs/path") is None and hub.parse_hub_id("random") is None
    assert hub.parse_hub_id("a/b/c") is None


def test_local_path_wins_and_prefixes_force_either(tmp_path, monkeypatch, cache):
    standin = install(monkeypatch, tmp_path / "hub")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "name").mkdir(parents=True)
    assert hub.resolve_model("org/name") == "org/name"  # the local folder, no hub call
    assert standin.downloads == 0
    assert hub.resolve_model("local-dir:org/missing") == "org/missing"  # never the hub
    assert hub.resolve_model("random") == "random"  # not an id: the caller's own message
    with pytest.raises(AssertionError, match="stand-in hub has no org/name@main"):
        hub.resolve_model("hf-hub:org/name")  # forced to the hub despite the local folder
    with pytest.raises(ValueError, match="is not a hub id"):
        hub.resolve_model("hf-hub:not-an-id")


def test_uncached_id_offline_is_one_sentence(cache, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError) as err:
        MUSER.from_pretrained("org/never-downloaded@v2")
    message = str(err.value)
    assert "org/never-downloaded@v2" in message and str(cache) in message and "HF_HUB_OFFLINE" in message
    assert "\n" not in message


def test_push_then_load_by_id_offline_in_a_fresh_process(trained_run, tmp_path, monkeypatch, cache):
    standin = install(monkeypatch, tmp_path / "hub")
    res = CliRunner().invoke(
        main, ["push", str(trained_run), "org/muser-tiny", "--private", "--revision", "exp"]
    )
    assert res.exit_code == 0, res.output
    assert len(standin.commits) == 1  # weights, config, tokenizer and card in ONE commit
    commit = standin.commits[0]
    assert commit["revision"] == "exp" and standin.repos["org/muser-tiny"]["private"]
    model_dir = trained_run / "model"
    # (a card `muser card` wrote into model/ earlier is not sent: the card is generated afresh)
    local = {p.relative_to(model_dir).as_posix() for p in model_dir.rglob("*") if p.is_file()} - {"README.md"}
    assert set(commit["files"]) == local | {"README.md"}
    for name in local:
        assert commit["files"][name] == (model_dir / name).read_bytes(), name
    card = commit["files"]["README.md"].decode()
    result = json.loads((trained_run / "result.json").read_text())
    assert f"steps: {result['steps']}" in card and f"{result['last_loss']:.4f}" in card
    assert 'MUSER.from_pretrained("org/muser-tiny")' in card

    # First load: downloaded from the stand-in hub into the cache, the same weights as the run folder.
    wave = torch.rand(3, 32000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        want = MUSER.from_pretrained(trained_run / "model").eval().encode_audio(wave).numpy()
        first = MUSER.from_pretrained("org/muser-tiny@exp").eval().encode_audio(wave).numpy()
    assert standin.downloads == 1 and np.array_equal(first, want)

    # A fresh process, HF_HUB_OFFLINE=1 and every socket refused: the cached id loads, no connect tried.
    np.save(tmp_path / "wave.npy", wave.numpy())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "PYTHONPATH": str(Path.cwd())}
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            OFFLINE_LOAD,
            "org/muser-tiny@exp",
            str(tmp_path / "wave.npy"),
            str(tmp_path / "out.npy"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"attempts": []}
    assert np.array_equal(np.load(tmp_path / "out.npy"), want)


def test_cached_id_loads_when_the_network_is_down(trained_run, tmp_path, monkeypatch, cache):
    """No HF_HUB_OFFLINE, but no network: huggingface_hub's lookup fails and the cache answers."""
    install(monkeypatch, tmp_path / "hub")
    CliRunner().invoke(main, ["push", str(trained_run), "org/m"])
    hub.resolve_model("org/m")  # downloaded once
    import huggingface_hub

    from tests.share.standin import real_snapshot_download

    monkeypatch.setattr(huggingface_hub, "snapshot_download", real_snapshot_download)
    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError("network disabled by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    folder = Path(hub.resolve_model("org/m"))
    assert (folder / "model.safetensors").is_file() and (folder / "README.md").is_file()


def test_text_encoder_by_hub_id_then_offline(tmp_path, monkeypatch, cache):
    """--text-encoder org/name: a transformers encoder on the (stand-in) hub, then from the cache offline."""
    from muser.config import preset
    from muser.models.text import TextEncoder

    built = TextEncoder.build(hidden=32, layers=1, heads=2)
    folder = tmp_path / "encoder"
    built.backbone.save_pretrained(folder)
    built.tokenizer.save_pretrained(folder)
    install(monkeypatch, tmp_path / "hub")
    hub.upload(
        "org/enc", {p.relative_to(folder).as_posix(): p for p in folder.rglob("*") if p.is_file()}, "enc"
    )
    model = MUSER.from_config(preset("tiny", text_encoder="org/enc"))
    assert model.text.source == "org/enc" and model.text.out_dim == 32
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    again = TextEncoder.from_pretrained("org/enc").eval()
    enc = again.tokenize(["a calm piano piece"])
    with torch.no_grad():
        assert torch.equal(again(**enc), model.text.eval()(**enc))
