"""errors.jsonl: appends that survive a torn last line, tolerant reading, and the resume rewrite."""

from __future__ import annotations

import json

from muser.shards import errorlog


def _rec(i: int) -> dict:
    return errorlog.record(f"t{i}", f"/music/t{i}.wav", f"reason {i}", "folder", "all")


def test_read_errors_skips_a_torn_last_line_and_garbage(tmp_path):
    path = tmp_path / "errors.jsonl"
    lines = [json.dumps(_rec(0)), "not json", "[1, 2]", "", '{"id": "t9", "rea']
    path.write_bytes(("\n".join(lines)).encode() + b"\n\xff\xfe\n" + json.dumps(_rec(1)).encode()[:-3])
    assert errorlog.read_errors(tmp_path) == [_rec(0)]
    assert errorlog.read_errors(path) == [_rec(0)]  # the folder or the file itself
    assert errorlog.read_errors(tmp_path / "nowhere") == []


def test_an_append_after_a_torn_line_starts_a_fresh_line(tmp_path):
    errorlog.append(tmp_path, [_rec(0)])
    with open(tmp_path / "errors.jsonl", "a") as f:
        f.write('{"id": "t1", "pa')  # the disk filled up here last time
    errorlog.append(tmp_path, [_rec(2), _rec(3)])
    assert errorlog.read_errors(tmp_path) == [_rec(0), _rec(2), _rec(3)]


def test_keep_committed_drops_uncommitted_repeated_and_torn_records(tmp_path):
    errorlog.append(tmp_path, [_rec(0), _rec(1), _rec(0), _rec(2)])
    with open(tmp_path / "errors.jsonl", "a") as f:
        f.write('{"id": "t3"')
    kept = errorlog.keep_committed(tmp_path, {"t0", "t2", "t3"})
    assert kept == [_rec(0), _rec(2)] == errorlog.read_errors(tmp_path)
    assert (tmp_path / "errors.jsonl").read_text().count("\n") == 2


def test_undecodable_file_names_are_written_as_escapes(tmp_path):
    name = b"/music/caf\xe9.wav".decode("utf-8", "surrogateescape")  # what os.listdir gives
    errorlog.append(tmp_path, [errorlog.record("t0", name, "its path is not valid UTF-8", "folder", "all")])
    assert errorlog.read_errors(tmp_path)[0]["path"] == "/music/caf\\xe9.wav"
    errorlog.append(tmp_path, [{"id": "t1", "path": "\ud800"}])  # a lone surrogate from anywhere else
    assert errorlog.read_errors(tmp_path)[1] == {"id": "t1", "path": "\ud800"}
