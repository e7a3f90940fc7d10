"""The clips of a corpus and the writer that puts them on disk: per-clip seeds, split assignment, audio
encoding by file extension, and the planted faults recorded in BROKEN.json."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from muser.synth.render import render_clip
from muser.synth.styles import clip_meta


@dataclass
class Item:
    """One clip of a corpus: its style, its metadata and the rng its audio is rendered from."""

    style: str
    index: int  # position within its style
    meta: dict
    rng: np.random.Generator


def make_items(styles: list[str], n_per_class: int, seed: int) -> list[Item]:
    """`n_per_class` clips of each style, in style order, each with its own seeded rng and metadata."""
    items = []
    for style in styles:
        for k in range(n_per_class):
            # A seed per (corpus seed, style, index): a clip never changes when other styles are added.
            digest = hashlib.sha256(f"{seed}/{style}/{k}".encode()).digest()
            rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
            items.append(Item(style, k, clip_meta(style, rng), rng))
    return items


def split_of(style_pos: int, k: int) -> str:
    """The split (train/valid/test) of clip `k` of the style at position `style_pos`."""
    # Rotating by style puts every split in every small corpus (2 per class) while keeping ~60/20/20.
    return ("train", "valid", "test", "train", "train")[(k + style_pos) % 5]


class Writer:
    """Writes audio and remembers the planted faults, so BROKEN.json can tell tests what to expect."""

    def __init__(self, root: Path, seconds: float, sr: int, seed: int, difficulty: float = 0.0):
        self.root, self.seconds, self.sr, self.seed = root, seconds, sr, seed
        self.difficulty = difficulty  # how much styles overlap (render_clip); 0 = the original corpus
        self.broken: list[dict] = []
        self.valid_unicode: list[dict] = []

    def audio(self, rel: str, item: Item) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        import soundfile as sf

        wave = render_clip(item.style, self.seconds, self.sr, item.rng, self.difficulty)
        fmt = {".au": "AU", ".mp3": "MP3", ".ogg": "OGG", ".flac": "FLAC"}.get(path.suffix.lower(), "WAV")
        subtype = {"MP3": "MPEG_LAYER_III", "OGG": "VORBIS"}.get(fmt, "PCM_16")
        sf.write(path, wave, self.sr, format=fmt, subtype=subtype)
        return path

    def plant(self, rel: str, reason: str, stage: str, track_id: str, donor: Item | None = None) -> None:
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


def extra_items(styles: list[str], start: int, count: int, seed: int) -> list[Item]:
    """Donor clips for planted faults, drawn past the regular indices so regular clips stay unchanged."""
    out = []
    for j in range(count):
        style = styles[j % len(styles)]
        out.append(make_items([style], start + j + 1, seed)[-1])
    return out
