"""`discover`: auto-detection of the four layouts, dispatch, and one-sentence errors for bad SRC/options."""

from __future__ import annotations

import pytest

from muser.config import ShardConfig
from muser.shards.sources import LABEL_TASKS, SOURCES, detect, discover
from muser.synth import make_corpus


@pytest.fixture(scope="module")
def corpora(tmp_path_factory):
    base = tmp_path_factory.mktemp("layouts")
    return {
        layout: make_corpus(
            base / layout, layout, n_per_class=1, seconds=0.5, sample_rate=8000, styles=["waltz", "techno"]
        )
        for layout in SOURCES
    }


def test_auto_detects_every_layout(corpora):
    assert detect(corpora["fma"]) == "fma" and detect(corpora["fma"] / "fma_small") == "fma"
    assert detect(corpora["gtzan"]) == "gtzan" and detect(corpora["gtzan"] / "genres") == "gtzan"
    assert detect(corpora["mtt"]) == "mtt" and detect(corpora["folder"]) == "folder"
    for layout, root in corpora.items():
        listing = discover(ShardConfig(src=str(root)))
        assert listing.source == layout and listing.label_tasks == LABEL_TASKS[layout]
        assert len(listing.tracks) == 2 and not listing.errors


def test_listing_is_deterministic(corpora):
    a = discover(ShardConfig(src=str(corpora["mtt"])))
    b = discover(ShardConfig(src=str(corpora["mtt"])))
    assert [(t.id, t.path, t.split, t.meta) for t in a.tracks] == [
        (t.id, t.path, t.split, t.meta) for t in b.tracks
    ]


def test_wrong_layout_and_bad_options_are_one_clear_sentence(corpora, tmp_path):
    with pytest.raises(ValueError, match="no fma_metadata/tracks.csv found beside fma_small/ or inside"):
        discover(ShardConfig(src=str(corpora["gtzan"]), source="fma"))
    with pytest.raises(ValueError, match="no annotations_final.csv found"):
        discover(ShardConfig(src=str(corpora["fma"]), source="mtt"))
    with pytest.raises(ValueError, match="no genres/<genre>/ folders"):
        discover(ShardConfig(src=str(corpora["mtt"]), source="gtzan"))
    with pytest.raises(ValueError, match="is not a folder"):
        discover(ShardConfig(src=str(tmp_path / "absent")))
    with pytest.raises(ValueError, match="--source 'spotify' is not one of"):
        discover(ShardConfig(src=str(corpora["mtt"]), source="spotify"))
