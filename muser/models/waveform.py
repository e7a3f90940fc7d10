"""F_aud: the raw-waveform tower (learnable strided filterbank + residual 1-D CNN + mean/max pooling)."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

# Each residual stage ends with a max-pool of this factor (SampleCNN uses 3: small receptive-field growth
# per stage, many stages; a 3-s crop at 16 kHz after a stride-10 front end is 4800 frames -> ~20 after 5).
POOL = 3


class ResBlock1d(nn.Module):
    """conv3-BN-ReLU-conv3-BN plus a (1x1 when the width changes) shortcut, ReLU, then max-pool."""

    def __init__(self, c_in: int, c_out: int, pool: int = POOL) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(c_in, c_out, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(c_out)
        self.conv2 = nn.Conv1d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(c_out)
        self.shortcut = (
            nn.Identity()
            if c_in == c_out
            else nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out))
        )
        self.pool = nn.MaxPool1d(pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.pool(torch.relu(y + self.shortcut(x)))


class WaveformEncoder(nn.Module):
    """Raw audio (B, T) float in [-1, 1] -> features (B, out_dim).

    The front end is a bank of `filters` learnable FIR filters of `kernel` samples applied with hop
    `stride` (a learnable analogue of an STFT magnitude frame); no amplitude rescaling happens anywhere,
    BatchNorm after the front end absorbs the overall level so the input convention stays [-1, 1].
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (32, 32, 64, 64, 128),
        filters: int = 32,
        kernel: int = 40,
        stride: int = 10,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("wave_channels must name at least one residual stage width")
        # Pad so that frame i is centred near sample i * stride (as a centred STFT would be).
        self.frontend = nn.Sequential(
            nn.Conv1d(1, filters, kernel, stride=stride, padding=(kernel - stride) // 2, bias=False),
            nn.BatchNorm1d(filters),
            nn.ReLU(inplace=True),
        )
        widths = (filters, *channels)
        self.stages = nn.Sequential(*(ResBlock1d(a, b) for a, b in pairwise(widths)))
        self.stride = stride
        self.out_dim = 2 * channels[-1]  # mean and max pooled

    @property
    def min_samples(self) -> int:
        """Shortest input that survives every pooling stage with at least one frame."""
        return self.stride * POOL ** len(self.stages)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """wave: (B, T) float audio in [-1, 1] -> (B, out_dim)."""
        x = self.stages(self.frontend(wave.unsqueeze(1)))
        return torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1)
