"""sigmoid_loss: the reference and the Triton kernels (interpreted on CPU, compiled on CUDA) against SigLIP's
formula evaluated in float64, its argument errors, and its dispatch and self-check."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import muser.kernels as kernels
from muser.kernels import sigmoid_loss
from muser.kernels.sigmoid_ref import sigmoid_loss_ref
from tests.kernels.cases import (
    DEVICE,
    DTYPES,
    IMPLS,
    TOL,
    close,
    loss_and_grads,
    needs_triton,
    positives64,
    unit_inputs,
)


def _float64_truth(q, k, scale, bias, q_ids, k_ids, row_offset, upstream):
    """-(1/M) sum_ij log sigmoid(t_ij z_ij) in float64, log sigmoid written out, with autograd gradients."""
    q64, k64, s64, b64 = (x.detach().double().cpu().requires_grad_() for x in (q, k, scale, bias))
    t = 2.0 * positives64(q_ids, k_ids, q64.shape[0], k64.shape[0], row_offset) - 1.0
    x = t * (s64 * q64 @ k64.T + b64)
    log_sigmoid = -torch.log1p(torch.exp(-x.abs())) + torch.minimum(x, torch.zeros_like(x))
    loss = -log_sigmoid.sum() / q64.shape[0]
    return loss_and_grads(loss, [q64, k64, s64, b64], upstream)


def _run(impl, q, k, scale, bias, q_ids, k_ids, row_offset, upstream):
    loss = sigmoid_loss(q, k, scale, bias, q_ids, k_ids, row_offset, impl=impl)
    return loss_and_grads(loss, [q, k, scale, bias], upstream)


def _bias(case_scale: torch.Tensor, value: float) -> torch.Tensor:
    return torch.tensor(value, device=case_scale.device, requires_grad=True)


SHAPES = [
    # name, M, N, D, row_offset, duplicate-id range (None: diagonal positives), bias
    ("1x1", 1, 1, 16, 0, None, -10.0),
    ("37x37", 37, 37, 16, 0, None, -10.0),
    ("37x37-dup", 37, 37, 24, 0, 5, -3.0),
    ("23x70-offset", 23, 70, 20, 40, None, -10.0),
    ("23x70-dup", 23, 70, 20, 0, 9, 2.0),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[1])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s[0])
def test_matches_float64_formula(impl, dtype, shape):
    name, m, n, d, offset, dup, bias_value = shape
    case = f"sigmoid-{impl}-{dtype}-{name}"
    q, k, scale, q_ids, k_ids = unit_inputs(case, m, n, d, dtype, dup)
    bias = _bias(scale, bias_value)
    upstream = -1.7  # non-unit (and negative) upstream gradient
    got = _run(impl, q, k, scale, bias, q_ids, k_ids, offset, upstream)
    want = _float64_truth(q, k, scale, bias, q_ids, k_ids, offset, upstream)
    loss_tol, grad_tol = TOL[dtype]
    assert got[0].dtype == torch.float32 and got[0].dim() == 0
    assert got[1].dtype == dtype and got[2].dtype == dtype and got[3].dtype == got[4].dtype == torch.float32
    for what, a, b, tol in zip(
        ("loss", "dq", "dk", "dscale", "dbias"), got, want, (loss_tol, *[grad_tol] * 4), strict=True
    ):
        close(a, b, tol, f"{case} {what}")


@needs_triton
def test_tiny_negative_terms_are_not_lost():
    # Orthogonal pairs at scale 100 and bias -30: every negative sits at z = -30 and adds e^-30 ~ 1e-13, far
    # below fp32's epsilon relative to 1, which a naive log(1 + exp(-|x|)) rounds to 0. Positives (z = 70)
    # add even less, so the loss is the negatives' sum alone and the kernel must keep each of them.
    eye = torch.eye(20, 32, device=DEVICE)
    q, k = eye.clone().requires_grad_(), eye.clone().requires_grad_()
    scale = torch.tensor(100.0, device=DEVICE, requires_grad=True)
    bias = _bias(scale, -30.0)
    got = _run("triton", q, k, scale, bias, None, None, 0, 1.0)
    want = _float64_truth(q, k, scale, bias, None, None, 0, 1.0)
    assert 0 < want[0].item() < 1e-10
    assert abs(got[0].item() - want[0].item()) <= 1e-5 * want[0].item()  # relative to the loss itself
    close(got[1], want[1], 1e-5, "dq")  # relative to the largest entry of each tensor
    close(got[2], want[2], 1e-5, "dk")
    # dscale (~4e-31) and dbias (~2e-12) are scalars, which close() bounds by 1e-5 absolute: that would pass
    # zero. Each must match relative to itself.
    for what, a, b in (("dscale", got[3], want[3]), ("dbias", got[4], want[4])):
        assert b.item() != 0 and abs(a.item() - b.item()) <= 1e-5 * abs(b.item()), (what, a, b)


@pytest.mark.parametrize("impl", IMPLS)
def test_rows_without_positive_are_allowed_with_ids(impl):
    # Each pair is its own binary problem: a query whose caption is not among the keys is all negatives.
    q, k, scale, _, _ = unit_inputs(f"sigmoid-nopos-{impl}", 5, 8, 16, torch.float32, None)
    bias = _bias(scale, -10.0)
    q_ids, k_ids = torch.tensor([1, 2, 3, 99, 1]), torch.arange(8)
    got = _run(impl, q, k, scale, bias, q_ids, k_ids, 0, 1.0)
    want = _float64_truth(q, k, scale, bias, q_ids, k_ids, 0, 1.0)
    for what, a, b in zip(("loss", "dq", "dk", "dscale", "dbias"), got, want, strict=True):
        close(a, b, 2e-5, what)


@pytest.mark.parametrize("impl", IMPLS)
def test_bad_arguments_are_value_errors(impl):
    q, k, scale, _, _ = unit_inputs("sigmoid-bad", 4, 6, 16, torch.float32, None)
    bias = _bias(scale, -10.0)
    with pytest.raises(ValueError, match="sigmoid_loss: row 2 has no positive"):
        sigmoid_loss(q, k, scale, bias, row_offset=4, impl=impl)
    with pytest.raises(ValueError, match="sigmoid_loss: logit_bias must be a scalar"):
        sigmoid_loss(q, k, scale, torch.zeros(2, device=DEVICE), impl=impl)
    with pytest.raises(ValueError, match="sigmoid_loss: q and k must be"):
        sigmoid_loss(q, k[:, :8], scale, bias, impl=impl)
    with pytest.raises(ValueError, match="sigmoid_loss: impl must be one of"):
        sigmoid_loss(q, k, scale, bias, impl="cuda")


def test_auto_uses_the_reference_on_cpu(monkeypatch):
    q, k, scale, _, _ = unit_inputs("sigmoid-dispatch", 6, 6, 16, torch.float32, None, device="cpu")
    calls = []
    monkeypatch.setattr(kernels, "sigmoid_loss_ref", lambda *a: calls.append(a) or torch.tensor(0.0))
    sigmoid_loss(q, k, scale, torch.tensor(-10.0))
    assert len(calls) == 1


@needs_triton
def test_self_check_covers_the_sigmoid_kernels(monkeypatch):
    kernels._self_check.cache_clear()
    assert kernels._self_check("cpu", "sigmoid") is True
    kernels._self_check.cache_clear()

    def wrong(q, k, scale, bias, *rest):
        return sigmoid_loss_ref(q, k, scale, bias * 1.01, *rest)

    monkeypatch.setattr(kernels._triton("sigmoid"), "sigmoid_loss_triton", wrong)
    with pytest.warns(RuntimeWarning, match="sigmoid_loss: the Triton kernels disagree"):
        assert kernels._self_check("cpu", "sigmoid") is False
    kernels._self_check.cache_clear()


@needs_triton
def test_triton_matches_reference_at_a_training_like_case():
    # Batch 96 against 3 x 96 gathered columns (rank 1 of 3) with duplicate captions, D = 40.
    gen = torch.Generator().manual_seed(5)
    q = F.normalize(torch.randn(96, 40, generator=gen), dim=1).to(DEVICE).requires_grad_()
    k = F.normalize(torch.randn(288, 40, generator=gen), dim=1).to(DEVICE).requires_grad_()
    k_ids = torch.randint(0, 200, (288,), generator=gen)
    q_ids = k_ids[96:192]
    scale = torch.tensor(10.0, device=DEVICE, requires_grad=True)
    bias = _bias(scale, -10.0)
    tri = _run("triton", q, k, scale, bias, q_ids, k_ids, 96, 0.5)
    ref = _run("reference", q, k, scale, bias, q_ids, k_ids, 96, 0.5)
    for what, a, b in zip(("loss", "dq", "dk", "dscale", "dbias"), tri, ref, strict=True):
        close(a, b, 1e-5, what)
