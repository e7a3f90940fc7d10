"""Shared by the loss tests: where Triton runs, per-dtype tolerances, reproducible inputs, comparisons."""

from __future__ import annotations

import zlib

import pytest
import torch
import torch.nn.functional as F

import muser.kernels as kernels

TRITON_MODE, TRITON_REASON = kernels._triton_mode()
needs_triton = pytest.mark.skipif(TRITON_MODE is None, reason=TRITON_REASON)
# Native Triton needs CUDA tensors; the interpreter takes CPU ones (that is how CI runs the kernels).
DEVICE = "cuda" if TRITON_MODE == "native" else "cpu"
IMPLS = ["reference", pytest.param("triton", marks=needs_triton)]
DTYPES = [torch.float32, torch.bfloat16, torch.float16]

# Tolerances relative to the largest magnitude of the compared quantity. Inputs are rounded to the dtype
# first and the float64 truth uses the same rounded values, so only accumulation and output rounding count.
# The kernels round dS to the input dtype before the gradient matmul (as flash attention does).
TOL = {torch.float32: (2e-5, 2e-5), torch.float16: (2e-3, 4e-3), torch.bfloat16: (4e-3, 3e-2)}  # (loss, grad)


def unit_inputs(case: str, m: int, n: int, d: int, dtype: torch.dtype, dup: int | None, device: str = DEVICE):
    """Fresh random unit vectors, a scale in [5, 60] and (dup given) caption ids with duplicates, reproducible
    from the case's name. Returns (q, k, scale, q_ids, k_ids) with q, k, scale requiring grad."""
    gen = torch.Generator().manual_seed(zlib.crc32(case.encode()))
    q = F.normalize(torch.randn(m, d, generator=gen, dtype=torch.float64), dim=1)
    k = F.normalize(torch.randn(n, d, generator=gen, dtype=torch.float64), dim=1)
    scale = torch.tensor(float(torch.empty(()).uniform_(5.0, 60.0, generator=gen)), dtype=torch.float32)
    q_ids = k_ids = None
    if dup is not None:
        k_ids = torch.randint(0, dup, (n,), generator=gen) * 7919 - 3  # arbitrary (also negative) ids
        q_ids = k_ids.clone() if m == n else k_ids[torch.randint(0, n, (m,), generator=gen)]
    q = q.to(dtype).to(device).requires_grad_()
    k = k.to(dtype).to(device).requires_grad_()
    scale = scale.to(device).requires_grad_()
    return q, k, scale, q_ids, k_ids


def positives64(q_ids, k_ids, m: int, n: int, row_offset: int) -> torch.Tensor:
    """(M, N) float64 indicator of positive pairs, built directly from the definition."""
    if q_ids is None:
        t = torch.zeros(m, n, dtype=torch.float64)
        t[torch.arange(m), torch.arange(m) + row_offset] = 1.0
        return t
    return (q_ids.cpu()[:, None] == k_ids.cpu()[None, :]).double()


def loss_and_grads(loss: torch.Tensor, params: list[torch.Tensor], upstream: float) -> tuple:
    """(loss, grad of each param) after backward of upstream * loss; the params' grads are reset."""
    (loss * upstream).backward()
    grads = tuple(p.grad.clone() for p in params)
    for p in params:
        p.grad = None
    return (loss.detach(), *grads)


def close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str) -> None:
    """Max abs error within rel x the largest |expected| (at least 1 for a scalar)."""
    actual, expected = actual.detach().double().cpu(), expected.detach().double().cpu()
    err = (actual - expected).abs().max().item()
    scale = expected.abs().max().item()
    bound = rel * (max(1.0, scale) if expected.numel() == 1 else scale)
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"
