"""Durable file replacement: a reader, or a run killed half-way, sees the old file or the new one.

Every file that other code reads back is written through `atomic_write` (or its text/JSON wrappers, or
`atomic_dir` for a whole folder): the bytes go to a hidden temporary name beside the file
(`.NAME.<8 hex>.tmp`, the one convention, see `temp_target`), are fsynced, renamed over NAME, and the
folder is fsynced so the rename itself survives a power cut. A leaf module (standard library only), so
the shard writer, the trainer, eval and the catalogue all write the same way without importing each other.
"""

from __future__ import annotations

import ctypes
import errno
import glob
import json
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

_TEMP_RE = re.compile(r"^\.(?P<target>.+)\.[0-9a-f]{8}\.tmp$")


def temp_name(path: str | Path) -> Path:
    """A fresh temporary name beside path: `.NAME.<8 hex>.tmp` (random, so two writers never share one)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")


def temp_target(name: str) -> str | None:
    """The file name a temporary file (a leftover of a killed writer) was to replace, or None if `name` is
    not one of ours. Owners of a folder use it to remove such leftovers when they resume."""
    m = _TEMP_RE.match(name)
    return m.group("target") if m else None


def remove_leftovers(path: str | Path) -> None:
    """Remove the temporary files or folders a killed writer of `path` left beside it. Only for the single
    owner of `path` (e.g. rank 0 saving last.pt): a concurrent writer's temporary file would go too."""
    path = Path(path)
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if temp_target(stale.name) == path.name:
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)


class atomic_write:  # noqa: N801 -- used like a function: `with atomic_write(path, "wb") as f`
    """Replace `path` durably with what is written to a temporary file beside it.

    mode None: the context yields the temporary Path, for writers that want a file name (torch.save,
    pq.write_table, faiss.write_index, os.link); the body must create it. mode "wb"/"w": it yields the
    open file (streamed writes: tar shards, Parquet writers, JSON text). On a clean exit the file is
    fsynced, renamed over `path` and the folder fsynced; on an exception the temporary file is removed and
    the old `path` stays. A writer that holds the file across calls (the shard writer) keeps the object
    and calls `commit()` or `discard()` itself instead of using `with`.
    """

    def __init__(self, path: str | Path, mode: str | None = None, encoding: str | None = None) -> None:
        if mode not in (None, "w", "wb"):
            raise ValueError(f"atomic_write mode must be None, 'w' or 'wb', got {mode!r}")
        self.path = Path(path)
        self.tmp = temp_name(self.path)
        self.file: IO[Any] | None = None
        if mode is not None:
            # O_EXCL: never write into a file someone else holds; 0o666 so the umask decides, as for open()
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            if mode == "w":
                self.file = os.fdopen(fd, "w", encoding=encoding or "utf-8")
            else:
                self.file = os.fdopen(fd, "wb")

    def __enter__(self) -> Any:
        return self.tmp if self.file is None else self.file

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()

    def commit(self) -> Path:
        """fsync the temporary file, rename it over `path`, fsync the folder; returns `path`."""
        try:
            if self.file is not None:
                self.file.flush()
                os.fsync(self.file.fileno())
                self.file.close()
            else:
                with open(self.tmp, "rb") as f:  # written by someone else's code: sync it by name
                    os.fsync(f.fileno())
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise
        fsync_dir(self.path.parent)
        return self.path

    def discard(self) -> None:
        """Drop the temporary file; `path` keeps its old content (or stays absent)."""
        if self.file is not None and not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Replace path with text (UTF-8) through `atomic_write`."""
    with atomic_write(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2, **kwargs: Any) -> None:
    """Replace path with obj as JSON (and a final newline) through `atomic_write`."""
    atomic_write_text(path, json.dumps(obj, indent=indent, **kwargs) + "\n")


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Replace the folder `path` with the temporary folder this yields, once the body has filled it.

    Every file in it is fsynced, then the two folders are swapped in one step (renameat2 RENAME_EXCHANGE on
    Linux) and the old one removed: a reader finds the old complete folder or the new one. Where the
    exchange is not available the old folder is moved aside first, so for an instant `path` is absent
    (never half-written). On an exception the temporary folder is removed and `path` stays.
    """
    path = Path(path)
    remove_leftovers(path)  # of a process killed mid-write: a folder is a lot of disk to leak
    tmp = temp_name(path)
    tmp.mkdir()
    try:
        yield tmp
        for file in sorted(tmp.rglob("*")):
            if file.is_file():
                with open(file, "rb") as f:
                    os.fsync(f.fileno())
        for folder in sorted((p for p in tmp.rglob("*") if p.is_dir()), reverse=True):
            fsync_dir(folder)
        fsync_dir(tmp)
        if not path.exists():
            os.replace(tmp, path)
        elif not _exchange(tmp, path):
            old = temp_name(path)
            os.replace(path, old)  # a directory cannot be renamed over a non-empty one
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old, path)  # keep the previous folder rather than none
                raise
            os.replace(old, tmp)  # removed below with the temporary folder
        fsync_dir(path.parent)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); False where that is not available."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EPERM):  # file system without exchange
        return False
    raise OSError(err, os.strerror(err), str(b))


def fsync_dir(path: str | Path) -> None:
    """Make a rename durable: the directory entry must reach the disk, not only the file's data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
