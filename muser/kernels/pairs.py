"""What both losses, on both paths (the PyTorch references and the Triton kernels), agree on: the input
checks and their error messages, and who is a positive pair (equal caption ids, or the diagonal when there
are none). Shared here so every path fails the same way and counts the same positives.
"""

from __future__ import annotations

import torch
from torch import Tensor


def check_inputs(
    q: Tensor,
    k: Tensor,
    logit_scale: Tensor,
    q_ids: Tensor | None,
    k_ids: Tensor | None,
    row_offset: int,
    loss: str = "contrastive_loss",
) -> None:
    """Raise ValueError with one actionable sentence (starting with the loss's name) when the arguments
    cannot describe a loss."""
    if q.dim() != 2 or k.dim() != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(
            f"{loss}: q and k must be (M, D) and (N, D) with the same D, got {tuple(q.shape)} "
            f"and {tuple(k.shape)}"
        )
    if q.shape[0] == 0 or k.shape[0] == 0:
        raise ValueError(f"{loss}: q and k need at least one row each")
    if q.dtype not in (torch.float32, torch.bfloat16, torch.float16) or k.dtype != q.dtype:
        raise ValueError(
            f"{loss}: q and k must share one dtype of float32/bfloat16/float16, got {q.dtype} and {k.dtype}"
        )
    if q.device != k.device or logit_scale.device != q.device:
        raise ValueError(f"{loss}: q, k and logit_scale must be on the same device")
    if logit_scale.numel() != 1:
        raise ValueError(f"{loss}: logit_scale must be a scalar tensor, got shape {tuple(logit_scale.shape)}")
    if (q_ids is None) != (k_ids is None):
        raise ValueError(f"{loss}: pass both q_ids and k_ids (caption ids) or neither")
    if q_ids is not None and k_ids is not None:
        if q_ids.shape != (q.shape[0],) or k_ids.shape != (k.shape[0],):
            raise ValueError(
                f"{loss}: q_ids must be ({q.shape[0]},) and k_ids ({k.shape[0]},), got "
                f"{tuple(q_ids.shape)} and {tuple(k_ids.shape)}"
            )
        if q_ids.dtype.is_floating_point or k_ids.dtype.is_floating_point:
            raise ValueError(f"{loss}: q_ids and k_ids must be integer tensors (caption ids)")
    elif row_offset < 0 or row_offset + q.shape[0] > k.shape[0]:
        row = 0 if row_offset < 0 else k.shape[0] - row_offset
        raise no_positive(
            "row", row, f"its positive column {row_offset + row} is outside k's {k.shape[0]} rows", loss
        )


def no_positive(side: str, index: int, why: str, loss: str = "contrastive_loss") -> ValueError:
    """The error for a row (query) or column (key) whose positive set P is empty."""
    fix = "check row_offset and the ids" if side == "row" else "pass symmetric=False or matching ids"
    return ValueError(f"{loss}: {side} {index} has no positive ({why}); {fix}")


def positive_mask(
    q_ids: Tensor | None, k_ids: Tensor | None, m: int, n: int, row_offset: int, device
) -> Tensor:
    """t: (M, N) bool, t_ij = [k_ids[j] == q_ids[i]], or [j == row_offset + i] without ids."""
    if q_ids is not None and k_ids is not None:
        return q_ids.to(device)[:, None] == k_ids.to(device)[None, :]
    rows = torch.arange(m, device=device)[:, None] + row_offset
    return rows == torch.arange(n, device=device)[None, :]


def explicit_ids(
    q_ids: Tensor | None, k_ids: Tensor | None, m: int, n: int, row_offset: int, device
) -> tuple[Tensor, Tensor]:
    """(M,) and (N,) int64 ids on device such that t_ij = [q_ids[i] == k_ids[j]] in both cases of
    positive_mask: without caption ids, row_offset + arange(M) and arange(N). The kernels only compare ids."""
    if q_ids is None or k_ids is None:
        qi = torch.arange(m, device=device, dtype=torch.int64) + row_offset
        return qi, torch.arange(n, device=device, dtype=torch.int64)
    return (
        q_ids.to(device=device, dtype=torch.int64).contiguous(),
        k_ids.to(device=device, dtype=torch.int64).contiguous(),
    )
