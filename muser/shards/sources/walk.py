"""Listing the audio files of a folder tree without dropping anything silently: dangling or looping symbolic
links, FIFOs and other special files, unreadable sub-folders and non-UTF-8 names come back as entries with
the reason they cannot be sharded (they end in errors.jsonl), instead of vanishing from the listing.

Nothing here opens a file: a FIFO is recognised by its mode, so listing never blocks on one.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from muser.shards.sources.base import AUDIO_EXTENSIONS

_KINDS = {
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


@dataclass
class Entry:
    rel: str  # '/'-separated path under the root; undecodable bytes of a name appear as surrogate escapes
    path: Path
    error: str | None = None  # why it cannot be sharded, else None


def audio_files(root: Path, recursive: bool = True) -> list[Entry]:
    """Every file under root with an audio extension, and every entry that may have hidden one, sorted by
    rel. Symbolic links to folders are followed unless they lead back into their own ancestry (a loop).

    Raises ValueError when root itself cannot be read.
    """
    out: list[Entry] = []
    # (folder, its rel prefix, real paths of the folder and its ancestors: a link into them is a loop)
    stack = [(root, "", frozenset({os.path.realpath(root)}))]
    while stack:
        folder, prefix, chain = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as err:
            if not prefix:
                raise ValueError(f"SRC {root} cannot be read ({err.strerror or err})") from None
            out.append(
                Entry(
                    prefix.rstrip("/"),
                    folder,
                    f"unreadable folder ({err.strerror or err}); its files were not listed",
                )
            )
            continue
        for e in entries:
            rel, path = prefix + e.name, Path(e.path)
            if e.name.startswith("."):
                if e.is_dir(follow_symlinks=False):  # hidden folders were always searched; hidden files never
                    stack.append((path, rel + "/", chain | {os.path.realpath(path)}))
                continue
            try:
                mode = os.stat(path).st_mode  # follows links: what a reader of this path would get
            except OSError as err:
                if e.is_symlink() and (_is_audio_name(e.name) or (recursive and _may_hold_folder(e.name))):
                    out.append(Entry(rel, path, _bad_link(path, err)))
                elif _is_audio_name(e.name):
                    out.append(Entry(rel, path, f"cannot be read ({err.strerror or err})"))
                continue
            if stat.S_ISDIR(mode):
                if not recursive:
                    continue
                real = os.path.realpath(path)
                if real in chain:
                    out.append(
                        Entry(rel, path, f"symbolic link loop: it leads back to {real}, a folder above it")
                    )
                else:
                    stack.append((path, rel + "/", chain | {real}))
                continue
            if not _is_audio_name(e.name):
                continue
            if not stat.S_ISREG(mode):
                kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
                out.append(Entry(rel, path, f"not a regular file ({kind}); it was not opened"))
            elif not _decodable(rel):
                out.append(Entry(rel, path, "its path is not valid UTF-8; rename it to shard it"))
            else:
                out.append(Entry(rel, path))
    return sorted(out, key=lambda x: x.rel)


def _is_audio_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in AUDIO_EXTENSIONS


def _may_hold_folder(name: str) -> bool:
    """A name without extension: a broken link by that name may have led to a folder of audio."""
    return not os.path.splitext(name)[1]


def _bad_link(path: Path, err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "symbolic link loop: following it never reaches a file"
    try:
        target = os.readlink(path)
    except OSError:
        target = "?"
    return f"dangling symbolic link: its target {target} does not exist"


def _decodable(rel: str) -> bool:
    try:
        rel.encode("utf-8")
        return True
    except UnicodeEncodeError:  # os.scandir keeps undecodable bytes as surrogate escapes
        return False
