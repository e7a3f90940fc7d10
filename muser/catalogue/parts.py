"""The catalogue's rows on disk: the Parquet schema, one part file per embedded shard (committed atomically,
so a killed run resumes), and the assembly of the parts into EMB/embeddings.parquet (the folder's names
are CatalogueFolder's).

A part records, in its Parquet key-value metadata, the shard's sha256 and the settings fingerprint it was
computed with: a part is reused only when both still match, so a re-sharded folder or another checkpoint
never leaks stale rows into a catalogue.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from muser.atomic import atomic_write

PART_META = b"muser.part"  # Parquet key-value metadata of a part file: {"shard_sha256", "settings", ...}
# Columns that hold vectors; everything else is metadata (what the search side keeps in memory).
VECTOR_COLUMNS = ("audio_embedding", "text_embedding")


def schema(dim: int) -> pa.Schema:
    """One row per track; vectors are fixed-size float32 lists, readable by pandas, polars and DuckDB."""
    vector = pa.list_(pa.float32(), dim)
    return pa.schema(
        [
            ("key", pa.string()),  # the shard sample key, unique in a catalogue
            ("audio_embedding", vector),  # chunk-averaged eval features, L2-normalised
            ("text_embedding", vector),  # the track's eval caption through the text tower, L2-normalised
            ("caption", pa.string()),  # that caption (muser.shards.text.render)
            ("duration", pa.float64()),  # seconds of audio embedded
            ("title", pa.string()),
            ("artist", pa.string()),
            ("album", pa.string()),
            ("year", pa.int32()),
            ("genres", pa.list_(pa.string())),
            ("tags", pa.list_(pa.string())),
            ("split", pa.string()),  # the shard's split (train/valid/test/all)
            ("shard", pa.string()),  # absolute path of the shard tar that holds the audio
            ("member", pa.string()),  # the audio member inside it: {key}.flac or {key}.pcm
        ]
    )


def _words(value: Any) -> list[str]:
    """A metadata value (text or a list of text) as a list of non-empty strings, order kept, no repeats."""
    items = value if isinstance(value, (list, tuple)) else [value]
    out: list[str] = []
    for item in items:
        if item is None or isinstance(item, (bool, dict, list)):
            continue
        text = " ".join(str(item).split())
        if text and text not in out:
            out.append(text)
    return out


def _text(value: Any) -> str | None:
    words = _words(value)
    return ", ".join(words) if words else None


def _year(value: Any) -> int | None:
    """A year from an int, a float or a date-like string ("1998", "1998-05-01"); None when there is none."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return int(value) if value == value and 1000 <= value <= 9999 else None
    match = re.match(r"\s*(\d{4})", str(value))
    return int(match.group(1)) if match else None


def _file_title(meta: dict[str, Any]) -> str | None:
    """The file's name for a track whose source has no title (GTZAN's blues.00012.wav -> "blues.00012"),
    as music players and the folder source show an untagged file; never shown as a blank row."""
    extra = meta.get("extra")
    path = extra.get("path") if isinstance(extra, dict) else None
    if not isinstance(path, str) or not path:
        return None
    return _text(Path(path).stem.replace("_", " "))


def metadata_columns(meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata columns of one track from its shard JSON (the genre/tag label tasks fill in for
    sources that carry them only as labels, as captions do)."""
    labels = meta.get("labels") or {}
    return {
        "title": _text(meta.get("title")) or _file_title(meta),
        "artist": _text(meta.get("artist")),
        "album": _text(meta.get("album")),
        "year": _year(meta.get("year")),
        "genres": _words(meta.get("genres")) or _words(labels.get("genre") or labels.get("genre_top")),
        "tags": _words(meta.get("tags")) or _words(labels.get("tags")),
    }


def normalise_rows(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (N, D) float32 rows of unit length (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(norm, np.float32(1e-12))).astype(np.float32)


def _vectors(x: np.ndarray, dim: int) -> pa.FixedSizeListArray:
    x = np.ascontiguousarray(x, dtype=np.float32).reshape(-1, dim)
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), type=pa.float32()), dim)


def build_part(rows: dict[str, list], audio: np.ndarray, text: np.ndarray, dim: int) -> pa.Table:
    """A part table from per-row metadata lists (every schema column but the vectors) and (N, D) vectors."""
    sch = schema(dim)
    columns = {"audio_embedding": _vectors(audio, dim), "text_embedding": _vectors(text, dim)}
    for name in sch.names:
        if name not in columns:
            columns[name] = pa.array(rows[name], type=sch.field(name).type)
    return pa.Table.from_arrays([columns[n] for n in sch.names], schema=sch)


def vectors_of(table: pa.Table, column: str) -> np.ndarray:
    """(N, D) float32 view of a fixed-size-list vector column (zero-copy when it is one chunk)."""
    col = table.column(column).combine_chunks()
    dim = col.type.list_size
    return col.values.to_numpy(zero_copy_only=False).reshape(-1, dim)


def write_part(path: Path, table: pa.Table, info: dict[str, Any]) -> None:
    """Write a part atomically: temporary file, fsync, rename, fsync of the folder. A killed run leaves
    either no part (the shard is embedded again) or a whole one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = table.replace_schema_metadata({PART_META: json.dumps(info, sort_keys=True).encode()})
    with atomic_write(path) as tmp:
        pq.write_table(table, tmp)


def part_info(path: Path) -> dict[str, Any] | None:
    """The metadata a part was committed with, or None when the file is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        meta = pq.read_schema(path).metadata or {}
        return json.loads(meta[PART_META])
    except (OSError, KeyError, ValueError, pa.ArrowException):
        return None  # a foreign or damaged file is recomputed, never trusted


def read_parts(paths: Iterable[Path]) -> Iterator[pa.Table]:
    for path in paths:
        yield pq.read_table(path).replace_schema_metadata(None)


def write_embeddings(path: Path, parts: Iterable[pa.Table], dim: int, on_part: Any = None) -> int:
    """Concatenate part tables into one Parquet file atomically (streamed: one part in memory at a time);
    on_part(table) sees each part (the index is built from the same pass). Returns the row count."""
    rows = 0
    with atomic_write(path) as tmp, pq.ParquetWriter(tmp, schema(dim)) as writer:
        for table in parts:
            if table.num_rows:
                writer.write_table(table)
                rows += table.num_rows
            if on_part is not None:
                on_part(table)
    return rows
