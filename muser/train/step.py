"""One optimiser step of pretraining: the model+loss objective (DDP-wrapped across ranks), gradient
accumulation over micro-batches, the cross-rank loss reduction and clipping, then the update."""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from muser.config import TrainConfig
from muser.distributed import all_reduce_mean

# Which embeddings each loss term reads; a tower no term reads gets no gradient (DDP must be told).
TERM_INPUTS = {"at": {"audio", "text"}, "st": {"spec", "text"}, "as": {"audio", "spec"}}


class Objective(nn.Module):
    """model + loss as one module, so DDP all-reduces the logit scales' gradients with the towers'."""

    def __init__(self, model: nn.Module, loss: nn.Module, amp_dtype: torch.dtype | None) -> None:
        super().__init__()
        self.model, self.loss, self.amp_dtype = model, loss, amp_dtype

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        device_type = self.model.device.type
        with torch.autocast(
            device_type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            emb = self.model(batch)
        # The contrastive loss runs in fp32: its log-sum-exp over the global batch is where bf16 hurts.
        emb = {k: v.float() for k, v in emb.items()}
        return self.loss(emb, batch["caption_id"])


def build_objective(
    model: nn.Module, loss: nn.Module, train: TrainConfig, world: int, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """This rank's objective (autocast per --precision on CUDA, DDP when world > 1) and the model it wraps.

    The returned model replaces the one passed in: --sync-bn converts the batch norms into a new module.
    """
    cuda = device.type == "cuda"
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train.precision) if cuda else None
    objective: nn.Module = Objective(model, loss, amp)
    if world > 1:
        if cuda and train.sync_bn:
            objective = nn.SyncBatchNorm.convert_sync_batchnorm(objective)
            model = objective.model
        used = set().union(*(TERM_INPUTS[t] for t in train.loss_terms))
        objective = DistributedDataParallel(
            objective,
            device_ids=[device.index] if cuda else None,
            find_unused_parameters=used != {"audio", "spec", "text"},
        )
    return objective, model


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    keys = ("audio", "length", "input_ids", "attention_mask", "caption_id")
    return {k: batch[k].to(device, non_blocking=True) for k in keys if k in batch}


def forward_backward(
    objective: nn.Module,
    stream: Any,
    scaler: torch.amp.GradScaler,
    train: TrainConfig,
    device: torch.device,
) -> tuple[torch.Tensor, float]:
    """Forward and backward over --grad-accum micro-batches of `stream`, the gradients summed.

    Returns (losses (A, 1 + T): per micro-batch the total then each term of train.loss_terms, detached;
    seconds spent waiting for the data).
    """
    losses, wait = [], 0.0
    for i in range(train.grad_accum):
        t = time.perf_counter()
        batch = _to_device(next(stream), device)
        wait += time.perf_counter() - t
        # DDP all-reduces gradients in backward; only the last micro-batch's backward needs to.
        sync = i == train.grad_accum - 1 or not isinstance(objective, DistributedDataParallel)
        with nullcontext() if sync else objective.no_sync():
            total_loss, parts = objective(batch)
            scaler.scale(total_loss / train.grad_accum).backward()
        losses.append(torch.stack([total_loss.detach(), *(parts[t].detach() for t in train.loss_terms)]))
    return torch.stack(losses), wait


def reduce_and_clip(
    losses: torch.Tensor,
    signum: int,
    scaler: torch.amp.GradScaler,
    optimizer: torch.optim.Optimizer,
    params: list[nn.Parameter],
    grad_clip: float,
) -> tuple[list[float], torch.Tensor]:
    """Average the losses and the stop signal over ranks, then unscale and clip the gradients.

    losses: (A, 1 + T) from forward_backward; signum: this rank's pending stop signal (0 when none).
    Returns ([total, *terms, stop flag] averaged over micro-batches and ranks (the flag > 0 when any rank
    was signalled, so all stop at the same step), the gradient norm before clipping).
    """
    # The flag rides on the loss all-reduce so a stop costs no extra collective per step.
    flag = torch.tensor([float(signum)], device=losses.device)
    stats = all_reduce_mean(torch.cat([losses.float().mean(0), flag]))
    scaler.unscale_(optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    return stats.tolist(), grad_norm


def apply_update(
    scaler: torch.amp.GradScaler,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss: nn.Module,
) -> dict[str, float]:
    """Step the optimiser (the fp16 scaler skips it on inf gradients) and the schedule, clamp the logit
    scales; returns the learning rate each named param group used in this step."""
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}  # before the schedule advances
    scaler.step(optimizer)
    scaler.update()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    loss.clamp_()
    return lrs
