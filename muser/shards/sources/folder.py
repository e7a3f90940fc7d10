"""Folder source: any tree of audio files, described by embedded tags (mutagen), a same-name .txt credit
note, and an optional CSV/JSONL sidecar keyed by relative path (sidecar wins, then tags, then the note).

Labels: task "genre" from the first genre; a sidecar column `label_<task>` (e.g. `label_soundtrack`) adds
task <task> with the column's value as the class (single-label; a JSON list in a JSONL sidecar makes it
multi-label). Label columns never reach the captions, so a label can be scored without being trained on.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from muser.shards.sources.base import (
    SourceListing,
    Track,
    as_list,
    clean,
    compact,
    file_error,
    finish,
    key_safe,
    short_hash,
    year_of,
)
from muser.shards.sources.walk import audio_files

LABEL_TASKS = {"genre": "single"}
_SPLITS = {
    "train": "train",
    "training": "train",
    "valid": "valid",
    "validation": "valid",
    "val": "valid",
    "test": "test",
    "all": "all",
}
_FIELDS = {
    "title",
    "artist",
    "album",
    "year",
    "date",
    "genre",
    "genres",
    "parent_genres",
    "tags",
    "mood",
    "description",
    "comment",
    "split",
    "path",
}
_LABEL_PREFIX = "label_"  # sidecar columns label_<task> carry labels, not caption text
_TASK = re.compile(r"^[A-Za-z0-9_-]+$")
# "<title> by <artist>" on a credit note's first line, stopping before the licence boilerplate.
_CREDIT = re.compile(
    r"^(?P<title>.+?) by (?P<artist>.+?)(?:\s+(?:is licensed|is in the|\(c\)|licensed)(?=\s|$).*)?$",
    re.IGNORECASE,
)


def folder_id(rel: str) -> str:
    """Key of a file at relative path `rel`: the sanitised path (no extension) plus a hash of the full
    path, so `a.wav` and `a.flac`, or two paths that sanitise alike, never share a key."""
    stem = rel.rsplit(".", 1)[0]
    return f"folder_{key_safe(stem, 80)}_{short_hash(rel)}"


def read_tags(path: Path) -> dict[str, Any]:
    """title/artist/album/genres/year/description from embedded tags (Vorbis comments, ID3, EasyID3)."""
    import mutagen

    try:
        f = mutagen.File(path, easy=True)
    except Exception:  # tags are best effort: a broken file is reported by the decoder, not here
        return {}
    tags = getattr(f, "tags", None)
    if not tags:
        return {}
    keys = {k.lower() if isinstance(k, str) else k for k in tags.keys()}

    def get(*names: str) -> list[str]:
        for name in names:
            for key in (name, name.upper()):
                if key in tags:
                    values = tags[key]
                    values = getattr(values, "text", values)  # ID3 frames keep their strings in .text
                    return [str(v) for v in (values if isinstance(values, list) else [values])]
        return []

    if "tit2" in keys or any(isinstance(k, str) and k.startswith("COMM") for k in tags.keys()):
        # ID3 inside WAV/AIFF: mutagen has no easy interface there, so read the frames by id.
        comments = [str(t) for k in tags.keys() if k.startswith("COMM") for t in tags[k].text]
        out = {
            "title": get("TIT2"),
            "artist": get("TPE1"),
            "album": get("TALB"),
            "genre": get("TCON"),
            "date": get("TDRC", "TYER"),
            "comment": comments,
        }
    else:
        out = {k: get(k) for k in ("title", "artist", "album", "genre", "date")}
        out["comment"] = get("comment", "description")
    first = {k: (v[0].strip() if v else None) for k, v in out.items()}
    return {
        "title": first["title"],
        "artist": first["artist"],
        "album": first["album"],
        "genres": [g for v in out["genre"] for g in as_list(v)],
        "year": year_of(first["date"]),
        "description": first["comment"],
    }


def read_credit(path: Path) -> dict[str, Any]:
    """A same-name .txt note (as shipped with freesound/FMA downloads): first line as description, and
    title/artist when it reads "<title> by <artist> ..."."""
    note = path.with_suffix(".txt")
    if not note.is_file():
        return {}
    text = note.read_text(encoding="utf-8", errors="replace").strip()
    if not text:
        return {}
    first = text.splitlines()[0].strip().rstrip(".")
    out: dict[str, Any] = {"description": first, "extra": {"credits": text}}
    m = _CREDIT.match(first)
    if m:
        out["title"], out["artist"] = m.group("title").strip(' "'), m.group("artist").strip()
    return out


def read_sidecar(path: Path) -> dict[str, dict[str, Any]]:
    """Rows of a CSV (header row) or JSONL file keyed by their `path` column (relative, '/'-separated).

    Raises ValueError naming the file and line for anything that is not clean UTF-8 CSV/JSONL: bad bytes,
    a row with more fields than the header, a field over MAX_FIELD characters, a line that is not JSON.
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson"):
        raise ValueError(f"--metadata {path} must be a .csv or .jsonl file keyed by relative path")
    text = _utf8_text(path)
    rows = _csv_rows(path, text) if suffix == ".csv" else _jsonl_rows(path, text)
    out = {}
    for line, row in rows:
        if not isinstance(row, dict) or not row.get("path"):
            raise ValueError(f"{path} line {line} has no 'path' column (the file's path relative to SRC)")
        out[str(row["path"]).replace("\\", "/").removeprefix("./")] = row
    return out


# csv's own default field limit, applied to JSONL values too: a longer field is nearly always an unclosed
# quote swallowing the rest of the file, and in any case no caption field.
MAX_FIELD = 131072


def _utf8_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise ValueError(
            f"{path} line {line} is not UTF-8 (byte 0x{data[err.start]:02x}); save the file as UTF-8"
        ) from None


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    """(line, row) for each data row; line is where the row starts in the file."""
    # strict: a quote left open runs to the end of the file and must be an error, not one giant title
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[tuple[int, dict[str, Any]]] = []
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader, None)
        except csv.Error as err:
            what = f"a field is longer than {MAX_FIELD} characters" if "larger" in str(err) else str(err)
            if "larger" in str(err) or "end of data" in str(err):
                what += " (an unclosed quote?)"
            raise ValueError(f"{path} line {start}: {what}; fix that row") from None
        if fields is None:
            return rows
        if header is None:
            header = fields
            continue
        if not any(f.strip() for f in fields):
            continue  # a blank line
        if len(fields) > len(header):
            raise ValueError(
                f"{path} line {start} has {len(fields)} fields but the header has {len(header)}; quote "
                "values that contain commas"
            )
        rows.append((start, dict(zip(header, fields + [""] * (len(header) - len(fields)), strict=True))))


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, Any]]:
    rows = []
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as err:
            raise ValueError(f"{path} line {i} is not valid JSON ({getattr(err, 'msg', err)})") from None
        if isinstance(row, dict):
            long = [k for k, v in row.items() if len(str(v)) > MAX_FIELD]
            if long:
                raise ValueError(
                    f"{path} line {i}: field {long[0]!r} is longer than {MAX_FIELD} characters; shorten it"
                )
        rows.append((i, row))
    return rows


def _from_sidecar(row: dict[str, Any], where: str) -> dict[str, Any]:
    meta: dict[str, Any] = {k: row.get(k) for k in ("title", "artist", "album", "description")}
    meta["description"] = meta["description"] or row.get("comment")
    meta["year"] = year_of(row.get("year") or row.get("date"))
    meta["genres"] = as_list(row.get("genres") or row.get("genre"))
    for k in ("parent_genres", "tags", "mood"):
        meta[k] = as_list(row.get(k))
    meta["labels"] = _labels_of(row, where)
    meta["extra"] = {
        k: v
        for k, v in row.items()
        if k not in _FIELDS and not str(k).startswith(_LABEL_PREFIX) and v not in (None, "")
    }
    split = str(row.get("split") or "").strip().lower()
    if split and split not in _SPLITS:
        raise ValueError(f"{where}: split {row['split']!r} is not one of train, valid, test, all")
    meta["split"] = _SPLITS.get(split)
    return {k: v for k, v in meta.items() if v not in (None, "", [], {})}


def _labels_of(row: dict[str, Any], where: str) -> dict[str, str | list[str]]:
    """{task: class} from the `label_<task>` columns of a sidecar row (empty cells give no label)."""
    out: dict[str, str | list[str]] = {}
    for column, value in row.items():
        if not str(column).startswith(_LABEL_PREFIX):
            continue
        task = str(column)[len(_LABEL_PREFIX) :]
        if not _TASK.match(task):
            raise ValueError(
                f"{where}: label column {column!r} must be label_<task> with a task name of letters, "
                "digits, '_' or '-'"
            )
        if isinstance(value, (list, tuple)):  # JSONL: a list is a multi-label value
            classes = [str(v).strip() for v in value if clean(v) is not None]
            if classes:
                out[task] = classes
        elif clean(value) is not None:
            out[task] = str(clean(value))
    return out


def _label_tasks(tracks: list[Track], metadata: str | None) -> dict[str, str]:
    """task -> single | multi over every track's labels; one task cannot mix the two."""
    kinds: dict[str, set[str]] = {}
    for t in tracks:
        for task, value in (t.meta.get("labels") or {}).items():
            kinds.setdefault(task, set()).add("multi" if isinstance(value, list) else "single")
    mixed = sorted(task for task, k in kinds.items() if len(k) > 1)
    if mixed:
        raise ValueError(
            f"--metadata {metadata}: label column label_{mixed[0]} mixes lists and single values; "
            "use one kind per task"
        )
    return {**LABEL_TASKS, **{task: k.pop() for task, k in kinds.items()}}


def discover(root: Path, metadata: str | None = None) -> SourceListing:
    """Every audio file under `root` (sorted), with metadata from tags, credit notes and the sidecar."""
    sidecar: dict[str, dict[str, Any]] = {}
    notes = []
    if metadata:
        side = Path(metadata) if Path(metadata).is_file() else root / metadata
        if not side.is_file():
            raise ValueError(f"--metadata {metadata} not found (looked at it as given and inside {root})")
        sidecar = read_sidecar(side)
        notes.append(f"metadata from {side.name}: {len(sidecar)} rows")
    entries = {e.rel: e for e in audio_files(root)}
    files = {rel: e.path for rel, e in entries.items() if e.error is None}
    if not entries and not sidecar:
        raise ValueError(
            f"no audio files ({', '.join(['.wav', '.flac', '.ogg', '.mp3', '...'])}) found under {root}"
        )
    tracks = []
    for rel in sorted(set(entries) | set(sidecar)):
        if rel in entries and entries[rel].error:  # a link, FIFO, unreadable folder or undecodable name
            path, error = entries[rel].path, entries[rel].error
            tracks.append(Track(folder_id(rel), path, "folder", "all", {}, error))
            continue
        path = files.get(rel)
        error = file_error(path, f"{Path(metadata).name if metadata else 'metadata'}")
        meta: dict[str, Any] = {}
        side_labels: dict[str, Any] = {}
        if path is not None and error is None:
            meta.update({k: v for k, v in read_credit(path).items() if v})
            meta.update({k: v for k, v in read_tags(path).items() if v})  # tags beat the credit note
        if rel in sidecar:
            side_meta = _from_sidecar(sidecar[rel], f"{metadata} row {rel!r}")
            side_labels = side_meta.pop("labels", {})
            extra = {**meta.get("extra", {}), **side_meta.pop("extra", {})}
            meta.update(side_meta)  # the sidecar wins: it is the user's own correction of the tags
            meta["extra"] = extra
        if not meta.get("title") and path is not None:  # what music players show for untagged files
            meta["title"] = path.stem.replace("_", " ").strip()
            meta.setdefault("extra", {})["title_from"] = "filename"
        split = meta.pop("split", "all")
        labels = {"genre": meta["genres"][0]} if meta.get("genres") else {}
        labels.update(side_labels)  # a label_genre column corrects the tags' genre, like every sidecar field
        if labels:
            meta["labels"] = labels
        meta.setdefault("extra", {})["path"] = rel
        tracks.append(Track(folder_id(rel), path, "folder", split, compact(meta), error))
    tracks = finish(tracks)
    return SourceListing("folder", root, tracks, _label_tasks(tracks, metadata), notes)
