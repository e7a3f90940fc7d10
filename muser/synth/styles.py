"""The six styles of the procedural corpus: their genre tree, tag and mood pools, tempo and meter, and the
catalogue metadata (title, artist, album, tags, mood, description) each clip draws from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STYLES: list[str] = ["ambient", "techno", "waltz", "blues", "chiptune", "orchestral"]


@dataclass(frozen=True)
class StyleInfo:
    parents: tuple[str, ...]  # ancestor genres, nearest first; the last one is the top-level genre
    tags: tuple[str, ...]  # tag pool (MTT-like vocabulary); each clip draws a few
    moods: tuple[str, ...]  # mood pool; each clip draws one or two
    bpm: tuple[float, float]  # tempo range in quarter notes per minute
    meter: int  # beats per bar
    swing: float  # 0 = straight eighths, 1/3 = triplet shuffle


STYLE_INFO: dict[str, StyleInfo] = {
    "ambient": StyleInfo(
        ("electronic",),
        ("ambient", "slow", "synth", "electronic", "new age", "quiet", "soft", "no vocals"),
        ("calm", "dreamy", "meditative", "peaceful"),
        (60, 76),
        4,
        0.0,
    ),
    "techno": StyleInfo(
        ("dance",),
        ("techno", "electronic", "beat", "fast", "dance", "synth", "drums", "loud", "beats"),
        ("energetic", "dark", "hypnotic", "driving"),
        (124, 136),
        4,
        0.0,
    ),
    "waltz": StyleInfo(
        ("classical",),
        ("classical", "piano", "classic", "soft", "waltz", "solo"),
        ("elegant", "romantic", "graceful", "nostalgic"),
        (150, 180),
        3,
        0.0,
    ),
    "blues": StyleInfo(
        ("jazz",),
        ("blues", "guitar", "slow", "bass", "drums", "shuffle", "swing"),
        ("melancholic", "relaxed", "soulful", "laid-back"),
        (72, 98),
        4,
        1 / 3,
    ),
    "chiptune": StyleInfo(
        ("video game music", "experimental"),
        ("chiptune", "8-bit", "electronic", "fast", "synth", "beat", "retro", "weird"),
        ("playful", "happy", "upbeat"),
        (140, 170),
        4,
        0.0,
    ),
    "orchestral": StyleInfo(
        ("film score", "soundtrack"),
        ("orchestral", "strings", "classical", "violin", "cello", "loud", "epic", "drums"),
        ("dramatic", "epic", "tense", "heroic"),
        (70, 96),
        4,
        0.0,
    ),
}

# Long-tail MagnaTagATune-like tags that no style owns; they pad the MTT tag columns past 50 so the
# top-50 selection has something to drop.
FILLER_TAGS = (
    "no voice",
    "singer",
    "female",
    "male",
    "vocal",
    "opera",
    "sitar",
    "indian",
    "flute",
    "harp",
    "choir",
    "country",
    "metal",
    "rock",
    "pop",
    "funk",
    "reggae",
    "hip hop",
    "organ",
    "trumpet",
    "sax",
    "banjo",
    "harmonica",
    "choral",
    "woman",
    "man",
    "spoken",
    "whistle",
    "medieval",
    "baroque",
    "irish",
    "celtic",
    "tribal",
    "horns",
    "clarinet",
    "vocals",
    "male vocal",
    "female vocal",
)


_FIRST = ("Ana", "Zoë", "Mika", "Léa", "Tomas", "Kenji", "Nadia", "Óscar", "Ravi", "Ines", "Jonah", "Saoirse")
_LAST = ("Hart", "Nørgaard", "Silva", "Okafor", "Brandt", "Moreau", "Kato", "Novak", "Reyes", "Lund", "Byrne")
_ADJ = (
    "Midnight",
    "Golden",
    "Quiet",
    "Electric",
    "Paper",
    "Velvet",
    "Broken",
    "Northern",
    "Hollow",
    "Bright",
    "Distant",
    "Silver",
)
_NOUN = (
    "River",
    "Engine",
    "Garden",
    "Signal",
    "Harbor",
    "Lantern",
    "Mirror",
    "Circuit",
    "Meadow",
    "Station",
    "Echo",
    "Window",
)


def clip_meta(style: str, rng: np.random.Generator) -> dict:
    """Catalogue-style metadata of one clip: title, artist, album, year, genres, tags, mood, description."""
    info = STYLE_INFO[style]
    tags = [str(t) for t in rng.choice(info.tags, size=int(rng.integers(2, 5)), replace=False)]
    if rng.random() < 0.2:  # the long tail: a tag no style owns
        tags.append(str(rng.choice(FILLER_TAGS)))
    mood = [str(m) for m in rng.choice(info.moods, size=int(rng.integers(1, 3)), replace=False)]
    title = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}"
    return {
        "title": title,
        "artist": f"{rng.choice(_FIRST)} {rng.choice(_LAST)}",
        "album": f"{rng.choice(_NOUN)}s of {rng.choice(_ADJ)}",
        "year": int(rng.integers(1995, 2024)),
        "genres": [style],
        "parent_genres": list(info.parents),
        "tags": tags,
        "mood": mood,
        "description": f"A {mood[0]} {style} piece with {' and '.join(tags[:2])} character.",
    }
