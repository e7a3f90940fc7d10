"""The real on-disk layouts of GTZAN, FMA, MagnaTagATune and a tagged music folder (metadata files, paths,
embedded tags, planted faults), and `make_corpus`, which writes one of them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from muser.synth.styles import FILLER_TAGS, STYLE_INFO, STYLES
from muser.synth.writer import Item, Writer, extra_items, make_items, split_of


def _gtzan(w: Writer, items: list[Item], styles: list[str], n: int, broken: bool, split_lists: bool) -> None:
    from muser.shards.sources.base import make_id

    lists: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for it in items:
        ext = ".au" if it.index % 3 == 2 else ".wav"  # GTZAN ships .au; most copies are converted to .wav
        rel = f"genres/{it.style}/{it.style}.{it.index:05d}{ext}"
        w.audio(rel, it)
        # The last clip of the first genre is "faulty": absent from every fault-filtered list.
        if not (it.style == styles[0] and it.index == n - 1 and n >= 2):
            lists[split_of(styles.index(it.style), it.index)].append(rel.removeprefix("genres/"))
    if broken:
        g, donors = styles[0], extra_items(styles[:1], n, 4, w.seed)
        planted = [
            ("empty", ".wav", "source"),
            ("truncated", ".wav", "decode"),
            ("not_audio", ".au", "decode"),
        ]
        for j, (reason, ext, stage) in enumerate(planted):
            stem = f"{g}.{n + j:05d}"
            w.plant(f"genres/{g}/{stem}{ext}", reason, stage, make_id("gtzan", stem), donors[j])
            lists["train"].append(f"{g}/{stem}{ext}")
        stem = f"{g}.{n + 3:05d} — café ♪"
        w.audio(f"genres/{g}/{stem}.wav", donors[3])
        w.valid_unicode.append({"path": f"genres/{g}/{stem}.wav", "id": make_id("gtzan", stem)})
        lists["train"].append(f"{g}/{stem}.wav")
    if split_lists:
        for split, lines in lists.items():
            (w.root / f"{split}_filtered.txt").write_text("".join(f"{x}\n" for x in sorted(lines)))
    w.record({"split_lists": split_lists})


def _fma(w: Writer, items: list[Item], styles: list[str], n: int, broken: bool) -> None:
    import pandas as pd

    # Genre tree: style -> its parent chain; ids assigned top-down in a fixed order.
    titles: dict[str, int] = {}
    parent: dict[str, str | None] = {}
    for style in styles:
        chain = [style, *STYLE_INFO[style].parents]
        for child, up in zip(chain, chain[1:] + [None], strict=True):
            parent.setdefault(child, up)
    for name in sorted(parent, key=lambda g: (len(_chain(g, parent)), g)):
        titles[name] = len(titles) + 1

    def top(g: str) -> str:
        return _chain(g, parent)[-1]

    extras = extra_items(styles, n, 7, w.seed)
    pool = np.random.default_rng(w.seed).choice(
        np.arange(2, 155000), size=len(items) + len(extras) + 8, replace=False
    )
    ids = sorted(int(i) for i in pool if int(i) not in (99134, 108925, 133297))
    rows, index = [], []

    def row(it: Item, tid: int, split: str, subset: str) -> None:
        m, g = it.meta, it.style
        rows.append(
            {
                ("album", "date_released"): f"{m['year']}-03-01 00:00:00",
                ("album", "id"): 1000 + tid % 977,
                ("album", "tags"): "[]",
                ("album", "title"): m["album"],
                ("album", "type"): "Album",
                ("artist", "id"): 500 + tid % 331,
                ("artist", "location"): "",
                ("artist", "name"): m["artist"],
                ("artist", "tags"): "[]",
                ("set", "split"): split,
                ("set", "subset"): subset,
                ("track", "bit_rate"): 256000,
                ("track", "date_created"): f"{m['year'] + 1}-11-26 01:44:45",
                ("track", "date_recorded"): "",
                ("track", "duration"): int(round(w.seconds)),
                ("track", "genre_top"): _fma_title(top(g)),
                ("track", "genres"): str([titles[g]]),
                ("track", "genres_all"): str(sorted(titles[x] for x in _chain(g, parent))),
                ("track", "interest"): int(it.rng.integers(100, 5000)),
                ("track", "license"): "Attribution-NonCommercial-ShareAlike 3.0 International",
                ("track", "listens"): int(it.rng.integers(10, 3000)),
                ("track", "number"): it.index + 1,
                ("track", "tags"): str(m["tags"]),
                ("track", "title"): m["title"],
            }
        )
        index.append(tid)

    def rel(tid: int) -> str:
        s = f"{tid:06d}"
        return f"fma_small/{s[:3]}/{s}.mp3"

    long_split = {"train": "training", "valid": "validation", "test": "test"}
    for it, tid in zip(items, ids, strict=False):
        row(it, tid, long_split[split_of(styles.index(it.style), it.index)], "small")
        w.audio(rel(tid), it)
    more = ids[len(items) :]
    for it, tid in zip(
        extras[:2], more[:2], strict=False
    ):  # medium-only tracks: filtered out of the small subset
        row(it, tid, "training", "medium")
    if broken:
        planted = [
            ("known_bad", 99134, "source"),
            ("missing", more[2], "source"),
            ("empty", more[3], "source"),
            ("truncated", more[4], "decode"),
            ("not_audio", more[5], "decode"),
        ]
        for (reason, tid, stage), it in zip(planted, extras[2:], strict=False):
            row(it, tid, "training", "small")
            if reason != "missing":
                w.plant(rel(tid), reason, stage, f"fma_{tid:06d}", it)
            else:
                w.broken.append({"path": rel(tid), "id": f"fma_{tid:06d}", "reason": reason, "stage": stage})
        w.audio(rel(more[6]), extras[6])  # on disk but in no metadata: ignored with a note
    meta = w.root / "fma_metadata"
    meta.mkdir(parents=True, exist_ok=True)
    tracks = pd.DataFrame(rows, index=pd.Index(index, name="track_id"))
    tracks.columns = pd.MultiIndex.from_tuples(tracks.columns)
    tracks.sort_index().to_csv(meta / "tracks.csv")
    counts = {g: sum(1 for it in items if g in _chain(it.style, parent)) for g in titles}
    genres = pd.DataFrame(
        [
            {
                "genre_id": titles[g],
                "#tracks": counts[g],
                "parent": titles[parent[g]] if parent[g] else 0,
                "title": _fma_title(g),
                "top_level": titles[top(g)],
            }
            for g in titles
        ]
    )
    genres.sort_values("genre_id").to_csv(meta / "genres.csv", index=False)
    w.record(
        {"medium_only": [f"fma_{t:06d}" for t in more[:2]], "unlisted": [rel(more[6])] if broken else []}
    )


def _chain(g: str, parent: dict[str, str | None]) -> list[str]:
    out = [g]
    while parent.get(out[-1]):
        out.append(parent[out[-1]])  # type: ignore[arg-type]
    return out


def _fma_title(g: str) -> str:
    return " ".join(p.capitalize() for p in g.split(" "))  # FMA titles: "Electronic", "Video Game Music"


def _slug(text: str) -> str:
    return "_".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


_MTT_DIRS = "0c1d2e3f456789ab"  # interleaved so every small corpus reaches train (0-b), valid (c), test (d-f)


def _mtt(w: Writer, items: list[Item], styles: list[str], n: int, broken: bool) -> None:
    import csv

    tag_columns = sorted({t for s in styles for t in STYLE_INFO[s].tags} | set(FILLER_TAGS))
    np.random.default_rng(w.seed).shuffle(tag_columns)  # the real file's column order is not alphabetical
    annotations, info = [], []

    def row(it: Item, i: int, folder: str, name: str | None = None) -> str:
        m = it.meta
        start = int(it.rng.choice([0, 30, 59]))
        name = name or f"{_slug(m['artist'])}-{_slug(m['album'])}-{it.index + 1:02d}-{_slug(m['title'])}"
        path = f"{folder}/{name}-{start}-{start + 29}.mp3"
        clip_id = str(2 + 4 * i)
        annotations.append([clip_id, *("1" if t in m["tags"] else "0" for t in tag_columns), path])
        info.append(
            [
                clip_id,
                str(it.index + 1),
                m["title"],
                m["artist"],
                m["album"],
                f"http://www.magnatune.com/artists/albums/{_slug(m['artist'])}/",
                str(start),
                str(start + 29),
                f"http://he3.magnatune.com/all/{it.index + 1:02d}-{_slug(m['title'])}.mp3",
                path,
            ]
        )
        return path

    for i, it in enumerate(items):
        w.audio(row(it, i, _MTT_DIRS[i % 16]), it)
    if broken:
        extras = extra_items(styles, n, 5, w.seed)
        planted = [
            ("missing", "source"),
            ("empty", "source"),
            ("truncated", "decode"),
            ("not_audio", "decode"),
        ]
        for j, ((reason, stage), it) in enumerate(zip(planted, extras, strict=False)):
            i = len(items) + j
            path = row(it, i, _MTT_DIRS[i % 16])
            if reason == "missing":
                w.broken.append({"path": path, "id": f"mtt_{2 + 4 * i}", "reason": reason, "stage": stage})
            else:
                w.plant(path, reason, stage, f"mtt_{2 + 4 * i}", it)
        i = len(items) + 4
        path = row(extras[4], i, "e", "zoë_nørgaard-café_sessions-01-crème_brûlée")
        w.audio(path, extras[4])
        w.valid_unicode.append({"path": path, "id": f"mtt_{2 + 4 * i}"})
    for name, header, body in [
        ("annotations_final.csv", ["clip_id", *tag_columns, "mp3_path"], annotations),
        (
            "clip_info_final.csv",
            [
                "clip_id",
                "track_number",
                "title",
                "artist",
                "album",
                "url",
                "segmentStart",
                "segmentEnd",
                "original_url",
                "mp3_path",
            ],
            info,
        ),
    ]:
        with open(w.root / name, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
            out.writerow(header)
            out.writerows(body)
    w.record({"tag_columns": len(tag_columns)})


def _tag(path: Path, meta: dict) -> None:
    """Embed title/artist/album/genre/date/comment the way taggers do: Vorbis comments or ID3 in WAV."""
    from mutagen.flac import FLAC
    from mutagen.oggvorbis import OggVorbis

    fields = {
        "title": meta["title"],
        "artist": meta["artist"],
        "album": meta["album"],
        "genre": meta["genres"][0],
        "date": str(meta["year"]),
        "comment": meta["description"],
    }
    if path.suffix in (".ogg", ".flac"):
        f = (OggVorbis if path.suffix == ".ogg" else FLAC)(path)
        for k, v in fields.items():
            f[k] = v
        f.save()
        return
    from mutagen.id3 import COMM, TALB, TCON, TDRC, TIT2, TPE1
    from mutagen.wave import WAVE

    f = WAVE(path)
    f.add_tags()
    for frame, key in ((TIT2, "title"), (TPE1, "artist"), (TALB, "album"), (TCON, "genre"), (TDRC, "date")):
        f.tags.add(frame(encoding=3, text=[fields[key]]))
    f.tags.add(COMM(encoding=3, lang="eng", desc="", text=[fields["comment"]]))
    f.save()


def _folder(
    w: Writer, items: list[Item], styles: list[str], n: int, broken: bool, sidecar: bool | str
) -> None:
    from muser.shards.sources.folder import folder_id

    rows = []
    for i, it in enumerate(items):
        m, ext = it.meta, (".ogg", ".flac", ".wav")[i % 3]
        if i % 5 == 4:  # some loose singles beside the artist/album tree
            rel = f"singles/{m['title']} {i}{ext}"
        else:
            rel = f"{m['artist']}/{m['album']}/{it.index + 1:02d} - {m['title']}{ext}"
        _tag(w.audio(rel, it), m)
        rows.append(
            {
                "path": rel,
                "title": f"{m['title']} (Remastered)" if i % 2 == 0 else "",
                "genre": it.style,
                "tags": ";".join(m["tags"]),
                "mood": ";".join(m["mood"]),
                "split": split_of(styles.index(it.style), it.index),
                "bpm": str(60 + 7 * i),
            }
        )
    if broken:
        donors = extra_items(styles, n, 3, w.seed)
        for (rel, reason, stage), it in zip(
            [
                ("Misc/empty.wav", "empty", "source"),
                ("Misc/truncated.flac", "truncated", "decode"),
                ("Misc/notes.ogg", "not_audio", "decode"),
            ],
            donors,
            strict=False,
        ):
            w.plant(rel, reason, stage, folder_id(rel), it)
        rel = "Ünïcødé Ärtist/café ♪ 01.ogg"
        _tag(w.audio(rel, donors[2]), donors[2].meta)
        w.valid_unicode.append({"path": rel, "id": folder_id(rel)})
        if sidecar:
            rows.append({"path": "Misc/missing.wav", "title": "Gone", "genre": styles[0], "split": "train"})
            w.broken.append(
                {
                    "path": "Misc/missing.wav",
                    "id": folder_id("Misc/missing.wav"),
                    "reason": "missing",
                    "stage": "source",
                }
            )
    if sidecar == "jsonl":
        with open(w.root / "metadata.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                r = {k: (v.split(";") if k in ("tags", "mood") else v) for k, v in r.items() if v}
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif sidecar:
        import csv

        with open(w.root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            out = csv.DictWriter(f, fieldnames=["path", "title", "genre", "tags", "mood", "split", "bpm"])
            out.writeheader()
            out.writerows(rows)
    w.record(
        {"sidecar": {"jsonl": "metadata.jsonl", True: "metadata.csv", "csv": "metadata.csv"}.get(sidecar)}
    )


LAYOUTS = ("gtzan", "fma", "mtt", "folder")


def make_corpus(
    root: str | Path,
    layout: str = "gtzan",
    n_per_class: int = 4,
    seconds: float = 6.0,
    sample_rate: int = 22050,
    seed: int = 0,
    broken: bool = False,
    styles: list[str] | None = None,
    split_lists: bool = False,
    sidecar: bool | str = False,
    difficulty: float = 0.0,
) -> Path:
    """Write a dataset in the real on-disk `layout` under `root` and return the folder to pass as SRC.

    gtzan: genres/<genre>/<genre>.000NN.wav|.au (+ {train,valid,test}_filtered.txt when `split_lists`);
    fma: fma_small/NNN/NNNNNN.mp3 + fma_metadata/{tracks,genres}.csv (3-row header); mtt:
    annotations_final.csv + clip_info_final.csv + <0-f>/<name>.mp3; folder: <artist>/<album>/*.ogg|flac|wav
    with embedded tags (+ metadata.csv, or metadata.jsonl when `sidecar="jsonl"`). `broken` plants empty,
    truncated, non-audio and listed-but-missing files plus a valid unicode path; root/BROKEN.json lists them
    with the track id, the reason and the stage that must catch them (`source` or `decode`).
    `difficulty` in [0, 1] makes the styles overlap (see `render_clip`); 0 writes the original corpus.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    styles = list(styles or STYLES)
    unknown = [s for s in styles if s not in STYLE_INFO]
    if unknown:
        raise ValueError(f"unknown style(s) {', '.join(unknown)}; choose from: {', '.join(STYLES)}")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must lie in [0, 1], got {difficulty}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    w = Writer(root, seconds, sample_rate, seed, difficulty)
    items = make_items(styles, n_per_class, seed)
    if layout == "gtzan":
        _gtzan(w, items, styles, n_per_class, broken, split_lists)
    elif layout == "fma":
        _fma(w, items, styles, n_per_class, broken)
    elif layout == "mtt":
        _mtt(w, items, styles, n_per_class, broken)
    else:
        _folder(w, items, styles, n_per_class, broken, sidecar)
    return root
