"""MagnaTagATune layout: annotations_final.csv, top-50 tags, the 0-b / c / d-f split rule, clip_info."""

from __future__ import annotations

import csv

import pytest

from muser.config import ShardConfig
from muser.shards.sources import discover
from muser.shards.sources.mtt import split_of, top_tags
from muser.synth import make_corpus
from tests.shards.sources.helpers import broken, check_listing, source_errors


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_corpus(
        tmp_path_factory.mktemp("mtt"), "mtt", n_per_class=2, seconds=1.0, sample_rate=8000, broken=True
    )


def test_annotation_file_is_tab_separated_and_quoted(root):
    first = (root / "annotations_final.csv").read_text(encoding="utf-8").splitlines()[0]
    assert first.startswith('"clip_id"\t') and first.endswith('\t"mp3_path"')
    assert len(first.split("\t")) - 2 >= 50


def test_top50_labels_split_rule_and_clip_info(root):
    listing = discover(ShardConfig(src=str(root)))
    check_listing(listing)
    assert listing.source == "mtt" and listing.label_tasks == {"tags": "multi"}
    top = listing.label_classes["tags"]
    assert len(top) == 50 and top == sorted(top)
    assert len(listing.tracks) == 6 * 2 + 5
    for t in listing.tracks:
        assert set(t.meta["labels"]["tags"]) <= set(top)
        assert set(t.meta["labels"]["tags"]) <= set(t.meta.get("tags", []))
        assert t.split == {"c": "valid", "d": "test", "e": "test", "f": "test"}.get(
            t.meta["extra"]["mp3_path"][0], "train"
        )
    assert {t.split for t in listing.tracks} == {"train", "valid", "test"}
    with open(root / "clip_info_final.csv", encoding="utf-8", newline="") as f:
        info = {r["clip_id"]: r for r in csv.DictReader(f, delimiter="\t")}
    t = listing.tracks[0]
    assert (
        t.meta["title"] == info[t.meta["extra"]["clip_id"]]["title"] and t.meta["artist"] and t.meta["album"]
    )
    assert {t.id for t in listing.errors} == source_errors(root)
    unicode = broken(root)["valid_unicode"][0]
    good = {t.id: t for t in listing.tracks}[unicode["id"]]
    assert good.error is None and good.path == root / unicode["path"] and good.split == "test"


def test_top_tags_breaks_ties_by_name_and_split_rule():
    rows = [["1", "1", "1", "0", "x"], ["2", "0", "1", "1", "y"]]
    assert top_tags(["b", "c", "a"], rows, k=2) == ["c", "a"]
    assert [split_of(p) for p in ("0/x.mp3", "b/x.mp3", "c/x.mp3", "d/x.mp3", "f/x.mp3", "z/x.mp3")] == [
        "train",
        "train",
        "valid",
        "test",
        "test",
        "all",
    ]


def test_clear_error_for_wrong_layout(tmp_path):
    with pytest.raises(ValueError, match="no annotations_final.csv found in"):
        discover(ShardConfig(src=str(tmp_path), source="mtt"))
