"""The baselines every result is compared with: MFCC statistics and the same architecture with random weights.

MFCC: 20 coefficients (torchaudio.transforms.MFCC over a 64-band log-mel), summarised per track by the
mean and standard deviation over all valid frames (the classic "bag of frames" baseline). Chunks are
reduced to per-chunk first and second moments here; features.chunk_average pools them over a track
weighted by valid length, and `mfcc_finalize` turns the pooled moments into (mean, std).
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio

N_MFCC = 20


class MFCCStats(torch.nn.Module):
    """audio (B, T) in [-1, 1], length (B,) valid samples -> (B, 2 * n_mfcc) [mean, mean of squares]."""

    def __init__(self, sample_rate: int, n_mfcc: int = N_MFCC, hop_length: int = 512) -> None:
        super().__init__()
        self.hop_length = hop_length
        self.mfcc = torchaudio.transforms.MFCC(
            sample_rate=sample_rate,
            n_mfcc=n_mfcc,
            melkwargs={"n_fft": 2048, "hop_length": hop_length, "n_mels": 64, "center": True},
        )

    @torch.no_grad()
    def forward(self, audio: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        coeffs = self.mfcc(audio.float())  # (B, n_mfcc, frames)
        frames = coeffs.shape[-1]
        # Frames whose centre lies in the zero padding of a short last chunk would drag the mean to silence.
        valid = (length.clamp(min=1) + self.hop_length - 1) // self.hop_length
        mask = (torch.arange(frames)[None, :] < valid[:, None]).to(coeffs.dtype)  # (B, frames)
        count = mask.sum(dim=1, keepdim=True).clamp(min=1.0)
        mean = (coeffs * mask[:, None, :]).sum(-1) / count
        meansq = (coeffs.square() * mask[:, None, :]).sum(-1) / count
        return torch.cat([mean, meansq], dim=1)


def mfcc_finalize(pooled: np.ndarray) -> np.ndarray:
    """(N, 2 * n_mfcc) pooled [mean, mean of squares] -> (N, 2 * n_mfcc) [mean, std]."""
    half = pooled.shape[1] // 2
    mean, meansq = pooled[:, :half], pooled[:, half:]
    std = np.sqrt(np.maximum(meansq - mean**2, 0.0))
    return np.concatenate([mean, std], axis=1).astype(np.float32)


def random_model(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """The architecture and tokenizer of `model` (a MUSER) with freshly initialised weights, seeded: what
    pretraining started from, so the difference to it is what the training learned."""
    from muser.models.muser import MUSER

    torch.manual_seed(seed)
    return MUSER.from_config(model.config, tokenizer=model.tokenizer).eval()
