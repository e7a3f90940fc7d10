"""Audio rendering of one clip of a style with numpy: harmony, instruments, drum kits, per-style arrangers,
the master chain (filter, echoes, noise floor, level) and the `difficulty` blur that makes styles overlap."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

from muser.synth.styles import STYLE_INFO, STYLES

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


@dataclass
class _Blur:
    """How one clip of a `difficulty > 0` corpus strays from its style (drawn once per clip)."""

    tempo: str  # style whose tempo range the clip uses
    jitter: float  # relative tempo jitter (0.03 at difficulty 0)
    drums: str  # style whose drum part replaces the clip's own
    space: str  # style whose brightness and echoes the master chain uses
    timbre: dict[str, str]  # instrument -> the instrument that plays its notes
    octave: int  # semitones every note is shifted by (0 or +-12)
    eq: float  # one-pole coefficient of a tilt on the whole mix (0 = flat)
    noise: tuple[float, float]  # log10 range of the noise floor's amplitude
    tilt: float  # one-pole coefficient colouring the noise (0 = white)
    level: tuple[float, float]  # output peak range

    @classmethod
    def draw(cls, style: str, difficulty: float, rng: np.random.Generator) -> _Blur:
        others = [s for s in STYLES if s != style]

        def borrow() -> str:
            return str(rng.choice(others)) if rng.random() < difficulty else style

        tempo, drums, space = borrow(), borrow(), borrow()
        timbre: dict[str, str] = {}
        if rng.random() < difficulty:  # a new band: every instrument is played by another one
            names = list(_INSTRUMENTS)
            timbre = dict(zip(names, (str(n) for n in rng.permutation(names)), strict=True))
        octave = int(rng.choice([-12, 12])) if rng.random() < difficulty else 0
        return cls(
            tempo=tempo,
            jitter=0.03 + 0.12 * difficulty,
            drums=drums,
            space=space,
            timbre=timbre,
            octave=octave,
            eq=float(rng.uniform(-0.8, 0.8) * difficulty),
            noise=(-3.5 + 1.5 * difficulty, -2.0 + 1.0 * difficulty),
            tilt=float(rng.uniform(-0.9, 0.9) * difficulty),
            level=(0.5 - 0.4 * difficulty, 0.9),
        )


class _Clip:
    """One clip being rendered: the timeline (tempo, meter, swing), the harmony and the output buses."""

    def __init__(
        self, style: str, seconds: float, sr: int, rng: np.random.Generator, blur: _Blur | None = None
    ):
        info = STYLE_INFO[style]
        self.sr, self.rng, self.meter = sr, rng, info.meter
        self.n = int(round(seconds * sr))
        self.timbre = blur.timbre if blur else {}
        self.shift = blur.octave if blur else 0
        if blur is None:
            self.bpm = rng.uniform(*info.bpm) * rng.uniform(0.97, 1.03)
        else:
            self.bpm = rng.uniform(*STYLE_INFO[blur.tempo].bpm) * rng.uniform(
                1 - blur.jitter, 1 + blur.jitter
            )
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
        wave, attack, decay, vib, fm = _INSTRUMENTS[self.timbre.get(inst, inst)]
        start, stop = max(0, int(t0 * self.sr)), min(self.n, int((t0 + dur) * self.sr))
        if stop <= start:
            return
        t = (np.arange(start, stop) - t0 * self.sr) / self.sr
        freq = 440.0 * 2 ** ((midi + self.shift - 69) / 12)
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


def _borrow_drums(c: _Clip, style: str, d: dict, g: np.ndarray) -> None:
    """Replace the drum bus of `c` by the drum part `style`'s arranger plays on the same timeline."""
    other = copy.copy(c)
    other.buses = {}
    _ARRANGERS[style](other, d, g)  # its notes land on other buses and are dropped
    c.buses.pop("drums", None)
    if "drums" in other.buses:
        c.buses["drums"] = other.buses["drums"]


def render_clip(
    style: str, seconds: float, sample_rate: int, rng: np.random.Generator, difficulty: float = 0.0
) -> np.ndarray:
    """One clip of `style`: (seconds * sample_rate,) float32 mono in [-1, 1], drawn from `rng`.

    `difficulty` in [0, 1] makes the styles overlap: with that probability each, a clip takes another
    style's tempo range, drum part, room (brightness, echoes) and instrument timbres, or moves an octave;
    a random tilt of the mix, the noise floor and its colour, the level range and the tempo jitter grow
    with it. Meter, rhythm, harmony and arrangement stay the style's own, so the style is still in the
    audio but no longer in its timbre statistics alone (an MFCC probe drops from ~100 % to ~60 % at 0.4).
    0 draws nothing extra: the clips are exactly those of a corpus made without the knob.
    """
    if style not in _ARRANGERS:
        raise ValueError(f"unknown style {style!r}; choose one of: {', '.join(STYLES)}")
    if not 0.0 <= difficulty <= 1.0:
        raise ValueError(f"difficulty must lie in [0, 1], got {difficulty}")
    blur = _Blur.draw(style, difficulty, rng) if difficulty > 0 else None
    c = _Clip(style, seconds, sample_rate, rng, blur)
    gains = rng.uniform(0.6, 1.3, 8)  # per-clip instrument mix
    drums = _drums(sample_rate, rng)
    _ARRANGERS[style](c, drums, gains)
    if blur is not None and blur.drums != style:
        _borrow_drums(c, blur.drums, drums, gains)
    x = np.zeros(c.n)
    for name, bus in c.buses.items():
        if name == "strings":  # darker strings: saw through a one-pole low-pass
            bus = lfilter([0.3], [1, -0.7], bus)
        x += bus
    space = blur.space if blur else style
    lo, hi = _SPACE[space][0]
    a = rng.uniform(lo, hi)
    x = lfilter([1 - a], [1, -a], x)  # per-clip brightness
    if blur is not None and blur.eq:  # a tilted mix (dull or thin playback) on top of the style's room
        x = lfilter([1 - abs(blur.eq)], [1, -blur.eq], x)
    echo = _SPACE[space][1]
    if echo:  # a few discrete echoes: the cheap "reverb" of ambient and hall styles
        delay = int(echo[0] * rng.uniform(0.8, 1.2) * sample_rate)
        for k in range(1, 4):
            if delay * k < c.n:
                x[delay * k :] += echo[1] ** k * x[: c.n - delay * k]
    noise = rng.standard_normal(c.n)
    if blur is not None and blur.tilt:  # coloured noise shifts the spectral envelope MFCCs summarise
        noise = lfilter([1 - abs(blur.tilt)], [1, -blur.tilt], noise) / np.sqrt(
            (1 - abs(blur.tilt)) ** 2 / (1 - blur.tilt**2)
        )
    x += noise * 10 ** rng.uniform(*(blur.noise if blur else (-3.5, -2)))  # noise floor
    peak = np.max(np.abs(x)) or 1.0
    level = rng.uniform(*(blur.level if blur else (0.5, 0.9)))
    return np.clip(x * level / peak, -1.0, 1.0).astype(np.float32)
