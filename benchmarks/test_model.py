"""Model benchmarks: spectrogram front-end throughput (nnAudio CPU/CUDA vs torchaudio CPU) and the
training step (forward + backward + AdamW) time and peak memory per preset and batch size.

Writes benchmarks/results/model.json (entries merge across runs, so a GPU run adds to a CPU run).
Run: `pytest benchmarks/test_model.py -q -s`.
"""

from __future__ import annotations

import json
import resource
import time

import pytest
import torch
import torch.nn.functional as F
import torchaudio

from benchmarks.common import record
from muser import MUSER
from muser.config import preset
from muser.models.spectrogram import make_frontend

CROP_SECONDS = 3.0
TEXT = "A song of {}, belongs to fast-rhythm music, whose style is inspiring."
GENRES = ["rock", "jazz", "blues", "pop", "metal", "reggae", "disco", "country"]


def _record(section: str, key: str, value: dict) -> None:
    record("model", section, key, value)
    print(f"\n{section}/{key}: {json.dumps(value)}")


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _time(fn, device: str, repeats: int) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


# ---- spectrogram front end ---------------------------------------------------------------------------


def _frontend_case(impl: str, device: str, batch: int = 16) -> None:
    cfg = preset("tiny")
    sr = cfg.sample_rate
    wave = (torch.rand(batch, int(CROP_SECONDS * sr)) * 2 - 1).to(device)
    if impl == "nnaudio":
        layer = make_frontend("mel", sr, cfg.n_fft, cfg.hop_length, cfg.n_mels, 0.0, None, False).to(device)
    else:
        layer = torchaudio.transforms.MelSpectrogram(
            sample_rate=sr,
            n_fft=cfg.n_fft,
            hop_length=cfg.hop_length,
            n_mels=cfg.n_mels,
            power=2.0,
            norm="slaney",
            mel_scale="slaney",
            pad_mode="constant",
        ).to(device)
    with torch.no_grad():
        sec = _time(lambda: layer(wave), device, repeats=20 if device == "cuda" else 5)
    _record(
        "frontend",
        f"{impl}_{device}_b{batch}",
        {
            "seconds_per_batch": round(sec, 6),
            "audio_seconds_per_second": round(batch * CROP_SECONDS / sec, 1),
            "batch": batch,
            "n_fft": cfg.n_fft,
            "hop_length": cfg.hop_length,
            "n_mels": cfg.n_mels,
        },
    )


def test_frontend_nnaudio_cpu():
    _frontend_case("nnaudio", "cpu")


def test_frontend_torchaudio_cpu():
    _frontend_case("torchaudio", "cpu")


@pytest.mark.gpu
def test_frontend_nnaudio_cuda():
    _frontend_case("nnaudio", "cuda", batch=64)


# ---- training step ------------------------------------------------------------------------------------


def _clip_loss(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    logits = q @ k.T / 0.07
    target = torch.arange(q.shape[0], device=q.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _step_case(name: str, batch: int, device: str, repeats: int) -> None:
    torch.manual_seed(0)
    model = MUSER.from_preset(name).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sr = model.config.sample_rate
    wave = (torch.rand(batch, int(CROP_SECONDS * sr)) * 1.8 - 0.9).to(device)
    tokens = {
        k: v.to(device) for k, v in model.tokenize([TEXT.format(GENRES[i % 8]) for i in range(batch)]).items()
    }
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device == "cuda")

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with autocast:
            out = model({"audio": wave, **tokens})
            loss = _clip_loss(out["audio"], out["text"]) + _clip_loss(out["spec"], out["text"])
        loss.backward()
        opt.step()

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sec = _time(step, device, repeats)
    if device == "cuda":
        peak = {"peak_cuda_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    else:  # process-wide high-water mark (Linux reports KiB); an upper bound for this case
        peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    _record(
        "train_step",
        f"{name}_{device}_b{batch}",
        {
            "seconds_per_step": round(sec, 4),
            "clips_per_second": round(batch / sec, 1),
            "parameters": sum(p.numel() for p in model.parameters()),
            "crop_seconds": CROP_SECONDS,
            "precision": "bf16 autocast" if device == "cuda" else "fp32",
            **peak,
        },
    )


@pytest.mark.parametrize("batch", [16, 64])
def test_step_tiny_cpu(batch):
    _step_case("tiny", batch, "cpu", repeats=3)


def test_step_base_cpu_b16():
    _step_case("base", 16, "cpu", repeats=1)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tiny", "base"])
@pytest.mark.parametrize("batch", [16, 64])
def test_step_cuda(name, batch):
    _step_case(name, batch, "cuda", repeats=10)
