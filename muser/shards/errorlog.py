"""errors.jsonl of a shard folder: one JSON object per line for every track that could not be sharded.

This module alone appends records and reads them back. Appends can be torn (disk full or a kill in the
middle of a line), so reading skips any line that is not a complete JSON object instead of failing, and
an append after a torn line starts on a fresh line. The writer appends a shard's errors before the
manifest that counts them, and on resume keeps only the counted ones (`keep_committed`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from muser.atomic import atomic_write_text

ERRORS = "errors.jsonl"


def errors_path(folder_or_path: str | Path) -> Path:
    """The errors.jsonl of a shard folder (or the file itself when given one)."""
    path = Path(folder_or_path)
    return path / ERRORS if path.is_dir() else path


def record(track_id: str, path: Any, reason: str, source: str, split: str) -> dict[str, str]:
    """One error record; every field is text that survives a UTF-8 JSON line (see `printable`)."""
    return {
        "id": printable(track_id),
        "path": printable(str(path)) if path is not None else "",
        "reason": printable(reason),
        "source": printable(source),
        "split": printable(split),
    }


def printable(text: str) -> str:
    """text with the undecodable bytes of a file name shown as \\xNN, so it can be written as UTF-8.

    os.listdir decodes a non-UTF-8 name with surrogate escapes; writing that str as UTF-8 would raise.
    """
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that is no escaped byte (e.g. from a \udXXX JSON escape)
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def append(folder: str | Path, records: list[dict[str, Any]]) -> None:
    """Append records to folder/errors.jsonl, one line each, and fsync (they must outlive a crash).

    Appended in place, not through muser.atomic: a kill or a full disk can only tear the last line, which
    _read skips and keep_committed drops when the run resumes.
    """
    if not records:
        return
    path = errors_path(folder)
    lines = "".join(map(_line, records)).encode("utf-8")
    with open(path, "ab") as f:
        if f.tell() > 0 and not _ends_with_newline(path):
            lines = b"\n" + lines  # a torn last line stays a line of its own, skipped when read
        f.write(lines)
        f.flush()
        os.fsync(f.fileno())


def _line(rec: dict[str, Any]) -> str:
    text = json.dumps(rec, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: the ASCII form escapes it as \udXXX, still valid JSON
        text = json.dumps(rec)
    return text + "\n"


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_errors(folder_or_path: str | Path) -> list[dict[str, Any]]:
    """Every complete record of a shard folder's errors.jsonl (or of that file), in order; [] when absent.

    Lines that are not a JSON object (a torn last line after a full disk, garbage) are skipped, never
    fatal: the log describes the shards, it never decides whether they can be read.
    """
    records, _ = _read(errors_path(folder_or_path))
    return records


def _read(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(records, number of lines skipped)."""
    if not path.is_file():
        return [], 0
    records, skipped = [], 0
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            rec = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            skipped += 1
            continue
        if isinstance(rec, dict):
            records.append(rec)
        else:
            skipped += 1
    return records, skipped


def keep_committed(folder: str | Path, committed: set[str]) -> list[dict[str, Any]]:
    """Rewrite errors.jsonl atomically with the first record of each id in `committed`, dropping records
    of uncommitted tracks (appended before a crash stopped the manifest that would count them), repeats
    and torn lines. Returns the records kept."""
    path = errors_path(folder)
    records, _ = _read(path)
    seen: set[str] = set()
    kept = []
    for rec in records:
        key = rec.get("id")
        if isinstance(key, str) and key in committed and key not in seen:
            seen.add(key)
            kept.append(rec)
    atomic_write_text(path, "".join(map(_line, kept)))
    return kept
