"""The procedural corpus: clips are valid audio, deterministic per seed, and the styles are learnable."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from muser.synth import STYLE_INFO, STYLES, clip_meta, make_corpus, render_clip


def _features(x: np.ndarray) -> np.ndarray:
    frames = x[: len(x) // 256 * 256].reshape(-1, 256) * np.hanning(256)
    spec = np.log(np.abs(np.fft.rfft(frames)) + 1e-4)
    bands = np.stack([b.mean(1) for b in np.array_split(spec, 12, axis=1)], 1)
    return np.concatenate([bands.mean(0), bands.std(0)])


def test_render_clip_is_bounded_float32_of_the_right_length():
    for style in STYLES:
        x = render_clip(style, 1.5, 8000, np.random.default_rng(0))
        assert x.dtype == np.float32 and x.shape == (12000,)
        assert np.all(np.abs(x) <= 1.0) and 0.3 < np.abs(x).max() and x.std() > 0.01


def test_render_clip_is_deterministic_per_rng_and_varies_between_clips():
    a = render_clip("techno", 1.0, 8000, np.random.default_rng(3))
    b = render_clip("techno", 1.0, 8000, np.random.default_rng(3))
    c = render_clip("techno", 1.0, 8000, np.random.default_rng(4))
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_styles_are_learnable_from_held_out_clips():
    """A linear classifier on band energies, fit on some seeds and scored on clips it never saw."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def data(seeds: range) -> tuple[list, list]:
        pairs = [
            (_features(render_clip(s, 2.0, 8000, np.random.default_rng(i))), s) for s in STYLES for i in seeds
        ]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(*data(range(6)))
    assert clf.score(*data(range(100, 104))) >= 0.8


def test_difficulty_makes_styles_overlap_but_keeps_them_learnable():
    """Band-energy statistics (a timbre summary, like MFCCs) lose most of their edge at difficulty 0.5,
    yet stay well above chance (1/6): the arrangement is still the style's own."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def data(seeds: range, difficulty: float) -> tuple[list, list]:
        rng = np.random.default_rng
        pairs = [(_features(render_clip(s, 2.0, 8000, rng(i), difficulty)), s) for s in STYLES for i in seeds]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    accuracy = {}
    for difficulty in (0.0, 0.5):
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        clf.fit(*data(range(10), difficulty))
        accuracy[difficulty] = clf.score(*data(range(500, 512), difficulty))
    assert accuracy[0.0] >= 0.85
    assert accuracy[0.5] <= accuracy[0.0] - 0.2
    assert accuracy[0.5] >= 0.3


def test_difficulty_changes_audio_not_metadata(tmp_path):
    kw = dict(n_per_class=1, seconds=0.5, sample_rate=8000, styles=["waltz", "techno"])
    easy = make_corpus(tmp_path / "easy", "fma", **kw)
    hard = make_corpus(tmp_path / "hard", "fma", difficulty=0.7, **kw)
    csv = "fma_metadata/tracks.csv"
    assert (easy / csv).read_text() == (hard / csv).read_text()  # same tracks, captions and labels
    files = sorted(p.relative_to(easy) for p in (easy / "fma_small").rglob("*.mp3"))
    assert files and files == sorted(p.relative_to(hard) for p in (hard / "fma_small").rglob("*.mp3"))
    assert any(not np.allclose(sf.read(easy / f)[0], sf.read(hard / f)[0]) for f in files)
    with pytest.raises(ValueError, match="difficulty"):
        make_corpus(tmp_path / "bad", "gtzan", difficulty=1.5)
    with pytest.raises(ValueError, match="difficulty"):
        render_clip("waltz", 1.0, 8000, np.random.default_rng(0), difficulty=-0.1)


def test_style_metadata_vocabulary():
    assert len(STYLES) == 6 and set(STYLES) == set(STYLE_INFO)
    assert STYLE_INFO["waltz"].meter == 3 and STYLE_INFO["blues"].swing > 0
    meta = clip_meta("chiptune", np.random.default_rng(0))
    assert meta["genres"] == ["chiptune"] and meta["parent_genres"] == ["video game music", "experimental"]
    assert set(meta["tags"]) - set(STYLE_INFO["chiptune"].tags) <= set(
        meta["tags"][-1:]
    )  # at most one filler
    assert meta["mood"] and meta["title"] and meta["artist"] and meta["album"] and 1995 <= meta["year"] < 2024


def test_make_corpus_is_deterministic(tmp_path):
    a = make_corpus(tmp_path / "a", "gtzan", n_per_class=1, seconds=0.5, sample_rate=8000, styles=["blues"])
    b = make_corpus(tmp_path / "b", "gtzan", n_per_class=1, seconds=0.5, sample_rate=8000, styles=["blues"])
    rel = "genres/blues/blues.00000.wav"
    assert (a / rel).read_bytes() == (b / rel).read_bytes()
    wave, sr = sf.read(a / rel, dtype="float32")
    assert sr == 8000 and wave.shape == (4000,)


def test_make_corpus_rejects_unknown_layout_and_style(tmp_path):
    with pytest.raises(ValueError, match="unknown layout"):
        make_corpus(tmp_path, "nsynth")
    with pytest.raises(ValueError, match="unknown style"):
        make_corpus(tmp_path, "gtzan", styles=["polka"])
    with pytest.raises(ValueError, match="unknown style"):
        render_clip("polka", 1.0, 8000, np.random.default_rng(0))
