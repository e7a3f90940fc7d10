"""Model benchmarks, measure-only (no target: they say what a step costs, not whether it is fast enough):
spectrogram front-end throughput (nnAudio CPU/CUDA vs torchaudio CPU, alternating in one process) and the
training step (forward + backward + AdamW) time and peak memory per preset and batch size.

Writes benchmarks/results/model.json, one row per case. Run: `pytest benchmarks/test_model.py -q -s`.
"""

from __future__ import annotations

import resource

import pytest
import torch
import torch.nn.functional as F
import torchaudio

from benchmarks.common import Timing, alternate, entry, load_average, sized, timings
from muser import MUSER
from muser.config import preset
from muser.models.spectrogram import make_frontend

CROP_SECONDS = 3.0
TEXT = "A song of {}, belongs to fast-rhythm music, whose style is inspiring."
GENRES = ["rock", "jazz", "blues", "pop", "metal", "reggae", "disco", "country"]


def _sync(device: str):
    return torch.cuda.synchronize if device == "cuda" else None


# ---- spectrogram front end ---------------------------------------------------------------------------


def _frontend(impl: str, device: str):
    cfg = preset("tiny")
    if impl == "nnaudio":
        return make_frontend(
            "mel", cfg.sample_rate, cfg.n_fft, cfg.hop_length, cfg.n_mels, 0.0, None, False
        ).to(device)
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop_length,
        n_mels=cfg.n_mels,
        power=2.0,
        norm="slaney",
        mel_scale="slaney",
        pad_mode="constant",
    ).to(device)


def _frontend_row(name: str, impls: list[str], device: str, batch: int, repeats: int) -> None:
    cfg = preset("tiny")
    wave = (torch.rand(batch, int(CROP_SECONDS * cfg.sample_rate)) * 2 - 1).to(device)
    layers = {f"{impl}_{device}": _frontend(impl, device) for impl in impls}
    with entry("model", name, measure_only=True) as row, torch.no_grad():
        t = alternate(
            {k: (lambda layer=layer: layer(wave)) for k, layer in layers.items()}, repeats, sync=_sync(device)
        )
        row.update(
            {
                "batch": batch,
                "crop_seconds": CROP_SECONDS,
                "n_fft": cfg.n_fft,
                "hop_length": cfg.hop_length,
                "n_mels": cfg.n_mels,
                "timing": timings(t),
                "audio_seconds_per_second_median": {
                    k: round(batch * CROP_SECONDS / v.median, 1) for k, v in t.items()
                },
            }
        )


@pytest.mark.measure_only
def test_measure_frontend_cpu():
    """nnAudio's DFT-as-conv1d front end against torchaudio's MelSpectrogram, both on CPU, alternating."""
    _frontend_row("frontend_cpu_b16", ["nnaudio", "torchaudio"], "cpu", batch=16, repeats=sized(7, 2))


@pytest.mark.measure_only
@pytest.mark.gpu
def test_measure_frontend_cuda():
    _frontend_row("frontend_cuda_b64", ["nnaudio"], "cuda", batch=64, repeats=20)


# ---- training step ------------------------------------------------------------------------------------


def _clip_loss(q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    logits = q @ k.T / 0.07
    target = torch.arange(q.shape[0], device=q.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2


def _step_case(name: str, batch: int, device: str, repeats: int) -> None:
    with entry("model", f"train_step_{name}_{device}_b{batch}", measure_only=True) as row:
        torch.manual_seed(0)
        model = MUSER.from_preset(name).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        sr = model.config.sample_rate
        wave = (torch.rand(batch, int(CROP_SECONDS * sr)) * 1.8 - 0.9).to(device)
        tokens = {
            k: v.to(device)
            for k, v in model.tokenize([TEXT.format(GENRES[i % 8]) for i in range(batch)]).items()
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
        load = load_average()
        t: Timing = alternate({"step": step}, repeats, sync=_sync(device))["step"]
        sec = t.median
        if device == "cuda":
            peak = {"peak_cuda_allocated_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
        else:  # process-wide high-water mark (Linux reports KiB); an upper bound for this case
            peak = {"peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        row.update(
            {
                "load_average_before": load,
                "timing": t.as_dict(),
                "seconds_per_step_median": round(sec, 4),
                "clips_per_second": round(batch / sec, 1),
                "parameters": sum(p.numel() for p in model.parameters()),
                "crop_seconds": CROP_SECONDS,
                "precision": "bf16 autocast" if device == "cuda" else "fp32",
                **peak,
            }
        )


@pytest.mark.measure_only
@pytest.mark.parametrize("batch", sized([16, 64], [2, 4]))
def test_measure_step_tiny_cpu(batch):
    _step_case("tiny", batch, "cpu", repeats=sized(3, 1))


@pytest.mark.measure_only
def test_measure_step_base_cpu():
    _step_case("base", sized(16, 2), "cpu", repeats=sized(3, 1))


@pytest.mark.measure_only
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["tiny", "base"])
@pytest.mark.parametrize("batch", [16, 64])
def test_measure_step_cuda(name, batch):
    _step_case(name, batch, "cuda", repeats=10)
