"""Bad shard data never kills, hangs or silently changes a read: malformed members are skipped and
counted, a source with nothing decodable stops with one sentence, warnings are rate-limited, a crop far
longer than the tracks stays small, stdin scripts read without workers, and worker processes die with
their parent."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from muser.shards.reader import make_loader
from muser.shards.stages import ShardReadError
from muser.shards.text import load_meta
from tests.shards import shardkit

RATE = 8000
ROOT = Path(__file__).resolve().parents[2]

MALFORMED = {
    "not_an_object": b'["a", "list"]',
    "labels_is_text": json.dumps({"id": "x", "labels": "ambient"}).encode(),
    "genres_is_a_number": json.dumps({"id": "x", "genres": 5}).encode(),
    "title_is_an_object": json.dumps({"id": "x", "title": {"a": 1}}).encode(),
    "deeply_nested": json.dumps({"id": "x", "extra": json.loads("[" * 40 + "]" * 40)}).encode(),
    "very_deep": b"[" * 100_000 + b"]" * 100_000,
    "not_json": b"\xff\xfe not json",
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_metadata_is_one_clear_reason(name):
    with pytest.raises(ValueError, match="metadata|label"):
        load_meta(MALFORMED[name])


def test_valid_metadata_passes_unchanged():
    meta = shardkit.make_tracks(1, 1.0)[0]["meta"]
    assert load_meta(json.dumps(meta).encode()) == meta


def _malformed_folder(root: Path) -> tuple[Path, set[str]]:
    tracks = shardkit.make_tracks(len(MALFORMED) + 6, 1.0, RATE)
    bad = set()
    for t, raw in zip(tracks, MALFORMED.values(), strict=False):
        t["raw_json"] = raw
        bad.add(t["key"])
    return shardkit.write_folder(root, tracks, sample_rate=RATE, per_shard=5), bad


def test_malformed_members_are_skipped_and_counted_in_both_modes(tmp_path):
    folder, bad = _malformed_folder(tmp_path / "s")
    loader = make_loader(folder, mode="eval", batch_size=4, num_workers=0)
    keys = {k for b in loader for k in b["key"]}
    assert keys.isdisjoint(bad) and len(keys) == 6 and loader.errors == len(bad)
    train = make_loader(folder, steps=8, batch_size=4, num_workers=0, crop_seconds=0.5)
    for batch in train:
        assert bad.isdisjoint(batch["key"])
    assert train.errors > 0


def test_a_truncated_tar_keeps_what_came_before(tmp_path):
    tracks = shardkit.make_tracks(8, 1.0, RATE)
    folder = shardkit.write_folder(tmp_path / "s", tracks, sample_rate=RATE, per_shard=8)
    shard = folder / "train-000000.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])  # cut mid-member
    loader = make_loader(folder, mode="eval", num_workers=0)
    keys = [k for b in loader for k in b["key"]]
    assert 0 < len(set(keys)) < 8 and loader.errors == 1


def test_nothing_decodable_stops_with_one_sentence_and_few_warnings(tmp_path, caplog):
    tracks = shardkit.make_tracks(6, 1.0, RATE)
    folder = shardkit.write_folder(
        tmp_path / "s", tracks, sample_rate=RATE, corrupt={t["key"] for t in tracks}
    )
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="muser.shards.reader"):
        with pytest.raises(ShardReadError) as info:
            list(make_loader(folder, steps=5, batch_size=2, num_workers=0))
    message = str(info.value)
    assert "\n" not in message and str(folder) in message and "unreadable FLAC" in message
    assert time.monotonic() - started < 60
    assert len(caplog.records) < 10  # rate-limited: not one warning per failed sample (200 failed here)
    with pytest.raises(ShardReadError, match="could be decoded") as info:  # the same from a worker process
        list(make_loader(folder, steps=5, batch_size=2, num_workers=1))
    assert "Traceback" not in str(info.value)


def test_oversized_members_are_skipped_without_being_read(tmp_path):
    from muser.shards.stages import read_tar

    folder = shardkit.write_folder(tmp_path / "s", shardkit.make_tracks(3, 1.0, RATE), sample_rate=RATE)
    results = list(read_tar(str(folder / "train-000000.tar"), max_member_bytes=1000))
    assert [s for s, _ in results] == [None, None, None]  # the FLAC members are ~10 kB each
    assert all("over the reader's 1000" in reason for _, reason in results)


def test_an_oversized_metadata_member_is_refused_from_its_header_unread(tmp_path, monkeypatch):
    """A .json member far over the metadata limit (yet under the audio cap) is skipped from the tar header's
    size, in the reader, the tokenizer pass and inspect, without its bytes being read into memory."""
    import tarfile

    from muser.shards.inspect import inspect_shards
    from muser.shards.stages import read_tar
    from muser.shards.text import MAX_META_BYTES
    from muser.train.data import _metadata

    tracks = shardkit.make_tracks(3, 1.0, RATE)
    huge = tracks[0]["key"]
    tracks[0]["raw_json"] = b'{"id": "x", "description": "' + b"a" * (MAX_META_BYTES + 10) + b'"}'
    folder = shardkit.write_folder(tmp_path / "s", tracks, sample_rate=RATE)
    shard = str(folder / "train-000000.tar")
    read: list[str] = []
    extract = tarfile.TarFile.extractfile

    def recording(self, member):  # every member anyone reads goes through extractfile
        read.append(getattr(member, "name", member))
        return extract(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", recording)
    results = list(read_tar(shard))
    assert results[0][0] is None and "over the 1048576-byte limit" in results[0][1]
    assert [s["__key__"] for s, _ in results[1:]] == [t["key"] for t in tracks[1:]]
    metas, skipped = _metadata([shard], limit=10)
    assert len(metas) == 2 and skipped == 1
    assert inspect_shards(folder)["sample"]["key"] == tracks[1]["key"]
    assert f"{huge}.json" not in read and f"{tracks[1]['key']}.json" in read


def _run_script(code: str, tmp_path: Path, stdin: bool) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if stdin:
        return subprocess.run(
            [sys.executable, "-"],
            input=code,
            text=True,
            capture_output=True,
            env=env,
            timeout=300,
            cwd=tmp_path,
        )
    script = tmp_path / "script.py"
    script.write_text(code)
    return subprocess.run([sys.executable, str(script)], text=True, capture_output=True, env=env, timeout=300)


@pytest.mark.parametrize("stdin", [True, False])
def test_a_script_workers_cannot_reimport_reads_in_process_with_one_warning(tmp_path, stdin):
    folder = shardkit.write_folder(tmp_path / "s", shardkit.make_tracks(4, 1.0, RATE), sample_rate=RATE)
    code = (  # no main guard: from a file, each worker would re-run this
        "from muser.shards.reader import make_loader\n"
        f"loader = make_loader({str(folder)!r}, mode='eval', num_workers=2)\n"
        "print('keys', sum(len(b['key']) for b in loader))\n"
    )
    done = _run_script(code, tmp_path, stdin=stdin)
    assert done.returncode == 0, done.stderr
    assert "keys 4" in done.stdout
    assert ("cannot re-import" if stdin else "no `if __name__") in done.stderr
    assert "exited unexpectedly" not in done.stderr


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_killing_the_main_process_takes_its_loader_workers_along(tmp_path):
    folder = shardkit.write_folder(tmp_path / "s", shardkit.make_tracks(8, 2.0, RATE), sample_rate=RATE)
    script = tmp_path / "reader.py"
    script.write_text(
        "import time\n"
        "from muser.shards.reader import make_loader\n"
        "if __name__ == '__main__':\n"
        f"    loader = make_loader({str(folder)!r}, steps=100000, batch_size=2, num_workers=2)\n"
        "    for i, batch in enumerate(loader):\n"
        "        if i == 2:\n"
        "            print('ready', flush=True)\n"
        "        time.sleep(0.05)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        workers = _descendants(proc.pid)
        assert len(workers) >= 2  # the forkserver and its loader workers
        os.kill(proc.pid, signal.SIGKILL)  # what the OOM killer does
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.2)
        assert not [p for p in workers if _alive(p)]
    finally:
        if proc.poll() is None:
            proc.kill()
