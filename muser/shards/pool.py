"""The writer's worker processes: one job per track run in forkserver processes, results handed back in track
order, and recovery from any worker death (a decoder crash, the OOM killer, kill -9).

Each worker owns a private socket to the parent instead of sharing a queue (as ProcessPoolExecutor does):
a worker that dies mid-message then costs only its own socket (the parent reads end-of-file, never a
half-sent result from a shared queue, which hangs), the parent knows exactly which job it was running
(a worker takes its next job only after it sent the previous result), and a worker whose parent is gone
reads end-of-file and exits. A dead worker is replaced, its unfinished jobs are sent again, and a track
that was running in two workers that died is given up as failed.

The pool never touches the output folder: it only turns tracks into results, so the parent that writes
the tars stays the single writer.
"""

from __future__ import annotations

import contextlib
import heapq
import multiprocessing as mp
import os
import pickle
import signal
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable, Iterator
from multiprocessing.connection import wait
from typing import Any

from muser.config import ShardConfig
from muser.shards.sample import encode_track

CRASHED = "the decoder process died twice while reading this file (a crash on this file, or killed twice)"
_DEPTH = 2  # jobs sent ahead to one worker: the next one waits in its socket while it sends a result
_LOOKAHEAD = 4  # tracks in flight per worker, beyond the one the parent waits for: bounds the held results
# Socket buffers big enough for a whole result (a 30-s FLAC track is ~0.5 MB): a worker then hands its
# result to the kernel in one go instead of in ~200 KB rounds that each wait for the parent to read
# (fewer wake-ups on both sides; 2 workers went from 1.77x to 1.89x one worker in a side-by-side run).
# Linux caps the request at net.core.wmem_max / rmem_max without an error.
_SOCKET_BUFFER = 4 * 1024 * 1024
_PIPELINED_BYTES = 32 * 1024  # a queued job message must fit a socket buffer (Linux: >= 200 KB)
_MAX_DEATHS_IN_A_ROW = 5  # per worker: deaths without any result in between before the run gives up
_START_ATTEMPTS = 3  # a worker that dies this many times before answering cannot start (no __main__ guard?)
_START_TIMEOUT = 120.0  # seconds a fresh worker may take to answer its first message (imports numpy etc.)


def results(
    tracks: list,
    cfg: ShardConfig,
    workers: int,
    job_fn: Callable[..., Any] = encode_track,
    pool: WorkerPool | None = None,
) -> Iterator[tuple[Any, Any]]:
    """(track, result) in track order; results come from `workers` processes (in-process when 1).

    A result is job_fn(track, sample_rate, codec)'s return value, or a str (the reason) for a track that
    failed, had no file, or killed two worker processes.
    pool: processes from start(workers) to use (closed when the results end); started here when None.
    """
    if cfg.ray:  # the jobs run on a Ray cluster (muser.cluster); the caller still writes the tars
        from muser.cluster import track_results

        for t, result in track_results(tracks, [_job(t, cfg) for t in tracks], cfg.ray):
            yield t, (_known_error(t) if result is None else result)
        return
    if workers == 1:
        for t in tracks:
            args = _job(t, cfg)
            yield t, (job_fn(*args) if args else _known_error(t))
        return
    if pool is None:
        pool = start(workers)
    try:
        jobs = [_job(t, cfg) for t in tracks]
        for t, result in zip(tracks, pool.run(job_fn, jobs), strict=True):
            yield t, (_known_error(t) if result is None else result)
    finally:
        pool.close()


def start(workers: int) -> WorkerPool | None:
    """The worker processes for `results` (None when workers is 1: the jobs then run in-process).

    The processes start in the background; `WorkerPool.check` waits for them. A caller starts them before
    it writes anything: a script that calls write_shards without an `if __name__ == "__main__":` guard
    fails in check, with nothing written.
    """
    return None if workers == 1 else WorkerPool(workers)


def _job(track: Any, cfg: ShardConfig) -> tuple | None:
    return None if track.error or track.path is None else (track, cfg.sample_rate, cfg.codec)


def _known_error(track: Any) -> str:
    return track.error or "no audio file for this track"


class WorkerPool:
    """`workers` forkserver processes serving jobs over private sockets; see the module docstring."""

    def __init__(self, workers: int):
        # forkserver: the parent may hold torch/rich threads, and a forked child inherits their locks in
        # whatever state they were (deadlocks). Preloading the audio module in the server makes each worker
        # start with numpy/soundfile/soxr already imported. The jobs start no thread pools of their own
        # (soxr is single-threaded, the torch resampler is not used here), so nothing needs pinning.
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["muser.shards.sample"])
        self.size = workers
        self.restarts = 0  # workers replaced after they died
        self.deaths_in_a_row = 0  # deaths since the last result: bounded, so a hopeless run stops
        self.workers: list[_Worker] = []
        self.checked = False
        try:
            self.workers = [_Worker(self.ctx) for _ in range(workers)]
        except Exception:
            self.close()
            raise

    def check(self) -> None:
        """Wait until every worker answers; RuntimeError (naming the fix) when they cannot start."""
        if self.checked:
            return
        for i in range(len(self.workers)):
            # A worker killed while it starts is replaced; one that dies every time cannot start at all.
            for attempt in range(_START_ATTEMPTS):
                if attempt:
                    self.workers[i].stop(kill=True)
                    self.workers[i] = _Worker(self.ctx)
                    self.restarts += 1
                if self._answers(self.workers[i]):
                    break
            else:
                self.close()
                raise RuntimeError(
                    "could not start worker processes (when calling write_shards from a script, guard it "
                    "with `if __name__ == '__main__':`); or pass --workers 1"
                )
        self.checked = True

    @staticmethod
    def _answers(w: _Worker) -> bool:
        try:
            w.chan.send((-1, int, ()))
            return w.chan.poll(_START_TIMEOUT) and w.chan.recv() == (-1, 0)
        except (EOFError, OSError):
            return False

    def run(self, job_fn: Callable[..., Any], jobs: list[tuple | None]) -> Iterator[Any]:
        """job_fn(*args) for each args in jobs, yielded in order (None for a None job); CRASHED for a job
        that was running in two workers that died."""
        self.check()
        sched = _Schedule(jobs, self.size * (_LOOKAHEAD + 1))
        while True:
            sched.admit()
            if sched.ready():
                yield sched.pop()
                continue
            if sched.finished():
                return
            self._dispatch(job_fn, jobs, sched)
            busy = [w for w in self.workers if w.jobs]
            waiting = {w.chan.fileno(): w for w in busy} | {w.proc.sentinel: w for w in busy}
            for obj in wait(list(waiting)):
                w = waiting[obj]
                if w in self.workers:
                    self._collect(w, sched)

    def _dispatch(self, job_fn: Callable[..., Any], jobs: list[tuple | None], sched: _Schedule) -> None:
        """Send waiting jobs, earliest first, to the workers with the fewest jobs."""
        while sched.unsent:
            seq = sched.unsent[0]
            payload = _Channel.encode((seq, job_fn, jobs[seq]))
            # A job queued behind a running one must fit the socket's buffer: otherwise we would block on
            # the send while the worker blocks sending us its (large) result, which we are not reading.
            queue_ok = sum(len(p) for p in payload) <= _PIPELINED_BYTES
            free = [w for w in self.workers if not w.jobs or (queue_ok and len(w.jobs) < _DEPTH)]
            if not free:
                return
            w = min(free, key=lambda w: len(w.jobs))
            heapq.heappop(sched.unsent)
            try:
                w.chan.send_encoded(payload)
            except OSError:  # it died before it could take the job, so the job never ran there
                heapq.heappush(sched.unsent, seq)
                self._replace(w, sched)
                continue
            w.jobs.append(seq)

    def _collect(self, w: _Worker, sched: _Schedule) -> None:
        """Take every complete result w has sent; replace w when it died."""
        try:
            while w.jobs and w.chan.poll():
                seq, result = w.chan.recv()
                assert seq == w.jobs[0], "a worker answers its jobs in order"
                w.jobs.popleft()
                sched.done(seq, result)
                self.deaths_in_a_row = 0
            if w.proc.is_alive():
                return
        except (EOFError, OSError):  # died mid-message: that result is lost, its job is run again
            pass
        self._replace(w, sched)

    def _replace(self, w: _Worker, sched: _Schedule) -> None:
        if w.jobs:  # the oldest unanswered job was running; the rest never left the socket
            sched.crashed(w.jobs.popleft())
            for seq in w.jobs:
                heapq.heappush(sched.unsent, seq)
            w.jobs.clear()
        w.stop(kill=True)
        self.deaths_in_a_row += 1
        if self.deaths_in_a_row > _MAX_DEATHS_IN_A_ROW * self.size:
            raise RuntimeError(
                f"worker processes died {self.deaths_in_a_row} times in a row without finishing a track "
                "(out of memory, or killed from outside?); rerun the same command to resume, or pass "
                "--workers 1"
            )
        try:
            self.workers[self.workers.index(w)] = _Worker(self.ctx)
        except OSError as err:  # out of memory or processes: not a problem of DST, so not an OSError here
            raise RuntimeError(f"could not start a worker process to replace one that died ({err})") from None
        self.restarts += 1

    def close(self) -> None:
        """Stop every worker: an idle one exits on end-of-file at once, a busy one is killed."""
        for w in self.workers:
            w.chan.close()
        for w in self.workers:
            w.stop(kill=False)
        self.workers = []

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class _Schedule:
    """Which jobs are waiting to be sent, running, or done, within a bounded window ahead of the output."""

    def __init__(self, jobs: list[tuple | None], window: int):
        self.jobs, self.window = jobs, window
        self.unsent: list[int] = []  # a heap: the earliest job (the one the output waits for) goes first
        self.results: dict[int, Any] = {}
        self.crashes: dict[int, int] = {}
        self.admitted = self.out = 0

    def admit(self) -> None:
        while self.admitted < len(self.jobs) and self.admitted - self.out < self.window:
            if self.jobs[self.admitted] is None:
                self.results[self.admitted] = None
            else:
                heapq.heappush(self.unsent, self.admitted)
            self.admitted += 1

    def ready(self) -> bool:
        return self.out in self.results

    def pop(self) -> Any:
        self.out += 1
        return self.results.pop(self.out - 1)

    def finished(self) -> bool:
        return self.out == len(self.jobs)

    def done(self, seq: int, result: Any) -> None:
        self.results[seq] = result

    def crashed(self, seq: int) -> None:
        self.crashes[seq] = self.crashes.get(seq, 0) + 1
        if self.crashes[seq] >= 2:
            self.results[seq] = CRASHED
        else:
            heapq.heappush(self.unsent, seq)


class _Worker:
    def __init__(self, ctx: Any):
        ours, child = socket.socketpair()
        for sock in (ours, child):
            for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
                with contextlib.suppress(OSError):  # a platform without adjustable buffers keeps its own
                    sock.setsockopt(socket.SOL_SOCKET, opt, _SOCKET_BUFFER)
        self.chan = _Channel(ours)
        self.proc = ctx.Process(target=_serve, args=(child,), daemon=True, name="muser-shard-worker")
        self.proc.start()
        # Only the worker may hold its end: when it dies, our recv then sees end-of-file.
        child.close()
        self.jobs: deque[int] = deque()  # sequence numbers sent and not answered, oldest first

    def stop(self, kill: bool) -> None:
        self.chan.close()
        if kill or self.jobs:
            self.proc.kill()
        self.proc.join(timeout=5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()


class _Channel:
    """One end of a socket pair carrying pickled objects. Large buffers travel out of band (pickle protocol
    5, e.g. a Sample's tar bytes) and are read straight into their final memory: one copy out of the
    kernel, instead of chunks gathered in a BytesIO and copied again by unpickling."""

    _HEAD = struct.Struct("!QI")  # pickle length, number of out-of-band buffers (then their sizes)

    def __init__(self, sock: socket.socket):
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()

    @classmethod
    def encode(cls, obj: Any) -> list:
        buffers: list[pickle.PickleBuffer] = []
        data = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
        raws = [b.raw() for b in buffers]
        sizes = struct.pack(f"!{len(raws)}Q", *(r.nbytes for r in raws))
        return [cls._HEAD.pack(len(data), len(raws)) + sizes + data, *raws]

    def send_encoded(self, parts: list) -> None:
        for part in parts:
            self.sock.sendall(part)

    def send(self, obj: Any) -> None:
        self.send_encoded(self.encode(obj))

    def recv(self) -> Any:
        """The next object; EOFError when the other end closed, also half-way through a message."""
        size, count = self._HEAD.unpack(self._exact(self._HEAD.size))
        sizes = struct.unpack(f"!{count}Q", self._exact(8 * count))
        data = self._exact(size)
        return pickle.loads(data, buffers=[self._exact(n) for n in sizes])

    def _exact(self, n: int) -> bytearray:
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            got_now = self.sock.recv_into(view[got:])
            if got_now == 0:
                raise EOFError("the other end closed the socket")
            got += got_now
        return buf

    def poll(self, timeout: float = 0.0) -> bool:
        return bool(wait([self.sock], timeout))

    def close(self) -> None:
        self.sock.close()


def _serve(sock: socket.socket) -> None:
    """A worker's loop: receive (seq, fn, args), send (seq, fn(*args)); exit on end-of-file."""
    _die_with_parent()
    # Ctrl-C reaches the whole process group; the parent decides what it means, the worker just exits
    # when the parent closes its socket (a job interrupted here would be reported as a failed track).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    chan = _Channel(sock)
    while True:
        try:
            seq, fn, args = chan.recv()
        except (EOFError, OSError):
            return
        try:
            result = fn(*args)
        except Exception as err:  # the job reports its own failures; anything else is still one track's
            result = f"{type(err).__name__}: {err}"
        try:
            chan.send((seq, result))
        except OSError:
            return


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this worker when its parent (the forkserver) exits. The forkserver exits as soon
    as the main process is gone, so a main process killed by the OOM killer leaves no worker decoding on.
    Elsewhere the end-of-file on the job socket does the same once the current job is done."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(0)
