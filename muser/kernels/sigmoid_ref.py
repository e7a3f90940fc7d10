"""Readable PyTorch ground truth of the sigmoid (SigLIP) loss, and its CPU path.

Every pair (i, j) is an independent binary problem: is k_j the caption of q_i? It materialises the (M, N)
logits in fp32 (exact, O(M x N) memory); `sigmoid_triton.py` computes the same numbers tile by tile.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from muser.kernels.pairs import check_inputs, positive_mask


def check_bias(logit_bias: Tensor, q: Tensor) -> None:
    """ValueError unless logit_bias is a scalar tensor beside q."""
    if logit_bias.numel() != 1 or logit_bias.device != q.device:
        raise ValueError(
            f"sigmoid_loss: logit_bias must be a scalar tensor on {q.device}, got shape "
            f"{tuple(logit_bias.shape)} on {logit_bias.device}"
        )


def sigmoid_loss_ref(
    q: Tensor,
    k: Tensor,
    logit_scale: Tensor,
    logit_bias: Tensor,
    q_ids: Tensor | None = None,
    k_ids: Tensor | None = None,
    row_offset: int = 0,
) -> Tensor:
    """-(1/M) sum_ij log sigmoid(t_ij z_ij) as an fp32 scalar, z_ij = scale <q_i, k_j> + bias.

    q: (M, D), k: (N, D) L2-normalised; t_ij = +1 when k_ids[j] == q_ids[i] (or j == row_offset + i without
    ids), else -1. A row may have no positive: each pair is its own binary problem.
    """
    check_inputs(q, k, logit_scale, q_ids, k_ids, row_offset, loss="sigmoid_loss")
    check_bias(logit_bias, q)
    t = positive_mask(q_ids, k_ids, q.shape[0], k.shape[0], row_offset, q.device)
    z = logit_scale.float().reshape(()) * (q.float() @ k.float().T) + logit_bias.float().reshape(())
    return -F.logsigmoid(z.where(t, -z)).sum() / q.shape[0]
