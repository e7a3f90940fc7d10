"""FMA layout: fma_small/NNN/NNNNNN.mp3 + fma_metadata/tracks.csv (3-row header) and genres.csv."""

from __future__ import annotations

import pytest
import soundfile as sf

from muser.config import ShardConfig
from muser.shards.sources import discover
from muser.synth import make_corpus
from tests.shards.sources.helpers import broken, check_listing, source_errors


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_corpus(
        tmp_path_factory.mktemp("fma"), "fma", n_per_class=2, seconds=1.0, sample_rate=8000, broken=True
    )


def test_tracks_csv_has_the_real_three_row_header(root):
    lines = (root / "fma_metadata" / "tracks.csv").read_text().splitlines()
    assert lines[0].startswith(",album,") and "track" in lines[0].split(",")
    assert lines[1].startswith(",") and "genre_top" in lines[1] and "subset" in lines[1]
    assert lines[2].startswith("track_id,,")
    assert (root / "fma_metadata" / "genres.csv").read_text().splitlines()[
        0
    ] == "genre_id,#tracks,parent,title,top_level"


def test_lists_the_small_subset_with_metadata_and_faults(root):
    listing = discover(ShardConfig(src=str(root / "fma_small")))
    check_listing(listing)
    assert listing.source == "fma" and listing.label_tasks == {"genre_top": "single"}
    info = broken(root)
    ids = {t.id for t in listing.tracks}
    assert len(ids) == 6 * 2 + 5 and not ids & set(info["medium_only"])
    assert {t.id for t in listing.errors} == source_errors(root) and "fma_099134" in source_errors(root)
    assert any("known-bad" in t.error for t in listing.errors)
    assert any("1 mp3 files under fma_small/ are not in tracks.csv" in n for n in listing.notes)
    assert {t.split for t in listing.tracks} == {"train", "valid", "test"}
    chip = next(t for t in listing.tracks if t.meta["genres"] == ["Chiptune"])
    assert chip.meta["parent_genres"] == ["Video Game Music", "Experimental"]
    assert chip.meta["labels"] == {"genre_top": "Experimental"}
    assert chip.meta["title"] and chip.meta["artist"] and chip.meta["album"] and chip.meta["tags"]
    assert 1995 <= chip.meta["year"] <= 2024 and chip.meta["extra"]["subset"] == "small"
    assert chip.path.parent.name == chip.id[4:7] and sf.info(str(chip.path)).format == "MP3"


def test_src_forms_and_metadata_option_agree(root):
    expected = [t.id for t in discover(ShardConfig(src=str(root))).tracks]
    for cfg in (
        ShardConfig(src=str(root / "fma_small"), metadata=str(root / "fma_metadata")),
        ShardConfig(src=str(root / "fma_small"), metadata=str(root / "fma_metadata" / "tracks.csv")),
        ShardConfig(src=str(root / "fma_small"), source="fma"),
    ):
        assert [t.id for t in discover(cfg).tracks] == expected


def test_larger_subset_includes_medium_tracks_missing_on_disk(root):
    listing = discover(ShardConfig(src=str(root), subset="medium"))
    by_id = {t.id: t for t in listing.tracks}
    for tid in broken(root)["medium_only"]:
        assert by_id[tid].path is None and "missing on disk" in by_id[tid].error


def test_clear_errors(root, tmp_path):
    audio = tmp_path / "fma_small"
    audio.mkdir()
    with pytest.raises(
        ValueError, match=r"no fma_metadata/tracks.csv found beside fma_small/ or inside .*--metadata"
    ):
        discover(ShardConfig(src=str(audio)))
    bad = tmp_path / "tracks.csv"
    bad.write_text("track_id,title\n2,x\n")
    with pytest.raises(ValueError, match="tracks.csv"):
        discover(ShardConfig(src=str(audio), metadata=str(bad)))
    with pytest.raises(ValueError, match="--subset"):
        discover(ShardConfig(src=str(root), subset="tiny"))
