"""--report-to: wandb (offline mode) and trackio (local store) receive exactly the steps and values of
metrics.jsonl, a --resume continues the same tracker runs, and a missing or unknown tracker is one
sentence; the optional trackers are imported only when asked for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from muser.cli import main
from muser.train import trackers

BLOCK = 32768  # the .wandb file is a LevelDB-style log: 32 KiB blocks of 7-byte-headed records


def wandb_history(path: Path) -> dict[int, dict[str, float]]:
    """{step: {key: value}} of the history records in an offline run's .wandb file."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    payloads, pending, pos = [], b"", 7
    while pos + 7 <= len(data):
        left = BLOCK - pos % BLOCK
        if left < 7:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if kind == 0:
            pos += left
            continue
        body, pos = data[pos + 7 : pos + 7 + length], pos + 7 + length
        if kind == 1:
            payloads.append(body)
        elif kind == 2:
            pending = body
        elif kind == 3:
            pending += body
        elif kind == 4:
            payloads.append(pending + body)
    history: dict[int, dict[str, float]] = {}
    for payload in payloads:
        record = pb.Record()
        record.ParseFromString(payload)
        if record.WhichOneof("record_type") == "history":
            items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
            step = int(record.history.step.num)
            history[step] = {k: v for k, v in items.items() if not k.startswith("_")}
    return history


def test_wandb_and_trackio_get_what_metrics_jsonl_holds_and_resume_continues(shards, tmp_path, monkeypatch):
    if not (trackers.installed("wandb") and trackers.installed("trackio")):
        pytest.skip("the wandb and trackio extras are not installed")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("TRACKIO_DIR", str(tmp_path / "trackio"))  # read when trackio is first imported
    if "trackio" in sys.modules:
        pytest.skip("trackio was imported before TRACKIO_DIR could be set")
    run = tmp_path / "run"
    base = ["pretrain", "--output", str(run), "--log-every", "1", "--save-every", "100", "--workers", "0"]
    first = [*base, "--shards", str(shards), "--steps", "3", "--batch-size", "8", "--crop-seconds", "2"]
    res = CliRunner().invoke(main, [*first, "--report-to", "wandb,trackio"])
    assert res.exit_code == 0, res.output
    state = json.loads((run / "trackers.json").read_text())
    res = CliRunner().invoke(main, [*base, "--resume", "--steps", "5"])  # --report-to kept from config.json
    assert res.exit_code == 0, res.output
    assert json.loads((run / "trackers.json").read_text()) == state  # the same tracker runs continued

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    want = {m["step"]: trackers.numeric(m) for m in metrics}
    assert sorted(want) == [1, 2, 3, 4, 5]

    files = sorted((run / "wandb").glob(f"offline-run-*-{state['wandb']['id']}/run-*.wandb"))
    assert len(files) == 2  # the first run and its resumption, under one id
    logged: dict[int, dict[str, float]] = {}
    for f in files:
        logged.update(wandb_history(f))
    assert logged == want

    from trackio.sqlite_storage import SQLiteStorage

    rows = SQLiteStorage.get_logs(state["trackio"]["project"], run=state["trackio"]["id"])
    got = {r["step"]: {k: v for k, v in r.items() if k not in ("step", "timestamp")} for r in rows}
    assert got == want


def test_a_missing_or_unknown_tracker_is_one_sentence(monkeypatch):
    with pytest.raises(
        ValueError, match="unknown --report-to 'mlflow'; choose from tensorboard, wandb, trackio"
    ):
        trackers.parse_report_to("tensorboard,mlflow")
    monkeypatch.setattr(trackers, "installed", lambda name: name != "wandb")
    with pytest.raises(
        ValueError, match=r"--report-to wandb needs the wandb package: pip install 'muser\[wandb\]'"
    ):
        trackers.parse_report_to("wandb")
    assert trackers.parse_report_to("none") == [] and trackers.parse_report_to(None) == ["tensorboard"]


def test_cli_names_the_extra(tmp_path, shards, monkeypatch):
    monkeypatch.setattr(trackers, "installed", lambda name: name != "trackio")
    args = ["pretrain", "--shards", str(shards), "--output", str(tmp_path / "r"), "--report-to", "trackio"]
    res = CliRunner().invoke(main, args)
    assert (  # a usage error, as every other option mistake of pretrain
        res.exit_code == 2 and "pip install 'muser[trackio]'" in res.output and "Traceback" not in res.output
    )


def test_trackers_are_imported_only_when_asked_for():
    code = (
        "import sys, muser.cli, muser.train.trainer; "
        "print([m for m in ('wandb', 'trackio') if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
