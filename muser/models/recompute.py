"""Recomputing one residual stage's activations in the backward (PyTorch's "activation checkpointing",
`--grad-checkpointing`), safe with BatchNorm. Named recompute so that "checkpoint" in muser means one
thing: a saved training state (muser.train.checkpoint: last.pt, step-K.pt).

A checkpointed stage keeps only its input for the backward and runs its forward again there, trading one
extra forward of the stage for the memory of its activations (what allows large per-GPU batches).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint


@contextlib.contextmanager
def _scratch_batchnorm_statistics(module: nn.Module) -> Iterator[None]:
    """While recomputing, BatchNorm must normalise exactly as in the first forward (batch statistics,
    same saved tensors) but must not update its running statistics a second time. It runs against clones
    of its buffers, which are dropped afterwards; the real buffers are never written (an in-place restore
    would bump their version under the tensors autograd saved)."""
    names = ("running_mean", "running_var", "num_batches_tracked")
    norms = [m for m in module.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    real = [{n: getattr(m, n) for n in names} for m in norms]
    for m, buffers in zip(norms, real, strict=True):
        for n, b in buffers.items():
            setattr(m, n, None if b is None else b.clone())
    try:
        yield
    finally:
        for m, buffers in zip(norms, real, strict=True):
            for n, b in buffers.items():
                setattr(m, n, b)


def _contexts(module: nn.Module) -> tuple[contextlib.AbstractContextManager, ...]:
    """(context of the first forward, context of the recomputation), as torch's context_fn expects."""
    return contextlib.nullcontext(), _scratch_batchnorm_statistics(module)


def run_stage(
    stage: nn.Module, x: torch.Tensor, valid: torch.Tensor | None, checkpointed: bool
) -> torch.Tensor:
    """stage(x, valid), checkpointed when asked and when it matters (training with gradients).

    Non-reentrant checkpointing with the RNG state preserved, so a recomputed forward sees the same random
    numbers as the first one (no stage draws any today; the guarantee keeps it so).
    """
    if not (checkpointed and stage.training and torch.is_grad_enabled()):
        return stage(x, valid)
    return checkpoint(
        stage,
        x,
        valid,
        use_reentrant=False,
        preserve_rng_state=True,
        context_fn=functools.partial(_contexts, stage),
    )
