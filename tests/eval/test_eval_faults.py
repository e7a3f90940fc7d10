"""Evaluation with unreadable tracks: every one is listed in `excluded` with a reason, and the split
scheme stays what the dataset defines."""

from __future__ import annotations

import json

import pytest

from muser.config import EvalConfig
from muser.eval.runner import run_eval
from tests.shards import shardkit


def test_tracks_the_reader_cannot_decode_are_listed_in_excluded(tmp_path):
    tracks = shardkit.make_tracks(12, 1.0, 16000)
    folder = shardkit.write_folder(tmp_path / "s", tracks, sample_rate=16000, corrupt={"track_0004"})
    (folder / "errors.jsonl").write_text('{"id": "gone", "reason": "no audio"}\n{"id": "to')  # torn line
    result = run_eval(_cfg(folder, tmp_path / "out"))
    excluded = {e["key"]: e["reason"] for e in result["excluded"]}
    assert "unreadable" in excluded["track_0004"] and excluded["gone"] == "no audio"
    # tracks 0 and 7 carry no genre label (shardkit): excluded for that, not for being unreadable
    assert "no genre label" in excluded["track_0000"]
    assert result["counts"]["tracks"] == 12 - 1 - 2


def _cfg(folder, out) -> EvalConfig:
    return EvalConfig(
        task="shards",
        data=str(folder),
        label_task="genre",
        protocol="zeroshot",
        folds=2,
        seeds=1,
        output=str(out),
    )


@pytest.mark.parametrize("failing", ["every track", "the test split"])
def test_when_no_usable_track_is_left_the_excluded_list_is_written_and_named(tmp_path, failing):
    tracks = shardkit.make_tracks(6, 1.0, 16000)
    for i, t in enumerate(tracks):
        t["meta"]["split"] = "train" if i < 3 else "test"
        t["meta"]["labels"] = {"genre": ["rock", "jazz"][i % 2]}  # every track labelled: only reading fails
    corrupt = {t["key"] for t in tracks if failing == "every track" or t["meta"]["split"] == "test"}
    test = shardkit.write_folder(tmp_path / "t", tracks[3:], sample_rate=16000, split="test", corrupt=corrupt)
    folder = shardkit.write_folder(tmp_path / "s", tracks[:3], sample_rate=16000, corrupt=corrupt)
    manifest = json.loads((folder / "manifest.json").read_text())  # one folder with a train and a test split
    manifest["splits"].update(json.loads((test / "manifest.json").read_text())["splits"])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    for tar in test.glob("*.tar"):
        tar.rename(folder / tar.name)
    with pytest.raises((ValueError, RuntimeError), match="excluded") as err:
        run_eval(_cfg(folder, tmp_path / "out"))
    path = tmp_path / "out" / "excluded.json"
    assert str(path.resolve()) in str(err.value)
    excluded = {e["key"]: e["reason"] for e in json.loads(path.read_text())["excluded"]}
    assert corrupt <= set(excluded) and all(
        excluded[k].startswith("in the shards but unreadable") for k in corrupt
    )
