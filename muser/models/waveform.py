"""F_aud: the raw-waveform tower (learnable strided filterbank + residual 1-D CNN + mean/max pooling over
the valid frames)."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from muser.models.blocks import ResBlock
from muser.models.pooling import frame_mask, is_full, mean_max_pool
from muser.models.recompute import run_stage

# Each residual stage ends with a max-pool of this factor (SampleCNN uses 3: small receptive-field growth
# per stage, many stages; a 3-s crop at 16 kHz after a stride-10 front end is 4800 frames -> ~20 after 5).
POOL = 3


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
        self.stages = nn.Sequential(*(ResBlock(1, a, b, nn.MaxPool1d(POOL)) for a, b in pairwise(widths)))
        self.stride = stride
        self.out_dim = 2 * channels[-1]  # mean and max pooled
        self.grad_checkpointing = False  # recompute each residual stage in the backward (training only)

    @property
    def min_samples(self) -> int:
        """Shortest input that survives every pooling stage with at least one frame."""
        return self.stride * POOL ** len(self.stages)

    def valid_frames(self, length: torch.Tensor, frames: int) -> list[torch.Tensor]:
        """length: (B,) valid samples, frames: front-end frames of the padded batch -> the (B,) valid
        frame counts after the front end and after each stage (at least 1, at most the frames there).

        A frame is valid when the unpadded clip would have it: the front end's frame count for `length`
        samples, then floor division by each stage's pool (MaxPool1d drops a trailing partial window).
        """
        conv = self.frontend[0]
        # [-1]: the time axis, also in the inference copy's (1, k) 2-D front end (models/inference.py)
        k, s, p = conv.kernel_size[-1], conv.stride[-1], conv.padding[-1]
        n = torch.div(length.long() + 2 * p - k, s, rounding_mode="floor") + 1
        counts = [n.clamp(1, frames)]
        for _ in self.stages:
            n, frames = n // POOL, frames // POOL
            counts.append(n.clamp(1, max(frames, 1)))
        return counts

    def forward(self, wave: torch.Tensor, length: torch.Tensor | None = None) -> torch.Tensor:
        """wave: (B, T) float audio in [-1, 1], length: (B,) valid samples (the rest zero padding) or
        None for all -> (B, out_dim) mean and max over the valid frames.

        Padded frames still enter BatchNorm's batch statistics in training (only the pooling and the
        conv inputs are masked); in eval mode a padded clip embeds like the unpadded clip.
        """
        x = self.frontend(self.lift(wave))
        if is_full(length, wave.shape[-1]):
            for stage in self.stages:
                x = run_stage(stage, x, None, self.grad_checkpointing)
            return mean_max_pool(x.flatten(2))
        counts = self.valid_frames(length.to(x.device), x.shape[-1])
        ones = (1,) * (x.dim() - 2)  # masks broadcast over channels (and the planar copy's unit axis)
        for stage, n in zip(self.stages, counts, strict=False):
            valid = frame_mask(n, x.shape[-1]).view(x.shape[0], *ones, x.shape[-1])
            x = run_stage(stage, x, valid, self.grad_checkpointing)
        return mean_max_pool(x.flatten(2), frame_mask(counts[-1], x.shape[-1]))

    def lift(self, wave: torch.Tensor) -> torch.Tensor:
        """(B, T) audio -> the front end's input, (B, 1, T). The inference copy's planar tower
        (models/inference.py) lifts to (B, 1, 1, T) instead; everything after follows the rank."""
        return wave.unsqueeze(1)
