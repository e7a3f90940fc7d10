"""The writer's worker pool: one job per track (decode, resample, encode) run in forkserver processes,
results handed back in track order, and crash recovery that retries the in-flight files one at a time.

The pool never touches the output folder: it only turns a track into (member bytes, samples) or the
reason it failed, so the parent that writes the tars stays the single writer.
"""

from __future__ import annotations

import multiprocessing as mp
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from muser.config import ShardConfig
from muser.shards.audio import AudioError, decode, encode


def encode_track(path: str, sample_rate: int, codec: str) -> tuple[bytes, int] | str:
    """Worker job: a file -> (member bytes, samples at sample_rate), or the reason it failed."""
    try:
        y = decode(path, sample_rate)
        return encode(y, sample_rate, codec), len(y)
    except AudioError as err:
        msg = str(err)
        return msg[len(path) + 2 :] if msg.startswith(f"{path}: ") else msg
    except Exception as err:  # one odd file must not stop a 100k-track run: it is reported instead
        return f"{type(err).__name__}: {err}"


def start(workers: int) -> ProcessPoolExecutor | None:
    """The worker processes for `results` (None when workers is 1: the jobs then run in-process).

    Started and checked at once, so a caller can start them before it writes anything: a script that calls
    write_shards without an `if __name__ == "__main__":` guard fails here, in the parent and in the
    children (which re-run the script), with nothing written. Raises RuntimeError naming that fix.
    """
    return None if workers == 1 else _pool(workers)


def results(
    tracks: list,
    cfg: ShardConfig,
    workers: int,
    job_fn: Callable[..., Any] = encode_track,
    pool: ProcessPoolExecutor | None = None,
) -> Iterator[tuple[Any, Any]]:
    """(track, result) in track order; results come from `workers` processes (in-process when 1).

    A result is job_fn's return value, or a str (the reason) for a track that failed or had no file.
    pool: processes from start(workers) to use (shut down when the results end); started here when None.
    """
    if workers == 1:
        for t in tracks:
            args = _job(t, cfg)
            yield t, (job_fn(*args) if args else _known_error(t))
        return
    if pool is None:
        pool = _pool(workers)
    window: deque = deque()
    todo = iter(tracks)
    try:
        while True:
            while len(window) < 4 * workers:  # bounded look-ahead keeps memory flat
                t = next(todo, None)
                if t is None:
                    break
                args = _job(t, cfg)
                window.append((t, pool.submit(job_fn, *args) if args else None))
            if not window:
                return
            t, fut = window.popleft()
            if fut is None:
                yield t, _known_error(t)
                continue
            try:
                result = fut.result()
            except BrokenProcessPool:
                # A decoder died (e.g. a C library crash on a hostile file). We cannot tell which of the
                # in-flight files did it, so each is retried alone in a fresh process.
                pool.shutdown(cancel_futures=True)
                suspects = [t] + [s for s, _ in window]
                window.clear()
                for s in suspects:
                    args = _job(s, cfg)
                    yield s, (_isolated(job_fn, args) if args else _known_error(s))
                pool = _pool(workers)
                continue
            yield t, result
    finally:
        pool.shutdown(cancel_futures=True)


def _job(track: Any, cfg: ShardConfig) -> tuple | None:
    return None if track.error or track.path is None else (str(track.path), cfg.sample_rate, cfg.codec)


def _known_error(track: Any) -> str:
    return track.error or "no audio file for this track"


def _pool(workers: int) -> ProcessPoolExecutor:
    # forkserver: the parent may hold torch/rich threads, and a forked child inherits their locks in
    # whatever state they were (deadlocks). Preloading the audio module in the server makes each worker
    # start with numpy/soundfile/soxr already imported. The jobs start no thread pools of their own
    # (soxr is single-threaded, the torch resampler is not used here), so nothing needs pinning.
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["muser.shards.audio"])
    pool = ProcessPoolExecutor(workers, mp_context=ctx)
    try:  # a pool that cannot start at all is our problem, not every track's: fail loudly, once
        pool.submit(int).result()
    except BrokenProcessPool as err:
        pool.shutdown(cancel_futures=True)
        raise RuntimeError(
            "could not start worker processes (when calling write_shards from a script, guard it with "
            "`if __name__ == '__main__':`); or pass --workers 1"
        ) from err
    return pool


def _isolated(job_fn: Callable[..., Any], args: tuple) -> Any:
    with _pool(1) as pool:
        try:
            return pool.submit(job_fn, *args).result()
        except BrokenProcessPool:
            return "the decoder process crashed on this file"
