"""The tri-modal training objective L(A,T) + L(S,T) (+ L(A,S)), its learnable scales (and, for the sigmoid
loss, biases), and gather-with-grad.

Each term is CLIP's symmetric softmax loss or SigLIP's pairwise sigmoid loss. Under torch.distributed every
rank computes the loss of its own rows against the gathered global columns (open_clip's local loss), which
costs O(B_local x B_global) instead of O(B_global^2) per rank.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
from torch import Tensor, nn

from muser.config import LOSS_TERMS, LOSSES
from muser.kernels import contrastive_loss, resolved_impl, sigmoid_loss

# term -> (row modality, column modality) in the model's output dict.
# Initial logit scale per loss: CLIP's temperature 0.07, and SigLIP's scale 10 (paired with its bias below).
INIT_SCALE = {"softmax": 1 / 0.07, "sigmoid": 10.0}
# SigLIP's initial bias. At batch B each positive faces B - 1 negatives; with bias 0 the first steps would
# spend themselves pushing every negative down (the loss starts near B log 2 per row). Starting at -10 makes
# sigmoid(z) ~ 0 for the negatives, i.e. starts at the prior "almost every pair is a negative", so early
# gradients go to the positives (Zhai et al. 2023, section 3.2).
INIT_BIAS = -10.0


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather along dim 0 whose backward sums every rank's gradient for this rank's slice.

    Gradient scale: rank r's loss L_r is the mean over its local rows, and the global loss is
    L = mean_r L_r. The backward all-reduce (sum) gives each embedding d(sum_r L_r)/de = W dL/de, W the world
    size; DDP then averages parameter gradients over ranks, dividing by W, so the parameters receive exactly
    dL/dtheta of one process at the global batch. (Averaging here as well would shrink them by W.)
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        rank, world = _world()
        ctx.rank, ctx.rows = rank, x.shape[0]
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.rank * ctx.rows : (ctx.rank + 1) * ctx.rows]


def _log_ceiling(max_scale: float) -> float:
    """The largest float32 log whose float32 exp does not exceed max_scale, so the clamp bounds the scale
    itself exactly (exp of float32 log(100) rounds to 100.0000076)."""
    bound = torch.tensor(math.log(max_scale), dtype=torch.float32)
    while float(bound.exp()) > max_scale:
        bound = torch.nextafter(bound, torch.tensor(-math.inf))
    return float(bound)


def gather_with_grad(x: Tensor) -> Tensor:
    """x: (B, ...) on every rank -> (W * B, ...) in rank order, differentiable; identity with one process."""
    if _world()[1] == 1:
        return x
    return _GatherWithGrad.apply(x)


def _gather_ids(ids: Tensor) -> Tensor:
    parts = [torch.empty_like(ids) for _ in range(_world()[1])]
    dist.all_gather(parts, ids.contiguous())
    return torch.cat(parts)


class TriModalLoss(nn.Module):
    """Sum of contrastive terms between the model's embeddings, one learnable logit scale per term.

    loss="softmax": each term is the symmetric, duplicate-aware CLIP loss (`contrastive_loss`);
    loss="sigmoid": SigLIP's pairwise loss (`sigmoid_loss`) with a learnable bias per term as well
    (`logit_biases[term]`, initialised to init_bias and never clamped).

    Each scale is stored as its log (`log_scales[term]`, initialised to log(init_scale), by default
    INIT_SCALE[loss]) and forward uses exp(log_scale), as CLIP does. The reason is the optimiser: Adam
    moves a parameter by about lr per step whatever its gradient's size, so a raw scale of 14.3 at lr 1e-3
    changes by ~0.007% per step and is effectively frozen; in log space the same step is a ~0.1% relative
    change of the scale, so the temperature actually learns (and can never become negative). `clamp_()`
    after each optimiser step bounds the log in place to [0, log(max_scale)], i.e. the scale to
    [1, max_scale]; forward never clamps (clamping there freezes the gradient at the ceiling, a fault of the
    original code).
    """

    def __init__(
        self,
        terms: tuple[str, ...] = ("at", "st"),
        init_scale: float | None = None,
        max_scale: float = 100.0,
        duplicate_aware: bool = True,
        impl: str = "auto",
        loss: str = "softmax",
        init_bias: float = INIT_BIAS,
    ) -> None:
        super().__init__()
        unknown = [t for t in terms if t not in LOSS_TERMS]
        if unknown or not terms or len(set(terms)) != len(terms):
            names = sorted(LOSS_TERMS)
            raise ValueError(f"loss terms must be distinct names from {names}, got {list(terms)}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        init_scale = INIT_SCALE[loss] if init_scale is None else init_scale
        if not 1.0 <= init_scale <= max_scale:
            raise ValueError(f"init_scale must lie in [1, max_scale={max_scale}], got {init_scale}")
        self.terms = tuple(terms)
        self.max_scale = float(max_scale)
        self.duplicate_aware = duplicate_aware
        self.impl = impl
        self.log_max = _log_ceiling(self.max_scale)
        self.kind = loss
        self.log_scales = nn.ParameterDict(
            {t: nn.Parameter(torch.tensor(math.log(init_scale))) for t in terms}
        )
        biased = terms if loss == "sigmoid" else ()
        self.logit_biases = nn.ParameterDict(
            {t: nn.Parameter(torch.tensor(float(init_bias))) for t in biased}
        )

    def logit_scale(self, term: str) -> Tensor:
        """The effective scale exp(log_scale) of one term as a differentiable scalar tensor."""
        return self.log_scales[term].exp()

    @torch.no_grad()
    def clamp_(self) -> None:
        """Clamp every log scale in place to [0, log(max_scale)] (scale in [1, max_scale]); the trainer
        calls it after each optimiser step. In place, so the optimiser state stays attached to the same
        tensor."""
        for p in self.log_scales.values():
            p.clamp_(0.0, self.log_max)

    def scales(self) -> dict[str, float]:
        """The effective scales exp(log_scale) per term, for logging."""
        return {t: float(p.detach().exp()) for t, p in self.log_scales.items()}

    def biases(self) -> dict[str, float]:
        """The sigmoid loss's bias per term, for logging ({} for the softmax loss)."""
        return {t: float(p.detach()) for t, p in self.logit_biases.items()}

    def implementation(self, device: torch.device | str) -> str:
        """Which loss implementation ("triton" or "reference") this objective runs on tensors of `device`."""
        return resolved_impl(device, "sigmoid" if self.kind == "sigmoid" else "contrastive", self.impl)

    def forward(
        self, emb: dict[str, Tensor], caption_ids: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """emb: {"audio", "spec", "text"} -> (B, D) L2-normalised; caption_ids: (B,) int64 or None.

        Returns (total, parts) with parts[term] the scalar loss of each term. Under torch.distributed the
        values are this rank's share: their mean over ranks is the loss of the global batch.
        """
        rank, world = _world()
        gathered: dict[str, Tensor] = {}

        def everyone(name: str) -> Tensor:
            # Each modality is gathered once even when two terms use it (text for "at" and "st").
            if name not in gathered:
                gathered[name] = gather_with_grad(emb[name])
            return gathered[name]

        ids_local = caption_ids if self.duplicate_aware else None
        if ids_local is not None:
            # The loader yields ids on CPU; NCCL gathers and the kernels need them beside the embeddings.
            ids_local = ids_local.to(next(iter(emb.values())).device)
        ids_global = _gather_ids(ids_local) if ids_local is not None and world > 1 else ids_local
        parts: dict[str, Tensor] = {}
        for term in self.terms:
            rows, cols = LOSS_TERMS[term]
            missing = [m for m in (rows, cols) if m not in emb]
            if missing:
                raise ValueError(
                    f"loss term {term!r} needs embeddings {missing}; the model output lacks them"
                )
            scale = self.logit_scale(term)
            # Caption ids describe text, so only the text pairs get duplicate-aware positives.
            ids, all_ids = (ids_local, ids_global) if cols == "text" else (None, None)
            offset = rank * emb[rows].shape[0]
            if self.kind == "sigmoid":
                # Every (row, column) pair is its own term, so this rank's rows against all columns is its
                # exact share: the mean over ranks of -(1/B_local) sum is -(1/B_global) sum over all pairs.
                bias = self.logit_biases[term]
                parts[term] = sigmoid_loss(
                    emb[rows], everyone(cols), scale, bias, ids, all_ids, offset, impl=self.impl
                )
                continue
            if world == 1:
                parts[term] = contrastive_loss(emb[rows], emb[cols], scale, ids, all_ids, impl=self.impl)
                continue
            # Local rows vs global columns gives the row losses of this rank's rows; local columns vs global
            # rows gives the column losses of its columns. Their mean over ranks is the symmetric loss.
            row_part = contrastive_loss(
                emb[rows], everyone(cols), scale, ids, all_ids, offset, symmetric=False, impl=self.impl
            )
            col_part = contrastive_loss(
                emb[cols], everyone(rows), scale, ids, all_ids, offset, symmetric=False, impl=self.impl
            )
            parts[term] = 0.5 * (row_part + col_part)
        total = torch.stack(list(parts.values())).sum()
        return total, parts
