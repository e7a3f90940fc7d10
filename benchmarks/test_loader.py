"""Loader throughput: 10-s crops per second per worker from FLAC and PCM shards vs the naive per-file loader.

The naive loader is what the paper's code did: a torch Dataset over the original audio files that decodes
the whole file and resamples it on every item, then crops. It runs over WAV originals (decoding is nearly
free, so this baseline is generous) and over MP3 originals (what FMA and MagnaTagATune ship). Everything
runs in this process (one worker each), so the numbers are per-worker rates. Writes
benchmarks/results/loader.json.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from benchmarks.common import machine_info, write_result
from muser.shards.audio import to_int16
from muser.shards.reader import make_loader
from tests.shards import shardkit

N_TRACKS, SECONDS, FILE_RATE, RATE, CROP, REPEATS = 20, 30.0, 22050, 16000, 10.0, 3


class NaiveDataset(torch.utils.data.Dataset):
    """One item = read the whole file, resample it to RATE, take a random 10-s crop."""

    def __init__(self, files: list[Path], seed: int = 0):
        self.files, self.rng = files, random.Random(seed)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        x, rate = sf.read(self.files[i], dtype="float32")
        y = AF.resample(torch.from_numpy(x), rate, RATE)
        n = int(CROP * RATE)
        start = self.rng.randrange(max(1, len(y) - n + 1))
        return y[start : start + n]


def _corpus(root: Path) -> tuple[list[Path], list[dict]]:
    rng = np.random.default_rng(0)
    t = np.arange(int(SECONDS * FILE_RATE)) / FILE_RATE
    files, tracks = [], []
    for i in range(N_TRACKS):
        # tones plus noise: compresses like music rather than like silence or white noise
        tone = np.sin(2 * np.pi * (110 + 20 * i) * t) * np.sin(2 * np.pi * 0.5 * t)
        x = 0.3 * tone + 0.05 * rng.standard_normal(len(t))
        path = root / f"track_{i:03d}.wav"
        sf.write(path, x.astype(np.float32), FILE_RATE, subtype="PCM_16")
        sf.write(path.with_suffix(".mp3"), x.astype(np.float32), FILE_RATE, format="MP3")
        files.append(path)
        y = AF.resample(torch.from_numpy(x.astype(np.float32)), FILE_RATE, RATE).numpy()
        audio = to_int16(y)  # the shard writer's own float -> int16 convention
        meta = {"id": path.stem, "duration": len(audio) / RATE, "sample_rate": RATE, "genres": ["rock"]}
        tracks.append({"key": path.stem, "audio": audio, "meta": meta})
    return files, tracks


def _rate(fn, crops: int) -> float:
    start = time.perf_counter()
    fn()
    return crops / (time.perf_counter() - start)


def test_loader_throughput(tmp_path, one_thread):  # per-worker rates: DataLoader workers get one thread
    files, tracks = _corpus(tmp_path)
    folders = {
        codec: shardkit.write_folder(tmp_path / codec, tracks, codec=codec, sample_rate=RATE, per_shard=5)
        for codec in ("flac", "pcm")
    }

    naive = {"wav": NaiveDataset(files), "mp3": NaiveDataset([f.with_suffix(".mp3") for f in files])}
    steps, batch = 50, 8
    loaders = {
        # shuffle_buffer=1: the rate of decoding crops, not of filling a buffer that is never drained here
        codec: make_loader(
            folder, batch_size=batch, crop_seconds=CROP, num_workers=0, steps=steps, shuffle_buffer=1
        )
        for codec, folder in folders.items()
    }
    for loader in loaders.values():
        next(iter(loader))  # warm-up: imports, first file opens
    # Best of REPEATS interleaved runs: the machine is shared, and the best run is the least disturbed one.
    rates = {"naive_wav_resample": 0.0, "naive_mp3_resample": 0.0, "flac_shards": 0.0, "pcm_shards": 0.0}
    for _ in range(REPEATS):
        n = 2 * N_TRACKS
        for fmt, dataset in naive.items():
            best = _rate(lambda n=n, dataset=dataset: [dataset[i % N_TRACKS] for i in range(n)], n)
            rates[f"naive_{fmt}_resample"] = max(rates[f"naive_{fmt}_resample"], best)
        for codec, loader in loaders.items():
            rate = _rate(lambda loader=loader: sum(1 for _ in loader), steps * batch)
            rates[f"{codec}_shards"] = max(rates[f"{codec}_shards"], rate)
    assert all(loader.errors == 0 for loader in loaders.values())
    naive_rate = rates["naive_wav_resample"]

    result = {
        "crop_seconds": CROP,
        "tracks": N_TRACKS,
        "track_seconds": SECONDS,
        "file_rate": FILE_RATE,
        "model_rate": RATE,
        "repeats": REPEATS,
        "crops_per_s": rates,
        "ratio_vs_naive": {c: rates[f"{c}_shards"] / naive_rate for c in ("flac", "pcm")},
        "ratio_vs_naive_mp3": {
            c: rates[f"{c}_shards"] / rates["naive_mp3_resample"] for c in ("flac", "pcm")
        },
        "machine": machine_info(),  # the loader runs on CPU whatever `device` says: see `cpu`
    }
    write_result("loader", result)
    print(json.dumps(result, indent=2))
    assert rates["flac_shards"] > naive_rate and rates["pcm_shards"] > naive_rate
