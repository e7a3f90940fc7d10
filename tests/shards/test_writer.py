"""The parallel crash-safe shard writer, checked with plain tarfile + soundfile (not our reader)."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from muser.config import ShardConfig
from muser.shards import errorlog, pool, writer
from muser.shards import manifest as mf
from muser.shards.report import parse_size
from muser.shards.sources.base import AUDIO_EXTENSIONS, SourceListing, Track
from muser.shards.writer import TooManyErrors, write_shards

SPLITS = ("train", "valid", "test")


def _listing(root: Path, n: int = 9, seconds: float = 0.5, bad: bool = False) -> SourceListing:
    """n noise tracks (stereo 22.05 kHz) over three splits with a genre label; `bad` adds broken ones."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tracks = []
    for i in range(n):
        path = root / f"track {i}.wav"
        sf.write(path, rng.uniform(-0.6, 0.6, (int(22050 * seconds), 2)).astype(np.float32), 22050)
        meta = {"title": f"Song {i}", "artist": "Ärtist", "labels": {"genre": ["rock", "jazz"][i % 2]}}
        tracks.append(Track(f"t{i:02d}", path, "test", SPLITS[i % 3], meta))
    if bad:
        (root / "text.wav").write_text("not audio at all")
        (root / "empty.flac").write_bytes(b"")
        tracks += [
            Track("bad_text", root / "text.wav", "test", "train", {}),
            Track("bad_empty", root / "empty.flac", "test", "valid", {}),
            Track("bad_missing", None, "test", "test", {}, error="listed in meta.csv but missing on disk"),
        ]
    return SourceListing("test", root, tracks, {"genre": "single"})


def _cfg(root: Path, dst: Path, **kw) -> ShardConfig:
    return ShardConfig(src=str(root), dst=str(dst), workers=kw.pop("workers", 1), **kw)


def _read(dst: Path) -> dict[str, dict]:
    """key -> {"meta", "audio" bytes, "ext", "shard"} for every sample of every tar in dst."""
    samples: dict[str, dict] = {}
    for shard in sorted(dst.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for m in tar:
                key, ext = m.name.split(".", 1)
                data = tar.extractfile(m).read()
                s = samples.setdefault(key, {"shard": shard.name})
                assert s["shard"] == shard.name, "a sample's members must sit in one shard"
                if ext == "json":
                    assert "meta" not in s, f"duplicate sample {key}"
                    s["meta"] = json.loads(data)
                else:
                    s["audio"], s["ext"] = data, ext
    return samples


def _shard_bytes(dst: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(dst.glob("*.tar"))}


def test_shards_hold_every_track_with_metadata_and_audio(tmp_path):
    listing = _listing(tmp_path / "src")
    summary = write_shards(_cfg(tmp_path / "src", tmp_path / "out", max_count=2), False, listing)
    samples = _read(tmp_path / "out")
    assert sorted(samples) == [f"t{i:02d}" for i in range(9)]
    for key, s in samples.items():
        meta = s["meta"]
        assert s["ext"] == "flac" and s["shard"].startswith(meta["split"] + "-")
        assert meta["id"] == key and meta["source"] == "test" and meta["artist"] == "Ärtist"
        assert meta["labels"]["genre"] in ("rock", "jazz") and meta["sample_rate"] == 16000
        audio, rate = sf.read(io.BytesIO(s["audio"]), dtype="int16")
        info = sf.info(io.BytesIO(s["audio"]))
        assert (rate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert len(audio) == meta["num_samples"] == 8000 and meta["duration"] == 0.5
    m = mf.read_manifest(tmp_path / "out")
    assert m["complete"] and m["codec"] == "flac" and m["sample_rate"] == 16000 and m["sources"] == ["test"]
    assert list(m["splits"]) == ["train", "valid", "test"]
    for split in SPLITS:
        entry = m["splits"][split]
        assert entry["samples"] == 3 and entry["seconds"] == 1.5
        assert [sh["name"] for sh in entry["shards"]] == [f"{split}-000000.tar", f"{split}-000001.tar"]
        for sh in entry["shards"]:
            assert sh["sha256"] == mf.sha256_file(tmp_path / "out" / sh["name"])
            assert sh["bytes"] == (tmp_path / "out" / sh["name"]).stat().st_size
    assert m["labels"] == {
        "genre": {"type": "single", "classes": ["jazz", "rock"], "counts": {"jazz": 4, "rock": 5}}
    }
    assert summary["errors"] == 0 and summary["written"] == 9
    assert (tmp_path / "out" / "errors.jsonl").read_text() == ""
    assert not list((tmp_path / "out").glob(".*"))  # no temp files left


def test_pcm_codec_holds_the_same_samples_as_flac(tmp_path):
    listing = _listing(tmp_path / "src", n=3)
    write_shards(_cfg(tmp_path / "src", tmp_path / "flac"), False, listing)
    write_shards(_cfg(tmp_path / "src", tmp_path / "pcm", codec="pcm", sample_rate=8000), False, listing)
    write_shards(_cfg(tmp_path / "src", tmp_path / "pcm16", codec="pcm"), False, listing)
    pcm8, flac, pcm16 = _read(tmp_path / "pcm"), _read(tmp_path / "flac"), _read(tmp_path / "pcm16")
    for key in flac:
        assert pcm8[key]["ext"] == "pcm" and len(pcm8[key]["audio"]) == 2 * 4000
        assert pcm8[key]["meta"]["sample_rate"] == 8000 and pcm8[key]["meta"]["num_samples"] == 4000
        from_flac, _ = sf.read(io.BytesIO(flac[key]["audio"]), dtype="int16")
        np.testing.assert_array_equal(np.frombuffer(pcm16[key]["audio"], "<i2"), from_flac)


def test_max_count_and_max_size_bound_each_shard(tmp_path):
    listing = _listing(tmp_path / "src", n=12, seconds=1.0)
    write_shards(_cfg(tmp_path / "src", tmp_path / "count", max_count=3), False, listing)
    counts = [len(_read_names(p)) // 2 for p in sorted((tmp_path / "count").glob("*.tar"))]
    assert counts == [3, 1, 3, 1, 3, 1]  # 4 tracks per split: 3 + 1
    limit = 70 * 1024  # each 1 s noise track is ~30 KB of FLAC: two fit, three do not
    write_shards(_cfg(tmp_path / "src", tmp_path / "size", max_size=limit), False, listing)
    shards = sorted((tmp_path / "size").glob("*.tar"))
    assert len(shards) == 6
    for p in shards:
        assert p.stat().st_size <= limit and len(_read_names(p)) == 4


def _read_names(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def test_output_bytes_do_not_depend_on_the_worker_count(tmp_path):
    listing = _listing(tmp_path / "src", n=9, bad=True)
    write_shards(_cfg(tmp_path / "src", tmp_path / "w1", max_count=2, max_errors=1.0), False, listing)
    write_shards(
        _cfg(tmp_path / "src", tmp_path / "w2", max_count=2, max_errors=1.0, workers=2), False, listing
    )
    one, two = _shard_bytes(tmp_path / "w1"), _shard_bytes(tmp_path / "w2")
    assert one == two and len(one) == 6
    assert (tmp_path / "w1" / "errors.jsonl").read_text() == (tmp_path / "w2" / "errors.jsonl").read_text()


def test_bad_tracks_are_reported_and_the_run_continues(tmp_path):
    listing = _listing(tmp_path / "src", n=6, bad=True)
    with pytest.raises(TooManyErrors, match=r"3 of 9 tracks failed") as info:
        write_shards(_cfg(tmp_path / "src", tmp_path / "out"), False, listing)
    assert info.value.summary["written"] == 6
    errors = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    reasons = {e["id"]: e["reason"] for e in errors}
    assert set(reasons) == {"bad_text", "bad_empty", "bad_missing"}
    assert "not readable" in reasons["bad_text"] and "empty" in reasons["bad_empty"]
    assert "missing" in reasons["bad_missing"]
    assert all(set(e) >= {"id", "path", "reason"} for e in errors)
    m = mf.read_manifest(tmp_path / "out")
    assert (
        m["errors"] == 3
        and m["complete"]
        and sorted(_read(tmp_path / "out")) == [f"t{i:02d}" for i in range(6)]
    )
    # below the threshold the same run is a success
    summary = write_shards(_cfg(tmp_path / "src", tmp_path / "ok", max_errors=0.5), False, listing)
    assert summary["errors"] == 3 and summary["error_fraction"] == pytest.approx(1 / 3)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a chmod-000 file (test_audio.py simulates it)")
def test_an_unreadable_file_is_listed_as_permission_denied(tmp_path):
    listing = _listing(tmp_path / "src", n=3)
    locked = listing.tracks[0].path
    locked.chmod(0)
    try:
        summary = write_shards(_cfg(tmp_path / "src", tmp_path / "out", max_errors=0.5), False, listing)
    finally:
        locked.chmod(0o644)
    assert summary["errors"] == 1
    (error,) = [json.loads(line) for line in (tmp_path / "out" / "errors.jsonl").read_text().splitlines()]
    assert error["id"] == "t00" and error["reason"].startswith("permission denied"), error


class _Killed(BaseException):
    """Stands for kill -9 at a chosen point: BaseException, so no `except Exception` in the writer sees it."""


def _crash_after(monkeypatch, target, name: str, calls: int) -> None:
    original, seen = getattr(target, name), []

    def dying(*args, **kwargs):
        seen.append(1)
        if len(seen) > calls:
            raise _Killed
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, dying)


@pytest.mark.parametrize(
    "where,calls",
    [
        ("commit", 2),  # mid-shard: two shards committed, the third open as a temp file
        ("write_manifest", 3),  # between a shard's rename and the manifest that lists it
    ],
)
def test_resume_after_a_crash_gives_exactly_the_uninterrupted_output(tmp_path, monkeypatch, where, calls):
    listing = _listing(tmp_path / "src", n=12, bad=True)
    cfg = dict(max_count=2, max_errors=1.0)
    write_shards(_cfg(tmp_path / "src", tmp_path / "ref", **cfg), False, listing)
    target = writer._ShardingRun if where == "commit" else mf
    with monkeypatch.context() as m:
        _crash_after(m, target, where, calls)
        with pytest.raises(_Killed):
            write_shards(_cfg(tmp_path / "src", tmp_path / "out", **cfg), False, listing)
    assert not mf.read_manifest(tmp_path / "out")["complete"]
    summary = write_shards(_cfg(tmp_path / "src", tmp_path / "out", **cfg), False, listing)
    assert summary["resumed"] > 0
    assert _shard_bytes(tmp_path / "out") == _shard_bytes(tmp_path / "ref")
    ref, out = mf.read_manifest(tmp_path / "ref"), mf.read_manifest(tmp_path / "out")
    assert out["splits"] == ref["splits"] and out["labels"] == ref["labels"] and out["errors"] == 3
    errors = (tmp_path / "out" / "errors.jsonl").read_text().splitlines()
    assert sorted(errors) == sorted((tmp_path / "ref" / "errors.jsonl").read_text().splitlines())
    assert not list((tmp_path / "out").glob(".*"))


def test_a_finished_run_is_not_redone(tmp_path):
    listing = _listing(tmp_path / "src", n=3)
    write_shards(_cfg(tmp_path / "src", tmp_path / "out"), False, listing)
    before = _shard_bytes(tmp_path / "out")
    summary = write_shards(_cfg(tmp_path / "src", tmp_path / "out", workers=2), False, listing)
    assert summary["written"] == 0 and summary["resumed"] == 3 and _shard_bytes(tmp_path / "out") == before


def test_different_options_are_refused_and_overwrite_starts_over(tmp_path):
    listing = _listing(tmp_path / "src", n=3)
    out = tmp_path / "out"
    write_shards(_cfg(tmp_path / "src", out), False, listing)
    (out / "notes.txt").write_text("mine")
    (out / "keep.tar").write_bytes(b"not one of ours")
    with pytest.raises(ValueError, match=r"codec 'flac' -> 'pcm'.*--overwrite"):
        write_shards(_cfg(tmp_path / "src", out, codec="pcm"), False, listing)
    write_shards(_cfg(tmp_path / "src", out, codec="pcm", overwrite=True), False, listing)
    assert {s["ext"] for s in _read_ours(out).values()} == {"pcm"}
    assert mf.read_manifest(out)["codec"] == "pcm"
    assert (out / "notes.txt").read_text() == "mine" and (out / "keep.tar").read_bytes() == b"not one of ours"


def test_the_resampler_is_recorded_and_a_resume_cannot_mix_two(tmp_path):
    listing = _listing(tmp_path / "src", n=3)
    out = tmp_path / "out"
    write_shards(_cfg(tmp_path / "src", out), False, listing)
    manifest = mf.read_manifest(out)
    assert manifest["options"]["resampler"] == "soxr-HQ"
    manifest["options"]["resampler"] = "torchaudio-kaiser_best"
    mf.write_manifest(out, manifest)
    with pytest.raises(ValueError, match=r"resampler 'torchaudio-kaiser_best' -> 'soxr-HQ'.*--overwrite"):
        write_shards(_cfg(tmp_path / "src", out), False, listing)
    del manifest["options"]["resampler"]  # a pre-release folder, written before the resampler was recorded
    manifest["muser_version"] = "0.0.9"
    mf.write_manifest(out, manifest)
    with pytest.raises(ValueError, match=r"written by muser 0\.0\.9.*not record resampler.*--overwrite"):
        write_shards(_cfg(tmp_path / "src", out), False, listing)
    write_shards(_cfg(tmp_path / "src", out, overwrite=True), False, listing)
    assert mf.read_manifest(out)["options"]["resampler"] == "soxr-HQ"


_UNGUARDED_SCRIPT = """
import sys
from pathlib import Path

from muser.config import ShardConfig
from muser.shards.sources.base import SourceListing, Track
from muser.shards.writer import write_shards

src, dst = Path(sys.argv[1]), sys.argv[2]
listing = SourceListing("test", src, [Track("a", src / "track 0.wav", "test", "train", {})], {})
write_shards(ShardConfig(src=str(src), dst=dst, workers=2), progress=False, listing=listing)
"""


def test_a_script_without_the_main_guard_fails_before_writing_anything(tmp_path):
    # The worker processes re-run an unguarded script (and its write_shards call) while they start, so
    # neither the parent nor a child may write into DST before the pool has started.
    _listing(tmp_path / "src", n=1)
    script = tmp_path / "unguarded.py"
    script.write_text(_UNGUARDED_SCRIPT)
    dst = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / "src"), str(dst)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode != 0 and "if __name__ == '__main__':" in proc.stderr, proc.stderr
    assert not dst.exists(), sorted(p.name for p in dst.iterdir())


def _read_ours(dst: Path) -> dict[str, dict]:
    samples = {}
    for split in mf.read_manifest(dst)["splits"].values():
        for sh in split["shards"]:
            with tarfile.open(dst / sh["name"]) as tar:
                for m in tar:
                    key, ext = m.name.split(".", 1)
                    if ext != "json":
                        samples[key] = {"ext": ext}
    return samples


def test_shards_without_a_manifest_are_never_overwritten_silently(tmp_path):
    listing = _listing(tmp_path / "src", n=3)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "train-000000.tar").write_bytes(b"someone else's")
    with pytest.raises(ValueError, match="no manifest.json.*--overwrite"):
        write_shards(_cfg(tmp_path / "src", tmp_path / "out"), False, listing)


def test_a_lost_shard_is_refused(tmp_path):
    listing = _listing(tmp_path / "src", n=3)
    write_shards(_cfg(tmp_path / "src", tmp_path / "out"), False, listing)
    (tmp_path / "out" / "valid-000000.tar").unlink()
    with pytest.raises(ValueError, match="lost shards.*valid-000000.tar"):
        write_shards(_cfg(tmp_path / "src", tmp_path / "out"), False, listing)


def test_ids_must_be_unique_and_key_safe(tmp_path):
    listing = _listing(tmp_path / "src", n=2)
    listing.tracks[1].id = listing.tracks[0].id
    with pytest.raises(ValueError, match="unique"):
        write_shards(_cfg(tmp_path / "src", tmp_path / "out"), False, listing)
    listing.tracks[1].id = "has.dot"
    with pytest.raises(ValueError, match="A-Za-z0-9_-"):
        write_shards(_cfg(tmp_path / "src", tmp_path / "out"), False, listing)


@pytest.mark.parametrize(
    "option,value,match",
    [
        ("codec", "mp3", "--codec"),
        ("max_count", 0, "--max-count"),
        ("max_errors", 2.0, "--max-errors"),
        ("workers", 0, "--workers"),
        ("sample_rate", 10, "--sample-rate"),
    ],
)
def test_bad_options_name_the_option(tmp_path, option, value, match):
    with pytest.raises(ValueError, match=match):
        write_shards(_cfg(tmp_path, tmp_path / "out", **{option: value}), False, _listing(tmp_path, n=1))


def test_parse_size():
    assert parse_size("512MB") == 512 * 1024**2 and parse_size("1GB") == 1024**3
    assert parse_size("300k") == 300 * 1024 and parse_size("1048576") == 1048576 and parse_size(77) == 77
    with pytest.raises(ValueError, match="512MB"):
        parse_size("lots")


def test_real_audio_files_all_shard(real_audio_dir, tmp_path):
    files = sorted(p for p in real_audio_dir.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
    tracks = [Track(f"r{i:02d}", p, "folder", "all", {"title": p.stem}) for i, p in enumerate(files)]
    listing = SourceListing("folder", real_audio_dir, tracks, {})
    summary = write_shards(_cfg(real_audio_dir, tmp_path / "out", workers=2), False, listing)
    assert summary["errors"] == 0, (tmp_path / "out" / "errors.jsonl").read_text()
    samples = _read(tmp_path / "out")
    assert len(samples) == len(files) > 20
    for t in tracks:
        info = sf.info(t.path)
        meta = samples[t.id]["meta"]
        assert meta["duration"] == pytest.approx(info.frames / info.samplerate, abs=0.01)


# --- worker faults -------------------------------------------------------------------------------------


def _slow_job(track, sample_rate: int, codec: str):
    """The real job, slowed so that a test can kill workers while the run is in full swing."""
    import time

    time.sleep(0.03)
    return pool.encode_track(track, sample_rate, codec)


def _grandchildren() -> list[int]:
    """Pids of the children of our children: the forkserver's workers (the forkserver is our child)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    ours = {pid for pid, ppid in parents.items() if ppid == os.getpid()}
    return sorted(pid for pid, ppid in parents.items() if ppid in ours)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the worker processes in /proc")
def test_killing_workers_mid_run_gives_the_undisturbed_output(tmp_path, monkeypatch):
    import functools
    import signal
    import threading
    import time

    listing = _listing(tmp_path / "src", n=60, seconds=0.25)
    cfg = dict(max_count=2, workers=2)
    write_shards(_cfg(tmp_path / "src", tmp_path / "ref", **cfg), False, listing)
    monkeypatch.setattr(writer, "results", functools.partial(pool.results, job_fn=_slow_job))
    out, kills, stop = tmp_path / "out", [], threading.Event()
    # Kills are spaced so that no track is in flight at two of them (in flight: at most the open shard
    # plus the look-ahead window past the committed samples); a track killed twice would be given up.
    spacing = cfg["max_count"] + cfg["workers"] * (pool._LOOKAHEAD + 1) + 2

    def killer() -> None:
        due = 2
        while not stop.is_set() and len(kills) < 3:
            try:
                m = json.loads((out / "manifest.json").read_text())
                committed = sum(s["samples"] for s in m["splits"].values())
            except (OSError, ValueError):
                committed = 0
            victims = _grandchildren()
            if committed >= due and victims:
                os.kill(victims[len(kills) % len(victims)], signal.SIGKILL)
                kills.append(committed)
                due = committed + spacing
            time.sleep(0.002)

    thread = threading.Thread(target=killer)
    thread.start()
    try:
        summary = write_shards(_cfg(tmp_path / "src", out, **cfg), False, listing)
    finally:
        stop.set()
        thread.join()
    assert len(kills) == 3 and summary["worker_restarts"] >= 3, (kills, summary)
    assert summary["errors"] == 0 and _shard_bytes(out) == _shard_bytes(tmp_path / "ref")
    assert mf.read_manifest(out)["splits"] == mf.read_manifest(tmp_path / "ref")["splits"]


# --- disk full and a torn error log ---------------------------------------------------------------------


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_disk_full_is_one_sentence_and_a_rerun_resumes_exactly(tmp_path, monkeypatch):
    listing = _listing(tmp_path / "src", n=12, bad=True)
    cfg = dict(max_count=2, max_errors=1.0)
    write_shards(_cfg(tmp_path / "src", tmp_path / "ref", **cfg), False, listing)
    original, calls = writer._Shard.write, []

    def filling(self, data):
        calls.append(1)
        if len(calls) > 7:  # mid-run: a few shards are committed, the next one is half written
            _disk_full()
        original(self, data)

    with monkeypatch.context() as m:
        m.setattr(writer._Shard, "write", filling)
        with pytest.raises(RuntimeError) as info:
            write_shards(_cfg(tmp_path / "src", tmp_path / "out", **cfg), False, listing)
    message = str(info.value)
    assert message.startswith("disk full while writing") and str(tmp_path / "out") in message
    assert "run the same command again" in message and "\n" not in message
    write_shards(_cfg(tmp_path / "src", tmp_path / "out", **cfg), False, listing)
    assert _shard_bytes(tmp_path / "out") == _shard_bytes(tmp_path / "ref")
    assert errorlog.read_errors(tmp_path / "out") == errorlog.read_errors(tmp_path / "ref")


def test_a_torn_line_in_errors_jsonl_leaves_the_folder_resumable(tmp_path, monkeypatch):
    listing = _listing(tmp_path / "src", n=12, bad=True)
    cfg = dict(max_count=2, max_errors=1.0)
    write_shards(_cfg(tmp_path / "src", tmp_path / "ref", **cfg), False, listing)

    def torn_append(folder, records):  # the disk fills up half-way through the line
        data = "".join(json.dumps(r) + "\n" for r in records).encode()
        with open(Path(folder) / "errors.jsonl", "ab") as f:
            f.write(data[: len(data) // 2 + 3])
        _disk_full()

    with monkeypatch.context() as m:
        m.setattr(errorlog, "append", torn_append)
        with pytest.raises(RuntimeError, match="disk full"):
            write_shards(_cfg(tmp_path / "src", tmp_path / "out", **cfg), False, listing)
    text = (tmp_path / "out" / "errors.jsonl").read_text()
    assert text and not text.endswith("\n")  # the torn line is there
    write_shards(_cfg(tmp_path / "src", tmp_path / "out", **cfg), False, listing)
    assert _shard_bytes(tmp_path / "out") == _shard_bytes(tmp_path / "ref")
    assert (tmp_path / "out" / "errors.jsonl").read_text() == (tmp_path / "ref" / "errors.jsonl").read_text()
    # a torn line at the end of a finished folder (a later append cut short) is dropped on the next run
    with open(tmp_path / "ref" / "errors.jsonl", "a") as f:
        f.write('{"id": "bad_te')
    summary = write_shards(_cfg(tmp_path / "src", tmp_path / "ref", **cfg), False, listing)
    assert summary["written"] == 0 and len(errorlog.read_errors(tmp_path / "ref")) == 3
    assert (tmp_path / "ref" / "errors.jsonl").read_text().endswith("}\n")


# --- clipping and held-out splits -------------------------------------------------------------------


def test_out_of_range_float_audio_is_counted_and_in_range_audio_is_untouched(tmp_path):
    listing = _listing(tmp_path / "src", n=3)
    loud = tmp_path / "src" / "loud.wav"
    x = (1.5 * np.sin(np.linspace(0, 40 * np.pi, 16000))).astype(np.float32)
    sf.write(loud, x, 16000, subtype="FLOAT")  # float WAV keeps samples above 1.0
    listing.tracks.append(Track("loud", loud, "test", "train", {"title": "Loud"}))
    summary = write_shards(_cfg(tmp_path / "src", tmp_path / "out"), False, listing)
    expected = int(np.count_nonzero(np.abs(x) > 1.0))
    samples = _read(tmp_path / "out")
    assert samples["loud"]["meta"]["extra"]["clipped_samples"] == expected > 1000
    assert all("extra" not in samples[f"t{i:02d}"]["meta"] for i in range(3))
    assert (summary["clipped_tracks"], summary["clipped_samples"]) == (1, expected)
    assert mf.read_manifest(tmp_path / "out")["clipped"] == {"tracks": 1, "samples": expected}
    audio, _ = sf.read(io.BytesIO(samples["loud"]["audio"]), dtype="int16")
    assert audio.max() == 32767 and audio.min() == -32768  # clipped, never wrapped


def test_held_out_fractions_split_tracks_without_splits_by_key_hash(tmp_path):
    from muser.shards.sources.holdout import split_of

    listing = _listing(tmp_path / "src", n=30, seconds=0.1)
    for t in listing.tracks:
        t.split = "all"
    fractions = dict(valid_fraction=0.2, test_fraction=0.3)
    write_shards(_cfg(tmp_path / "src", tmp_path / "out", **fractions), False, listing)
    samples = _read(tmp_path / "out")
    assert {s["meta"]["split"] for s in samples.values()} == {"train", "valid", "test"}
    for key, s in samples.items():
        assert s["meta"]["split"] == split_of(key, 0.2, 0.3) and s["shard"].startswith(s["meta"]["split"])
    with pytest.raises(ValueError, match=r"valid_fraction 0.2 -> 0.1.*--overwrite"):
        write_shards(
            _cfg(tmp_path / "src", tmp_path / "out", valid_fraction=0.1, test_fraction=0.3), False, listing
        )
    # a folder of a pre-release format (no record of the options) is refused in one sentence naming its
    # version, never resumed under guessed options
    write_shards(_cfg(tmp_path / "src", tmp_path / "old"), False, listing)
    manifest = mf.read_manifest(tmp_path / "old")
    del manifest["options"]["valid_fraction"], manifest["options"]["test_fraction"]
    mf.write_manifest(tmp_path / "old", manifest)
    with pytest.raises(ValueError, match=r"written by muser .* does not record valid_fraction.*--overwrite"):
        write_shards(_cfg(tmp_path / "src", tmp_path / "old"), False, listing)


@pytest.mark.parametrize(
    "fractions,match",
    [
        (dict(valid_fraction=1.0), r"--valid-fraction .*\[0, 1\)"),
        (dict(test_fraction=-0.1), r"--test-fraction"),
        (dict(valid_fraction=float("nan")), r"--valid-fraction"),
        (dict(valid_fraction=0.5, test_fraction=0.5), r"add up to 1.*below 1"),
    ],
)
def test_bad_fractions_are_one_sentence(tmp_path, fractions, match):
    with pytest.raises(ValueError, match=match):
        write_shards(_cfg(tmp_path, tmp_path / "out", **fractions), False, _listing(tmp_path, n=1))


def test_fractions_are_refused_for_a_source_with_its_own_splits(tmp_path):
    listing = _listing(tmp_path / "src", n=3)  # train/valid/test of its own
    with pytest.raises(ValueError, match=r"already puts its tracks in test, train, valid"):
        write_shards(_cfg(tmp_path / "src", tmp_path / "out", valid_fraction=0.1), False, listing)
    assert not (tmp_path / "out").exists()
