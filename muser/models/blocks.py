"""The residual block both audio towers stack: 1-D for the waveform, 2-D for the spectrogram."""

from __future__ import annotations

import torch
from torch import nn

from muser.models.pooling import zero_invalid

_LAYERS = {1: (nn.Conv1d, nn.BatchNorm1d), 2: (nn.Conv2d, nn.BatchNorm2d)}


class ResBlock(nn.Module):
    """conv3-BN-ReLU-conv3-BN plus a (1x1 when the width changes) shortcut, ReLU, then `pool`.

    dims: 1 (x: (B, C, N)) or 2 (x: (B, C, F, N)); pool: the stage's downsampling module.
    """

    def __init__(self, dims: int, c_in: int, c_out: int, pool: nn.Module) -> None:
        super().__init__()
        conv, norm = _LAYERS[dims]
        self.conv1 = conv(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = conv(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = norm(c_out)
        self.shortcut = (
            nn.Identity() if c_in == c_out else nn.Sequential(conv(c_in, c_out, 1, bias=False), norm(c_out))
        )
        self.pool = pool

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """valid: bool, broadcastable to x, False on frames made from zero padding; None = all valid."""
        if valid is None:
            y = torch.relu(self.bn1(self.conv1(x)))
            y = self.bn2(self.conv2(y))
            return self.pool(torch.relu(y + self.shortcut(x)))
        # Zero padded frames before each 3-tap conv, so the last valid frame sees the same zero its unpadded
        # clip gets from the conv's own padding, and before the pool, whose last window may straddle the
        # valid end (ceil mode): after the ReLU every valid value is >= 0, so a zero never wins the max.
        x = zero_invalid(x, valid)
        y = zero_invalid(torch.relu(self.bn1(self.conv1(x))), valid)
        y = self.bn2(self.conv2(y))
        return self.pool(zero_invalid(torch.relu(y + self.shortcut(x)), valid))
