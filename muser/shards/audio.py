"""Audio in and out of shards: decode any file soundfile reads, downmix, resample, encode FLAC/PCM.

The one amplitude convention of the package holds here: everything returned is float32 mono in [-1, 1]
(after encoding, int16 clipped from that range).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

CODECS = ("flac", "pcm")

# libsndfile trusts the file length over a WAV header that promises more data and reports the shorter
# length silently; its extra_info keeps the evidence ("data : 176400 (should be 88178)").
_WAV_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


class AudioError(ValueError):
    """A file that cannot become a sample: unreadable, empty, truncated, non-finite or not audio."""


def load(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a whole file and downmix it: returns ((T,) float32 mono, the file's sample rate).

    Raises AudioError with the reason for anything that is not complete, non-empty audio.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:
        with sf.SoundFile(path) as f:
            declared, rate, info = f.frames, f.samplerate, f.extra_info
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{path}: not readable as audio ({_short(err)})") from err
    m = _WAV_SHORT_DATA.search(info)
    if m and int(m.group(1)) > int(m.group(2)):
        raise AudioError(
            f"{path}: truncated (header promises {m.group(1)} data bytes, file holds {m.group(2)})"
        )
    # Compressed streams (mp3) can stop early without an error; a 1% slack keeps encoder padding legal.
    if declared > 0 and len(data) < 0.99 * declared:
        raise AudioError(f"{path}: truncated (decoded {len(data)} of {declared} frames)")
    if len(data) == 0:
        raise AudioError(f"{path}: no audio samples")
    if rate <= 0:
        raise AudioError(f"{path}: invalid sample rate {rate}")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if not np.isfinite(mono).all():
        raise AudioError(f"{path}: contains NaN or infinite samples")
    return np.ascontiguousarray(mono, dtype=np.float32), int(rate)


# Kaiser-windowed sinc, 64 zero crossings, rolloff 0.9475, beta 14.77 (librosa's "kaiser_best").
# torchaudio's default (Hann, width 6, rolloff 0.99) leaves a tone just above the new Nyquist only
# ~17 dB down (aliasing) and dulls the top octave; these settings give ~100 dB at ~3x the cost, still
# >1000x real time per core. benchmarks/test_sharding.py measures both against soxr.
RESAMPLE_KWARGS = {
    "lowpass_filter_width": 64,
    "rolloff": 0.9475,
    "resampling_method": "sinc_interp_kaiser",
    "beta": 14.769656459379492,
}


def resample(x: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """x: (T,) float32 at orig_rate -> (ceil(T * new / orig),) float32 at new_rate (band-limited sinc)."""
    if orig_rate == new_rate:
        return x
    y = AF.resample(torch.from_numpy(np.ascontiguousarray(x)), orig_rate, new_rate, **RESAMPLE_KWARGS)
    return y.numpy().astype(np.float32, copy=False)


def decode(path: str | Path, sample_rate: int) -> np.ndarray:
    """A file -> (T,) float32 mono at sample_rate; AudioError for anything unusable."""
    x, rate = load(path)
    y = resample(x, rate, sample_rate)
    if len(y) == 0:
        raise AudioError(f"{path}: shorter than one sample at {sample_rate} Hz")
    return y


def to_int16(x: np.ndarray) -> np.ndarray:
    """(T,) float in [-1, 1] -> (T,) int16; out-of-range values are clipped, not wrapped."""
    return np.round(np.clip(x, -1.0, 1.0) * 32767.0).astype(np.int16)


def from_int16(x: np.ndarray) -> np.ndarray:
    """(T,) int16 -> (T,) float32 in [-1, 1] (the inverse scale of to_int16)."""
    return x.astype(np.float32) / 32767.0


def encode(x: np.ndarray, sample_rate: int, codec: str) -> bytes:
    """(T,) float32 mono -> the bytes of one shard member: 16-bit FLAC, or raw little-endian int16 PCM.

    We quantise ourselves (to_int16) before handing samples to libsndfile, so FLAC and PCM hold exactly
    the same integers and the bytes do not depend on libsndfile's float conversion.
    """
    pcm = to_int16(x)
    if codec == "pcm":
        return pcm.astype("<i2").tobytes()
    if codec == "flac":
        buf = io.BytesIO()
        sf.write(buf, pcm, sample_rate, format="FLAC", subtype="PCM_16")
        return buf.getvalue()
    raise ValueError(f"unknown codec {codec!r}; choose one of: {', '.join(CODECS)}")


def decode_member(data: bytes, codec: str, sample_rate: int | None = None) -> tuple[np.ndarray, int | None]:
    """Bytes of a shard member -> ((T,) float32, rate); PCM has no header, so its rate is the caller's."""
    if codec == "pcm":
        return from_int16(np.frombuffer(data, dtype="<i2")), sample_rate
    if codec == "flac":
        x, rate = sf.read(io.BytesIO(data), dtype="int16")
        return from_int16(x), int(rate)
    raise ValueError(f"unknown codec {codec!r}; choose one of: {', '.join(CODECS)}")


def _short(err: Exception) -> str:
    # libsndfile messages repeat the full path; the caller already names the file.
    text = str(err).strip()
    return text.split(": ", 1)[1] if text.startswith("Error opening") and ": " in text else text
