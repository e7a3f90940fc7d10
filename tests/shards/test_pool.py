"""The writer's worker pool: results in track order, and recovery from workers that die – by their own
hand (a crashing decoder), killed from outside while decoding, or killed half-way through sending a result."""

from __future__ import annotations

import io
import os
import signal
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from muser.config import ShardConfig
from muser.shards import pool
from muser.shards.sample import Sample, encode_track
from muser.shards.sources.base import Track


def _tracks(root: Path, n: int) -> list[Track]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tracks = []
    for i in range(n):
        path = root / f"t{i}.wav"
        sf.write(path, rng.uniform(-0.5, 0.5, 11025).astype(np.float32), 22050)
        tracks.append(Track(f"t{i:02d}", path, "test", "train", {"title": f"Song {i}"}))
    return tracks


def _cfg(root: Path) -> ShardConfig:
    return ShardConfig(src=str(root), dst=str(root / "out"))


def _crashing_job(track: Track, sample_rate: int, codec: str):
    """Kills its process (like a segfaulting decoder) on files named crash*, every time."""
    if track.path.name.startswith("crash"):
        os._exit(3)
    return encode_track(track, sample_rate, codec)


def _crash_once_job(track: Track, sample_rate: int, codec: str):
    """Kills its process the first time it sees a file named once* (a marker file remembers)."""
    marker = track.path.with_suffix(".crashed")
    if track.path.name.startswith("once") and not marker.exists():
        marker.write_text("")
        os._exit(3)
    return encode_track(track, sample_rate, codec)


def test_a_file_that_kills_its_worker_twice_is_reported_and_the_others_survive(tmp_path):
    tracks = _tracks(tmp_path / "src", 6)
    crash = tmp_path / "src" / "crash.wav"
    crash.write_bytes(tracks[0].path.read_bytes())
    tracks.insert(2, Track("boom", crash, "test", "train", {}))
    workers = pool.start(2)
    got = list(pool.results(tracks, _cfg(tmp_path), 2, job_fn=_crashing_job, pool=workers))
    assert [t.id for t, _ in got] == [t.id for t in tracks]  # track order survives the retries
    assert got[2][1] == pool.CRASHED
    assert all(isinstance(r, Sample) and r.num_samples == 8000 for _, r in got[:2] + got[3:])
    assert workers.restarts == 2 and workers.workers == []  # two deaths, one replacement each; closed


def test_a_worker_that_dies_once_costs_nothing(tmp_path):
    tracks = _tracks(tmp_path / "src", 5)
    once = tmp_path / "src" / "once.wav"
    once.write_bytes(tracks[0].path.read_bytes())
    tracks.insert(1, Track("once", once, "test", "train", {}))
    workers = pool.start(2)
    got = dict(
        (t.id, r) for t, r in pool.results(tracks, _cfg(tmp_path), 2, job_fn=_crash_once_job, pool=workers)
    )
    assert workers.restarts == 1
    reference = {t.id: encode_track(t, 16000, "flac") for t in tracks}
    assert got == reference  # the resubmitted track's bytes are those of an undisturbed run


def _big_job(track: Track, sample_rate: int, codec: str) -> bytes:
    """A result far larger than a pipe buffer, so its sender blocks half-way until the parent reads."""
    return track.id.encode() * (4 << 20)


def test_a_worker_killed_half_way_through_sending_its_result_is_recovered(tmp_path):
    # With ProcessPoolExecutor, a worker killed mid-send left a partial message in the queue every
    # worker shares, and the parent waited for the rest forever. Here each worker has its own pipe.
    tracks = _tracks(tmp_path / "src", 6)
    jobs = [(t, 16000, "flac") for t in tracks]
    with pool.WorkerPool(2) as workers:
        out = workers.run(_big_job, jobs)
        first = next(out)
        time.sleep(1.0)  # both workers finish their next job and block half-way through sending it
        victims = [w.proc.pid for w in workers.workers]
        assert all(w.jobs for w in workers.workers)
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        rest = list(out)
        assert [first, *rest] == [_big_job(t, 0, "") for t in tracks]
        assert workers.restarts == 2 and not {w.proc.pid for w in workers.workers} & set(victims)


def test_a_worker_killed_while_starting_is_replaced(tmp_path):
    # Before, this was reported as "could not start worker processes (... __main__ guard ...)".
    tracks = _tracks(tmp_path / "src", 3)
    with pool.WorkerPool(2) as workers:
        os.kill(workers.workers[0].proc.pid, signal.SIGKILL)
        workers.check()
        assert workers.restarts == 1
        got = list(workers.run(encode_track, [(t, 16000, "flac") for t in tracks]))
    assert got == [encode_track(t, 16000, "flac") for t in tracks]


def test_workers_that_cannot_start_are_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(pool, "_serve", _exit_at_once)
    workers = pool.WorkerPool(2)
    try:
        workers.check()
    except RuntimeError as err:
        assert "__main__" in str(err) and "--workers 1" in str(err)
    else:
        raise AssertionError("check() must refuse workers that exit before answering")
    assert workers.workers == []


def _exit_at_once(conn) -> None:
    os._exit(1)


def test_one_worker_runs_in_process(tmp_path):
    tracks = _tracks(tmp_path / "src", 2) + [Track("gone", None, "test", "train", {}, error="missing")]
    got = list(pool.results(tracks, _cfg(tmp_path), 1))
    assert pool.start(1) is None and [t.id for t, _ in got] == ["t00", "t01", "gone"]
    assert got[2][1] == "missing"
    audio = sf.read(io.BytesIO(_audio_member(got[0][1].blob)), dtype="int16")[0]
    assert len(audio) == 8000


def _audio_member(blob: bytes) -> bytes:
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(blob + b"\0" * 1024)) as tar:
        return tar.extractfile(tar.getmembers()[0]).read()
