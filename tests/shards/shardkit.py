"""Test helper: write tiny shard folders in the exact shard format of the contract, independent of the writer.

tar members `{key}.flac|pcm` + `{key}.json`, shards `{split}-{NNNNNN}.tar`, `manifest.json`, `errors.jsonl`.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf


def make_tracks(n: int, seconds: float | list[float], sample_rate: int = 8000, seed: int = 0) -> list[dict]:
    """n tracks of random int16 audio with FMA/MTT-like metadata; `audio` is the (T,) int16 ground truth."""
    rng = np.random.default_rng(seed)
    genres = ["rock", "jazz", "blues"]
    tags = ["guitar", "slow", "piano", "drums"]
    tracks = []
    for i in range(n):
        secs = seconds[i % len(seconds)] if isinstance(seconds, list) else seconds
        audio = rng.integers(-20000, 20000, size=round(secs * sample_rate), dtype=np.int16)
        key = f"track_{i:04d}"
        meta = {
            "id": key,
            "source": "test",
            "split": "train",
            "duration": len(audio) / sample_rate,
            "sample_rate": sample_rate,
            "num_samples": len(audio),
            "title": f"Song {i}",
            "artist": f"Artist {i % 4}",
            "genres": [genres[i % 3]],
            "parent_genres": ["popular music"],
            "tags": [tags[i % 4], tags[(i + 1) % 4]] if i % 5 else [],
            "labels": {"genre": genres[i % 3], "tags": [tags[i % 4]]} if i % 7 else {"tags": []},
        }
        tracks.append({"key": key, "audio": audio, "meta": meta})
    return tracks


def encode(audio: np.ndarray, sample_rate: int, codec: str) -> bytes:
    if codec == "pcm":
        return audio.astype("<i2").tobytes()
    buf = io.BytesIO()
    sf.write(buf, audio, sample_rate, format="FLAC", subtype="PCM_16")
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def write_folder(
    root: Path,
    tracks: list[dict],
    codec: str = "flac",
    sample_rate: int = 8000,
    per_shard: int = 4,
    split: str = "train",
    corrupt: set[str] = frozenset(),
) -> Path:
    """Write `tracks` as shards of `per_shard` samples; keys in `corrupt` get garbage audio bytes."""
    root.mkdir(parents=True, exist_ok=True)
    shards = []
    for s, start in enumerate(range(0, len(tracks), per_shard)):
        name = f"{split}-{s:06d}.tar"
        part = tracks[start : start + per_shard]
        with tarfile.open(root / name, "w") as tar:
            for t in part:
                data = (
                    b"not audio at all" * 50
                    if t["key"] in corrupt
                    else encode(t["audio"], sample_rate, codec)
                )
                _add(tar, f"{t['key']}.{codec}", data)
                # `raw_json` replaces the metadata member's bytes (malformed-member tests)
                _add(tar, f"{t['key']}.json", t.get("raw_json", json.dumps(t["meta"]).encode()))
        raw = (root / name).read_bytes()
        seconds = sum(t["meta"]["duration"] for t in part)
        digest = hashlib.sha256(raw).hexdigest()
        shards.append(
            {
                "name": name,
                "samples": len(part),
                "seconds": seconds,
                "sha256": digest,
                "bytes": len(raw),
                "keys": [t["key"] for t in part],
            }
        )
    labels: dict[str, Any] = {}
    for task, kind in (("genre", "single"), ("tags", "multi")):
        counts: Counter = Counter()
        for t in tracks:
            value = t["meta"].get("labels", {}).get(task)
            counts.update(value if isinstance(value, list) else [value] if value else [])
        labels[task] = {"type": kind, "classes": sorted(counts), "counts": dict(counts)}
    manifest = {
        "format_version": 1,
        "muser_version": "0.1.0",
        "sample_rate": sample_rate,
        "codec": codec,
        "sources": ["test"],
        "complete": True,
        "splits": {
            split: {"shards": shards, "samples": len(tracks), "seconds": sum(s["seconds"] for s in shards)}
        },
        "labels": labels,
        "errors": 0,
        "options": {},
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    (root / "errors.jsonl").write_text("")
    return root
