"""FMA source: fma_<subset>/NNN/NNNNNN.mp3 described by fma_metadata/tracks.csv (two-row column header plus
a `track_id` row) and genres.csv (the genre tree: parent links up to the top-level genres)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from muser.config import FMA_SUBSETS
from muser.shards.sources.base import (
    SourceListing,
    Track,
    as_list,
    clean,
    compact,
    file_error,
    finish,
    year_of,
)

LABEL_TASKS = {"genre_top": "single"}
SUBSETS = FMA_SUBSETS
KNOWN_BAD = frozenset({99134, 108925, 133297})  # FMA-small files that hold no audio (FMA issue tracker)
_SPLITS = {"training": "train", "validation": "valid", "test": "test"}
_REQUIRED = (("set", "subset"), ("set", "split"), ("track", "genre_top"), ("track", "genres"))
_AUDIO_DIR = re.compile(r"fma_(small|medium|large|full)$")


def looks_like(src: Path) -> bool:
    """Whether SRC is an FMA audio folder or the folder holding one (used by --source auto)."""
    return (
        bool(_AUDIO_DIR.match(src.name))
        or (src / "fma_metadata").is_dir()
        or any((src / f"fma_{s}").is_dir() for s in SUBSETS)
    )


def find_tracks_csv(src: Path, metadata: str | None) -> Path:
    if metadata:
        path = Path(metadata)
        path = path / "tracks.csv" if path.is_dir() else path
        if not path.is_file():
            raise ValueError(
                f"--metadata {metadata}: no tracks.csv there (pass fma_metadata/ or its tracks.csv)"
            )
        return path
    for cand in (src / "fma_metadata", src.parent / "fma_metadata", src):
        if (cand / "tracks.csv").is_file():
            return cand / "tracks.csv"
    raise ValueError(f"no fma_metadata/tracks.csv found beside fma_small/ or inside {src}; pass --metadata")


def find_audio_dir(src: Path, subset: str) -> Path:
    if _AUDIO_DIR.match(src.name):
        return src
    # A bigger subset's folder holds every smaller subset's files, so it serves as a fallback.
    for name in (f"fma_{subset}", "fma_full", "fma_large", "fma_medium", "fma_small"):
        if (src / name).is_dir():
            return src / name
    if any(d.is_dir() and re.fullmatch(r"\d{3}", d.name) for d in src.iterdir()):
        return src
    raise ValueError(f"no fma_{subset}/ audio folder (NNN/NNNNNN.mp3) found in {src}")


def read_tracks(path: Path):  # -> pandas.DataFrame
    import pandas as pd

    try:
        df = pd.read_csv(path, index_col=0, header=[0, 1], low_memory=False)
    except (ValueError, pd.errors.ParserError) as e:
        raise ValueError(
            f"{path} is not the FMA tracks.csv (two-row header album/artist/set/track): {e}"
        ) from e
    missing = [".".join(c) for c in _REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(
            f"{path} lacks column(s) {', '.join(missing)}; expected FMA's tracks.csv with its "
            "two-row header (top level album/artist/set/track, second level the field)"
        )
    return df


def read_genres(path: Path) -> dict[int, tuple[str, int]]:
    """genre_id -> (title, parent id; 0 for top-level genres)."""
    import pandas as pd

    g = pd.read_csv(path)
    missing = [c for c in ("genre_id", "parent", "title") if c not in g.columns]
    if missing:
        raise ValueError(
            f"{path} lacks column(s) {', '.join(missing)} (expected genre_id,#tracks,parent,title,top_level)"
        )
    return {
        int(i): (str(t), int(p) if clean(p) is not None else 0)
        for i, t, p in zip(g.genre_id, g.title, g.parent, strict=True)
    }


def ancestors(gid: int, genres: dict[int, tuple[str, int]]) -> list[int]:
    out: list[int] = []
    parent = genres.get(gid, ("", 0))[1]
    while parent and parent in genres and parent not in out:  # the guard stops a cycle in a broken file
        out.append(parent)
        parent = genres[parent][1]
    return out


def discover(src: Path, metadata: str | None = None, subset: str = "small") -> SourceListing:
    if subset not in SUBSETS:
        raise ValueError(f"--subset {subset!r} is not one of {', '.join(SUBSETS)}")
    tracks_csv = find_tracks_csv(src, metadata)
    audio_dir = find_audio_dir(src, subset)
    df = read_tracks(tracks_csv)
    notes = [f"metadata {tracks_csv}, audio {audio_dir}"]
    genres_csv = tracks_csv.parent / "genres.csv"
    genres = read_genres(genres_csv) if genres_csv.is_file() else {}
    if not genres:
        notes.append(f"no {genres_csv.name} beside tracks.csv: genres come from genre_top only")
    if subset != "full":
        keep = set(SUBSETS[: SUBSETS.index(subset) + 1])
        df = df[df[("set", "subset")].isin(keep)]

    def col(top: str, name: str) -> list[Any]:
        return list(df[(top, name)]) if (top, name) in df.columns else [None] * len(df)

    cols = {
        k: col(*k)
        for k in [
            ("track", "title"),
            ("artist", "name"),
            ("album", "title"),
            ("album", "date_released"),
            ("track", "date_recorded"),
            ("track", "date_created"),
            ("track", "genres"),
            ("track", "genre_top"),
            ("track", "tags"),
            ("album", "tags"),
            ("set", "split"),
            ("set", "subset"),
            ("track", "license"),
        ]
    }
    tracks, listed = [], set()
    for i, tid in enumerate(int(t) for t in df.index):
        v = {k: clean(c[i]) for k, c in cols.items()}
        name = f"{tid:06d}"
        listed.add(name)
        path = audio_dir / name[:3] / f"{name}.mp3"
        error = file_error(path, tracks_csv.name)
        if tid in KNOWN_BAD:
            error = f"known-bad FMA file {name} (ships without audio)"
        gids = [int(g) for g in as_list(v[("track", "genres")]) if g.lstrip("-").isdigit()]
        top = v[("track", "genre_top")]
        titles = [genres[g][0] for g in gids if g in genres] or ([str(top)] if top else [])
        parents = [genres[a][0] for g in gids for a in ancestors(g, genres)]
        meta = {
            "title": v[("track", "title")],
            "artist": v[("artist", "name")],
            "album": v[("album", "title")],
            "year": next(
                (
                    y
                    for y in map(
                        year_of,
                        (
                            v[("album", "date_released")],
                            v[("track", "date_recorded")],
                            v[("track", "date_created")],
                        ),
                    )
                    if y
                ),
                None,
            ),
            "genres": titles,
            "parent_genres": [p for j, p in enumerate(parents) if p not in parents[:j] + titles],
            "tags": as_list(v[("track", "tags")])
            + [t for t in as_list(v[("album", "tags")]) if t not in as_list(v[("track", "tags")])],
            "labels": {"genre_top": str(top)} if top else {},
            "extra": {
                "fma_track_id": tid,
                "subset": v[("set", "subset")],
                "genre_ids": gids,
                "license": v[("track", "license")],
            },
        }
        split = _SPLITS.get(str(v[("set", "split")]), "all")
        tracks.append(
            Track(f"fma_{name}", path if path.exists() else None, "fma", split, compact(meta), error)
        )
    unlisted = sum(1 for p in audio_dir.rglob("*.mp3") if p.stem not in listed)
    if unlisted:
        notes.append(
            f"{unlisted} mp3 files under {audio_dir.name}/ are not in tracks.csv for subset "
            f"{subset!r} and were ignored"
        )
    return SourceListing("fma", src, finish(tracks), dict(LABEL_TASKS), notes)
