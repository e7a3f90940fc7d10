"""Waveform augmentations for pretraining: random gain, a circular time shift and a quiet mix of another
track of the batch, drawn per example in training mode and applied before both audio towers (the
spectrogram is computed from the augmented wave, so the two towers see the same audio). Identity in eval
mode, and with every knob at its off value the module draws no random numbers at all, so turning it off
reproduces a run made before it existed.

Lengths are respected: a row's shift wraps within its valid samples, and its zero padding stays zero
after the mix, so the towers' masks still describe the rows.
"""

from __future__ import annotations

import torch
from torch import nn


class WaveAugment(nn.Module):
    """gain_db: gain uniform in [-gain_db, +gain_db] dB per example (0: off). shift: circular shift by a
    uniform fraction of the row's valid length. mix: add another example of the batch at a weight uniform
    in [0, mix] (0: off); the caption stays the first track's, so the other is background, not a label."""

    def __init__(self, gain_db: float = 0.0, shift: bool = False, mix: float = 0.0) -> None:
        super().__init__()
        if gain_db < 0 or not 0.0 <= mix <= 1.0:
            raise ValueError(
                f"--wave-gain-db must be >= 0 and --wave-mix in [0, 1] (ModelConfig wave_gain_db, wave_mix), "
                f"got {gain_db:g} and {mix:g}"
            )
        self.gain_db, self.shift, self.mix = gain_db, shift, mix

    @property
    def active(self) -> bool:
        return self.gain_db > 0 or self.shift or self.mix > 0

    def forward(self, wave: torch.Tensor, length: torch.Tensor | None = None) -> torch.Tensor:
        """wave: (B, T) with length (B,) valid samples (None: all) -> (B, T), augmented in training mode."""
        if not self.training or not self.active:
            return wave
        b, t = wave.shape
        dev = wave.device
        valid = torch.full((b,), t, device=dev) if length is None else length.to(dev).clamp(1, t)
        pos = torch.arange(t, device=dev)
        inside = pos[None, :] < valid[:, None]
        if self.shift:
            offset = (torch.rand(b, device=dev) * valid).long()
            index = torch.where(inside, (pos[None, :] + offset[:, None]) % valid[:, None], pos[None, :])
            wave = torch.gather(wave, 1, index)
        if self.mix > 0 and b > 1:
            # A permutation without fixed points (a rotation by 1..b-1): no row is mixed with itself.
            other = (torch.arange(b, device=dev) + torch.randint(1, b, (1,), device=dev)) % b
            weight = torch.rand(b, 1, device=dev) * self.mix
            wave = torch.where(inside, wave + weight * wave[other], wave)
        if self.gain_db > 0:
            db = (torch.rand(b, 1, device=dev) * 2 - 1) * self.gain_db
            wave = wave * torch.pow(10.0, db / 20)
        return wave
