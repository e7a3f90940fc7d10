"""RunFolder: the names of a run folder's files, and what the readers of a run ask of it."""

from __future__ import annotations

import json

from muser.runs import RunFolder


def test_the_layout_is_named_in_one_place(tmp_path):
    run = RunFolder(tmp_path)
    assert (run.config, run.metrics, run.last, run.checksums) == (
        tmp_path / "config.json",
        tmp_path / "metrics.jsonl",
        tmp_path / "last.pt",
        tmp_path / "checksums.json",
    )
    assert (run.init, run.model, run.result) == (
        tmp_path / "init",
        tmp_path / "model",
        tmp_path / "result.json",
    )
    assert run.step(42) == tmp_path / "step-0000042.pt"


def test_steps_newest_first_and_the_model_export(tmp_path):
    run = RunFolder(tmp_path)
    for k in (5, 100, 20):
        run.step(k).write_bytes(b"")
    assert run.steps() == [run.step(100), run.step(20), run.step(5)]
    assert not run.has_model()
    run.model.mkdir()
    (run.model / "config.json").write_text("{}")
    assert run.has_model()


def test_result_reads_back_or_is_none(tmp_path):
    run = RunFolder(tmp_path)
    assert run.read_result() is None
    run.result.write_text("{torn")
    assert run.read_result() is None
    run.result.write_text(json.dumps({"steps": 3}))
    assert run.read_result() == {"steps": 3}
