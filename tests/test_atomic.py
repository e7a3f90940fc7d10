"""muser.atomic: a process killed (SIGKILL) at a random point of a write leaves the old file or the new one.

Each kind of write the package does (JSON text, torch.save, a streamed tar, a streamed Parquet file, a
whole folder) runs in a loop in a real child process, writing version 1, 2, 3, ... over a file that holds
version 0; the test kills the child with SIGKILL after a random delay and reads the file back whole. It
must be exactly one complete version. The writers are forked by one child process that has torch and
pyarrow imported already, so a kill costs one write rather than an interpreter start.
"""

from __future__ import annotations

import io
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from muser.atomic import (
    atomic_dir,
    atomic_write,
    atomic_write_json,
    atomic_write_text,
    remove_leftovers,
    temp_target,
)

KINDS = ("json", "torch", "tar", "parquet", "folder")
NAMES = {
    "in-place": "plain.tar",
    "json": "result.json",
    "torch": "last.pt",
    "tar": "train-000000.tar",
    "parquet": "embeddings.parquet",
}
N = 100_000  # elements per version: a few MB, so a write takes long enough for kills to land inside it


def _write(kind: str, folder: Path, v: int) -> None:
    """Write version v of the kind's file through the helper, the way the package's writers do."""
    path = folder / NAMES.get(kind, "model")
    if kind == "json":
        atomic_write_json(path, {"version": v, "data": [v] * (N // 4)})
    elif kind == "torch":
        with atomic_write(path, "wb") as f:  # as save_checkpoint
            torch.save({"version": v, "w": torch.full((N,), float(v))}, f)
    elif kind == "tar":
        with atomic_write(path, "wb") as f:  # streamed, as the shard writer
            _tar(f, v)
    elif kind == "in-place":  # the control: what the helper exists to prevent
        with open(path, "wb") as f:
            _tar(f, v)
    elif kind == "parquet":
        schema = pa.schema([("version", pa.int64()), ("x", pa.float32())])
        with atomic_write(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:  # as write_embeddings
            for _ in range(8):
                columns = [pa.array(np.full(N // 8, v, dtype=t)) for t in (np.int64, np.float32)]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema))
    else:
        with atomic_dir(path) as tmp:  # as the trainer's model export
            for name in ("model.bin", "config.json", "tokenizer/vocab.txt"):
                (tmp / name).parent.mkdir(exist_ok=True)
                (tmp / name).write_bytes(np.full(N // 3, v, dtype=np.int32).tobytes())


def _tar(f: io.BufferedIOBase, v: int) -> None:
    with tarfile.open(fileobj=f, mode="w|") as tar:
        for i in range(40):
            data = np.full(N // 40, v, dtype=np.float32).tobytes()
            info = tarfile.TarInfo(f"{i:04d}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            f.flush()  # in the file, not in Python's buffer, when the kill comes


def _read(kind: str, folder: Path) -> int:
    """The one version the file holds; fails (raises or asserts) on a torn or mixed file."""
    path = folder / NAMES.get(kind, "model")
    if kind == "json":
        obj = json.loads(path.read_text())
        assert obj["data"] == [obj["version"]] * (N // 4)
        return obj["version"]
    if kind == "torch":
        obj = torch.load(path, weights_only=True)
        assert torch.equal(obj["w"], torch.full((N,), float(obj["version"])))
        return obj["version"]
    if kind in ("tar", "in-place"):
        with tarfile.open(path) as tar:
            values = np.concatenate([np.frombuffer(tar.extractfile(m).read(), np.float32) for m in tar])
        assert values.size == N // 40 * 40 and (values == values[0]).all()
        return int(values[0])
    if kind == "parquet":
        table = pq.read_table(path)
        version, x = table.column("version").to_numpy(), table.column("x").to_numpy()
        assert table.num_rows == N // 8 * 8 and (version == version[0]).all() and (x == version[0]).all()
        return int(version[0])
    files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())
    assert files == ["config.json", "model.bin", "tokenizer/vocab.txt"]
    values = {int(np.frombuffer((path / f).read_bytes(), np.int32)[0]) for f in files}
    sizes = {(path / f).stat().st_size for f in files}
    assert len(values) == 1 and sizes == {N // 3 * 4}
    return values.pop()


def _zygote() -> None:
    """The child process: imports torch and pyarrow once, then forks one writer per request line on stdin
    and reports on stdout: `pid N`, the writer's `done V` after each completed write, `exit CODE`."""
    # One thread: a forked child inherits no OpenMP pool (which would hang it) from the warm-up below.
    torch.set_num_threads(1)
    pa.set_cpu_count(1)
    with tempfile.TemporaryDirectory() as warm:  # first calls initialise lazily (pyarrow: seconds): once here
        for kind in KINDS:
            _write(kind, Path(warm), 0)
    for line in sys.stdin:
        kind, folder, first = line.split()
        pid = os.fork()
        if pid == 0:  # the writer: nothing but this loop, until it is killed
            try:
                v = int(first)
                while True:
                    v += 1
                    _write(kind, Path(folder), v)
                    os.write(1, f"done {v}\n".encode())  # one write(2) under PIPE_BUF: never interleaved
            finally:
                os._exit(1)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


class _Writers:
    """Talks to one zygote process; `kill_during_a_write` is one random SIGKILL of one writer."""

    def __init__(self) -> None:
        root = Path(__file__).resolve().parents[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
        code = "from tests.test_atomic import _zygote; _zygote()"
        self.proc = subprocess.Popen(
            [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=root, env=env
        )
        self.buf = b""

    def line(self, timeout: float = 120.0) -> str:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            if not select.select([fd], [], [], timeout)[0]:
                raise TimeoutError("the writing child stopped answering")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise EOFError(f"the zygote exited with {self.proc.wait()}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def kill_during_a_write(self, kind: str, folder: Path, first: int, rng: random.Random) -> None:
        self.proc.stdin.write(f"{kind} {folder} {first}\n".encode())
        self.proc.stdin.flush()
        pid = int(self.line().split()[1])
        try:
            start = time.perf_counter()
            assert self.line().startswith("done")  # one write completed: measure how long one takes
            # then kill at a random point of the next write (or of the short gap after it)
            time.sleep(rng.uniform(0.0, 1.2 * (time.perf_counter() - start)))
        finally:
            os.kill(pid, signal.SIGKILL)  # also when the writer hangs: never leave it behind
        while not (line := self.line()).startswith("exit"):
            assert line.startswith("done")
        assert line == f"exit {-signal.SIGKILL}"

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def writers():
    w = _Writers()
    yield w
    w.close()


def _kill_many(
    writers: _Writers, kind: str, folder: Path, kills: int, seed: int, mid_writes: int = 1
) -> tuple[set[int], int]:
    """Kill a writing child `kills` times, and more (up to ten times as many) until `mid_writes` kills have
    left a temp file; returns the versions found and how many kills left a temp file (so the test knows it
    hit writes in the middle, not only the gaps between them). A fast write (JSON: milliseconds, most of
    its loop spent serialising before the temp file opens) is hit mid-write by only some kills, so a fixed
    count would make the test a coin toss on a busy machine."""
    rng = random.Random(seed)
    _write(kind, folder, 0)
    found, mid_write, i = set(), 0, 0
    while i < kills or (mid_write < mid_writes and i < 10 * kills):
        i += 1
        writers.kill_during_a_write(kind, folder, i * 10_000, rng)
        found.add(_read(kind, folder))  # old or new, never torn
        leftovers = [p for p in folder.iterdir() if temp_target(p.name) is not None]
        mid_write += bool(leftovers)
        for p in leftovers:  # what the folder's owner removes when it resumes
            p.unlink() if p.is_file() else shutil.rmtree(p)
    return found, mid_write


@pytest.mark.parametrize("kind", KINDS)
def test_a_kill_at_a_random_point_leaves_the_old_or_the_new_file(writers, tmp_path, kind):
    found, mid_write = _kill_many(writers, kind, tmp_path, kills=12, seed=KINDS.index(kind))
    assert len(found) > 1
    assert mid_write > 0, "no kill landed inside a write: the test would prove nothing"


def test_the_kills_do_tear_a_file_written_in_place(writers, tmp_path):
    """The control: without the helper the same kills leave torn files, so the test above can fail."""
    rng, torn = random.Random(7), 0
    _write("in-place", tmp_path, 0)
    for i in range(1, 13):
        writers.kill_during_a_write("in-place", tmp_path, i * 10_000, rng)
        try:
            _read("in-place", tmp_path)
        except (tarfile.TarError, AssertionError, ValueError):
            torn += 1
    assert torn > 0


@pytest.mark.slow
@pytest.mark.parametrize("kind", KINDS)
def test_many_kills(writers, tmp_path, kind):
    found, mid_write = _kill_many(
        writers, kind, tmp_path, kills=100, seed=100 + KINDS.index(kind), mid_writes=11
    )
    assert len(found) > 10 and mid_write > 10


def test_an_exception_keeps_the_old_file_and_removes_the_temporary_one(tmp_path):
    path = tmp_path / "x.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path, "wb") as f:
        f.write(b"half of the new")
        raise RuntimeError("stop")
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "absent.bin") as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("stop")
    assert path.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "model") as tmp:
        (tmp / "weights").write_bytes(b"half")
        raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.bin"]


def test_one_temporary_name_convention(tmp_path):
    atomic_write_text(tmp_path / "a.json", "{}\n")
    writer = atomic_write(tmp_path / "b.tar", "wb")
    (name,) = [p.name for p in tmp_path.iterdir() if p.name != "a.json"]
    assert temp_target(name) == "b.tar" and name.startswith(".b.tar.") and name.endswith(".tmp")
    assert temp_target("b.tar") is None and temp_target(".b.tar.tmp") is None
    writer.file.write(b"new")
    assert writer.commit() == tmp_path / "b.tar"
    assert (tmp_path / "b.tar").read_bytes() == b"new" and (tmp_path / "a.json").read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.tar"]


def test_files_keep_the_permissions_of_an_ordinary_write(tmp_path):
    (tmp_path / "plain").write_text("x")
    atomic_write_text(tmp_path / "atomic", "x")
    assert (tmp_path / "atomic").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_a_folder_is_swapped_whole(tmp_path):
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "old-only").write_text("1")
    with atomic_dir(tmp_path / "model") as tmp:
        (tmp / "new-only").write_text("2")
    assert [p.name for p in (tmp_path / "model").iterdir()] == ["new-only"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_leftovers_of_a_killed_writer_are_removed_for_that_file_only(tmp_path):
    atomic_write(tmp_path / "last.pt", "wb").file.write(b"killed here")  # never committed
    atomic_write(tmp_path / "last.pt.bak", "wb").file.write(b"another file's")
    (tmp_path / ".last.pt.tmp").write_text("not ours")
    (tmp_path / ".model.ab12cd34.tmp").mkdir()  # a folder of atomic_dir
    remove_leftovers(tmp_path / "last.pt")
    remove_leftovers(tmp_path / "model")
    bak, other = sorted(p.name for p in tmp_path.iterdir())
    assert temp_target(bak) == "last.pt.bak" and other == ".last.pt.tmp"
