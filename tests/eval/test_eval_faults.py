"""Evaluation with unreadable tracks: every one is listed in `excluded` with a reason, and the split
scheme stays what the dataset defines."""

from __future__ import annotations

from muser.config import EvalConfig
from muser.eval import run_eval
from tests.shards import shardkit


def test_tracks_the_reader_cannot_decode_are_listed_in_excluded(tmp_path):
    tracks = shardkit.make_tracks(12, 1.0, 16000)
    folder = shardkit.write_folder(tmp_path / "s", tracks, sample_rate=16000, corrupt={"track_0004"})
    (folder / "errors.jsonl").write_text('{"id": "gone", "reason": "no audio"}\n{"id": "to')  # torn line
    cfg = EvalConfig(
        task="shards",
        data=str(folder),
        label_task="genre",
        protocol="zeroshot",
        folds=2,
        seeds=1,
        output=str(tmp_path / "out"),
    )
    result = run_eval(cfg)
    excluded = {e["key"]: e["reason"] for e in result["excluded"]}
    assert "unreadable" in excluded["track_0004"] and excluded["gone"] == "no audio"
    # tracks 0 and 7 carry no genre label (shardkit): excluded for that, not for being unreadable
    assert "no genre label" in excluded["track_0000"]
    assert result["counts"]["tracks"] == 12 - 1 - 2
