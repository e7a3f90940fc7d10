"""contrastive_loss: the reference and the Triton kernels (interpreted on CPU, compiled on CUDA) against the
formula evaluated in float64, the errors for rows or columns without a positive, and the dispatch between
the two paths (impl, the override hook, the once-per-device self-check)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import muser.kernels as kernels
from muser.kernels import contrastive_loss
from muser.kernels.contrastive_ref import contrastive_loss_ref
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


def _float64_truth(q, k, scale, q_ids, k_ids, row_offset, symmetric, upstream):
    """The formula of the issue evaluated directly in float64, with its autograd gradients."""
    q64 = q.detach().double().cpu().requires_grad_()
    k64 = k.detach().double().cpu().requires_grad_()
    s64 = scale.detach().double().cpu().requires_grad_()
    m, n = q64.shape[0], k64.shape[0]
    tf = positives64(q_ids, k_ids, m, n, row_offset)
    s = s64 * q64 @ k64.T
    rows = [
        torch.log(torch.exp(s[i] - s[i].max()).sum()) + s[i].max() - (s[i] * tf[i]).sum() / tf[i].sum()
        for i in range(m)
    ]
    loss = torch.stack(rows).mean()
    if symmetric and m == n:
        cols = [
            torch.log(torch.exp(s[:, j] - s[:, j].max()).sum())
            + s[:, j].max()
            - (s[:, j] * tf[:, j]).sum() / tf[:, j].sum()
            for j in range(n)
        ]
        loss = 0.5 * (loss + torch.stack(cols).mean())
    return loss_and_grads(loss, [q64, k64, s64], upstream)


def _run(impl, q, k, scale, q_ids, k_ids, row_offset, symmetric, upstream):
    loss = contrastive_loss(q, k, scale, q_ids, k_ids, row_offset, symmetric, impl=impl)
    return loss_and_grads(loss, [q, k, scale], upstream)


SHAPES = [
    # name, M, N, D, row_offset, duplicate-id range (None: diagonal positives), symmetric
    ("1x1", 1, 1, 16, 0, None, True),
    ("37x37", 37, 37, 16, 0, None, True),
    ("37x37-dup", 37, 37, 16, 0, 5, True),
    ("37x37-rows-only", 37, 37, 24, 0, None, False),
    ("23x70-offset", 23, 70, 16, 40, None, True),
    ("23x70-dup", 23, 70, 20, 0, 9, True),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).split(".")[1])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s[0])
def test_matches_float64_formula(impl, dtype, shape):
    name, m, n, d, offset, dup, symmetric = shape
    case = f"{impl}-{dtype}-{name}"
    q, k, scale, q_ids, k_ids = unit_inputs(case, m, n, d, dtype, dup)
    upstream = -1.7  # non-unit (and negative) upstream gradient
    got = _run(impl, q, k, scale, q_ids, k_ids, offset, symmetric, upstream)
    want = _float64_truth(q, k, scale, q_ids, k_ids, offset, symmetric, upstream)
    loss_tol, grad_tol = TOL[dtype]
    assert got[0].dtype == torch.float32 and got[0].dim() == 0
    assert got[1].dtype == dtype and got[2].dtype == dtype and got[3].dtype == torch.float32
    for what, a, b, tol in zip(
        ("loss", "dq", "dk", "dscale"), got, want, (loss_tol, grad_tol, grad_tol, grad_tol), strict=True
    ):
        close(a, b, tol, f"{case} {what}")


@needs_triton
@pytest.mark.parametrize("shape", SHAPES[1:], ids=lambda s: s[0])
def test_triton_matches_reference_fp32(shape):
    name, m, n, d, offset, dup, symmetric = shape
    q, k, scale, q_ids, k_ids = unit_inputs(f"vs-ref-{name}", m, n, d, torch.float32, dup)
    ref = _run("reference", q, k, scale, q_ids, k_ids, offset, symmetric, 0.3)
    tri = _run("triton", q, k, scale, q_ids, k_ids, offset, symmetric, 0.3)
    for what, a, b in zip(("loss", "dq", "dk", "dscale"), tri, ref, strict=True):
        close(a, b, 1e-5, f"{name} {what}")


@needs_triton
def test_triton_recovers_underflowed_columns():
    # Every similarity is -scale = -100: the fixed column shift (bound - 70 = 30) underflows each column sum
    # (exp(-130) == 0 in fp32), which must trigger the exact second pass instead of returning inf.
    d = 16
    base = F.normalize(torch.randn(1, d), dim=1)
    k = F.normalize(base + 1e-3 * torch.randn(19, d), dim=1).to(DEVICE).requires_grad_()
    q = (-k.detach()).clone().requires_grad_()
    scale = torch.tensor(100.0, device=DEVICE, requires_grad=True)
    tri = _run("triton", q, k, scale, None, None, 0, True, 1.0)
    want = _float64_truth(q, k, scale, None, None, 0, True, 1.0)
    assert all(torch.isfinite(x).all() for x in tri)
    # s ~ -100 carries fp32 rounding of ~4e-6 while the gradients are ~1e-2 and dscale ~1e-5 (cancellation):
    # the bounds reflect that conditioning, which the reference shares.
    close(tri[0], want[0], 2e-5, "loss")
    close(tri[1], want[1], 1e-3, "dq")
    close(tri[2], want[2], 1e-3, "dk")
    # dscale itself is only ~1.3e-5 here, so an absolute 1e-5 bound would pass a halved or zero dscale. The
    # cancellation costs up to ~6% (the reference itself is up to ~8% off over 20 random draws): 20% of it.
    assert abs(tri[3].item() - want[3].item()) <= 0.2 * abs(want[3].item()), (tri[3], want[3])


@pytest.mark.parametrize("impl", IMPLS)
def test_row_or_column_without_positive_is_named(impl):
    q, k, scale, _, _ = unit_inputs("nopos", 5, 8, 16, torch.float32, None)
    with pytest.raises(ValueError, match="row 3 has no positive"):
        contrastive_loss(q, k, scale, torch.tensor([1, 2, 3, 99, 1]), torch.arange(8), impl=impl)
    with pytest.raises(ValueError, match="row 4 has no positive"):
        contrastive_loss(q, k, scale, row_offset=4, impl=impl)
    q2, k2, scale2, _, _ = unit_inputs("nopos-col", 4, 4, 16, torch.float32, None)
    with pytest.raises(ValueError, match="column 2 has no positive"):
        contrastive_loss(q2, k2, scale2, torch.tensor([0, 1, 1, 3]), torch.tensor([0, 1, 2, 3]), impl=impl)
    # The same ids are fine without the column term.
    contrastive_loss(
        q2, k2, scale2, torch.tensor([0, 1, 1, 3]), torch.tensor([0, 1, 2, 3]), symmetric=False, impl=impl
    )


def test_bad_arguments_are_value_errors():
    q, k, scale, _, _ = unit_inputs("bad", 4, 4, 16, torch.float32, None, device="cpu")
    with pytest.raises(ValueError, match="same D"):
        contrastive_loss(q, k[:, :8], scale)
    with pytest.raises(ValueError, match="both q_ids and k_ids"):
        contrastive_loss(q, k, scale, q_ids=torch.arange(4))
    with pytest.raises(ValueError, match="impl must be one of"):
        contrastive_loss(q, k, scale, impl="cuda")


def test_auto_dispatch_and_override(monkeypatch):
    q, k, scale, _, _ = unit_inputs("dispatch", 6, 6, 16, torch.float32, None, device="cpu")
    calls = []
    monkeypatch.setattr(
        kernels, "contrastive_loss_ref", lambda *a: calls.append("reference") or torch.tensor(0.0)
    )
    contrastive_loss(q, k, scale)  # CPU tensors: "auto" never picks the interpreter
    assert calls == ["reference"]
    monkeypatch.setattr(kernels, "_override_impl", "reference")
    contrastive_loss(q, k, scale)
    assert calls == ["reference", "reference"]


def test_auto_checks_one_gpu_once_whatever_its_name(monkeypatch):
    """resolved_impl("cuda") (what the trainer records) and a loss on "cuda:0" tensors are one GPU: the
    self-check runs under one key, so both see the same outcome (on an H200 they had run it twice)."""
    checked = []
    monkeypatch.setattr(kernels, "_triton_mode", lambda: ("native", ""))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(kernels, "_self_check", lambda device, loss="contrastive": checked.append(device))
    for device in ("cuda", "cuda:0", torch.device("cuda", 0)):
        kernels.resolved_impl(device)
    kernels.resolved_impl("cuda", "sigmoid")
    assert checked == ["cuda:0"] * 4


@needs_triton
def test_override_hook_forces_triton(monkeypatch):
    q, k, scale, _, _ = unit_inputs("override", 6, 6, 16, torch.float32, None)
    monkeypatch.setattr(kernels, "_override_impl", "triton")
    loss = contrastive_loss(q, k, scale)
    assert "ContrastiveLossFunction" in type(loss.grad_fn).__name__
    ref = contrastive_loss_ref(q, k, scale)
    close(loss, ref, 1e-6, "loss")


@needs_triton
def test_self_check_passes_on_working_kernels_and_falls_back_on_broken_ones(monkeypatch):
    # The check runs the real kernels (interpreted on CPU here, compiled on a GPU) against the reference.
    kernels._self_check.cache_clear()
    assert kernels._self_check("cpu") is True

    def broken(*args):
        raise RuntimeError("PTX assembly failed")

    kernels._self_check.cache_clear()
    monkeypatch.setattr(kernels._triton(), "contrastive_loss_triton", broken)
    with pytest.warns(RuntimeWarning, match="PTX assembly failed"):
        assert kernels._self_check("cpu") is False
    kernels._self_check.cache_clear()

    def wrong(q, k, scale, *rest):
        return contrastive_loss_ref(q, k, scale * 1.01, *rest)  # plausible but wrong numbers

    monkeypatch.setattr(kernels._triton(), "contrastive_loss_triton", wrong)
    with pytest.warns(RuntimeWarning, match="disagree"):
        assert kernels._self_check("cpu") is False
    kernels._self_check.cache_clear()
