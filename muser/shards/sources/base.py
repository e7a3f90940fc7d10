"""What every dataset source returns: Track records, the SourceListing around them, and the shared helpers
(key-safe ids, audio extensions, metadata cleaning) the per-layout modules use."""

from __future__ import annotations

import hashlib
import math
import re
import stat
import unicodedata
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Extensions soundfile (libsndfile >= 1.1) decodes; m4a/aac are not among them.
AUDIO_EXTENSIONS = frozenset(
    {
        ".wav",
        ".flac",
        ".ogg",
        ".oga",
        ".opus",
        ".mp3",
        ".au",
        ".snd",
        ".aiff",
        ".aif",
        ".aifc",
        ".w64",
        ".caf",
    }
)
SPLITS = ("train", "valid", "test", "all")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass
class Track:
    id: str  # key-safe ([A-Za-z0-9_-]+), unique within a listing, derived from the source's own id
    path: Path | None  # the audio file; None when metadata lists a track that has no file
    source: str  # gtzan | fma | mtt | folder
    split: str  # train | valid | test | all
    meta: dict[str, Any] = field(default_factory=dict)  # metadata-JSON fields (no duration/rate/samples)
    error: str | None = None  # why this track cannot be sharded (missing, known-bad, empty), else None


@dataclass
class SourceListing:
    source: str  # which layout was read
    root: Path  # the dataset folder the tracks were found under
    tracks: list[Track]  # sorted by id
    label_tasks: dict[str, str]  # task -> "single" | "multi"
    notes: list[str] = field(default_factory=list)  # human-readable remarks (files left out, fallbacks)
    label_classes: dict[str, list[str]] = field(default_factory=dict)  # fixed vocabularies (MTT top-50)

    @property
    def errors(self) -> list[Track]:
        return [t for t in self.tracks if t.error]


def short_hash(text: str, n: int = 8) -> str:
    # surrogateescape: a non-UTF-8 file name hashes as its raw bytes instead of raising
    return hashlib.sha1(text.encode("utf-8", "surrogateescape")).hexdigest()[:n]


def key_safe(text: str, max_len: int = 96) -> str:
    """`text` with accents folded (é -> e) and every run of characters outside [A-Za-z0-9_-] replaced by
    one underscore, cut to `max_len`."""
    folded = "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))
    return _UNSAFE.sub("_", folded).strip("_")[:max_len] or "x"


def make_id(prefix: str, raw: str) -> str:
    """A key-safe id `prefix_raw`; when sanitising loses information (anything but a dot) a short hash
    of `raw` is appended, so two distinct raw ids can never collapse onto one key."""
    safe = key_safe(raw)
    if safe != raw.replace(".", "_"):
        safe = f"{safe}_{short_hash(raw)}"
    return f"{prefix}_{safe}"


def finish(tracks: list[Track]) -> list[Track]:
    """Sort by id and make ids unique (a duplicate gets a hash of its path), so listings are deterministic."""
    counts = Counter(t.id for t in tracks)
    for t in tracks:
        if counts[t.id] > 1:
            t.id = f"{t.id}_{short_hash(str(t.path) + t.meta.get('title', ''))}"
    tracks.sort(key=lambda t: t.id)
    return tracks


def is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS and path.is_file() and not path.name.startswith(".")


def file_error(path: Path | None, listed_in: str) -> str | None:
    """The cheap checks every source runs before decoding: listed but missing, or empty."""
    if path is not None and path.is_symlink() and not path.exists():
        return f"listed in {listed_in}, but a dangling or looping symbolic link"
    if path is None or not path.exists():
        return f"listed in {listed_in} but missing on disk"
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block whoever opens it: never opened
        return "not a regular file (a folder, FIFO or device); it was not opened"
    if st.st_size == 0:
        return "empty file (0 bytes)"
    return None


def clean(value: Any) -> Any:
    """None for NaN/empty; stripped strings; ints for integral floats (years read back by pandas)."""
    if value is None:
        return None
    if isinstance(value, float):
        if math.isnan(value):
            return None
        return int(value) if value.is_integer() else value
    if isinstance(value, str):
        value = value.strip()
        return value if value and value.lower() not in ("nan", "none", "null") else None
    return value


def as_list(value: Any) -> list[str]:
    """A list of clean strings from a list, a JSON/Python list literal, or a ';'/','-separated string."""
    value = clean(value)
    if value is None:
        return []
    if isinstance(value, str):
        if value.startswith("[") and value.endswith("]"):
            import ast

            try:
                value = ast.literal_eval(value)
            except (ValueError, SyntaxError):
                value = value[1:-1].split(",")
        else:
            value = value.split(";") if ";" in value else value.split(",")
    if not isinstance(value, (list, tuple)):
        value = [value]
    out: list[str] = []
    for v in value:
        v = clean(v)
        if v is not None and str(v).strip("'\" ") and str(v) not in out:
            out.append(str(v).strip("'\" "))
    return out


def year_of(value: Any) -> int | None:
    """The four-digit year of a date string ('2008-11-26 01:44:45', '2008', 2008.0), else None."""
    value = clean(value)
    if value is None:
        return None
    m = re.search(r"(1[89]\d\d|2[01]\d\d)", str(value))
    return int(m.group(1)) if m else None


def compact(meta: dict[str, Any]) -> dict[str, Any]:
    """Drop empty fields so metadata never carries None, '' or 'nan' (the contract: absent, not empty)."""
    out = {}
    for k, v in meta.items():
        v = clean(v) if not isinstance(v, (list, dict)) else v
        if v is None or (isinstance(v, (list, dict, str)) and not v):
            continue
        out[k] = compact(v) if isinstance(v, dict) and k == "extra" else v
    return out
