"""Fused Triton contrastive loss: the (M, N) similarity matrix is never materialised, forward or backward.

Same semantics as `contrastive_ref.py`; called through `muser.kernels.contrastive_loss`. CUDA tensors run the
autotuned native kernels; CPU tensors run the same kernels under the Triton interpreter (how CI tests them).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import Tensor

from muser.kernels.pairs import check_inputs, explicit_ids, no_positive
from muser.kernels.tiling import (
    Launcher,
    accumulate_rows,
    backward_grid,
    forward_grid,
    make_launcher,
    partial_slots,
    tile_dot,
    use_interpreter,
)
from muser.kernels.triton_compat import MAX, SUM

# ---------------------------------------------------------------------------------------------------------
# The math (q: (M, D), k: (N, D) unit vectors, t_ij = [q_ids[i] == k_ids[j]], ids made explicit on the host:
# without caption ids q_ids = row_offset + arange(M), k_ids = arange(N)).
#
#   s_ij = scale <q_i, k_j>                 |P(i)| = sum_j t_ij            |P'(j)| = sum_i t_ij
#   LSE_i = log sum_j exp s_ij              LSE'_j = log sum_i exp s_ij
#   loss = w_r / M sum_i (LSE_i - sum_j t_ij s_ij / |P(i)|)
#        + w_c / N sum_j (LSE'_j - sum_i t_ij s_ij / |P'(j)|)
#   with (w_r, w_c) = (1/2, 1/2) when symmetric (M == N), else (1, 0).
#
# Forward, one program per block of BLOCK_M rows walking all column tiles once (each tile of s a K-loop over
# D, tiling.tile_dot):
#   * row LSE with the online (running max, rescaled sum-exp) recurrence, and sum_j t_ij s_ij in registers;
#   * symmetric case, from the same tile: column sums  sum_i exp(s_ij - c_j)  and  sum_i t_ij s_ij  by
#     atomic adds into fp32 (N,) buffers. A running max cannot be shared between programs, so the shift c_j
#     is fixed before the pass: c_j = max(s_{a(j) j}, bound_j - 70) with a(j) any positive row of column j
#     and bound_j = scale |k_j| max_i |q_i| >= s_ij. Then every term is <= e^70 (no overflow summed over
#     up to 2^27 rows: e^70 2^27 < 3.4e38, fp32's max) and the positive's term is >= 1 unless
#     s_{a(j) j} < bound_j - 70; a column whose sum still underflows is recomputed by a row pass of k[j]
#     against q (exact online LSE). LSE'_j = c_j + log(column sum).
#
# Backward, with p_ij = exp(s_ij - LSE_i), p'_ij = exp(s_ij - LSE'_j) and upstream gradient g:
#   dS_ij = g w_r / M (p_ij - t_ij / |P(i)|) + g w_c / N (p'_ij - t_ij / |P'(j)|)
#   dq_i = scale sum_j dS_ij k_j      dk_j = scale sum_i dS_ij q_i      dscale = sum_ij dS_ij <q_i, k_j>
# dS is symmetric in the roles of (q, rows) and (k, columns), so one kernel computes "dA for the rows of A
# against all rows of B": launched with (A, B) = (q, k) it gives dq and dscale, with (k, q) it gives dk.
# Each program owns a BLOCK_M x BLOCK_DV slice of dA in registers and recomputes s tile by tile (tiling.py):
# deterministic, no atomics. With D / BLOCK_DV = v slices per row block the work is (1 + 2 (v + 1)) M N D
# multiply-adds in all; v = 1 fits in registers up to D = 512 (64 x 32 tiles), beyond that the autotuner
# weighs more recomputation against bigger tiles (benchmarks/results/kernel_compile.json).
# ---------------------------------------------------------------------------------------------------------


@triton.jit
def _forward_kernel(
    A, B, AIDS, BIDS, SCALE, COL_SHIFT,  # inputs: A = q, B = k (or k[cols] and q in the fallback pass)
    ROW_LSE, ROW_POS, COL_SUM, COL_POS,  # outputs (COL_* accumulate by atomic adds, zeroed by the host)
    M, N, D, stride_a, stride_b,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    SYMMETRIC: tl.constexpr, PRECISION: tl.constexpr, DOT_FP32: tl.constexpr,
):  # fmt: skip
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    scale = tl.load(SCALE).to(tl.float32)
    a_ids = tl.load(AIDS + offs_m, mask=mask_m, other=0)

    run_max = tl.full([BLOCK_M], float("-inf"), tl.float32)
    run_sum = tl.full([BLOCK_M], 0.0, tl.float32)
    row_pos = tl.full([BLOCK_M], 0.0, tl.float32)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        dot = tile_dot(
            A, B, offs_m, offs_n, mask_m, mask_n, D, stride_a, stride_b, BLOCK_K, PRECISION, DOT_FP32
        )
        s = dot * scale
        b_ids = tl.load(BIDS + offs_n, mask=mask_n, other=0)
        t = (a_ids[:, None] == b_ids[None, :]) & mask_m[:, None] & mask_n[None, :]
        pos_s = tl.where(t, s, 0.0)
        row_pos += tl.reduce(pos_s, 1, SUM)

        s_rows = tl.where(mask_n[None, :], s, float("-inf"))
        new_max = tl.maximum(run_max, tl.reduce(s_rows, 1, MAX))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.reduce(tl.exp(s_rows - new_max[:, None]), 1, SUM)
        run_max = new_max

        if SYMMETRIC:
            shift = tl.load(COL_SHIFT + offs_n, mask=mask_n, other=0.0)
            # Padding lanes go to -inf before exp: a padded row has s = 0, which may sit far above c_j.
            e = tl.exp(tl.where(mask_m[:, None] & mask_n[None, :], s - shift[None, :], float("-inf")))
            tl.atomic_add(COL_SUM + offs_n, tl.reduce(e, 0, SUM), mask=mask_n)
            tl.atomic_add(COL_POS + offs_n, tl.reduce(pos_s, 0, SUM), mask=mask_n)

    tl.store(ROW_LSE + offs_m, run_max + tl.log(run_sum), mask=mask_m)
    tl.store(ROW_POS + offs_m, row_pos, mask=mask_m)


@triton.jit
def _backward_kernel(
    A, B, AIDS, BIDS, SCALE, COEF,  # COEF = R (g w_a / rows of A, g w_b / rows of B), fp32, R = max(M, N)
    A_LSE, A_INV_POS, B_LSE, B_INV_POS,  # LSE and 1/|P| of the rows of A and of B
    DA, DSCALE_PART,  # dA: like A; one partial dscale per row block (summed on the host: deterministic)
    M, N, D, stride_a, stride_b, stride_da, inv_r,  # inv_r = 1 / R
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_DV: tl.constexpr,
    A_TERM: tl.constexpr, B_TERM: tl.constexpr, PRECISION: tl.constexpr, DOT_FP32: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_v = tl.program_id(1) * BLOCK_DV + tl.arange(0, BLOCK_DV)  # this program's slice of dA's columns
    mask_m = offs_m < M
    mask_v = offs_v < D
    scale = tl.load(SCALE).to(tl.float32)
    a_ids = tl.load(AIDS + offs_m, mask=mask_m, other=0)
    if A_TERM:
        coef_a = tl.load(COEF)
        a_lse = tl.load(A_LSE + offs_m, mask=mask_m, other=0.0)
        a_inv = tl.load(A_INV_POS + offs_m, mask=mask_m, other=0.0)
    if B_TERM:
        coef_b = tl.load(COEF + 1)

    da = tl.full([BLOCK_M, BLOCK_DV], 0.0, tl.float32)
    dscale = tl.full([BLOCK_M], 0.0, tl.float32)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        dot = tile_dot(
            A, B, offs_m, offs_n, mask_m, mask_n, D, stride_a, stride_b, BLOCK_K, PRECISION, DOT_FP32
        )
        # Padding lanes get s = -inf, so every exp below is 0 there rather than a possible overflow.
        s = tl.where(mask_m[:, None] & mask_n[None, :], dot * scale, float("-inf"))
        b_ids = tl.load(BIDS + offs_n, mask=mask_n, other=0)
        t = ((a_ids[:, None] == b_ids[None, :]) & mask_m[:, None] & mask_n[None, :]).to(tl.float32)
        ds = tl.full([BLOCK_M, BLOCK_N], 0.0, tl.float32)
        if A_TERM:
            ds += coef_a * (tl.exp(s - a_lse[:, None]) - t * a_inv[:, None])
        if B_TERM:
            b_lse = tl.load(B_LSE + offs_n, mask=mask_n, other=0.0)
            b_inv = tl.load(B_INV_POS + offs_n, mask=mask_n, other=0.0)
            ds += coef_b * (tl.exp(s - b_lse[None, :]) - t * b_inv[None, :])
        dscale += tl.reduce(ds * dot, 1, SUM)
        da = accumulate_rows(da, ds, B, offs_n, mask_n, offs_v, mask_v, stride_b, PRECISION, DOT_FP32)

    da = da * (scale * inv_r)
    tl.store(
        DA + offs_m.to(tl.int64)[:, None] * stride_da + offs_v[None, :],
        da,
        mask=mask_m[:, None] & mask_v[None, :],
    )
    # Every D-slice program of a row block computes the same dscale; the first one writes it.
    tl.store(DSCALE_PART + pid, tl.reduce(dscale, 0, SUM), mask=tl.program_id(1) == 0)


@functools.cache
def _launcher(interpret: bool) -> Launcher:
    # COL_SUM/COL_POS are accumulated with atomics and DSCALE_PART has one slot per program of whichever
    # config runs, so the autotuner zeroes them before each trial run.
    return make_launcher(
        _forward_kernel, _backward_kernel, interpret, ["COL_SUM", "COL_POS"], ["DSCALE_PART"]
    )


def _launcher_for(device: torch.device) -> Launcher:
    return _launcher(use_interpreter(device))


# Column sums below this are treated as underflowed and recomputed exactly (fp32 subnormals start at 1e-38).
_TINY_COLUMN_SUM = 1e-30


def _positives(
    q_ids: Tensor | None, k_ids: Tensor | None, m: int, n: int, row_offset: int, symmetric: bool, device
) -> tuple[Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """Explicit int64 ids, |P(i)|, and for the symmetric case |P'(j)| and one positive row a(j) per column.

    O((M + N) log N) with sort + searchsorted, so the no-positive check never builds the (M, N) mask.
    """
    qi, ki = explicit_ids(q_ids, k_ids, m, n, row_offset, device)
    if q_ids is None or k_ids is None:
        # check_inputs has verified that row_offset + i < N for every row.
        row_count = torch.ones(m, device=device)
        if not symmetric:
            return qi, ki, row_count, None, None
        if row_offset != 0:
            raise no_positive("column", 0, f"row_offset={row_offset} leaves the first columns without a row")
        return qi, ki, row_count, torch.ones(n, device=device), torch.arange(n, device=device)

    k_sorted = torch.sort(ki).values
    row_count = torch.searchsorted(k_sorted, qi, right=True) - torch.searchsorted(k_sorted, qi)
    missing = row_count == 0
    if bool(missing.any()):
        row = int(missing.nonzero()[0])
        raise no_positive("row", row, f"no k_ids equal q_ids[{row}]")
    if not symmetric:
        return qi, ki, row_count.float(), None, None
    q_sorted, order = torch.sort(qi)
    first = torch.searchsorted(q_sorted, ki)
    col_count = torch.searchsorted(q_sorted, ki, right=True) - first
    missing = col_count == 0
    if bool(missing.any()):
        col = int(missing.nonzero()[0])
        raise no_positive("column", col, f"no q_ids equal k_ids[{col}]")
    return qi, ki, row_count.float(), col_count.float(), order[first]


def _row_pass(a: Tensor, b: Tensor, a_ids: Tensor, b_ids: Tensor, scale: Tensor) -> tuple[Tensor, Tensor]:
    """(LSE_i, sum_j t_ij s_ij) of every row of a against all rows of b: the non-symmetric forward."""
    rows, n = a.shape[0], b.shape[0]
    lse = torch.empty(rows, device=a.device, dtype=torch.float32)
    pos = torch.empty_like(lse)
    _launcher_for(a.device).launch(
        "forward", forward_grid(rows),
        a, b, a_ids, b_ids, scale, lse, lse, pos, lse, lse,  # COL_* slots are unused without SYMMETRIC
        rows, n, a.shape[1], a.stride(0), b.stride(0), SYMMETRIC=False,
    )  # fmt: skip
    return lse, pos


def contrastive_forward(
    q: Tensor,
    k: Tensor,
    scale: Tensor,
    q_ids: Tensor | None,
    k_ids: Tensor | None,
    row_offset: int,
    symmetric: bool,
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """Loss (fp32 scalar) and the (M + N)-sized statistics the backward needs.

    q: (M, D), k: (N, D) contiguous, same dtype; scale: (1,) fp32. symmetric must already imply M == N.
    """
    m, d = q.shape
    n = k.shape[0]
    qi, ki, row_count, col_count, anchor = _positives(q_ids, k_ids, m, n, row_offset, symmetric, q.device)
    if not symmetric:
        row_lse, row_pos = _row_pass(q, k, qi, ki, scale)
        loss = (row_lse - row_pos / row_count).mean()
        return loss, (qi, ki, row_lse, 1.0 / row_count, row_lse, row_lse)

    # Per-column shift, O(N D): the similarity to one positive row, floored so no term can exceed e^70.
    s_anchor = scale * torch.linalg.vecdot(q[anchor], k).float()
    bound = scale.abs() * k.float().norm(dim=1) * q.float().norm(dim=1).max()
    col_shift = torch.maximum(s_anchor, bound - 70.0).contiguous()

    row_lse = torch.empty(m, device=q.device, dtype=torch.float32)
    row_pos = torch.empty_like(row_lse)
    col_sum = torch.zeros(n, device=q.device, dtype=torch.float32)
    col_pos = torch.zeros_like(col_sum)
    _launcher_for(q.device).launch(
        "forward", forward_grid(m),
        q, k, qi, ki, scale, col_shift, row_lse, row_pos, col_sum, col_pos,
        m, n, d, q.stride(0), k.stride(0), SYMMETRIC=True,
    )  # fmt: skip
    col_lse = col_shift + torch.log(col_sum)

    # Pathological columns (every similarity more than 70 below the bound): exact second pass for those only.
    bad = ~((col_sum > _TINY_COLUMN_SUM) & torch.isfinite(col_sum))
    if bool(bad.any()):
        cols = bad.nonzero().squeeze(1)
        col_lse[cols] = _row_pass(k[cols].contiguous(), q, ki[cols].contiguous(), qi, scale)[0]

    row_loss = row_lse - row_pos / row_count
    col_loss = col_lse - col_pos / col_count
    loss = 0.5 * (row_loss.mean() + col_loss.mean())
    return loss, (qi, ki, row_lse, 1.0 / row_count, col_lse, 1.0 / col_count)


def contrastive_backward(
    grad: Tensor, q: Tensor, k: Tensor, scale: Tensor, stats: tuple[Tensor, ...], symmetric: bool,
    need_q: bool = True, need_k: bool = True, need_scale: bool = True,
) -> tuple[Tensor | None, Tensor | None, Tensor | None]:  # fmt: skip
    """(dq, dk, dscale) for upstream gradient grad (scalar); dq/dk in the input dtype, dscale fp32 (1,)."""
    qi, ki, row_lse, row_inv, col_lse, col_inv = stats
    m, d = q.shape
    n = k.shape[0]
    w_row, w_col = (0.5, 0.5) if symmetric else (1.0, 0.0)
    g = grad.detach().float().reshape(1)
    # dS carries a 1/M factor; the kernels work with R dS (R = max(M, N)) so that dS keeps its precision
    # when it is rounded to fp16 for the tensor cores (1/M^2-sized values would flush to zero).
    r = float(max(m, n))
    coef_q = torch.cat([g * (r * w_row / m), g * (r * w_col / n)]).contiguous()  # (rows of q, rows of k)
    launcher = _launcher_for(q.device)

    dq = dk = dscale = None
    if need_q or need_scale:
        dq = torch.empty_like(q)
        part = torch.zeros(partial_slots(m), device=q.device, dtype=torch.float32)
        launcher.launch(
            "backward", backward_grid(m, d),
            q, k, qi, ki, scale, coef_q, row_lse, row_inv, col_lse, col_inv, dq, part,
            m, n, d, q.stride(0), k.stride(0), dq.stride(0), 1.0 / r, A_TERM=True, B_TERM=symmetric,
        )  # fmt: skip
        dscale = part.sum().reshape(1) / r
    if need_k:
        dk = torch.empty_like(k)
        part = torch.zeros(partial_slots(n), device=q.device, dtype=torch.float32)
        launcher.launch(
            "backward", backward_grid(n, d),
            k, q, ki, qi, scale, coef_q.flip(0).contiguous(), col_lse, col_inv, row_lse, row_inv, dk, part,
            n, m, d, k.stride(0), q.stride(0), dk.stride(0), 1.0 / r, A_TERM=symmetric, B_TERM=True,
        )  # fmt: skip
    return (dq if need_q else None), dk, (dscale if need_scale else None)


class ContrastiveLossFunction(torch.autograd.Function):
    """Autograd wrapper: saves q, k and O(M + N) statistics; the backward recomputes s tile by tile."""

    @staticmethod
    def forward(ctx, q, k, logit_scale, q_ids, k_ids, row_offset, symmetric):  # type: ignore[override]
        scale = logit_scale.detach().reshape(1).float().contiguous()
        loss, stats = contrastive_forward(q, k, scale, q_ids, k_ids, row_offset, symmetric)
        ctx.save_for_backward(q, k, scale, *stats)
        ctx.symmetric = symmetric
        ctx.scale_shape, ctx.scale_dtype = logit_scale.shape, logit_scale.dtype
        return loss

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        q, k, scale, *stats = ctx.saved_tensors
        need_q, need_k, need_scale = ctx.needs_input_grad[:3]
        dq, dk, dscale = contrastive_backward(
            grad, q, k, scale, tuple(stats), ctx.symmetric, need_q, need_k, need_scale
        )
        if dscale is not None:
            dscale = dscale.reshape(ctx.scale_shape).to(ctx.scale_dtype)
        return dq, dk, dscale, None, None, None, None


def contrastive_loss_triton(
    q: Tensor,
    k: Tensor,
    logit_scale: Tensor,
    q_ids: Tensor | None = None,
    k_ids: Tensor | None = None,
    row_offset: int = 0,
    symmetric: bool = True,
) -> Tensor:
    """The Triton path of `muser.kernels.contrastive_loss` (same arguments, same result)."""
    check_inputs(q, k, logit_scale, q_ids, k_ids, row_offset)
    symmetric = symmetric and q.shape[0] == k.shape[0]
    return ContrastiveLossFunction.apply(
        q.contiguous(), k.contiguous(), logit_scale, q_ids, k_ids, row_offset, symmetric
    )
