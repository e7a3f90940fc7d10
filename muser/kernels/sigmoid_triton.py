"""Fused Triton sigmoid (SigLIP) loss: the (M, N) logits are never materialised, forward or backward.

Same semantics as `sigmoid_ref.py`; called through `muser.kernels.sigmoid_loss`. CUDA tensors run the
autotuned native kernels; CPU tensors run the same kernels under the Triton interpreter (how CI tests them).
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl
from torch import Tensor

from muser.kernels.pairs import check_inputs, explicit_ids
from muser.kernels.sigmoid_ref import check_bias
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
from muser.kernels.triton_compat import SUM, helper

# ---------------------------------------------------------------------------------------------------------
# The math (q: (M, D), k: (N, D), y_ij = [q_ids[i] == k_ids[j]], t_ij = 2 y_ij - 1, ids explicit on the host):
#
#   z_ij = scale <q_i, k_j> + bias          loss = 1/M sum_ij softplus(-t_ij z_ij)     (= -log sigmoid(t z))
#
# Forward, one program per block of BLOCK_M rows walking all column tiles: the row sums of softplus, written
# per row and summed on the host (deterministic). softplus(x) = max(x, 0) + log1p(exp(-|x|)) never
# overflows; log1p keeps the tiny terms of confident negatives, which are most of the N^2 terms.
#
# Backward, with upstream gradient g:  dz_ij = g / M (sigmoid(z_ij) - y_ij)
#   dq_i = scale sum_j dz_ij k_j     dk_j = scale sum_i dz_ij q_i     dscale = sum dz_ij <q_i, k_j>
#   dbias = sum dz_ij
# dz is the same function of (q_i, k_j) whichever side is "rows", so one kernel computes dA for the rows of
# A against all rows of B, launched with (A, B) = (q, k) for dq, dscale and dbias and with (k, q) for dk.
# The kernels work with sigmoid(z) - y in [-1, 1] and apply g / M at the end, so rounding dz to fp16 for
# the tensor cores keeps its precision at any M. On positives, sigmoid(z) - 1 is computed as -sigmoid(-z),
# which does not cancel.
# ---------------------------------------------------------------------------------------------------------


@helper
def _log1p(y):
    """log(1 + y) for y >= 0, accurate for tiny y as well (log(u) * y / (u - 1), u = 1 + y rounded)."""
    u = 1.0 + y
    return tl.where(u == 1.0, y, tl.log(u) * (y / tl.where(u == 1.0, 1.0, u - 1.0)))


@triton.jit
def _forward_kernel(
    A, B, AIDS, BIDS, SCALE, BIAS,  # inputs: A = q, B = k
    ROW_LOSS,  # output: sum_j softplus(-t_ij z_ij) per row
    M, N, D, stride_a, stride_b,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PRECISION: tl.constexpr, DOT_FP32: tl.constexpr,
):  # fmt: skip
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < M
    scale = tl.load(SCALE).to(tl.float32)
    bias = tl.load(BIAS).to(tl.float32)
    a_ids = tl.load(AIDS + offs_m, mask=mask_m, other=0)

    total = tl.full([BLOCK_M], 0.0, tl.float32)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        dot = tile_dot(
            A, B, offs_m, offs_n, mask_m, mask_n, D, stride_a, stride_b, BLOCK_K, PRECISION, DOT_FP32
        )
        z = dot * scale + bias
        b_ids = tl.load(BIDS + offs_n, mask=mask_n, other=0)
        x = tl.where(a_ids[:, None] == b_ids[None, :], -z, z)  # -t z
        softplus = tl.maximum(x, 0.0) + _log1p(tl.exp(-tl.abs(x)))
        total += tl.reduce(tl.where(mask_m[:, None] & mask_n[None, :], softplus, 0.0), 1, SUM)
    tl.store(ROW_LOSS + offs_m, total, mask=mask_m)


@triton.jit
def _backward_kernel(
    A, B, AIDS, BIDS, SCALE, BIAS, COEF,  # COEF: g / M, fp32 (1,)
    DA, DSCALE_PART, DBIAS_PART,  # dA: like A; per row block: partial sums of dz <a, b> and of dz (no g / M)
    M, N, D, stride_a, stride_b, stride_da,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_DV: tl.constexpr,
    PRECISION: tl.constexpr, DOT_FP32: tl.constexpr,
):  # fmt: skip
    pid = tl.program_id(0)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_v = tl.program_id(1) * BLOCK_DV + tl.arange(0, BLOCK_DV)  # this program's slice of dA's columns
    mask_m = offs_m < M
    mask_v = offs_v < D
    scale = tl.load(SCALE).to(tl.float32)
    bias = tl.load(BIAS).to(tl.float32)
    a_ids = tl.load(AIDS + offs_m, mask=mask_m, other=0)

    da = tl.full([BLOCK_M, BLOCK_DV], 0.0, tl.float32)
    dscale = tl.full([BLOCK_M], 0.0, tl.float32)
    dbias = tl.full([BLOCK_M], 0.0, tl.float32)
    for start_n in range(0, N, BLOCK_N):
        offs_n = start_n + tl.arange(0, BLOCK_N)
        mask_n = offs_n < N
        dot = tile_dot(
            A, B, offs_m, offs_n, mask_m, mask_n, D, stride_a, stride_b, BLOCK_K, PRECISION, DOT_FP32
        )
        z = dot * scale + bias
        b_ids = tl.load(BIDS + offs_n, mask=mask_n, other=0)
        y = a_ids[:, None] == b_ids[None, :]
        p = 1.0 / (1.0 + tl.exp(tl.where(y, z, -z)))  # sigmoid(-z) on positives, sigmoid(z) elsewhere
        dz = tl.where(mask_m[:, None] & mask_n[None, :], tl.where(y, -p, p), 0.0)
        dscale += tl.reduce(dz * dot, 1, SUM)
        dbias += tl.reduce(dz, 1, SUM)
        da = accumulate_rows(da, dz, B, offs_n, mask_n, offs_v, mask_v, stride_b, PRECISION, DOT_FP32)

    da = da * (scale * tl.load(COEF))
    tl.store(
        DA + offs_m.to(tl.int64)[:, None] * stride_da + offs_v[None, :],
        da,
        mask=mask_m[:, None] & mask_v[None, :],
    )
    # Every D-slice program of a row block computes the same sums; the first one writes them.
    first = tl.program_id(1) == 0
    tl.store(DSCALE_PART + pid, tl.reduce(dscale, 0, SUM), mask=first)
    tl.store(DBIAS_PART + pid, tl.reduce(dbias, 0, SUM), mask=first)


@functools.cache
def _launcher(interpret: bool) -> Launcher:
    # The partial-sum buffers have one slot per program of whichever config runs: zeroed per trial run.
    return make_launcher(_forward_kernel, _backward_kernel, interpret, (), ["DSCALE_PART", "DBIAS_PART"])


def _backward_pass(
    a: Tensor, b: Tensor, a_ids: Tensor, b_ids: Tensor, scale: Tensor, bias: Tensor, coef: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(dA, sum dz <a, b>, sum dz) for the rows of a against all rows of b; the sums still lack g / M."""
    rows, d = a.shape
    da = torch.empty_like(a)
    dscale_part = torch.zeros(partial_slots(rows), device=a.device, dtype=torch.float32)
    dbias_part = torch.zeros_like(dscale_part)
    _launcher(use_interpreter(a.device)).launch(
        "backward", backward_grid(rows, d),
        a, b, a_ids, b_ids, scale, bias, coef, da, dscale_part, dbias_part,
        rows, b.shape[0], d, a.stride(0), b.stride(0), da.stride(0),
    )  # fmt: skip
    return da, dscale_part.sum(), dbias_part.sum()


class SigmoidLossFunction(torch.autograd.Function):
    """Autograd wrapper: saves q, k and the ids; the backward recomputes z tile by tile."""

    @staticmethod
    def forward(ctx, q, k, logit_scale, logit_bias, q_ids, k_ids, row_offset):  # type: ignore[override]
        m, d = q.shape
        scale = logit_scale.detach().reshape(1).float().contiguous()
        bias = logit_bias.detach().reshape(1).float().contiguous()
        qi, ki = explicit_ids(q_ids, k_ids, m, k.shape[0], row_offset, q.device)
        row_loss = torch.empty(m, device=q.device, dtype=torch.float32)
        _launcher(use_interpreter(q.device)).launch(
            "forward", forward_grid(m),
            q, k, qi, ki, scale, bias, row_loss, m, k.shape[0], d, q.stride(0), k.stride(0),
        )  # fmt: skip
        ctx.save_for_backward(q, k, scale, bias, qi, ki)
        ctx.params = (logit_scale.shape, logit_scale.dtype, logit_bias.shape, logit_bias.dtype)
        return row_loss.sum() / m

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        q, k, scale, bias, qi, ki = ctx.saved_tensors
        need_q, need_k, need_scale, need_bias = ctx.needs_input_grad[:4]
        coef = (grad.detach().float() / q.shape[0]).reshape(1).contiguous()
        dq = dk = dscale = dbias = None
        if need_q or need_scale or need_bias:
            dq, dot_sum, dz_sum = _backward_pass(q, k, qi, ki, scale, bias, coef)
            scale_shape, scale_dtype, bias_shape, bias_dtype = ctx.params
            dscale = (dot_sum * coef).reshape(scale_shape).to(scale_dtype) if need_scale else None
            dbias = (dz_sum * coef).reshape(bias_shape).to(bias_dtype) if need_bias else None
        if need_k:
            dk = _backward_pass(k, q, ki, qi, scale, bias, coef)[0]
        return (dq if need_q else None), dk, dscale, dbias, None, None, None


def sigmoid_loss_triton(
    q: Tensor,
    k: Tensor,
    logit_scale: Tensor,
    logit_bias: Tensor,
    q_ids: Tensor | None = None,
    k_ids: Tensor | None = None,
    row_offset: int = 0,
) -> Tensor:
    """The Triton path of `muser.kernels.sigmoid_loss` (same arguments, same result)."""
    check_inputs(q, k, logit_scale, q_ids, k_ids, row_offset, loss="sigmoid_loss")
    check_bias(logit_bias, q)
    return SigmoidLossFunction.apply(
        q.contiguous(), k.contiguous(), logit_scale, logit_bias, q_ids, k_ids, row_offset
    )
