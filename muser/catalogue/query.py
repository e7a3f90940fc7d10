"""A query clip (a file or a waveform) as the eval-mode batches the reader would make of it, so a query is
embedded exactly like a catalogue track: int16 quantisation as in the shards, the same consecutive
chunks, the same padding (muser.shards.decode), then the eval features' pooling."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from muser.shards import decode
from muser.shards.audio import AudioError, resample, to_int16
from muser.shards.audio import decode as decode_file

BATCH = 32  # chunks per forward


def load_query(
    audio: str | Path | np.ndarray | torch.Tensor, rate: int, sample_rate: int | None = None
) -> np.ndarray:
    """(T,) int16 at `rate`: a file decoded, downmixed and resampled, or a mono float waveform in [-1, 1]
    at `sample_rate` (default `rate`) resampled and quantised."""
    if isinstance(audio, (str, Path)):
        path = Path(audio)
        if not path.is_file():
            raise ValueError(f"audio query {path} is not a file")
        try:
            x = decode_file(path, rate)
        except AudioError as err:
            raise ValueError(f"cannot read the audio query {path} ({err})") from None
    else:
        x = audio.detach().cpu().numpy() if isinstance(audio, torch.Tensor) else np.asarray(audio)
        if x.ndim == 2 and 1 in x.shape:
            x = x.reshape(-1)
        if x.ndim != 1 or not np.issubdtype(x.dtype, np.floating):
            raise ValueError(
                f"an audio query waveform must be mono float (T,) in [-1, 1], got {x.dtype} {tuple(x.shape)}"
            )
        peak = float(np.abs(x).max()) if x.size else 0.0
        if not peak <= 1.5:
            raise ValueError(
                f"an audio query must lie in [-1, 1] (float, full scale 1.0), got a peak of {peak:g}"
            )
        x = x.astype(np.float32)
        if sample_rate is not None and sample_rate != rate:
            x = resample(x, sample_rate, rate)
    if x.size == 0:
        raise ValueError("the audio query is empty")
    return to_int16(x)


def audio_batches(
    audio: str | Path | np.ndarray | torch.Tensor,
    rate: int,
    chunk_seconds: float,
    sample_rate: int | None = None,
) -> Iterator[tuple[str, dict]]:
    """("query", batch) pairs of the eval reader's form: audio (B, T) float32, length (B,), key, meta.

    The audio is read now, not when the batches are first asked for: a file that is not audio is refused
    before the caller loads its model (seconds), not after."""
    return _batches(load_query(audio, rate, sample_rate), rate, chunk_seconds)


def _batches(pcm: np.ndarray, rate: int, chunk_seconds: float) -> Iterator[tuple[str, dict]]:
    n = max(1, round(chunk_seconds * rate))
    pieces = decode.chunks(decode.Track(pcm.astype("<i2").tobytes(), "pcm", rate, rate), n)
    for i in range(0, len(pieces), BATCH):
        group = pieces[i : i + BATCH]
        # The reader pads each batch to its longest chunk, at least a second (muser.shards.reader).
        padded, length = decode.pad_stack(group, floor=min(n, rate))
        yield (
            "query",
            {
                "audio": torch.from_numpy(decode.to_float(padded)),
                "length": torch.from_numpy(length),
                "key": ["query"] * len(group),
                "meta": [{}] * len(group),
            },
        )
