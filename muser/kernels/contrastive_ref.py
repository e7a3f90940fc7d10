"""Readable PyTorch ground truth of the duplicate-aware contrastive loss, and the CPU path.

It materialises the (M, N) logits in fp32, so it is exact and simple but O(M x N) in memory; the Triton
kernels in `contrastive_triton.py` compute the same numbers without that matrix. The input checks and
the definition of a positive pair, shared by both paths of both losses, live in `pairs.py`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from muser.kernels.pairs import check_inputs, no_positive, positive_mask


def contrastive_loss_ref(
    q: Tensor,
    k: Tensor,
    logit_scale: Tensor,
    q_ids: Tensor | None = None,
    k_ids: Tensor | None = None,
    row_offset: int = 0,
    symmetric: bool = True,
) -> Tensor:
    """Mean duplicate-aware InfoNCE over rows (and columns when symmetric and M == N), as an fp32 scalar.

    q: (M, D) and k: (N, D) L2-normalised embeddings; logit_scale: scalar tensor, s_ij = scale * <q_i, k_j>.
    Row loss_i = logsumexp_j s_ij - mean_{j in P(i)} s_ij with P(i) = {j : k_ids[j] == q_ids[i]}, or
    {row_offset + i} without ids. Symmetric: (mean row loss + mean column loss) / 2.
    """
    check_inputs(q, k, logit_scale, q_ids, k_ids, row_offset)
    m, n = q.shape[0], k.shape[0]
    t = positive_mask(q_ids, k_ids, m, n, row_offset, q.device)
    row_count = t.sum(1)
    if not bool(row_count.all()):
        row = int((row_count == 0).nonzero()[0])
        raise no_positive("row", row, f"no k_ids equal q_ids[{row}]")

    # fp32 accumulation whatever the input dtype; autograd casts the gradients back to it.
    s = logit_scale.float().reshape(()) * (q.float() @ k.float().T)
    pos = torch.where(t, s, torch.zeros_like(s))
    row_loss = torch.logsumexp(s, dim=1) - pos.sum(1) / row_count
    if not (symmetric and m == n):
        return row_loss.mean()

    col_count = t.sum(0)
    if not bool(col_count.all()):
        col = int((col_count == 0).nonzero()[0])
        raise no_positive("column", col, f"no q_ids equal k_ids[{col}]")
    col_loss = torch.logsumexp(s, dim=0) - pos.sum(0) / col_count
    return 0.5 * (row_loss.mean() + col_loss.mean())
