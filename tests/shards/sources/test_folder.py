"""Folder source: any tree of audio, embedded tags, same-name .txt credit notes, CSV/JSONL sidecars."""

from __future__ import annotations

import pytest

from muser.config import ShardConfig
from muser.shards.sources import discover
from muser.shards.sources.folder import read_credit, read_tags
from muser.synth import make_corpus
from tests.shards.sources.helpers import broken, check_listing, source_errors


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
    vibe = by_name.get("Kevin_MacLeod_-_Vibe_Ace.ogg")
    if vibe is not None:
        assert vibe.meta["title"] == "Vibe Ace" and vibe.meta["artist"] == "Kevin MacLeod"
    assert all(t.meta.get("description") for t in listing.tracks if t.path.with_suffix(".txt").exists())
