"""Catalogue audio straight from the shard tars: where a member's bytes lie (each tar's headers read once
and cached), HTTP byte ranges over them, and raw PCM members presented as WAV files.

FLAC members are served byte for byte as stored; a PCM member gets a 44-byte WAV header in front of it,
so a browser plays both. Nothing here takes a path from a request: the shard and member come from the
catalogue's own rows.
"""

from __future__ import annotations

import functools
import re
import struct
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

MEDIA_TYPES = {"flac": "audio/flac", "pcm": "audio/wav"}
READ_BLOCK = 1 << 16


class RangeNotSatisfiable(ValueError):
    """A Range header that names no byte of the resource (answered with 416)."""


@dataclass(frozen=True)
class Member:
    """One track's audio as a file to serve: `header` (b"" for FLAC) then `size` bytes at `offset`."""

    path: Path
    offset: int
    size: int
    header: bytes
    media_type: str

    @property
    def total(self) -> int:
        return len(self.header) + self.size

    def iter_bytes(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes [start, end] (inclusive) of the served file, in blocks."""
        if start < len(self.header):
            yield self.header[start : end + 1]
            start = len(self.header)
        if start > end:
            return
        with open(self.path, "rb") as f:
            f.seek(self.offset + start - len(self.header))
            left = end - start + 1
            while left > 0:
                block = f.read(min(READ_BLOCK, left))
                if not block:
                    raise OSError(f"{self.path} ended early (the shard was truncated or rewritten)")
                left -= len(block)
                yield block


def wav_header(data_bytes: int, sample_rate: int) -> bytes:
    """The RIFF/WAVE header of mono 16-bit little-endian PCM with `data_bytes` of samples."""
    fmt = struct.pack("<HHIIHH", 1, 1, sample_rate, sample_rate * 2, 2, 16)
    return (
        b"RIFF" + struct.pack("<I", 36 + data_bytes) + b"WAVE"
        + b"fmt " + struct.pack("<I", len(fmt)) + fmt
        + b"data" + struct.pack("<I", data_bytes)
    )  # fmt: skip


@functools.lru_cache(maxsize=64)
def _tar_members(path: str, mtime_ns: int, size: int) -> dict[str, tuple[int, int]]:
    """member name -> (data offset, size) for one shard; keyed by mtime and size too, so a rewritten shard
    is read again. Only headers are read (tarfile seeks over the data)."""
    with tarfile.open(path, mode="r:") as tar:
        return {m.name: (m.offset_data, m.size) for m in tar.getmembers() if m.isfile()}


def locate(shard: str | Path, member: str, sample_rate: int) -> Member:
    """The served file of `member` in the shard tar; FileNotFoundError when either is gone."""
    path = Path(shard)
    try:
        st = path.stat()
    except OSError:
        raise FileNotFoundError(f"shard {path} is gone") from None
    where = _tar_members(str(path), st.st_mtime_ns, st.st_size).get(member)
    if where is None:
        raise FileNotFoundError(f"{member} is not in {path} (the shard was rewritten)")
    offset, size = where
    codec = member.rpartition(".")[2]
    header = wav_header(size, sample_rate) if codec == "pcm" else b""
    return Member(path, offset, size, header, MEDIA_TYPES.get(codec, "application/octet-stream"))


_RANGE = re.compile(r"^\s*([0-9]*)\s*-\s*([0-9]*)\s*$")  # ASCII digits only, as RFC 9110 says


# More digits than any file's byte count has: read as "past the end" instead of converted (a Range with
# thousands of digits would otherwise cost a big-integer conversion, or fail it beyond Python's limit).
_MAX_DIGITS = 20


def _offset(digits: str) -> int | None:
    if not digits:
        return None
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def parse_range(value: str | None, total: int) -> tuple[int, int] | None:
    """The inclusive byte range a Range header asks for, or None to send the whole file.

    Only single `bytes=` ranges are honoured; other units and multi-range requests get the whole file (as
    RFC 9110 allows). A malformed or unsatisfiable `bytes=` range raises RangeNotSatisfiable.
    """
    if not value or not value.strip().lower().startswith("bytes="):
        return None
    shown = value if len(value) <= 80 else value[:77] + "..."  # an error repeats at most this much of it
    spec = value.split("=", 1)[1]
    if "," in spec:
        return None
    match = _RANGE.match(spec)
    if not match or match.group(1) == match.group(2) == "":
        raise RangeNotSatisfiable(f"malformed range {shown!r}")
    first, last = (_offset(g) for g in match.groups())
    if first is None:  # bytes=-N: the last N bytes
        n = last
        if n == 0 or total == 0:
            raise RangeNotSatisfiable(f"range {shown!r} selects no byte")
        return max(0, total - n), total - 1
    start = first
    end = total - 1 if last is None else min(last, total - 1)
    if start >= total or end < start:
        raise RangeNotSatisfiable(f"range {shown!r} is outside the {total} bytes")
    return start, end
