"""AdamW over the model's parameter groups plus the loss's logit scales; the warmup + cosine schedule.

Weight decay applies to matrices and convolution kernels only: biases, norm gains and the logit scales
are one-dimensional and decaying them pulls them toward zero for no regularising benefit (the CLIP recipe;
the scales are stored as logs, so decay would drag the temperature toward 1).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from muser.config import TrainConfig


def _split_decay(params: list[nn.Parameter]) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    decay = [p for p in params if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in params if p.requires_grad and p.ndim < 2]
    return decay, no_decay


def build_optimizer(
    groups: dict[str, list[nn.Parameter]],
    scales: list[nn.Parameter],
    cfg: TrainConfig,
    text_pretrained: bool = False,
) -> torch.optim.AdamW:
    """AdamW with one (decay, no-decay) pair of groups per model part and one group for the logit scales.

    groups: model.param_groups() ("waveform", "spectrogram", "text", "projections"); a pretrained text
    encoder trains at cfg.text_lr (default lr / 10) so the new towers do not wreck its features early on.
    Every optimiser group carries a "name" so logs and tests can find it.
    """
    text_lr = cfg.text_lr if cfg.text_lr is not None else (cfg.lr / 10 if text_pretrained else cfg.lr)
    param_groups: list[dict] = []
    seen: set[int] = set()
    for name, params in groups.items():
        for p in params:
            if id(p) in seen:
                raise ValueError(
                    f"parameter appears in two groups (second: {name!r}); groups must be disjoint"
                )
            seen.add(id(p))
        lr = text_lr if name == "text" else cfg.lr
        decay, no_decay = _split_decay(list(params))
        if decay:
            param_groups.append({"params": decay, "lr": lr, "weight_decay": cfg.weight_decay, "name": name})
        if no_decay:
            param_groups.append(
                {"params": no_decay, "lr": lr, "weight_decay": 0.0, "name": f"{name}/no_decay"}
            )
    trainable_scales = [p for p in scales if p.requires_grad]
    if trainable_scales:
        param_groups.append(
            {"params": trainable_scales, "lr": cfg.lr, "weight_decay": 0.0, "name": "logit_scales"}
        )
    if not param_groups:
        raise ValueError("the model has no trainable parameters")
    # betas (0.9, 0.98) and eps 1e-6 as in CLIP: a shorter second-moment memory is steadier at large batch.
    return torch.optim.AdamW(param_groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)


class WarmupCosine:
    """Learning-rate factor: linear warmup to 1 over `warmup` steps, then cosine decay to `min_ratio`.

    A callable object (not a lambda) so that LambdaLR.state_dict() stores its fields and a resumed run
    continues the same curve.
    """

    def __init__(self, warmup: int, total: int, min_ratio: float = 0.0) -> None:
        if total < 1:
            raise ValueError(f"the schedule needs at least one step, got {total}")
        self.warmup = max(0, min(warmup, total))
        self.total = total
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        # LambdaLR calls this with the number of completed optimiser steps, so step 0 is the first update.
        if step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        progress = min(1.0, (step - self.warmup) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, warmup: int, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup, total))
