"""Loader throughput: 10-s crops per second per worker from FLAC and PCM shards, against the limit (seeking
and decoding the same crops straight from in-memory FLAC members: what any FLAC loader must do) and against
the naive per-file loader. Targets: the FLAC loader reaches LIMIT_FRACTION of the limit, and both loaders
beat the naive one by OVER_NAIVE; all sides alternate in this process and skip on a loaded machine.

The naive loader is what the paper's code did: a torch Dataset over the original audio files that decodes
the whole file and resamples it on every item, then crops. It runs over WAV originals (decoding is nearly
free, so this baseline is generous) and over MP3 originals (what FMA and MagnaTagATune ship). Everything
runs in this process (one worker each), so the numbers are per-worker rates. Writes
benchmarks/results/loader.json.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from benchmarks.common import ONE_CORE, alternate, entry, quiet, sized, still_quiet, timings
from muser.shards.audio import encode, to_int16
from muser.shards.decode import Track, random_crop
from muser.shards.reader import make_loader
from tests.shards import shardkit

N_TRACKS, SECONDS, FILE_RATE, RATE, CROP, REPEATS = sized(20, 4), 30.0, 22050, 16000, 10.0, sized(3, 1)
LIMIT_FRACTION = 0.6  # tar reading, captions, tokenising and batching may cost at most 40% beside decoding
OVER_NAIVE = 2.0


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


def _limit(tracks: list[dict], crops: int, seed: int = 0):
    """The seek+decode limit: `crops` random 10-s crops read straight from in-memory FLAC members
    (open, seek, decode: the work no FLAC loader can avoid), with nothing around it."""
    members = [encode(t["audio"], RATE, "flac") for t in tracks]
    n = int(CROP * RATE)

    def run() -> None:
        rng = random.Random(seed)
        for i in range(crops):
            track = Track(members[i % len(members)], "flac", RATE, RATE)
            random_crop(track, n, rng)
            track.close()

    return run


def test_loader_vs_seek_decode_limit(tmp_path, one_thread):  # per-worker rates: workers get one thread
    with entry("loader", "crops_per_worker") as row:
        quiet(row, ONE_CORE)
        files, tracks = _corpus(tmp_path)
        folders = {
            codec: shardkit.write_folder(tmp_path / codec, tracks, codec=codec, sample_rate=RATE, per_shard=5)
            for codec in ("flac", "pcm")
        }
        steps, batch = sized(50, 5), 8
        crops = steps * batch
        loaders = {
            # shuffle_buffer=1: the rate of decoding crops, not of filling a buffer that is never drained
            codec: make_loader(
                folder, batch_size=batch, crop_seconds=CROP, num_workers=0, steps=steps, shuffle_buffer=1
            )
            for codec, folder in folders.items()
        }
        naive = {"wav": NaiveDataset(files), "mp3": NaiveDataset([f.with_suffix(".mp3") for f in files])}
        n_naive = sized(2 * N_TRACKS, N_TRACKS)
        sides = {
            "flac_shards": lambda: sum(1 for _ in loaders["flac"]),
            "flac_seek_decode_limit": _limit(tracks, crops),
            "pcm_shards": lambda: sum(1 for _ in loaders["pcm"]),
            "naive_wav_resample": lambda: [naive["wav"][i % N_TRACKS] for i in range(n_naive)],
            "naive_mp3_resample": lambda: [naive["mp3"][i % N_TRACKS] for i in range(n_naive)],
        }
        t = alternate(sides, REPEATS)
        still_quiet(row, ONE_CORE)
        assert all(loader.errors == 0 for loader in loaders.values())
        count = {k: (n_naive if k.startswith("naive") else crops) for k in sides}
        rates = {k: round(count[k] / v.median, 1) for k, v in t.items()}
        row.update(
            {
                "crop_seconds": CROP,
                "tracks": N_TRACKS,
                "track_seconds": SECONDS,
                "file_rate": FILE_RATE,
                "model_rate": RATE,
                "timing": timings(t),
                "crops_per_s_median": rates,
                "crops_per_s_best": {k: round(count[k] / v.min, 1) for k, v in t.items()},
            }
        )
        row.target(
            "FLAC loader / FLAC seek+decode limit (crops/s, median)",
            rates["flac_shards"] / rates["flac_seek_decode_limit"],
            at_least=LIMIT_FRACTION,
        )
        row.target(
            "FLAC loader / naive WAV Dataset (crops/s, median)",
            rates["flac_shards"] / rates["naive_wav_resample"],
            at_least=OVER_NAIVE,
        )
        row.target(
            "PCM loader / naive WAV Dataset (crops/s, median)",
            rates["pcm_shards"] / rates["naive_wav_resample"],
            at_least=OVER_NAIVE,
        )
