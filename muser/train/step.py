"""One optimiser step of pretraining: `train_step` runs the model+loss objective (DDP-wrapped across ranks)
over the step's micro-batches, reduces the losses (and any rank's stop request) over ranks, clips and
updates, and returns a `StepResult`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from muser.config import LOSS_TERMS, MODALITIES, TrainConfig
from muser.distributed import all_reduce_mean


class Objective(nn.Module):
    """model + loss as one module, so DDP all-reduces the logit scales' gradients with the towers'."""

    def __init__(self, model: nn.Module, loss: nn.Module, amp_dtype: torch.dtype | None) -> None:
        super().__init__()
        self.model, self.loss, self.amp_dtype = model, loss, amp_dtype
        # Only the towers some loss term reads run: w/o spec (--loss-terms at) skips the spectrogram tower.
        self.outputs = {modality for term in loss.terms for modality in LOSS_TERMS[term]}

    def forward(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        device_type = self.model.device.type
        with torch.autocast(
            device_type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        ):
            emb = self.model(batch, self.outputs)
        # The contrastive loss runs in fp32: its log-sum-exp over the global batch is where bf16 hurts.
        emb = {k: v.float() for k, v in emb.items()}
        return self.loss(emb, batch["caption_id"])


@dataclass
class TrainingState:
    """What one optimiser step acts on, built once by the trainer."""

    objective: nn.Module  # Objective, DDP-wrapped when world > 1
    loss: nn.Module  # the TriModalLoss inside it (its scales are clamped after each update)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    device: torch.device

    @property
    def params(self) -> list[nn.Parameter]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]


@dataclass(frozen=True)
class StepResult:
    """One step, averaged over its micro-batches and all ranks."""

    loss: float  # the total objective
    terms: dict[str, float]  # each loss term (at, st, as)
    grad_norm: float  # before clipping
    lrs: dict[str, float]  # learning rate of each named param group in this step
    data_wait: float  # seconds this rank waited for its micro-batches
    stop: bool  # some rank was asked to stop (SIGTERM/SIGINT): every rank stops after this step
    updated: bool  # False when the loss or the gradient was not finite (nothing was applied)


class DataBrokenOff(RuntimeError):
    """The data stream failed after a stop was requested (Ctrl-C also reaches the loader workers)."""


def build_objective(
    model: nn.Module, loss: nn.Module, train: TrainConfig, world: int, device: torch.device
) -> tuple[nn.Module, nn.Module]:
    """This rank's objective (autocast per --precision on CUDA, DDP when world > 1) and the model it wraps.

    The returned model replaces the one passed in: --sync-bn converts the batch norms into a new module.
    """
    cuda = device.type == "cuda"
    amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train.precision) if cuda else None
    inner = Objective(model, loss, amp)
    objective: nn.Module = inner
    if world > 1:
        if cuda and train.sync_bn:
            objective = nn.SyncBatchNorm.convert_sync_batchnorm(objective)
            model = objective.model
        # A tower no loss term reads does not run and gets no gradient, which DDP must be told about.
        objective = DistributedDataParallel(
            objective,
            device_ids=[device.index] if cuda else None,
            find_unused_parameters=inner.outputs != set(MODALITIES),
        )
    return objective, model


_BATCH_TENSORS = ("audio", "length", "input_ids", "attention_mask", "caption_id")


def train_step(
    t: TrainingState,
    batches: Iterator[dict[str, Any]],
    train: TrainConfig,
    stop_requested: Callable[[], bool],
) -> StepResult:
    """Forward and backward over --grad-accum micro-batches of `batches` (gradients summed), reduce over
    ranks, clip, and apply the update unless the loss or gradient is not finite.

    stop_requested: this rank's pending stop signal, read after the micro-batches (and when the data
    stream fails: then DataBrokenOff is raised, the step is not taken).
    """
    losses, wait = [], 0.0
    for i in range(train.grad_accum):
        started = time.perf_counter()
        try:
            batch = next(batches)
        except Exception as exc:
            if stop_requested():
                raise DataBrokenOff("the data stream stopped with the run") from exc
            raise
        batch = {k: batch[k].to(t.device, non_blocking=True) for k in _BATCH_TENSORS if k in batch}
        wait += time.perf_counter() - started
        # DDP all-reduces gradients in backward; only the last micro-batch's backward needs to.
        last = i == train.grad_accum - 1 or not isinstance(t.objective, DistributedDataParallel)
        with nullcontext() if last else t.objective.no_sync():
            total, parts = t.objective(batch)
            t.scaler.scale(total / train.grad_accum).backward()
        losses.append(torch.stack([total.detach(), *(parts[term].detach() for term in train.loss_terms)]))

    # The stop flag rides on the loss all-reduce, so a stop costs no extra collective per step.
    flag = torch.tensor([float(stop_requested())], device=t.device)
    total, *terms, stop = all_reduce_mean(torch.cat([torch.stack(losses).float().mean(0), flag])).tolist()
    t.scaler.unscale_(t.optimizer)
    grad_norm = float(torch.nn.utils.clip_grad_norm_(t.params, train.grad_clip))
    # The fp16 scaler skips inf-gradient steps by itself; anything else non-finite must not be applied.
    finite = math.isfinite(total) and (t.scaler.is_enabled() or math.isfinite(grad_norm))
    lrs = {g["name"]: g["lr"] for g in t.optimizer.param_groups}  # before the schedule advances
    if finite:
        t.scaler.step(t.optimizer)
        t.scaler.update()
        t.optimizer.zero_grad(set_to_none=True)
        t.scheduler.step()
        t.loss.clamp_()
    return StepResult(
        loss=total,
        terms=dict(zip(train.loss_terms, terms, strict=True)),
        grad_norm=grad_norm,
        lrs=lrs,
        data_wait=wait,
        stop=stop > 0,
        updated=finite,
    )
