"""Caption templates: the paper sentence, no dangling placeholders, dropout, caption ids, user templates."""

from __future__ import annotations

import random
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muser.shards import text

FULL = {
    "genres": ["Rock"],
    "parent_genres": ["Popular Music"],
    "tags": ["guitar", "slow", "loud"],
    "mood": ["dark"],
    "title": "Night Drive",
    "artist": "The Band",
    "album": "Roads",
    "year": 1999,
    "description": "a long instrumental piece",
}


def test_paper_template_exact():
    meta = {"genres": ["rock"], "parent_genres": ["popular music"], "tags": ["guitar", "slow", "loud"]}
    assert (
        text.render(meta) == "A song of rock, belongs to popular music, whose style is guitar, slow and loud."
    )
    assert text.TEMPLATES[0].text == text.PAPER_TEMPLATE
    assert len(text.TEMPLATES) >= 9


def test_eval_mode_picks_fixed_template_by_available_fields():
    assert text.render({"labels": {"genre": "blues"}}) == "A song of blues."
    assert text.render({"tags": ["piano"]}) == "Music tagged piano."
    assert text.render({"title": "Hey", "artist": "Jo"}) == "Hey by Jo."
    assert text.render({}) == text.FALLBACK_TEMPLATE
    # nan-like and empty values count as missing, and a parent equal to the genre is not repeated
    meta = {"genres": ["Rock"], "parent_genres": ["rock"], "tags": [], "title": "nan", "artist": None}
    assert text.render(meta) == "A song of rock."
    assert text.render(FULL) == text.render(dict(FULL))


def test_join_list():
    assert text.join_list([]) == ""
    assert text.join_list(["a"]) == "a"
    assert text.join_list(["a", "b"]) == "a and b"
    assert text.join_list(["a", "b", "c"]) == "a, b and c"


def test_train_mode_varies_and_respects_dropout():
    rng = random.Random(0)
    outs = {text.render(FULL, rng=rng, dropout=0.3) for _ in range(300)}
    assert len(outs) >= 8
    assert all("{" not in o and "nan" not in o.lower() for o in outs)
    # every sampled sentence comes from a template whose fields the track has
    rng = random.Random(1)
    only_genre = {text.render({"genres": ["jazz"]}, rng=rng, dropout=0.9) for _ in range(50)}
    assert only_genre == {"A song of jazz."}
    # same seed -> same captions
    a = [text.render(FULL, rng=random.Random(5), dropout=0.2) for _ in range(3)]
    b = [text.render(FULL, rng=random.Random(5), dropout=0.2) for _ in range(3)]
    assert a == b


# free text that does not itself spell a missing marker, so the assertions below can look for those
words = st.text(st.characters(categories=("L", "N")) | st.sampled_from(" -'{}"), max_size=12).filter(
    lambda s: "nan" not in s.lower() and "none" not in s.lower()
)
values = st.one_of(
    st.none(),
    st.just("nan"),
    st.just(""),
    words,
    st.integers(min_value=0, max_value=2100),
    st.floats(allow_nan=True),
    st.lists(st.one_of(words, st.just("nan"), st.none()), max_size=4),
)
metas = st.fixed_dictionaries(
    {},
    optional={
        k: values
        for k in (
            "genres",
            "parent_genres",
            "tags",
            "mood",
            "title",
            "artist",
            "album",
            "year",
            "description",
        )
    },
)


@settings(max_examples=300, deadline=None)
@given(meta=metas, seed=st.integers(0, 2**32), dropout=st.floats(0, 0.95))
def test_never_dangling(meta, seed, dropout):
    for out in (text.render(meta), text.render(meta, rng=random.Random(seed), dropout=dropout)):
        assert "{" not in out and "}" not in out
        assert " nan" not in out.lower() and "[]" not in out and "None" not in out
        assert ",," not in out and " ," not in out and " ." not in out.replace("...", "")
        assert out.strip() == out and out.endswith(".")


def test_caption_id_stable_and_normalised():
    a = text.caption_id("A song of rock.")
    assert a == text.caption_id("  a SONG   of rock. ")
    assert a != text.caption_id("A song of jazz.")
    assert 0 <= a < 2**63
    # stable across processes (no PYTHONHASHSEED dependence)
    code = "from muser.shards.text import caption_id; print(caption_id('A song of rock.'))"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(other.stdout) == a


def test_label_prompt():
    assert text.label_prompt("genre", "Hip-Hop") == "A song of hip-hop."
    assert text.label_prompt("genre_top", "Rock") == "A song of rock."
    assert text.label_prompt("tags", "guitar") == "Music tagged guitar."
    assert text.label_prompt("genre", "jazz", template="Some {label} music.") == "Some jazz music."
    assert text.label_prompt("genre", "jazz", template="A {genre} tune.") == "A jazz tune."
    with pytest.raises(ValueError, match="tags"):
        text.render({"genres": ["jazz"]}, template="Music tagged {tags}.")


def test_load_templates(tmp_path):
    good = tmp_path / "t.txt"
    good.write_text("# my templates\nA {genre} tune by {artist}.\n\nJust {tags}.\n")
    tpls = text.load_templates(good)
    assert [t.fields for t in tpls] == [frozenset({"genre", "artist"}), frozenset({"tags"})]
    meta = {"genres": ["jazz"], "artist": "Mo", "tags": ["sax"]}
    assert text.render(meta, templates=tpls) == "A jazz tune by Mo."
    assert text.render({"title": "x"}, templates=tpls) == text.FALLBACK_TEMPLATE

    bad = tmp_path / "bad.txt"
    bad.write_text("A {genre} tune.\nA {colour} tune.\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: unknown placeholder \{colour\}"):
        text.load_templates(bad)
    bad.write_text("A {genre tune.\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1: unbalanced braces"):
        text.load_templates(bad)
    bad.write_text("A {} tune.\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1: unknown placeholder"):
        text.load_templates(bad)
    bad.write_text("# only a comment\n")
    with pytest.raises(ValueError, match="no templates"):
        text.load_templates(bad)
    with pytest.raises(ValueError, match="does not exist"):
        text.load_templates(tmp_path / "missing.txt")
