"""F_spec: the spectrogram tower (nnAudio log-mel or CQT front end on the model's device, per-band
normalisation, SpecAugment in training only, 2-D residual CNN, mean/max pooling over the valid frames).

Unlike the paper's released code there is no image-style resize or centre crop: the whole clip and the
whole band (up to Nyquist unless `fmax` says otherwise) reach the CNN, on a log scale.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from nnAudio.features import CQT1992v2, MelSpectrogram
from torch import nn

from muser.config import SAMPLE_RATE, ModelConfig
from muser.models.blocks import ResBlock
from muser.models.pooling import frame_mask, is_full, mean_max_pool, zero_invalid
from muser.models.recompute import run_stage

LOG_EPS = 1e-6  # floor of log(power + eps): about -60 dB below a full-scale bin, keeps silence finite
CQT_DEFAULT_FMIN = 32.70  # C1, the usual lowest CQT bin when the config asks for fmin = 0


def make_frontend(
    kind: str,
    sample_rate: int,
    n_fft: int,
    hop_length: int,
    n_bins: int,
    fmin: float,
    fmax: float | None,
    trainable: bool,
    bins_per_octave: int = 12,
) -> nn.Module:
    """An nnAudio front end: (B, T) -> (B, F, frames) power (mel) or magnitude (CQT).

    Zero ("constant") padding at the edges: the loader pads short chunks with zeros too, and it works for
    any clip length, whereas reflect padding needs clips longer than half the longest kernel.
    """
    nyquist = sample_rate / 2
    if fmax is not None and not 0 <= fmin < fmax <= nyquist:
        raise ValueError(f"need 0 <= fmin < fmax <= {nyquist:g} Hz (Nyquist); got fmin={fmin}, fmax={fmax}")
    if kind == "mel":
        # htk=False + norm=1 is librosa's (and torchaudio's norm="slaney", mel_scale="slaney") filterbank.
        return MelSpectrogram(
            sr=sample_rate,
            n_fft=n_fft,
            n_mels=n_bins,
            hop_length=hop_length,
            window="hann",
            center=True,
            pad_mode="constant",
            power=2.0,
            htk=False,
            fmin=fmin,
            fmax=fmax,
            norm=1,
            trainable_mel=trainable,
            trainable_STFT=trainable,
            verbose=False,
        )
    if kind == "cqt":
        low = fmin if fmin > 0 else CQT_DEFAULT_FMIN
        top = fmax if fmax is not None else nyquist
        # As many bins as fit below the top frequency (nnAudio refuses bins above Nyquist).
        fit = math.floor(bins_per_octave * math.log2(top / low))
        if fit < 1:
            raise ValueError(f"no CQT bin fits between fmin={low} Hz and fmax={top} Hz")
        return CQT1992v2(
            sr=sample_rate,
            hop_length=hop_length,
            fmin=low,
            n_bins=min(n_bins, fit) if n_bins > 0 else fit,
            bins_per_octave=bins_per_octave,
            pad_mode="constant",
            trainable=trainable,
            verbose=False,
        )
    raise ValueError(f"unknown spec_kind {kind!r}; choose mel or cqt")


class SpecAugment(nn.Module):
    """Frequency and time masks (Park et al. 2019), drawn per example; identity in eval mode.

    Masked cells are set to 0, the mean after per-band normalisation, so a mask carries no energy cue.
    """

    def __init__(self, masks: int = 2, freq_width: int = 8, time_width: int = 20) -> None:
        super().__init__()
        self.masks, self.freq_width, self.time_width = masks, freq_width, time_width

    def _mask(self, b: int, size: int, width: int, device: torch.device) -> torch.Tensor:
        """(b, size) bool: union of `masks` random intervals of width < `width` per row."""
        width = min(width, size)
        w = torch.randint(0, width + 1, (b, self.masks, 1), device=device)
        start = (torch.rand(b, self.masks, 1, device=device) * (size - w + 1)).long()
        pos = torch.arange(size, device=device)
        return ((pos >= start) & (pos < start + w)).any(dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, F, frames) -> same shape, masked in training mode."""
        if not self.training or self.masks == 0:
            return x
        b, f, t = x.shape
        freq = self._mask(b, f, self.freq_width, x.device)[:, :, None]
        time = self._mask(b, t, self.time_width, x.device)[:, None, :]
        return x.masked_fill(freq | time, 0.0)


def make_specaugment(on: bool, masks: int, freq_width: int, time_width: int) -> SpecAugment:
    """The SpecAugment of ModelConfig's specaugment fields (off: no masks, the identity)."""
    return SpecAugment(masks if on else 0, freq_width, time_width)


class SpectrogramEncoder(nn.Module):
    """Raw audio (B, T) float in [-1, 1] -> features (B, out_dim) through a log spectrogram."""

    def __init__(
        self,
        sample_rate: int = SAMPLE_RATE,
        kind: str = ModelConfig.spec_kind,
        n_fft: int = ModelConfig.n_fft,
        hop_length: int = ModelConfig.hop_length,
        n_mels: int = ModelConfig.n_mels,
        fmin: float = ModelConfig.fmin,
        fmax: float | None = ModelConfig.fmax,
        trainable_filters: bool = ModelConfig.trainable_filters,
        channels: tuple[int, ...] = ModelConfig.spec_channels,
        cqt_bins_per_octave: int = ModelConfig.cqt_bins_per_octave,
        specaugment: bool = ModelConfig.specaugment,
        specaug_masks: int = ModelConfig.specaug_masks,
        specaug_freq_width: int = ModelConfig.specaug_freq_width,
        specaug_time_width: int = ModelConfig.specaug_time_width,
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("spec_channels must name at least one residual stage width")
        self.frontend = make_frontend(
            kind, sample_rate, n_fft, hop_length, n_mels, fmin, fmax, trainable_filters, cqt_bins_per_octave
        )
        self.n_bins = self._count_bins()
        # Per-band normalisation: BatchNorm1d over the frequency axis learns each band's mean/variance of
        # log power over the data (affine), so quiet high bands are not drowned by the bass.
        self.band_norm = nn.BatchNorm1d(self.n_bins)
        self.specaugment = make_specaugment(
            specaugment, specaug_masks, specaug_freq_width, specaug_time_width
        )
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels[0], 3, padding=1, bias=False),
            nn.BatchNorm2d(channels[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),  # halve both axes before the (costly) residual stages
        )
        widths = (channels[0], *channels)
        # ceil_mode keeps the last odd row/column (the top mel band, the clip's last frame).
        self.stages = nn.Sequential(
            *(ResBlock(2, a, b, nn.MaxPool2d(2, ceil_mode=True)) for a, b in pairwise(widths))
        )
        self.out_dim = 2 * channels[-1]
        self.grad_checkpointing = False  # recompute each residual stage in the backward (training only)

    def _count_bins(self) -> int:
        if isinstance(self.frontend, MelSpectrogram):
            return int(self.frontend.mel_basis.shape[0])
        return int(self.frontend.cqt_kernels_real.shape[0])

    def valid_frames(self, length: torch.Tensor, frames: int) -> list[torch.Tensor]:
        """length: (B,) valid samples, frames: spectrogram frames of the padded batch -> the (B,) valid
        frame counts of the spectrogram, after the stem and after each stage (at least 1 each).

        Frames are those of the unpadded clip: the centred transform pads `pad` zeros each side and
        slides a `window`-sample kernel by `hop`, so frames past that count only add padding; each
        ceil-mode 2x2 pool then keeps ceil(n / 2).
        """
        if isinstance(self.frontend, MelSpectrogram):
            stft = self.frontend.stft
            pad, window, hop = stft.pad_amount, stft.wsin.shape[-1], stft.stride
        else:
            pad = self.frontend.kernel_width // 2
            window, hop = self.frontend.cqt_kernels_real.shape[-1], self.frontend.hop_length
        n = (torch.div(length.long() + 2 * pad - window, hop, rounding_mode="floor") + 1).clamp(1, frames)
        counts = [n]
        for _ in range(1 + len(self.stages)):  # the stem's pool, then one per stage
            n, frames = (n + 1) // 2, (frames + 1) // 2
            counts.append(n.clamp(1, frames))
        return counts

    def log_spectrogram(self, wave: torch.Tensor) -> torch.Tensor:
        """wave: (B, T) -> (B, F, frames) log power (mel) or log magnitude squared (CQT), float32."""
        # The front end runs in fp32 even under bf16 autocast: power spectra span ~10 decades and a
        # bf16 STFT (8-bit mantissa) would wipe out the quiet bands before the log.
        with torch.autocast(device_type=wave.device.type, enabled=False):
            spec = self.frontend(wave.float())
            if isinstance(self.frontend, CQT1992v2):
                spec = spec.pow(2)
            return torch.log(spec + LOG_EPS)

    def forward(self, wave: torch.Tensor, length: torch.Tensor | None = None) -> torch.Tensor:
        """wave: (B, T) float audio in [-1, 1], length: (B,) valid samples (the rest zero padding) or
        None for all -> (B, out_dim) mean and max over the whole band and the valid frames.

        Padded frames still enter BatchNorm's batch statistics in training (only the pooling and the
        conv inputs are masked); in eval mode a padded clip embeds like the unpadded clip.
        """
        x = self.specaugment(self.band_norm(self.log_spectrogram(wave))).unsqueeze(1)
        if is_full(length, wave.shape[-1]):
            x = self.stem(x)
            for stage in self.stages:
                x = run_stage(stage, x, None, self.grad_checkpointing)
            return mean_max_pool(x.flatten(2))  # over the whole time-frequency plane
        counts = self.valid_frames(length.to(x.device), x.shape[-1])
        valid = frame_mask(counts[0], x.shape[-1])[:, None, None, :]
        conv, bn, relu, pool = self.stem  # masked as in ResBlock: before the conv and the ceil pool
        x = pool(zero_invalid(relu(bn(conv(zero_invalid(x, valid)))), valid))
        for stage, n in zip(self.stages, counts[1:], strict=False):
            x = run_stage(stage, x, frame_mask(n, x.shape[-1])[:, None, None, :], self.grad_checkpointing)
        keep = frame_mask(counts[-1], x.shape[-1])[:, None, :].expand(-1, x.shape[2], -1)
        return mean_max_pool(x.flatten(2), keep.flatten(1))  # (B, F' * frames') positions
