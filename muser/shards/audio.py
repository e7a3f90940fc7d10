"""Audio in and out of shards: decode any file soundfile reads, downmix, resample, encode FLAC/PCM.

The one amplitude convention of the package holds here: everything returned is float32 mono in [-1, 1];
stored samples are int16 = round(x * 32768) clipped, read back as int16 / 32768 (see to_int16). The
resampler is soxr HQ (see the measurements above `resample`).
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from muser.config import CODECS

# libsndfile trusts the file length over a WAV header that promises more data and reports the shorter
# length silently; its extra_info keeps the evidence ("data : 176400 (should be 88178)").
_WAV_SHORT_DATA = re.compile(r"^data\s*:\s*(\d+)\s*\(should be (\d+)\)", re.MULTILINE)


_NOT_A_STREAM = "possibly a pipe?"


class AudioError(ValueError):
    """A file that cannot become a sample: unreadable, empty, truncated, non-finite or not audio."""


def load(path: str | Path) -> tuple[np.ndarray, int]:
    """Decode a whole file and downmix it: returns ((T,) float32 mono, the file's sample rate).

    Raises AudioError with the reason for anything that is not complete, non-empty audio.
    """
    path = Path(path)
    if not path.exists():
        raise AudioError(f"{path}: no such file")
    if not path.is_file():  # checked before opening: opening a FIFO would block until someone writes to it
        raise AudioError(f"{path}: not a regular file (a folder, FIFO or device)")
    if path.stat().st_size == 0:
        raise AudioError(f"{path}: empty file (0 bytes)")
    try:  # opened by us first: libsndfile words a refused open as "System error."
        with open(path, "rb"):
            pass
    except PermissionError:
        raise AudioError(f"{path}: permission denied (no read permission on the file)") from None
    except OSError as err:
        raise AudioError(f"{path}: cannot be read ({err.strerror or err})") from None
    try:
        with sf.SoundFile(path) as f:
            declared, rate, info = f.frames, f.samplerate, f.extra_info
            data = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError) as err:
        if _NOT_A_STREAM in str(err):
            # libsndfile's wording for a file cut short before its first audio frame (e.g. a truncated
            # MP3), misleading for a regular file we already checked
            raise AudioError(
                f"{path}: not readable as audio: truncated or corrupt (no decodable audio frame in its "
                f"{path.stat().st_size} bytes)"
            ) from err
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


# The resampler: soxr at quality HQ. benchmarks/test_sharding.py measures it against analytic signals,
# single-threaded, on the shared 2-core dev box (benchmarks/results/sharding.json; timings vary ~30%
# between runs there):
#                              22.05k->16k: x realtime  SNR   alias    44.1k->16k: x realtime  SNR   alias
#   soxr HQ (shipped)                           3703    71.5  139.8                     8979    71.5  142.5
#   torchaudio kaiser_best                       710   102.3  105.1                      982   109.3  118.0
#   torchaudio defaults                         2936    24.4   16.8                     4466    24.4   16.8
# (SNR: passband multi-tone SNR in dB; alias: attenuation in dB of a tone just above the new Nyquist.)
# soxr is 5-9x faster and rejects aliasing better. Its lower passband SNR is a gain error near the band
# edge, not noise: per tone (22.05k->16k) it is >129 dB up to 3 kHz and falls to ~64 dB at 6.8 kHz, where
# the level is 0.005 dB low; inaudible, and ample for 16-bit training audio. torchaudio's defaults (Hann,
# width 6, rolloff 0.99) leave aliases only ~17 dB down. soxr is single-threaded C and needs no torch,
# which keeps the writer's worker processes light.
# The torchaudio kaiser_best path stays for the benchmark's side-by-side comparison only.
SOXR_QUALITY = "HQ"
RESAMPLERS = ("soxr", "torchaudio")
# Kaiser-windowed sinc, 64 zero crossings, rolloff 0.9475, beta 14.77 (librosa's "kaiser_best").
TORCHAUDIO_KWARGS = {
    "lowpass_filter_width": 64,
    "rolloff": 0.9475,
    "resampling_method": "sinc_interp_kaiser",
    "beta": 14.769656459379492,
}


def resampler_name(resampler: str = "soxr") -> str:
    """The resampler and its settings as recorded in manifest options (a resume must not mix two)."""
    if resampler == "soxr":
        return f"soxr-{SOXR_QUALITY}"
    if resampler == "torchaudio":
        return "torchaudio-kaiser_best"
    raise ValueError(f"unknown resampler {resampler!r}; choose one of: {', '.join(RESAMPLERS)}")


def resample(x: np.ndarray, orig_rate: int, new_rate: int, resampler: str = "soxr") -> np.ndarray:
    """x: (T,) float32 at orig_rate -> (about T * new / orig,) float32 at new_rate, band-limited.

    soxr returns round(T * new / orig) samples; the torchaudio path (benchmarks only) returns the ceil.
    """
    resampler_name(resampler)  # validates the name before the same-rate shortcut can hide a typo
    if orig_rate == new_rate:
        return x
    x = np.ascontiguousarray(x, dtype=np.float32)
    if resampler == "soxr":
        return soxr.resample(x, orig_rate, new_rate, quality=SOXR_QUALITY)
    # Imported here so the writer's worker processes never load torch.
    import torch
    import torchaudio.functional as AF

    y = AF.resample(torch.from_numpy(x), orig_rate, new_rate, **TORCHAUDIO_KWARGS)
    return y.numpy().astype(np.float32, copy=False)


def decode(path: str | Path, sample_rate: int) -> np.ndarray:
    """A file -> (T,) float32 mono at sample_rate; AudioError for anything unusable."""
    x, rate = load(path)
    y = resample(x, rate, sample_rate)
    if len(y) == 0:
        raise AudioError(f"{path}: shorter than one sample at {sample_rate} Hz")
    return y


# One scale both ways, shared with the reader (decode.to_float), training and eval: float = int16 / 32768,
# so -32768 is exactly -1.0 and every int16 maps into [-1, 1). Encoding multiplies by the same 32768 and
# clips, so +1.0 becomes 32767 (1 - 2**-15 after decoding) and any int16 survives encode -> decode exactly.
INT16_SCALE = 32768.0


def to_int16(x: np.ndarray) -> np.ndarray:
    """(T,) float in [-1, 1] -> (T,) int16 = round(x * 32768) clipped to [-32768, 32767] (never wrapped)."""
    # x * 32768 is exact in float32 (a power of two), so no wider temporary is needed.
    return np.clip(np.round(np.asarray(x) * INT16_SCALE), -32768, 32767).astype(np.int16)


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


def _short(err: Exception) -> str:
    # libsndfile messages repeat the full path; the caller already names the file.
    text = str(err).strip()
    return text.split(": ", 1)[1] if text.startswith("Error opening") and ": " in text else text
