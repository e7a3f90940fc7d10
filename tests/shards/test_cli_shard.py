"""`muser shard` and `muser inspect` end to end on synthetic corpora in every layout (CliRunner in-process,
plus one real kill -9 of a subprocess), checked with plain tarfile."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from muser.cli import main
from muser.shards import manifest as mf
from muser.synth import make_corpus

REPO = Path(__file__).resolve().parents[2]


def _keys(dst: Path) -> list[str]:
    keys = []
    for shard in sorted(dst.glob("*.tar")):
        with tarfile.open(shard) as tar:
            keys += [m.name[: -len(".json")] for m in tar if m.name.endswith(".json")]
    return keys


def _shard(*args: str) -> object:
    return CliRunner().invoke(main, ["shard", *args, "--workers", "1", "--quiet"], catch_exceptions=False)


@pytest.mark.parametrize("layout", ["gtzan", "fma", "mtt", "folder"])
def test_every_layout_shards_and_reports_its_planted_bad_files(tmp_path, layout):
    src = make_corpus(tmp_path / "src", layout, n_per_class=1, seconds=1.0, broken=True)
    broken = json.loads((tmp_path / "src" / "BROKEN.json").read_text())
    dst = tmp_path / "out"
    result = _shard(str(src), str(dst), "--max-count", "3")
    assert result.exit_code == 2, result.output  # planted files exceed the default --max-errors 0.01
    assert "tracks failed" in result.output and "--max-errors" in result.output
    errors = {json.loads(line)["id"] for line in (dst / "errors.jsonl").read_text().splitlines()}
    assert {e["id"] for e in broken["errors"]} <= errors
    keys = _keys(dst)
    assert len(keys) == len(set(keys)) > 0 and not set(keys) & errors
    assert {u["id"] for u in broken["valid_unicode"]} <= set(keys)
    m = mf.read_manifest(dst)
    assert m["complete"] and m["sources"] == [layout] and m["errors"] == len(errors)
    assert sum(s["samples"] for s in m["splits"].values()) == len(keys)
    assert all(sh["samples"] <= 3 for s in m["splits"].values() for sh in s["shards"])
    assert m["labels"], "every synthetic layout carries labels"
    # a generous threshold makes the same run a success; nothing is redone
    again = _shard(str(src), str(dst), "--max-count", "3", "--max-errors", "1")
    assert again.exit_code == 0, again.output
    assert _keys(dst) == keys


def test_inspect_reports_splits_labels_errors_and_a_sample(tmp_path):
    src = make_corpus(tmp_path / "src", "gtzan", n_per_class=2, seconds=1.0, broken=True)
    dst = tmp_path / "out"
    assert _shard(str(src), str(dst), "--max-errors", "1", "--codec", "pcm").exit_code == 0
    runner = CliRunner()
    report = json.loads(runner.invoke(main, ["inspect", str(dst), "--json", "--verify"]).output)
    assert report["codec"] == "pcm" and report["verify"] == [] and report["complete"]
    assert report["samples"] == len(_keys(dst)) and report["labels"]["genre"]["type"] == "single"
    assert report["errors"]["count"] == 3 and report["errors"]["first"][0]["reason"]
    assert report["sample"]["meta"]["id"] == report["sample"]["key"]
    text = runner.invoke(main, ["inspect", str(dst), "--verify"])
    assert text.exit_code == 0 and "labels: genre" in text.output and "verified" in text.output
    shard = next(iter(sorted(dst.glob("*.tar"))))
    shard.write_bytes(shard.read_bytes()[:-1] + b"\1")
    bad = runner.invoke(main, ["inspect", str(dst), "--verify"])
    assert bad.exit_code == 1 and "mismatch" in bad.output and shard.name in bad.output


def test_user_mistakes_are_one_line_errors(tmp_path):
    runner = CliRunner()
    not_shards = runner.invoke(main, ["inspect", str(tmp_path)])
    assert not_shards.exit_code == 2 and "not a shard folder" in not_shards.output
    assert "Traceback" not in not_shards.output
    size = runner.invoke(main, ["shard", str(tmp_path), str(tmp_path / "o"), "--max-size", "huge"])
    assert size.exit_code == 2 and "512MB" in size.output
    src = make_corpus(tmp_path / "src", "gtzan", n_per_class=1, seconds=1.0)
    assert _shard(str(src), str(tmp_path / "out")).exit_code == 0
    other = _shard(str(src), str(tmp_path / "out"), "--sample-rate", "8000")
    assert other.exit_code == 2 and "--overwrite" in other.output and "sample_rate" in other.output
    assert _shard(str(src), str(tmp_path / "out"), "--sample-rate", "8000", "--overwrite").exit_code == 0
    assert mf.read_manifest(tmp_path / "out")["sample_rate"] == 8000
    wrong = _shard(str(src), str(tmp_path / "o2"), "--source", "mtt")
    assert wrong.exit_code == 2 and "Traceback" not in wrong.output


def test_shard_help_has_an_example():
    out = CliRunner().invoke(main, ["shard", "--help"]).output
    assert "muser shard fma_small/" in out and "--max-size" in out


@pytest.mark.parametrize("workers", ["1", "2"])
def test_resume_after_kill_9_gives_the_uninterrupted_samples(tmp_path, workers):
    src = make_corpus(tmp_path / "src", "gtzan", n_per_class=5, seconds=6.0)
    args = ["--max-count", "2", "--workers", workers, "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    dst = tmp_path / "killed"
    proc = subprocess.Popen(
        [sys.executable, "-m", "muser.cli", "shard", str(src), str(dst), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    try:
        while time.time() < deadline and proc.poll() is None:
            try:
                if json.loads((dst / "manifest.json").read_text())["splits"]:
                    break  # the first shard is committed: kill mid-run
            except (FileNotFoundError, json.JSONDecodeError, KeyError):
                pass
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    assert not mf.read_manifest(dst)["complete"], "the kill must land mid-run for this test to mean anything"
    assert _shard(str(src), str(dst), *args[:2]).exit_code == 0
    assert _shard(str(src), str(tmp_path / "ref"), *args[:2]).exit_code == 0
    keys, ref = _keys(dst), _keys(tmp_path / "ref")
    assert len(keys) == len(set(keys)) == 30 and sorted(keys) == sorted(ref)
    assert mf.verify(dst) == [] and mf.read_manifest(dst)["complete"]
    for shard in (tmp_path / "ref").glob("*.tar"):
        assert (dst / shard.name).read_bytes() == shard.read_bytes()


def _descendants(pid: int) -> list[int]:
    """Live (non-zombie) descendants of pid, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="follows the worker processes in /proc")
def test_killing_the_main_process_leaves_no_worker_running(tmp_path):
    # What the OOM killer does: SIGKILL to the main process only. Its decode workers must not live on.
    src = make_corpus(tmp_path / "src", "gtzan", n_per_class=5, seconds=6.0)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "muser.cli",
        "shard",
        str(src),
        str(tmp_path / "out"),
        "--workers",
        "2",
        "-q",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, family = time.time() + 60, []
    try:
        while time.time() < deadline and proc.poll() is None:
            family = _descendants(proc.pid)
            if (tmp_path / "out" / "manifest.json").exists() and len(family) >= 3:
                break  # the forkserver and both workers are up and the run has started
            time.sleep(0.01)
        assert proc.poll() is None, "the run must still be going when it is killed"
        # Without the family the check below would pass on an empty list: the forkserver and both decode
        # workers must have been seen before the kill.
        assert len(family) >= 3, f"only {len(family)} sharding processes found under {proc.pid}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    deadline = time.time() + 5
    while time.time() < deadline and any(map(_alive, family)):
        time.sleep(0.05)
    assert not [pid for pid in family if _alive(pid)], "sharding processes outlived the killed main process"


def test_disk_full_is_one_line_without_a_traceback(tmp_path, monkeypatch):
    from muser.shards import writer

    def disk_full(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(writer._Shard, "write", disk_full)
    src = make_corpus(tmp_path / "src", "gtzan", n_per_class=1, seconds=1.0)
    result = _shard(str(src), str(tmp_path / "out"))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.count("\n") == 1 and "disk full while writing" in result.output


def test_folder_held_out_splits_from_the_command_line(tmp_path):
    src = make_corpus(tmp_path / "src", "folder", n_per_class=3, seconds=0.5)
    dst = tmp_path / "out"
    ok = _shard(str(src), str(dst), "--valid-fraction", "0.25", "--test-fraction", "0.25")
    assert ok.exit_code == 0, ok.output
    splits = mf.read_manifest(dst)["splits"]
    assert set(splits) == {"train", "valid", "test"} and all(s["samples"] for s in splits.values())
    fma = make_corpus(tmp_path / "fma", "fma", n_per_class=1, seconds=0.5)
    own = _shard(str(fma), str(tmp_path / "o2"), "--valid-fraction", "0.1")
    assert own.exit_code == 2 and "already puts its tracks in" in own.output
    bad = _shard(str(src), str(tmp_path / "o3"), "--test-fraction", "1.5")
    assert bad.exit_code == 2 and "--test-fraction is a fraction" in bad.output
    assert all("Traceback" not in r.output and r.output.count("\n") == 1 for r in (own, bad))


@pytest.mark.parametrize(
    "name,content,match",
    [
        (
            "extra.csv",
            "path,title\n{rel},Song,surplus\n",
            r"extra.csv line 2 has 3 fields but the header has 2",
        ),
        ("huge.csv", 'path,title\n{rel},"' + "x" * 200_000 + '"\n', r"huge.csv line 2: a field is longer"),
        (
            "open.csv",
            'path,title\n{rel},"never closed\n',
            r"open.csv line 2: unexpected end of data \(an unclosed quote\?\)",
        ),
        ("latin1.csv", b"path,title\n{rel},Caf\xe9\n", r"latin1.csv line 2 is not UTF-8 \(byte 0xe9\)"),
        ("bad.jsonl", '{{"path": "{rel}"}}\n{{"path": \n', r"bad.jsonl line 2 is not valid JSON"),
    ],
)
def test_a_bad_sidecar_row_is_one_line_naming_file_and_line(tmp_path, name, content, match):
    src = make_corpus(tmp_path / "src", "folder", n_per_class=1, seconds=0.5, styles=["blues"])
    rel = next(p.relative_to(src).as_posix() for p in src.rglob("*.ogg"))
    data = content.encode() if isinstance(content, str) else content
    (tmp_path / name).write_bytes(
        data.replace(b"{rel}", rel.encode()).replace(b"{{", b"{").replace(b"}}", b"}")
    )
    result = _shard(str(src), str(tmp_path / "out"), "--metadata", str(tmp_path / name))
    assert result.exit_code == 2 and "Traceback" not in result.output and result.output.count("\n") == 1
    assert re.search(match, result.output), result.output


def test_silent_tracks_are_sharded_and_warned_about_by_shard_and_inspect(tmp_path):
    import numpy as np
    import soundfile as sf

    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    sf.write(src / "music.wav", rng.uniform(-0.5, 0.5, 8000).astype(np.float32), 8000)
    sf.write(src / "zeros.wav", np.zeros(8000, np.float32), 8000)  # digital silence
    sf.write(src / "hiss.wav", rng.uniform(-3e-4, 3e-4, 8000).astype(np.float32), 8000)  # -70 dBFS
    dst = tmp_path / "out"
    done = CliRunner().invoke(main, ["shard", str(src), str(dst), "--workers", "1", "--sample-rate", "8000"])
    assert done.exit_code == 0, done.output
    assert "silent" in done.output and "hiss" in done.output and "zeros" in done.output
    manifest = mf.read_manifest(dst)
    assert len(_keys(dst)) == 3 and manifest["errors"] == 0  # still sharded, not an error
    assert sorted(manifest["silent"]) == sorted(k for k in _keys(dst) if "music" not in k)
    report = json.loads(CliRunner().invoke(main, ["inspect", str(dst), "--json"]).output)
    assert report["silent"]["count"] == 2 and sorted(report["silent"]["first"]) == sorted(manifest["silent"])
    text = CliRunner().invoke(main, ["inspect", str(dst)]).output
    assert "silent tracks: 2" in text and "-60 dBFS" in text
