"""Crop-aware decoding of shard audio members: read only the samples a crop needs from FLAC or raw PCM.

FLAC is opened over the member's bytes and sought to the crop (libsndfile seeks sample-accurately via the
frame headers), so a 3-s crop of a 30-s track decodes about 3 s of audio, not 30. PCM is sliced in place.
Everything leaves here as int16 (half the memory in shuffle buffers); `to_float` is the one int16 -> float
conversion of the reader.
"""

from __future__ import annotations

import io
import random

import numpy as np
import soundfile as sf

from muser.config import CODECS

AUDIO_EXTS = CODECS  # a member's extension is its codec


class DecodeError(ValueError):
    """A member that cannot give audio: unreadable bytes, wrong rate, empty track."""


def to_float(x: np.ndarray) -> np.ndarray:
    """(..., T) int16 -> float32 in [-1, 1); /32768 keeps every int16 (also -32768) inside the range."""
    return x.astype(np.float32) * (1.0 / 32768.0)


class Track:
    """One audio member opened lazily: `frames` comes from the FLAC header or the PCM byte count."""

    def __init__(self, data: bytes, codec: str, sample_rate: int, expected_rate: int):
        if codec not in AUDIO_EXTS:
            raise DecodeError(f"unknown audio member .{codec}")
        self.data, self.codec = data, codec
        if codec == "pcm":
            if len(data) % 2:
                raise DecodeError(f"PCM member has an odd byte count ({len(data)}), not int16")
            self.frames, self.rate, self._file = len(data) // 2, sample_rate, None
        else:
            try:
                self._file = sf.SoundFile(io.BytesIO(data))
            except Exception as exc:  # libsndfile raises several types for garbage bytes
                # its message starts with "Error opening <_io.BytesIO at 0x...>:", which says nothing here
                raise DecodeError(f"unreadable FLAC ({str(exc).rpartition('>: ')[2]})") from None
            if self._file.channels != 1:
                raise DecodeError(f"FLAC has {self._file.channels} channels, shards are mono")
            self.frames, self.rate = self._file.frames, self._file.samplerate
        if self.rate != expected_rate:
            raise DecodeError(f"sample rate {self.rate} Hz differs from the loader's {expected_rate} Hz")
        if self.frames <= 0:
            raise DecodeError("no audio samples")

    def read(self, start: int, n: int) -> np.ndarray:
        """Samples [start, start + n) clipped to the track: (<= n,) int16."""
        n = max(0, min(n, self.frames - start))
        if self.codec == "pcm":
            return np.frombuffer(self.data, dtype="<i2", count=n, offset=2 * start).astype(np.int16)
        try:
            self._file.seek(start)
            out = self._file.read(n, dtype="int16")
        except Exception as exc:
            raise DecodeError(f"FLAC stream broken at sample {start} ({exc})") from None
        if len(out) != n:
            raise DecodeError(f"FLAC stream ended at sample {start + len(out)} of {self.frames}")
        return out

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def random_crop(track: Track, n: int, rng: random.Random) -> np.ndarray:
    """A uniform random window of at most n samples: (min(n, frames),) int16. Never padded here: the
    batch pads to its longest sample, so a crop far longer than the tracks costs no memory."""
    start = rng.randrange(track.frames - n + 1) if track.frames > n else 0
    return track.read(start, n)


def chunks(track: Track, n: int) -> list[np.ndarray]:
    """Consecutive n-sample chunks covering the whole track, (<= n,) int16 each (the last one shorter)."""
    whole = track.read(0, track.frames)
    return [whole[i : i + n] for i in range(0, track.frames, n)]


def pad_stack(items: list[np.ndarray], floor: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(B, T) int16 zero-padded to the longest item (at least `floor` samples) and (B,) valid lengths."""
    lengths = np.array([len(x) for x in items], dtype=np.int64)
    out = np.zeros((len(items), max(int(lengths.max(initial=0)), floor)), dtype=np.int16)
    for row, x in enumerate(items):
        out[row, : len(x)] = x
    return out, lengths
