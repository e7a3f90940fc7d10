"""Length-aware pooling shared by the audio towers: frame masks from valid sample counts, and global
mean+max pooling over valid frames only (zero padding must not dilute a short clip's embedding)."""

from __future__ import annotations

import torch


def mean_max_pool(x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """x: (B, C, N) features, valid: (B, N) bool (at least one True per row) or None for all ->
    (B, 2C) [mean, max] over the valid positions only."""
    if valid is None:
        return torch.cat([x.mean(dim=-1), x.amax(dim=-1)], dim=1)
    keep = valid[:, None, :]
    # Divide in fp32: under bf16 autocast a count of a few hundred positions is no longer exact.
    count = valid.sum(dim=-1, keepdim=True).float()
    mean = (x.masked_fill(~keep, 0.0).sum(dim=-1).float() / count).to(x.dtype)
    return torch.cat([mean, x.masked_fill(~keep, float("-inf")).amax(dim=-1)], dim=1)


def zero_invalid(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """x with zeros where `valid` (broadcastable to x) is False: masked_fill(~valid, 0) in value, but the
    result keeps x's memory layout (masked_fill with a broadcast mask returns a contiguous tensor, which
    turns every channels-last layer after it into a copy; measured 2x on the CPU inference copy)."""
    return torch.where(valid, x, 0.0)


def frame_mask(counts: torch.Tensor, frames: int) -> torch.Tensor:
    """counts: (B,) valid frames per row -> (B, frames) bool, True on the first counts[b] frames."""
    return torch.arange(frames, device=counts.device) < counts[:, None]


def is_full(length: torch.Tensor | None, samples: int) -> bool:
    """Whether a length tensor leaves every row unpadded (then the unmasked path runs, bit for bit)."""
    return length is None or bool((length >= samples).all())
