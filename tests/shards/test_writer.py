"""The parallel crash-safe shard writer, checked with plain tarfile + soundfile (not our reader)."""

from __future__ import annotations

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
from muser.shards import manifest as mf
from muser.shards import pool, writer
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
    target = writer._Run if where == "commit" else mf
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
    del manifest["options"]["resampler"]  # as written before the resampler was recorded
    mf.write_manifest(out, manifest)
    with pytest.raises(ValueError, match=r"resampler not recorded \(older muser\).*--overwrite"):
        write_shards(_cfg(tmp_path / "src", out), False, listing)
    write_shards(_cfg(tmp_path / "src", out, overwrite=True), False, listing)
    assert mf.read_manifest(out)["options"]["resampler"] == "soxr-HQ"


def _crashing_job(path: str, sample_rate: int, codec: str):
    """Worker job that kills its process (like a segfaulting decoder) on files named crash*."""
    if Path(path).name.startswith("crash"):
        os._exit(3)
    return pool.encode_track(path, sample_rate, codec)


def test_a_crashing_worker_costs_only_its_own_file(tmp_path):
    listing = _listing(tmp_path / "src", n=3)
    crash = tmp_path / "src" / "crash.wav"
    crash.write_bytes((tmp_path / "src" / "track 0.wav").read_bytes())
    tracks = listing.tracks[:1] + [Track("boom", crash, "test", "train", {})] + listing.tracks[1:]
    got = list(
        pool.results(tracks, _cfg(tmp_path / "src", tmp_path / "out"), workers=2, job_fn=_crashing_job)
    )
    assert [t.id for t, _ in got] == ["t00", "boom", "t01", "t02"]  # track order survives the retry
    assert got[1][1] == "the decoder process crashed on this file"
    for _, result in got[:1] + got[2:]:
        audio, samples = result
        assert samples == 8000 and sf.info(io.BytesIO(audio)).frames == 8000


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
