"""Folder source: any tree of audio, embedded tags, same-name .txt credit notes, CSV/JSONL sidecars."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from pathlib import Path

import pytest

from muser.config import ShardConfig
from muser.shards.errorlog import read_errors
from muser.shards.sources import discover, walk
from muser.shards.sources.base import file_error
from muser.shards.sources.folder import read_credit, read_tags
from muser.shards.writer import write_shards
from muser.synth import make_corpus
from tests.shards.sources.helpers import KEY, broken, check_listing, source_errors


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = make_corpus(
        tmp_path_factory.mktemp("folder"),
        "folder",
        n_per_class=2,
        seconds=1.0,
        sample_rate=8000,
        broken=True,
        sidecar=True,
    )
    make_corpus(root / "_jsonl", "folder", n_per_class=1, seconds=0.5, sample_rate=8000, sidecar="jsonl")
    return root


def _tree(root):  # the main tree without the nested JSONL corpus
    return [
        t for t in discover(ShardConfig(src=str(root), source="folder")).tracks if "_jsonl" not in str(t.path)
    ]


def test_embedded_tags_of_every_format(root):
    tracks = _tree(root)
    # artist/album/NN - title.ext files (singles/, Misc/ and the unicode file sit one level up)
    tagged = [t for t in tracks if not t.error and len(t.meta["extra"]["path"].split("/")) == 3]
    assert {t.path.suffix for t in tagged} == {".ogg", ".flac", ".wav"}
    for t in tagged:
        assert t.meta["artist"] == t.path.parts[-3] and t.meta["album"] == t.path.parts[-2]
        assert t.path.stem.endswith(t.meta["title"]) and t.meta["labels"] == {"genre": t.meta["genres"][0]}
        assert t.meta["year"] >= 1995 and t.meta["description"] and t.split == "all"
    assert read_tags(root / "Misc" / "notes.ogg") == {}  # text with an audio extension: no tags, no crash


def test_sidecar_wins_over_tags_and_gives_splits(root):
    for name in ("metadata.csv",):
        listing = discover(ShardConfig(src=str(root), metadata=name))
        check_listing(listing)
        tracks = [t for t in listing.tracks if "_jsonl" not in str(t.path)]
        remastered = [t for t in tracks if t.meta.get("title", "").endswith("(Remastered)")]
        assert len(remastered) == 6  # every second of the 12 regular files
        assert all(t.meta["extra"]["bpm"] for t in remastered)
        assert {t.split for t in tracks} == {"train", "valid", "test", "all"}  # planted files are in no row
        assert {t.id for t in listing.errors} == source_errors(root)
    jsonl = discover(ShardConfig(src=str(root / "_jsonl"), metadata=str(root / "_jsonl" / "metadata.jsonl")))
    check_listing(jsonl)
    assert len(jsonl.tracks) == 6 and all(isinstance(t.meta["tags"], list) for t in jsonl.tracks)
    assert {t.split for t in jsonl.tracks} <= {"train", "valid", "test"}


def test_unicode_path_is_valid(root):
    unicode = broken(root)["valid_unicode"][0]
    t = {t.id: t for t in _tree(root)}[unicode["id"]]
    assert (
        t.error is None
        and t.path == root / unicode["path"]
        and t.id.startswith("folder_Unic")
        and "Artist_cafe_01" in t.id
    )


def test_credit_note_gives_title_and_artist(tmp_path):
    src = tmp_path / "Some_Track.ogg"
    src.write_bytes(b"OggS")
    src.with_suffix(".txt").write_text(
        "Vibe Ace by Kevin MacLeod is licensed under a Creative Commons License.\nCC-BY\n"
    )
    credit = read_credit(src)
    assert credit["title"] == "Vibe Ace" and credit["artist"] == "Kevin MacLeod"
    assert credit["description"].startswith("Vibe Ace by") and "CC-BY" in credit["extra"]["credits"]


def test_clear_errors(root, tmp_path):
    with pytest.raises(ValueError, match="--metadata nope.csv not found"):
        discover(ShardConfig(src=str(root), metadata="nope.csv"))
    (tmp_path / "readme.md").write_text("no audio here")
    with pytest.raises(ValueError, match="no audio files"):
        discover(ShardConfig(src=str(tmp_path)))
    (tmp_path / "meta.csv").write_text("file,title\na.wav,x\n")
    with pytest.raises(ValueError, match="has no 'path' column"):
        discover(ShardConfig(src=str(tmp_path), metadata=str(tmp_path / "meta.csv")))


def test_real_music_folder(real_audio_dir):
    music = real_audio_dir / "music"
    listing = discover(ShardConfig(src=str(music)))
    check_listing(listing)
    oggs = sorted(p.name for p in music.glob("*.ogg"))
    assert listing.source == "folder" and sorted(t.path.name for t in listing.tracks) == oggs
    by_name = {t.path.name: t for t in listing.tracks}
    # ../shared/data/real/music is a fixed set (its README names these excerpts), so the track must be there.
    vibe = by_name["Kevin_MacLeod_-_Vibe_Ace.ogg"]
    assert vibe.meta["title"] == "Vibe Ace" and vibe.meta["artist"] == "Kevin MacLeod"
    assert all(t.meta.get("description") for t in listing.tracks if t.path.with_suffix(".txt").exists())


def test_sidecar_label_columns_become_label_tasks(tmp_path):
    """label_<task> columns give labels (not caption fields); the writer turns them into a vocabulary."""
    import json

    from muser.shards.text import render
    from muser.shards.writer import write_shards

    src = make_corpus(tmp_path / "src", "folder", n_per_class=1, seconds=0.5, sample_rate=8000, sidecar=True)
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.suffix in (".ogg", ".wav"))
    rows = ["path,label_soundtrack,label_genre"]
    rows += [
        f'"{rel}",{"first" if i % 2 else "second"},{"corrected" if i == 0 else ""}'
        for i, rel in enumerate(files)
    ]
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    listing = discover(ShardConfig(src=str(src), metadata=str(tmp_path / "labels.csv")))
    check_listing(listing)
    assert listing.label_tasks == {"genre": "single", "soundtrack": "single"}
    by_path = {t.meta["extra"]["path"]: t for t in listing.tracks}
    assert by_path[files[0]].meta["labels"] == {"genre": "corrected", "soundtrack": "second"}
    assert by_path[files[1]].meta["labels"]["soundtrack"] == "first"
    assert by_path[files[1]].meta["labels"]["genre"] == by_path[files[1]].meta["genres"][0]  # empty cell
    assert not any(k.startswith("label_") for t in listing.tracks for k in t.meta["extra"])
    assert all("first" not in render(t.meta) and "second" not in render(t.meta) for t in listing.tracks)

    dst = tmp_path / "shards"
    cfg = ShardConfig(src=str(src), dst=str(dst), metadata=str(tmp_path / "labels.csv"), workers=1)
    write_shards(cfg, progress=False)
    vocab = json.loads((dst / "manifest.json").read_text())["labels"]["soundtrack"]
    assert vocab["type"] == "single" and vocab["classes"] == ["first", "second"]
    assert sum(vocab["counts"].values()) == len(files)


def test_sidecar_label_lists_and_bad_columns(tmp_path):
    import json

    src = make_corpus(
        tmp_path / "src", "folder", n_per_class=1, seconds=0.5, sample_rate=8000, styles=["blues"]
    )
    rel = next(p.relative_to(src).as_posix() for p in src.rglob("*") if p.suffix == ".ogg")
    side = tmp_path / "labels.jsonl"
    side.write_text(json.dumps({"path": rel, "label_instruments": ["guitar", "bass"]}) + "\n")
    listing = discover(ShardConfig(src=str(src), metadata=str(side)))
    check_listing(listing)
    assert listing.label_tasks["instruments"] == "multi"
    assert {t.meta["extra"]["path"]: t for t in listing.tracks}[rel].meta["labels"]["instruments"] == [
        "guitar",
        "bass",
    ]
    bad = tmp_path / "bad.csv"
    bad.write_text(f'path,label_ bad task\n"{rel}",x\n')
    with pytest.raises(ValueError, match="label_<task>"):
        discover(ShardConfig(src=str(src), metadata=str(bad)))


@contextlib.contextmanager
def _no_hang(seconds: int):
    """Fail instead of blocking forever (a FIFO opened for reading waits for a writer that never comes)."""

    def hung(*_):
        raise AssertionError(f"still running after {seconds} s: something opened a FIFO")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def test_links_fifos_unreadable_folders_and_undecodable_names_are_listed(tmp_path, monkeypatch):
    src = make_corpus(
        tmp_path / "src", "folder", n_per_class=1, seconds=0.5, sample_rate=8000, styles=["blues"]
    )
    good = sorted(src.rglob("*.ogg"))[0]
    (src / "dangling.wav").symlink_to(src / "gone.wav")
    (src / "self.wav").symlink_to(src / "self.wav")  # resolving it loops
    (src / "up").symlink_to(src)  # a folder link back to an ancestor: a loop, not followed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(good, elsewhere / "kept.ogg")
    (src / "more").symlink_to(elsewhere)  # a folder link elsewhere: followed
    os.mkfifo(src / "pipe.wav")
    locked = src / "locked"
    locked.mkdir()
    shutil.copy(good, locked / "inside.ogg")
    locked.chmod(0)
    if os.geteuid() == 0:  # root reads any folder: make this one fail as it would for a user
        real_scandir = os.scandir

        def scandir(path):
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real_scandir(path)

        monkeypatch.setattr(walk.os, "scandir", scandir)
    bad_name = os.path.join(os.fsencode(src), b"caf\xe9.ogg")  # Latin-1 bytes: not UTF-8
    with open(bad_name, "wb") as f:
        f.write(good.read_bytes())
    try:
        with _no_hang(120):
            listing = discover(ShardConfig(src=str(src), source="folder"))
            errors = {
                t.meta.get("extra", {}).get("path") or t.path.name: t.error for t in listing.tracks if t.error
            }
            by_rel = {os.path.relpath(t.path, src): t for t in listing.tracks}
            assert "dangling symbolic link" in by_rel["dangling.wav"].error
            assert "symbolic link loop" in by_rel["self.wav"].error
            assert "symbolic link loop" in by_rel["up"].error and "up/blues" not in str(by_rel)
            assert "named pipe (FIFO)" in by_rel["pipe.wav"].error
            assert "unreadable folder" in by_rel["locked"].error
            assert "not valid UTF-8" in by_rel["caf\udce9.ogg"].error
            assert by_rel["more/kept.ogg"].error is None
            assert len(errors) == 6 and all(KEY.match(t.id) for t in listing.tracks)
            dst = tmp_path / "out"
            cfg = ShardConfig(src=str(src), dst=str(dst), source="folder", workers=2, max_errors=1.0)
            summary = write_shards(cfg, progress=False)
        logged = {r["path"].removeprefix(str(src) + "/"): r["reason"] for r in read_errors(dst)}
        assert set(logged) == {"dangling.wav", "self.wav", "up", "pipe.wav", "locked", "caf\\xe9.ogg"}
        assert summary["errors"] == 6 and summary["written"] == len(listing.tracks) - 6
    finally:
        locked.chmod(0o755)


def test_gtzan_lists_special_files_in_a_genre_folder(tmp_path):
    src = make_corpus(tmp_path / "src", "gtzan", n_per_class=1, seconds=0.5, sample_rate=8000)
    genre = sorted((src / "genres").iterdir())[0]
    os.mkfifo(genre / f"{genre.name}.00090.wav")
    (genre / f"{genre.name}.00091.wav").symlink_to(genre / "nowhere.wav")
    with _no_hang(60):
        listing = discover(ShardConfig(src=str(src)))
    reasons = {t.path.name: t.error for t in listing.tracks if t.error}
    assert "named pipe" in reasons[f"{genre.name}.00090.wav"]
    assert "dangling symbolic link" in reasons[f"{genre.name}.00091.wav"]


def test_listed_special_files_are_never_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.mp3")
    (tmp_path / "dangling.mp3").symlink_to(tmp_path / "nowhere.mp3")
    with _no_hang(30):
        assert "not a regular file" in file_error(tmp_path / "pipe.mp3", "annotations_final.csv")
        assert "dangling" in file_error(tmp_path / "dangling.mp3", "annotations_final.csv")
