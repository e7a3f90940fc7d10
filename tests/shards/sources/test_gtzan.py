"""GTZAN layout: genres/<genre>/<genre>.000NN.wav|.au, fault-filtered split lists, planted faults."""

from __future__ import annotations

import pytest

from muser.config import ShardConfig
from muser.shards.sources import discover
from muser.synth import STYLES, make_corpus
from tests.shards.sources.helpers import broken, check_listing, source_errors


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_corpus(
        tmp_path_factory.mktemp("gtzan"),
        "gtzan",
        n_per_class=3,
        seconds=1.0,
        sample_rate=8000,
        broken=True,
        split_lists=True,
    )


def test_lists_every_file_with_genre_labels(root):
    listing = discover(ShardConfig(src=str(root)))
    check_listing(listing)
    assert listing.source == "gtzan" and listing.label_tasks == {"genre": "single"}
    assert len(listing.tracks) == 6 * 3 + 4  # 3 per genre + 3 broken + 1 unicode
    assert {t.split for t in listing.tracks} == {"all"}
    by_id = {t.id: t for t in listing.tracks}
    assert by_id["gtzan_blues_00001"].meta["labels"] == {"genre": "blues"}
    assert by_id["gtzan_blues_00001"].meta["genres"] == ["blues"]
    assert by_id["gtzan_blues_00002"].path.suffix == ".au"
    assert {t.id for t in listing.errors} == source_errors(root)
    unicode = broken(root)["valid_unicode"][0]
    assert by_id[unicode["id"]].error is None and by_id[unicode["id"]].path == root / unicode["path"]


def test_split_lists_assign_splits_and_leave_out_filtered_files(root):
    listing = discover(ShardConfig(src=str(root), split_dir=str(root)))
    check_listing(listing)
    assert len(listing.tracks) == 6 * 3 + 4 - 1
    assert f"gtzan_{STYLES[0]}_00002" not in {t.id for t in listing.tracks}  # the fault-filtered one
    assert any("1 files in no split list" in n for n in listing.notes)
    assert {t.split for t in listing.tracks} == {"train", "valid", "test"}
    lines = (root / "valid_filtered.txt").read_text().split()
    valid = {t.meta["extra"]["path"] for t in listing.tracks if t.split == "valid"}
    assert valid == set(lines)


def test_plain_list_names_and_genres_folder_as_src(root, tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.txt").write_text((root / f"{split}_filtered.txt").read_text())
    a = discover(ShardConfig(src=str(root / "genres"), source="gtzan", split_dir=str(tmp_path)))
    b = discover(ShardConfig(src=str(root), split_dir=str(root)))
    assert [(t.id, t.split) for t in a.tracks] == [(t.id, t.split) for t in b.tracks]


def test_clear_errors(root, tmp_path):
    with pytest.raises(ValueError, match="holds no train_filtered.txt"):
        discover(ShardConfig(src=str(root), split_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"no genres/<genre>/ folders with audio found"):
        discover(ShardConfig(src=str(tmp_path), source="gtzan"))
