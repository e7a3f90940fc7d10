"""One track as the finished bytes of its shard members: the writer's per-track job (decode, resample, count
clipping, encode, metadata JSON) and the tar framing around each member.

The job returns the exact bytes tarfile would append for both members (header, data, zero padding), so the
process that writes the shard only concatenates and hashes them: the framing work is spread over the
worker processes, and the bytes are those of `tarfile.addfile` with the settings below.
"""

from __future__ import annotations

import json
import math
import pickle
import tarfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from muser.shards.audio import AudioError, decode, encode

_MTIME = 1_700_000_000  # fixed member mtime: identical input gives identical tar bytes
_END = tarfile.NUL * (2 * tarfile.BLOCKSIZE)  # the two zero blocks that close an archive


@dataclass(frozen=True)
class Sample:
    blob: bytes | bytearray  # tar bytes of `{key}.{codec}` then `{key}.json`, ready to append to a shard
    num_samples: int  # audio samples at the shard's rate
    seconds: float
    clipped: int  # samples outside [-1, 1] that int16 encoding clipped (0 for in-range audio)
    labels: dict[str, Any] = field(default_factory=dict)  # the metadata's labels (for the vocabularies)
    silent: bool = False  # digital silence or near it (peak below SILENCE_DBFS): sharded, but warned about

    def __reduce_ex__(self, protocol: int) -> tuple:
        # Protocol 5 lets the worker pool send the tar bytes out of band, without copying them into the
        # pickle (and lets the receiver read them into their final buffer).
        blob = pickle.PickleBuffer(self.blob) if protocol >= 5 else self.blob
        return Sample, (blob, self.num_samples, self.seconds, self.clipped, self.labels, self.silent)


def encode_track(track: Any, sample_rate: int, codec: str) -> Sample | str:
    """Worker job: a Track -> its Sample, or the reason (one sentence) it cannot be sharded."""
    path = str(track.path)
    try:
        y = decode(path, sample_rate)
        clipped = _clipped(y)
        audio = encode(y, sample_rate, codec)
    except AudioError as err:
        msg = str(err)
        return msg[len(path) + 2 :] if msg.startswith(f"{path}: ") else msg
    except Exception as err:  # one odd file must not stop a 100k-track run: it is reported instead
        return f"{type(err).__name__}: {err}"
    meta = sample_meta(track, len(y), sample_rate, clipped)
    try:
        text = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode("utf-8")
    except (UnicodeEncodeError, TypeError, ValueError) as err:
        return f"its metadata cannot be written as UTF-8 JSON ({type(err).__name__}: {err})"
    blob = member(f"{track.id}.{codec}", audio) + member(f"{track.id}.json", text)
    return Sample(blob, len(y), len(y) / sample_rate, clipped, meta.get("labels") or {}, is_silent(y))


def sample_meta(track: Any, num_samples: int, sample_rate: int, clipped: int = 0) -> dict[str, Any]:
    """The metadata JSON of one sample: the track's fields plus id, source, split, duration, rate, samples."""
    meta = {
        **clean(track.meta),
        "id": track.id,
        "source": track.source,
        "split": track.split,
        "duration": round(num_samples / sample_rate, 6),
        "sample_rate": sample_rate,
        "num_samples": num_samples,
    }
    if clipped:  # only then: in-range audio keeps exactly the bytes it always had
        meta["extra"] = {**meta.get("extra", {}), "clipped_samples": clipped}
    return meta


# A whole track whose loudest sample stays below -60 dBFS (about 33 int16 steps) holds nothing a model can
# learn from: digital silence, a dropped channel, a mis-exported file. It is still sharded (the user may
# mean it), but listed, because its caption would teach the model that silence sounds like that genre.
SILENCE_DBFS = -60.0


def is_silent(y: np.ndarray) -> bool:
    """(T,) float audio in [-1, 1]: True when its peak is below SILENCE_DBFS."""
    if y.size == 0:
        return True
    peak = max(float(y.max()), -float(y.min()))
    return peak < 10 ** (SILENCE_DBFS / 20)


def _clipped(y: np.ndarray) -> int:
    # min/max first: one cheap pass for the usual in-range track, the count only when something is out.
    if y.size == 0 or (float(y.max()) <= 1.0 and float(y.min()) >= -1.0):
        return 0
    return int(np.count_nonzero(y > 1.0) + np.count_nonzero(y < -1.0))


def clean(meta: dict[str, Any]) -> dict[str, Any]:
    """Drop None and NaN values: missing metadata is absent, never "nan" (a pandas habit)."""
    out = {}
    for k, v in (meta or {}).items():
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        out[k] = clean(v) if isinstance(v, dict) else v
    return out


def member(name: str, data: bytes) -> bytes:
    """The bytes `tarfile.addfile` writes for one member in PAX format: header(s), data, zero padding."""
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), _MTIME, 0o444
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    pad = -len(data) % tarfile.BLOCKSIZE
    return b"".join(
        (info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape"), data, tarfile.NUL * pad)
    )


def tar_end(offset: int) -> bytes:
    """The bytes `TarFile.close` appends to an archive of `offset` bytes: two zero blocks, then zeros up
    to a whole record (20 blocks)."""
    return _END + tarfile.NUL * (-(offset + len(_END)) % tarfile.RECORDSIZE)


def closed_size(offset: int) -> int:
    """Size of an archive of `offset` bytes once closed."""
    return offset + len(tar_end(offset))
