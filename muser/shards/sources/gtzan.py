"""GTZAN source: genres/<genre>/<genre>.000NN.wav|.au, with optional fault-filtered split lists
(train_filtered.txt, valid_filtered.txt, test_filtered.txt; or train.txt, ...) naming `genre/file` lines."""

from __future__ import annotations

from pathlib import Path

from muser.shards.sources.base import SourceListing, Track, compact, file_error, finish, is_audio, make_id
from muser.shards.sources.walk import audio_files

LABEL_TASKS = {"genre": "single"}
GENRE_DIRS = ("genres", "genres_original")  # the original archive; the Kaggle copy's folder name


def find_genres(src: Path, bare: bool = False) -> Path | None:
    """The genres/ folder: SRC/genres (or genres_original), SRC itself when named so, or, with `bare`
    (the user said --source gtzan), any SRC holding <genre>/ folders of audio."""
    for cand in [*(src / d for d in GENRE_DIRS), src]:
        if not cand.is_dir() or (cand == src and src.name not in GENRE_DIRS and not bare):
            continue
        files = [(d.name, f) for d in cand.iterdir() if d.is_dir() for f in d.iterdir() if is_audio(f)]
        # A folder of <x>/ folders is only taken for genres/ under another name when its files follow
        # GTZAN's <genre>.000NN naming; otherwise an MTT or artist tree would pass for GTZAN.
        if files and (
            cand != src or src.name in GENRE_DIRS or any(f.name.startswith(g + ".") for g, f in files)
        ):
            return cand
    return None


def read_split_lists(split_dir: Path) -> dict[str, str]:
    """`genre/stem` (extension dropped, so .wav lists match .au files) -> split, from the list files."""
    if not split_dir.is_dir():
        raise ValueError(f"--split-dir {split_dir} is not a folder")
    out: dict[str, str] = {}
    found = False
    for split in ("train", "valid", "test"):
        for name in (f"{split}_filtered.txt", f"{split}.txt"):
            f = split_dir / name
            if not f.is_file():
                continue
            found = True
            for line in f.read_text(encoding="utf-8").splitlines():
                line = line.strip().replace("\\", "/")
                if line:
                    out[_list_key(line)] = split
            break
    if not found:
        raise ValueError(
            f"--split-dir {split_dir} holds no train_filtered.txt/valid_filtered.txt/test_filtered.txt"
            " (or train.txt/valid.txt/test.txt)"
        )
    return out


def _list_key(rel: str) -> str:
    parts = rel.split("/")[-2:]  # lists may carry a prefix such as genres/ or a full path
    name = parts[-1]
    stem = name.rsplit(".", 1)[0] if name.rsplit(".", 1)[-1].lower() in ("wav", "au", "mp3", "flac") else name
    return "/".join([*parts[:-1], stem])


def discover(src: Path, split_dir: str | None = None) -> SourceListing:
    genres_dir = find_genres(src, bare=True)
    if genres_dir is None:
        raise ValueError(
            f"no genres/<genre>/ folders with audio found in {src} (expected "
            f"{src}/genres/<genre>/<genre>.000NN.wav or SRC to be genres/ itself)"
        )
    splits = read_split_lists(Path(split_dir)) if split_dir else None
    tracks, left_out = [], 0
    for genre_dir in sorted(d for d in genres_dir.iterdir() if d.is_dir()):
        genre = genre_dir.name
        for entry in audio_files(genre_dir, recursive=False):  # special files come back with an error
            path = entry.path
            split = "all"
            if splits is not None:
                split = splits.get(f"{genre}/{path.stem}")
                if split is None:
                    left_out += 1  # fault-filtered: in no list on purpose (repeats, distortions, mislabels)
                    continue
            stem = path.stem if path.stem.startswith(genre) else f"{genre}.{path.stem}"
            meta = {
                "genres": [genre],
                "labels": {"genre": genre},
                "extra": {"path": path.relative_to(genres_dir).as_posix()},
            }
            error = entry.error or file_error(path, "genres/")
            tracks.append(Track(make_id("gtzan", stem), path, "gtzan", split, compact(meta), error))
    notes = [f"{len(tracks)} files in {len({t.meta['genres'][0] for t in tracks})} genres under {genres_dir}"]
    if splits is not None:
        notes.append(f"{left_out} files in no split list were left out (fault-filtered)")
    else:
        notes.append("no --split-dir: every track goes to split 'all'")
    return SourceListing("gtzan", src, finish(tracks), dict(LABEL_TASKS), notes)
