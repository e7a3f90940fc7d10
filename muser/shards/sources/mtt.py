"""MagnaTagATune source: annotations_final.csv (tab-separated, quoted; clip_id, 188 binary tag columns,
mp3_path), the 50 most frequent tags as a multi-label task, the standard split by the first character of
the clip's folder (0-9,a,b train / c valid / d,e,f test), and clip_info_final.csv for title/artist/album."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from muser.shards.sources.base import SourceListing, Track, clean, compact, file_error, finish, make_id

LABEL_TASKS = {"tags": "multi"}
TOP_K = 50
_SPLIT_OF_DIR = {**dict.fromkeys("0123456789ab", "train"), "c": "valid", **dict.fromkeys("def", "test")}


def looks_like(src: Path) -> bool:
    return (src / "annotations_final.csv").is_file()


def _read_tsv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quotechar='"'))
    if not rows:
        raise ValueError(f"{path} is empty")
    return rows[0], rows[1:]


def top_tags(tag_names: list[str], rows: list[list[str]], k: int = TOP_K) -> list[str]:
    """The k most frequent tags; equal counts go by name, so the choice never depends on column order."""
    counts = Counter({t: 0 for t in tag_names})
    for row in rows:
        for t, v in zip(tag_names, row[1:-1], strict=False):
            counts[t] += v.strip() == "1"
    return [t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:k]]


def split_of(mp3_path: str) -> str:
    """MTT's conventional split: the folder's first character (16 folders 0-f; 12/1/3 of them)."""
    return _SPLIT_OF_DIR.get(mp3_path.strip("/")[:1].lower(), "all")


def discover(src: Path) -> SourceListing:
    ann = src / "annotations_final.csv"
    if not ann.is_file():
        raise ValueError(
            f"no annotations_final.csv found in {src} (expected the MagnaTagATune root holding "
            "annotations_final.csv and the 0-f/ mp3 folders)"
        )
    header, rows = _read_tsv(ann)
    if header[:1] != ["clip_id"] or header[-1:] != ["mp3_path"]:
        raise ValueError(
            f"{ann} must start with a clip_id column and end with mp3_path (tab-separated, quoted)"
        )
    tag_names = header[1:-1]
    top = top_tags(tag_names, rows)
    top_set = set(top)
    info: dict[str, dict[str, str]] = {}
    info_csv = src / "clip_info_final.csv"
    if info_csv.is_file():
        ih, irows = _read_tsv(info_csv)
        info = {r[0]: dict(zip(ih, r, strict=False)) for r in irows if r}
    # Some copies keep the 0-f folders under mp3/ or audio/ beside the CSV files.
    audio_root = next(
        (d for d in (src, src / "mp3", src / "audio") if any((d / c).is_dir() for c in "0123456789abcdef")),
        src,
    )
    tracks, odd_dirs = [], 0
    for row in rows:
        if len(row) != len(header):
            continue  # a stray blank or broken line: not a clip
        clip_id, rel = row[0].strip(), row[-1].strip()
        tags = [t for t, v in zip(tag_names, row[1:-1], strict=True) if v.strip() == "1"]
        split = split_of(rel)
        odd_dirs += split == "all"
        ci = info.get(clip_id, {})
        path = audio_root / rel
        meta = {
            "title": clean(ci.get("title")),
            "artist": clean(ci.get("artist")),
            "album": clean(ci.get("album")),
            "tags": tags,  # every positive tag describes the clip in text; labels keep the top 50 only
            "labels": {"tags": sorted(t for t in tags if t in top_set)},
            "extra": {"clip_id": clip_id, "mp3_path": rel, "segment": _segment(ci)},
        }
        error = file_error(path, ann.name)
        tracks.append(
            Track(
                make_id("mtt", clip_id), path if path.exists() else None, "mtt", split, compact(meta), error
            )
        )
    notes = [f"{len(tag_names)} tag columns; top {len(top)} used as labels ({', '.join(top[:5])}, ...)"]
    if odd_dirs:
        notes.append(f"{odd_dirs} clips outside the 0-f folders went to split 'all'")
    return SourceListing("mtt", src, finish(tracks), dict(LABEL_TASKS), notes, {"tags": sorted(top)})


def _segment(ci: dict[str, str]) -> str | None:
    start, end = clean(ci.get("segmentStart")), clean(ci.get("segmentEnd"))
    return f"{start}-{end}" if start is not None and end is not None else None
