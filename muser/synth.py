"""The built-in procedural music corpus: six learnable styles rendered with numpy, written in the real
on-disk layouts of GTZAN, FMA, MagnaTagATune and a tagged folder (used by tests, benchmarks and the demo).

Styles differ the way genres do (tempo, meter and swing, drum pattern, waveform and envelope, harmony),
and every clip draws its own key, tempo jitter, progression, instrument mix, filter and noise, so a model
has to learn the style rather than memorise a clip.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.signal import lfilter

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

# ---------------------------------------------------------------------------------------------- audio

_CHORDS = {
    "maj": (0, 4, 7),
    "min": (0, 3, 7),
    "dom7": (0, 4, 7, 10),
    "maj7": (0, 4, 7, 11),
    "min7": (0, 3, 7, 10),
    "sus2": (0, 2, 7),
}
# Progressions as (semitones above the key, quality), one chord per bar (techno: per two bars).
_PROGRESSIONS = {
    "ambient": [
        [(0, "maj7"), (5, "maj7")],
        [(0, "sus2"), (7, "sus2"), (9, "min7"), (5, "maj7")],
        [(0, "maj7"), (2, "min7")],
    ],
    "techno": [[(0, "min7")], [(0, "min"), (10, "maj")], [(0, "min"), (8, "maj")]],
    "waltz": [
        [(0, "maj"), (5, "maj"), (7, "dom7"), (0, "maj")],
        [(0, "maj"), (9, "min"), (2, "min"), (7, "dom7")],
    ],
    "blues": [
        [(r, "dom7") for r in (0, 0, 0, 0, 5, 5, 0, 0, 7, 5, 0, 7)],
        [(r, "dom7") for r in (0, 5, 0, 0, 5, 5, 0, 0, 7, 5, 0, 7)],
    ],
    "chiptune": [
        [(0, "maj"), (7, "maj"), (9, "min"), (5, "maj")],
        [(0, "maj"), (5, "maj"), (7, "maj"), (0, "maj")],
        [(9, "min"), (5, "maj"), (0, "maj"), (7, "maj")],
    ],
    "orchestral": [
        [(0, "min"), (8, "maj"), (3, "maj"), (10, "maj")],
        [(0, "min"), (5, "min"), (7, "maj"), (0, "min")],
        [(0, "min"), (10, "maj"), (8, "maj"), (7, "maj")],
    ],
}

# name: (waveform, attack s, decay s (None = sustain), vibrato depth in semitones, FM (ratio, index) or None)
_INSTRUMENTS = {
    "pad": ("triangle", 0.8, None, 0.0, None),
    "bell": ("sine", 0.002, 1.2, 0.0, (3.5, 2.0)),
    "acid": ("saw", 0.003, 0.12, 0.0, None),
    "piano": ("sine", 0.003, 0.7, 0.0, (1.0, 1.5)),
    "pluck": ("saw", 0.002, 0.35, 0.08, None),
    "upright": ("sine", 0.01, 0.5, 0.0, (1.0, 0.6)),
    "square": ("square", 0.001, None, 0.0, None),
    "pulse": ("pulse", 0.001, 0.25, 0.0, None),
    "tri": ("triangle", 0.001, None, 0.0, None),
    "strings": ("saw", 0.25, None, 0.12, None),
    "brass": ("saw", 0.06, 0.6, 0.03, None),
    "sub": ("sine", 0.005, 0.3, 0.0, None),
}


def _wave(kind: str, phase: np.ndarray) -> np.ndarray:
    frac = phase - np.floor(phase)
    if kind == "sine":
        return np.sin(2 * np.pi * phase)
    if kind == "saw":
        return 2.0 * frac - 1.0
    if kind == "square":
        return np.where(frac < 0.5, 1.0, -1.0)
    if kind == "pulse":
        return np.where(frac < 0.25, 1.0, -1.0)
    if kind == "triangle":
        return 4.0 * np.abs(frac - 0.5) - 1.0
    # organ: three drawbars
    return np.sin(2 * np.pi * phase) + 0.5 * np.sin(4 * np.pi * phase) + 0.25 * np.sin(6 * np.pi * phase)


class _Clip:
    """One clip being rendered: the timeline (tempo, meter, swing), the harmony and the output buses."""

    def __init__(self, style: str, seconds: float, sr: int, rng: np.random.Generator):
        info = STYLE_INFO[style]
        self.sr, self.rng, self.meter = sr, rng, info.meter
        self.n = int(round(seconds * sr))
        self.bpm = rng.uniform(*info.bpm) * rng.uniform(0.97, 1.03)
        self.beat = 60.0 / self.bpm
        self.swing = info.swing
        self.key = int(rng.integers(0, 12))  # transposition: every clip in its own key
        self.prog = _PROGRESSIONS[style][int(rng.integers(len(_PROGRESSIONS[style])))]
        self.bars = int(np.ceil(seconds / (self.beat * self.meter))) + 1
        self.offset = rng.uniform(0, self.beat)  # clips start off the downbeat, as real excerpts do
        self.buses: dict[str, np.ndarray] = {}

    def time(self, bar: int, beat: float) -> float:
        """Seconds from clip start of a position; off-beat eighths are delayed by the swing amount."""
        whole, frac = divmod(beat, 1.0)
        if self.swing and abs(frac - 0.5) < 1e-6:
            frac = 0.5 + self.swing / 2
        return (bar * self.meter + whole + frac) * self.beat - self.offset

    def chord(self, bar: int, bars_per_chord: int = 1) -> tuple[int, tuple[int, ...]]:
        root, quality = self.prog[(bar // bars_per_chord) % len(self.prog)]
        return self.key + root, _CHORDS[quality]

    def _bus(self, name: str) -> np.ndarray:
        if name not in self.buses:
            self.buses[name] = np.zeros(self.n, dtype=np.float64)
        return self.buses[name]

    def note(self, t0: float, dur: float, midi: float, amp: float, inst: str, bus: str = "main") -> None:
        wave, attack, decay, vib, fm = _INSTRUMENTS[inst]
        start, stop = max(0, int(t0 * self.sr)), min(self.n, int((t0 + dur) * self.sr))
        if stop <= start:
            return
        t = (np.arange(start, stop) - t0 * self.sr) / self.sr
        freq = 440.0 * 2 ** ((midi - 69) / 12)
        phase = freq * t
        if vib:  # vibrato as phase modulation: the integral of a 5.5 Hz sinusoidal pitch wobble
            phase = phase + freq * (2 ** (vib / 12) - 1) * np.sin(2 * np.pi * 5.5 * t) / (2 * np.pi * 5.5)
        if fm:  # two-operator FM with a decaying index: the bright attack of pianos and bells
            ratio, index = fm
            phase = phase + index * np.exp(-t / 0.4) * np.sin(2 * np.pi * ratio * freq * t) / (2 * np.pi)
        env = np.minimum(t / attack, 1.0)
        if decay:
            env = env * np.exp(-t / decay)
        env *= np.minimum((t0 + dur - (t + t0)) / 0.01, 1.0)  # 10 ms release: no clicks at note end
        self._bus(bus)[start:stop] += amp * env * _wave(wave, phase)

    def hit(self, t0: float, sample: np.ndarray, amp: float, bus: str = "drums") -> None:
        start = int(t0 * self.sr)
        lo, hi = max(0, start), min(self.n, start + len(sample))
        if hi > lo:
            self._bus(bus)[lo:hi] += amp * sample[lo - start : hi - start]


def _drums(sr: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    t = np.arange(int(0.6 * sr)) / sr
    noise = rng.standard_normal(len(t))
    hiss = np.diff(noise, prepend=0.0)  # first difference: a cheap high-pass for hats
    sweep = 150 * np.exp(-t / 0.04) + 45  # kick pitch falls from ~195 Hz to 45 Hz
    held = np.repeat(rng.uniform(-1, 1, len(t) // 32 + 1), 32)[: len(t)]  # sample-and-hold: NES noise
    return {
        "kick": np.sin(2 * np.pi * np.cumsum(sweep) / sr) * np.exp(-t / 0.18),
        "snare": 0.6 * noise * np.exp(-t / 0.07) + 0.5 * np.sin(2 * np.pi * 185 * t) * np.exp(-t / 0.04),
        "clap": noise * np.exp(-t / 0.05) * (1 + np.sin(2 * np.pi * 90 * t) ** 2),
        "hat": 0.5 * hiss * np.exp(-t / 0.018),
        "ride": 0.35 * hiss * np.exp(-t / 0.12) + 0.1 * np.sin(2 * np.pi * 3100 * t) * np.exp(-t / 0.3),
        "brush": lfilter([0.2], [1, -0.8], noise) * np.exp(-t / 0.1),
        "timpani": (np.sin(2 * np.pi * 92 * t) + 0.4 * np.sin(2 * np.pi * 139 * t)) * np.exp(-t / 0.5),
        "chipkick": held * np.exp(-t / 0.06)
        + np.sign(np.sin(2 * np.pi * np.cumsum(sweep) / sr)) * np.exp(-t / 0.05),
        "chipsnare": held * np.exp(-t / 0.09),
        "chiphat": np.repeat(rng.uniform(-1, 1, len(t) // 4 + 1), 4)[: len(t)] * np.exp(-t / 0.02),
    }


def _ambient(c: _Clip, d: dict, g: np.ndarray) -> None:
    for bar in range(0, c.bars, 2):
        root, chord = c.chord(bar // 2)
        for iv in chord:  # slow pad chords, two slightly detuned voices each (chorus)
            for detune in (-0.08, 0.08):
                c.note(
                    c.time(bar, 0), 2 * c.meter * c.beat + 0.5, 60 + root + iv + detune, 0.12 * g[0], "pad"
                )
        for _ in range(int(c.rng.integers(1, 4))):  # sparse bells on chord tones
            c.note(
                c.time(bar, c.rng.integers(0, 8) / 2),
                3.0,
                72 + root + c.rng.choice(chord),
                0.2 * g[1],
                "bell",
            )


def _techno(c: _Clip, d: dict, g: np.ndarray) -> None:
    pattern = c.rng.integers(0, 5, 16)  # one-bar acid riff on the minor pentatonic, repeated
    accents = c.rng.random(16) < 0.5
    penta = np.array([0, 3, 5, 7, 10])
    for bar in range(c.bars):
        root, chord = c.chord(bar, 2)
        for beat in range(4):
            c.hit(c.time(bar, beat), d["kick"], 1.0 * g[0])
            c.hit(c.time(bar, beat + 0.5), d["hat"], 0.6 * g[1])
            if beat % 2:
                c.hit(c.time(bar, beat), d["clap"], 0.35 * g[2])
        for s in range(16):
            if accents[s] or s % 4 == 0:
                c.note(c.time(bar, s / 4), c.beat / 4, 36 + root + penta[pattern[s]], 0.3 * g[3], "acid")
        if bar % 2 == 0:
            for iv in chord:
                c.note(c.time(bar, 1.5), c.beat * 0.4, 60 + root + iv, 0.08 * g[4], "pluck")


def _waltz(c: _Clip, d: dict, g: np.ndarray) -> None:
    for bar in range(c.bars):
        root, chord = c.chord(bar)
        c.note(c.time(bar, 0), c.beat * 0.95, 36 + root, 0.45 * g[0], "upright")  # "oom"
        for beat in (1, 2):  # "pah pah"
            for iv in chord[:3]:
                c.note(c.time(bar, beat), c.beat * 0.7, 60 + root + iv, 0.12 * g[1], "piano")
        beats = [0, 1, 2] if c.rng.random() < 0.5 else [0, 2]
        for b in beats:  # melody on chord tones, an octave up
            c.note(
                c.time(bar, b),
                c.beat * (3 - b if b == beats[-1] else 1),
                72 + root + c.rng.choice(chord),
                0.25 * g[2],
                "piano",
            )


def _blues(c: _Clip, d: dict, g: np.ndarray) -> None:
    scale = np.array([0, 3, 5, 6, 7, 10, 12])
    for bar in range(c.bars):
        root, chord = c.chord(bar)
        for beat in range(4):
            c.hit(c.time(bar, beat), d["ride"], 0.4 * g[0])
            c.hit(c.time(bar, beat + 0.5), d["ride"], 0.25 * g[0])
            if beat % 2:
                c.hit(c.time(bar, beat), d["brush"], 0.7 * g[1])
            walk = (0, 4, 7, 9)[beat]  # shuffle bass walks up the chord
            c.note(c.time(bar, beat), c.beat * 0.9, 40 + root + walk, 0.4 * g[2], "upright")
            for half in (0, 0.5):  # swung guitar comping: root-fifth then root-sixth shuffle
                for iv in (0, 7 if half == 0 else 9):
                    c.note(c.time(bar, beat + half), c.beat * 0.45, 52 + root + iv, 0.1 * g[3], "pluck")
        if c.rng.random() < 0.7:  # a blue-note lick
            for i in range(int(c.rng.integers(2, 5))):
                c.note(
                    c.time(bar, 2 + i * 0.5),
                    c.beat * 0.6,
                    64 + c.key + c.rng.choice(scale),
                    0.18 * g[4],
                    "pluck",
                )


def _chiptune(c: _Clip, d: dict, g: np.ndarray) -> None:
    up = c.rng.random() < 0.5
    for bar in range(c.bars):
        root, chord = c.chord(bar)
        arp = list(chord) + [12]
        arp = arp if up else arp[::-1]
        for s in range(16):  # 16th-note arpeggio, the chip-music way to play chords on one voice
            c.note(c.time(bar, s / 4), c.beat / 4 * 0.9, 72 + root + arp[s % len(arp)], 0.12 * g[0], "pulse")
        for e in range(8):  # octave-jumping bass on a triangle channel
            c.note(c.time(bar, e / 2), c.beat / 2 * 0.8, 36 + root + 12 * (e % 2), 0.35 * g[1], "tri")
        for beat in range(4):
            c.hit(c.time(bar, beat), d["chipkick" if beat % 2 == 0 else "chipsnare"], 0.4 * g[2])
            c.hit(c.time(bar, beat + 0.5), d["chiphat"], 0.2 * g[2])
        c.note(c.time(bar, 0), c.beat * 2, 84 + root + c.rng.choice(chord), 0.08 * g[3], "square")


def _orchestral(c: _Clip, d: dict, g: np.ndarray) -> None:
    for bar in range(c.bars):
        root, chord = c.chord(bar)
        for iv in chord:  # sustained string chord with vibrato
            c.note(c.time(bar, 0), c.meter * c.beat + 0.2, 55 + root + iv, 0.12 * g[0], "strings", "strings")
        for e in range(8):  # low-string ostinato in dotted rhythm
            if e % 4 != 1:
                c.note(c.time(bar, e / 2), c.beat * 0.45, 43 + root, 0.25 * g[1], "strings", "strings")
        if bar % 2 == 0:
            c.note(c.time(bar, 0), c.beat * 1.5, 60 + root + chord[-1], 0.2 * g[2], "brass", "strings")
            for r in range(6):  # timpani roll into the downbeat
                c.hit(c.time(bar, 0) - 0.06 * (6 - r), d["timpani"], 0.1 + 0.1 * r * g[3])


_ARRANGERS = {
    "ambient": _ambient,
    "techno": _techno,
    "waltz": _waltz,
    "blues": _blues,
    "chiptune": _chiptune,
    "orchestral": _orchestral,
}
# Style timbre beyond the notes: (master low-pass coefficient range, echo (delay s, feedback) or None).
_SPACE = {
    "ambient": ((0.55, 0.75), (0.33, 0.5)),
    "techno": ((0.0, 0.3), None),
    "waltz": ((0.2, 0.4), (0.05, 0.2)),
    "blues": ((0.3, 0.5), None),
    "chiptune": ((0.0, 0.05), None),
    "orchestral": ((0.4, 0.6), (0.09, 0.35)),
}


def render_clip(style: str, seconds: float, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """One clip of `style`: (seconds * sample_rate,) float32 mono in [-1, 1], drawn from `rng`."""
    if style not in _ARRANGERS:
        raise ValueError(f"unknown style {style!r}; choose one of: {', '.join(STYLES)}")
    c = _Clip(style, seconds, sample_rate, rng)
    gains = rng.uniform(0.6, 1.3, 8)  # per-clip instrument mix
    _ARRANGERS[style](c, _drums(sample_rate, rng), gains)
    x = np.zeros(c.n)
    for name, bus in c.buses.items():
        if name == "strings":  # darker strings: saw through a one-pole low-pass
            bus = lfilter([0.3], [1, -0.7], bus)
        x += bus
    lo, hi = _SPACE[style][0]
    a = rng.uniform(lo, hi)
    x = lfilter([1 - a], [1, -a], x)  # per-clip brightness
    echo = _SPACE[style][1]
    if echo:  # a few discrete echoes: the cheap "reverb" of ambient and hall styles
        delay = int(echo[0] * rng.uniform(0.8, 1.2) * sample_rate)
        for k in range(1, 4):
            if delay * k < c.n:
                x[delay * k :] += echo[1] ** k * x[: c.n - delay * k]
    x += rng.standard_normal(c.n) * 10 ** rng.uniform(-3.5, -2)  # noise floor
    peak = np.max(np.abs(x)) or 1.0
    return np.clip(x * rng.uniform(0.5, 0.9) / peak, -1.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------- metadata

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


@dataclass
class _Item:
    style: str
    index: int  # position within its style
    meta: dict
    rng: np.random.Generator


def _items(styles: list[str], n_per_class: int, seed: int) -> list[_Item]:
    items = []
    for style in styles:
        for k in range(n_per_class):
            # A seed per (corpus seed, style, index): a clip never changes when other styles are added.
            digest = hashlib.sha256(f"{seed}/{style}/{k}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            items.append(_Item(style, k, clip_meta(style, rng), rng))
    return items


def _split_of(style_pos: int, k: int) -> str:
    # Rotating by style puts every split in every small corpus (2 per class) while keeping ~60/20/20.
    return ("train", "valid", "test", "train", "train")[(k + style_pos) % 5]


# -------------------------------------------------------------------------------------------- layouts


class _Writer:
    """Writes audio and remembers the planted faults, so BROKEN.json can tell tests what to expect."""

    def __init__(self, root: Path, seconds: float, sr: int, seed: int):
        self.root, self.seconds, self.sr, self.seed = root, seconds, sr, seed
        self.broken: list[dict] = []
        self.valid_unicode: list[dict] = []

    def audio(self, rel: str, item: _Item) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        import soundfile as sf

        wave = render_clip(item.style, self.seconds, self.sr, item.rng)
        fmt = {".au": "AU", ".mp3": "MP3", ".ogg": "OGG", ".flac": "FLAC"}.get(path.suffix.lower(), "WAV")
        subtype = {"MP3": "MPEG_LAYER_III", "OGG": "VORBIS"}.get(fmt, "PCM_16")
        sf.write(path, wave, self.sr, format=fmt, subtype=subtype)
        return path

    def plant(self, rel: str, reason: str, stage: str, track_id: str, donor: _Item | None = None) -> None:
        """reason: empty | truncated | not_audio | missing | known_bad; stage: where it must be caught
        (`source` = discover() sets Track.error, `decode` = the writer fails to decode it)."""
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if reason == "empty":
            path.write_bytes(b"")
        elif reason == "truncated":  # a real file cut inside its header: no decoder can open it
            self.audio(rel, donor)
            path.write_bytes(path.read_bytes()[:60])
        elif reason in ("not_audio", "known_bad"):
            path.write_text("this is a text file, not audio\n" * (1 if reason == "not_audio" else 20))
        self.broken.append({"path": rel, "id": track_id, "reason": reason, "stage": stage})

    def record(self, extra: dict | None = None) -> None:
        data = {"errors": self.broken, "valid_unicode": self.valid_unicode, **(extra or {})}
        (self.root / "BROKEN.json").write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _extra_items(styles: list[str], start: int, count: int, seed: int) -> list[_Item]:
    """Donor clips for planted faults, drawn past the regular indices so regular clips stay unchanged."""
    out = []
    for j in range(count):
        style = styles[j % len(styles)]
        out.append(_items([style], start + j + 1, seed)[-1])
    return out


def _gtzan(
    w: _Writer, items: list[_Item], styles: list[str], n: int, broken: bool, split_lists: bool
) -> None:
    from muser.shards.sources.base import make_id

    lists: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for it in items:
        ext = ".au" if it.index % 3 == 2 else ".wav"  # GTZAN ships .au; most copies are converted to .wav
        rel = f"genres/{it.style}/{it.style}.{it.index:05d}{ext}"
        w.audio(rel, it)
        # The last clip of the first genre is "faulty": absent from every fault-filtered list.
        if not (it.style == styles[0] and it.index == n - 1 and n >= 2):
            lists[_split_of(styles.index(it.style), it.index)].append(rel.removeprefix("genres/"))
    if broken:
        g, donors = styles[0], _extra_items(styles[:1], n, 4, w.seed)
        planted = [
            ("empty", ".wav", "source"),
            ("truncated", ".wav", "decode"),
            ("not_audio", ".au", "decode"),
        ]
        for j, (reason, ext, stage) in enumerate(planted):
            stem = f"{g}.{n + j:05d}"
            w.plant(f"genres/{g}/{stem}{ext}", reason, stage, make_id("gtzan", stem), donors[j])
            lists["train"].append(f"{g}/{stem}{ext}")
        stem = f"{g}.{n + 3:05d} — café ♪"
        w.audio(f"genres/{g}/{stem}.wav", donors[3])
        w.valid_unicode.append({"path": f"genres/{g}/{stem}.wav", "id": make_id("gtzan", stem)})
        lists["train"].append(f"{g}/{stem}.wav")
    if split_lists:
        for split, lines in lists.items():
            (w.root / f"{split}_filtered.txt").write_text("".join(f"{x}\n" for x in sorted(lines)))
    w.record({"split_lists": split_lists})


def _fma(w: _Writer, items: list[_Item], styles: list[str], n: int, broken: bool) -> None:
    import pandas as pd

    # Genre tree: style -> its parent chain; ids assigned top-down in a fixed order.
    titles: dict[str, int] = {}
    parent: dict[str, str | None] = {}
    for style in styles:
        chain = [style, *STYLE_INFO[style].parents]
        for child, up in zip(chain, chain[1:] + [None], strict=True):
            parent.setdefault(child, up)
    for name in sorted(parent, key=lambda g: (len(_chain(g, parent)), g)):
        titles[name] = len(titles) + 1

    def top(g: str) -> str:
        return _chain(g, parent)[-1]

    extras = _extra_items(styles, n, 7, w.seed)
    pool = np.random.default_rng(w.seed).choice(
        np.arange(2, 155000), size=len(items) + len(extras) + 8, replace=False
    )
    ids = sorted(int(i) for i in pool if int(i) not in (99134, 108925, 133297))
    rows, index = [], []

    def row(it: _Item, tid: int, split: str, subset: str) -> None:
        m, g = it.meta, it.style
        rows.append(
            {
                ("album", "date_released"): f"{m['year']}-03-01 00:00:00",
                ("album", "id"): 1000 + tid % 977,
                ("album", "tags"): "[]",
                ("album", "title"): m["album"],
                ("album", "type"): "Album",
                ("artist", "id"): 500 + tid % 331,
                ("artist", "location"): "",
                ("artist", "name"): m["artist"],
                ("artist", "tags"): "[]",
                ("set", "split"): split,
                ("set", "subset"): subset,
                ("track", "bit_rate"): 256000,
                ("track", "date_created"): f"{m['year'] + 1}-11-26 01:44:45",
                ("track", "date_recorded"): "",
                ("track", "duration"): int(round(w.seconds)),
                ("track", "genre_top"): _fma_title(top(g)),
                ("track", "genres"): str([titles[g]]),
                ("track", "genres_all"): str(sorted(titles[x] for x in _chain(g, parent))),
                ("track", "interest"): int(it.rng.integers(100, 5000)),
                ("track", "license"): "Attribution-NonCommercial-ShareAlike 3.0 International",
                ("track", "listens"): int(it.rng.integers(10, 3000)),
                ("track", "number"): it.index + 1,
                ("track", "tags"): str(m["tags"]),
                ("track", "title"): m["title"],
            }
        )
        index.append(tid)

    def rel(tid: int) -> str:
        s = f"{tid:06d}"
        return f"fma_small/{s[:3]}/{s}.mp3"

    long_split = {"train": "training", "valid": "validation", "test": "test"}
    for it, tid in zip(items, ids, strict=False):
        row(it, tid, long_split[_split_of(styles.index(it.style), it.index)], "small")
        w.audio(rel(tid), it)
    more = ids[len(items) :]
    for it, tid in zip(
        extras[:2], more[:2], strict=False
    ):  # medium-only tracks: filtered out of the small subset
        row(it, tid, "training", "medium")
    if broken:
        planted = [
            ("known_bad", 99134, "source"),
            ("missing", more[2], "source"),
            ("empty", more[3], "source"),
            ("truncated", more[4], "decode"),
            ("not_audio", more[5], "decode"),
        ]
        for (reason, tid, stage), it in zip(planted, extras[2:], strict=False):
            row(it, tid, "training", "small")
            if reason != "missing":
                w.plant(rel(tid), reason, stage, f"fma_{tid:06d}", it)
            else:
                w.broken.append({"path": rel(tid), "id": f"fma_{tid:06d}", "reason": reason, "stage": stage})
        w.audio(rel(more[6]), extras[6])  # on disk but in no metadata: ignored with a note
    meta = w.root / "fma_metadata"
    meta.mkdir(parents=True, exist_ok=True)
    tracks = pd.DataFrame(rows, index=pd.Index(index, name="track_id"))
    tracks.columns = pd.MultiIndex.from_tuples(tracks.columns)
    tracks.sort_index().to_csv(meta / "tracks.csv")
    counts = {g: sum(1 for it in items if g in _chain(it.style, parent)) for g in titles}
    genres = pd.DataFrame(
        [
            {
                "genre_id": titles[g],
                "#tracks": counts[g],
                "parent": titles[parent[g]] if parent[g] else 0,
                "title": _fma_title(g),
                "top_level": titles[top(g)],
            }
            for g in titles
        ]
    )
    genres.sort_values("genre_id").to_csv(meta / "genres.csv", index=False)
    w.record(
        {"medium_only": [f"fma_{t:06d}" for t in more[:2]], "unlisted": [rel(more[6])] if broken else []}
    )


def _chain(g: str, parent: dict[str, str | None]) -> list[str]:
    out = [g]
    while parent.get(out[-1]):
        out.append(parent[out[-1]])  # type: ignore[arg-type]
    return out


def _fma_title(g: str) -> str:
    return " ".join(p.capitalize() for p in g.split(" "))  # FMA titles: "Electronic", "Video Game Music"


def _slug(text: str) -> str:
    return "_".join("".join(ch if ch.isalnum() else " " for ch in text.lower()).split())


_MTT_DIRS = "0c1d2e3f456789ab"  # interleaved so every small corpus reaches train (0-b), valid (c), test (d-f)


def _mtt(w: _Writer, items: list[_Item], styles: list[str], n: int, broken: bool) -> None:
    import csv

    tag_columns = sorted({t for s in styles for t in STYLE_INFO[s].tags} | set(FILLER_TAGS))
    np.random.default_rng(w.seed).shuffle(tag_columns)  # the real file's column order is not alphabetical
    annotations, info = [], []

    def row(it: _Item, i: int, folder: str, name: str | None = None) -> str:
        m = it.meta
        start = int(it.rng.choice([0, 30, 59]))
        name = name or f"{_slug(m['artist'])}-{_slug(m['album'])}-{it.index + 1:02d}-{_slug(m['title'])}"
        path = f"{folder}/{name}-{start}-{start + 29}.mp3"
        clip_id = str(2 + 4 * i)
        annotations.append([clip_id, *("1" if t in m["tags"] else "0" for t in tag_columns), path])
        info.append(
            [
                clip_id,
                str(it.index + 1),
                m["title"],
                m["artist"],
                m["album"],
                f"http://www.magnatune.com/artists/albums/{_slug(m['artist'])}/",
                str(start),
                str(start + 29),
                f"http://he3.magnatune.com/all/{it.index + 1:02d}-{_slug(m['title'])}.mp3",
                path,
            ]
        )
        return path

    for i, it in enumerate(items):
        w.audio(row(it, i, _MTT_DIRS[i % 16]), it)
    if broken:
        extras = _extra_items(styles, n, 5, w.seed)
        planted = [
            ("missing", "source"),
            ("empty", "source"),
            ("truncated", "decode"),
            ("not_audio", "decode"),
        ]
        for j, ((reason, stage), it) in enumerate(zip(planted, extras, strict=False)):
            i = len(items) + j
            path = row(it, i, _MTT_DIRS[i % 16])
            if reason == "missing":
                w.broken.append({"path": path, "id": f"mtt_{2 + 4 * i}", "reason": reason, "stage": stage})
            else:
                w.plant(path, reason, stage, f"mtt_{2 + 4 * i}", it)
        i = len(items) + 4
        path = row(extras[4], i, "e", "zoë_nørgaard-café_sessions-01-crème_brûlée")
        w.audio(path, extras[4])
        w.valid_unicode.append({"path": path, "id": f"mtt_{2 + 4 * i}"})
    for name, header, body in [
        ("annotations_final.csv", ["clip_id", *tag_columns, "mp3_path"], annotations),
        (
            "clip_info_final.csv",
            [
                "clip_id",
                "track_number",
                "title",
                "artist",
                "album",
                "url",
                "segmentStart",
                "segmentEnd",
                "original_url",
                "mp3_path",
            ],
            info,
        ),
    ]:
        with open(w.root / name, "w", newline="", encoding="utf-8") as f:
            out = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
            out.writerow(header)
            out.writerows(body)
    w.record({"tag_columns": len(tag_columns)})


def _tag(path: Path, meta: dict) -> None:
    """Embed title/artist/album/genre/date/comment the way taggers do: Vorbis comments or ID3 in WAV."""
    from mutagen.flac import FLAC
    from mutagen.oggvorbis import OggVorbis

    fields = {
        "title": meta["title"],
        "artist": meta["artist"],
        "album": meta["album"],
        "genre": meta["genres"][0],
        "date": str(meta["year"]),
        "comment": meta["description"],
    }
    if path.suffix in (".ogg", ".flac"):
        f = (OggVorbis if path.suffix == ".ogg" else FLAC)(path)
        for k, v in fields.items():
            f[k] = v
        f.save()
        return
    from mutagen.id3 import COMM, TALB, TCON, TDRC, TIT2, TPE1
    from mutagen.wave import WAVE

    f = WAVE(path)
    f.add_tags()
    for frame, key in ((TIT2, "title"), (TPE1, "artist"), (TALB, "album"), (TCON, "genre"), (TDRC, "date")):
        f.tags.add(frame(encoding=3, text=[fields[key]]))
    f.tags.add(COMM(encoding=3, lang="eng", desc="", text=[fields["comment"]]))
    f.save()


def _folder(
    w: _Writer, items: list[_Item], styles: list[str], n: int, broken: bool, sidecar: bool | str
) -> None:
    from muser.shards.sources.folder import folder_id

    rows = []
    for i, it in enumerate(items):
        m, ext = it.meta, (".ogg", ".flac", ".wav")[i % 3]
        if i % 5 == 4:  # some loose singles beside the artist/album tree
            rel = f"singles/{m['title']} {i}{ext}"
        else:
            rel = f"{m['artist']}/{m['album']}/{it.index + 1:02d} - {m['title']}{ext}"
        _tag(w.audio(rel, it), m)
        rows.append(
            {
                "path": rel,
                "title": f"{m['title']} (Remastered)" if i % 2 == 0 else "",
                "genre": it.style,
                "tags": ";".join(m["tags"]),
                "mood": ";".join(m["mood"]),
                "split": _split_of(styles.index(it.style), it.index),
                "bpm": str(60 + 7 * i),
            }
        )
    if broken:
        donors = _extra_items(styles, n, 3, w.seed)
        for (rel, reason, stage), it in zip(
            [
                ("Misc/empty.wav", "empty", "source"),
                ("Misc/truncated.flac", "truncated", "decode"),
                ("Misc/notes.ogg", "not_audio", "decode"),
            ],
            donors,
            strict=False,
        ):
            w.plant(rel, reason, stage, folder_id(rel), it)
        rel = "Ünïcødé Ärtist/café ♪ 01.ogg"
        _tag(w.audio(rel, donors[2]), donors[2].meta)
        w.valid_unicode.append({"path": rel, "id": folder_id(rel)})
        if sidecar:
            rows.append({"path": "Misc/missing.wav", "title": "Gone", "genre": styles[0], "split": "train"})
            w.broken.append(
                {
                    "path": "Misc/missing.wav",
                    "id": folder_id("Misc/missing.wav"),
                    "reason": "missing",
                    "stage": "source",
                }
            )
    if sidecar == "jsonl":
        with open(w.root / "metadata.jsonl", "w", encoding="utf-8") as f:
            for r in rows:
                r = {k: (v.split(";") if k in ("tags", "mood") else v) for k, v in r.items() if v}
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    elif sidecar:
        import csv

        with open(w.root / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            out = csv.DictWriter(f, fieldnames=["path", "title", "genre", "tags", "mood", "split", "bpm"])
            out.writeheader()
            out.writerows(rows)
    w.record(
        {"sidecar": {"jsonl": "metadata.jsonl", True: "metadata.csv", "csv": "metadata.csv"}.get(sidecar)}
    )


LAYOUTS = ("gtzan", "fma", "mtt", "folder")


def make_corpus(
    root: str | Path,
    layout: str = "gtzan",
    n_per_class: int = 4,
    seconds: float = 6.0,
    sample_rate: int = 22050,
    seed: int = 0,
    broken: bool = False,
    styles: list[str] | None = None,
    split_lists: bool = False,
    sidecar: bool | str = False,
) -> Path:
    """Write a dataset in the real on-disk `layout` under `root` and return the folder to pass as SRC.

    gtzan: genres/<genre>/<genre>.000NN.wav|.au (+ {train,valid,test}_filtered.txt when `split_lists`);
    fma: fma_small/NNN/NNNNNN.mp3 + fma_metadata/{tracks,genres}.csv (3-row header); mtt:
    annotations_final.csv + clip_info_final.csv + <0-f>/<name>.mp3; folder: <artist>/<album>/*.ogg|flac|wav
    with embedded tags (+ metadata.csv, or metadata.jsonl when `sidecar="jsonl"`). `broken` plants empty,
    truncated, non-audio and listed-but-missing files plus a valid unicode path; root/BROKEN.json lists them
    with the track id, the reason and the stage that must catch them (`source` or `decode`).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    styles = list(styles or STYLES)
    unknown = [s for s in styles if s not in STYLE_INFO]
    if unknown:
        raise ValueError(f"unknown style(s) {', '.join(unknown)}; choose from: {', '.join(STYLES)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    w = _Writer(root, seconds, sample_rate, seed)
    items = _items(styles, n_per_class, seed)
    if layout == "gtzan":
        _gtzan(w, items, styles, n_per_class, broken, split_lists)
    elif layout == "fma":
        _fma(w, items, styles, n_per_class, broken)
    elif layout == "mtt":
        _mtt(w, items, styles, n_per_class, broken)
    else:
        _folder(w, items, styles, n_per_class, broken, sidecar)
    return root
