"""On a CUDA GPU only (marker `gpu`; `make gpu-check` runs them): `auto` picks the compiled kernels and
falls back to the reference when the self-check fails, and every tile configuration the autotuner may
choose computes both losses and their gradients like the float64 formula.

The other kernel tests run natively here too, but at one autotuned (or, with MUSER_AUTOTUNE=0, the first)
configuration; a tile config that only a large D or an unlucky autotuner picks would go untested.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import muser.kernels as kernels
from muser.kernels import contrastive_triton, sigmoid_triton, tiling
from tests.kernels import test_contrastive, test_sigmoid
from tests.kernels.cases import TOL, close, unit_inputs

pytestmark = pytest.mark.gpu

LAUNCHERS = {"contrastive": contrastive_triton._launcher, "sigmoid": sigmoid_triton._launcher}


@pytest.fixture
def fresh_dispatch():
    """The once-per-process decisions made again inside the test, and again after it."""
    kernels._self_check.cache_clear()
    yield
    kernels._self_check.cache_clear()


def test_auto_runs_triton_on_cuda(fresh_dispatch):
    assert kernels._triton_mode()[0] == "native"
    for loss in ("contrastive", "sigmoid"):
        assert kernels.resolved_impl("cuda", loss) == "triton"
        assert kernels.resolved_impl("cpu", loss) == "reference"  # CPU tensors never go to the interpreter


@pytest.mark.parametrize("loss", ["contrastive", "sigmoid"])
def test_auto_falls_back_when_the_self_check_fails(loss, fresh_dispatch, monkeypatch):
    module = {"contrastive": contrastive_triton, "sigmoid": sigmoid_triton}[loss]
    name = f"{loss}_loss_triton"
    right = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *args: right(*args) * 1.01)  # a kernel that is 1% off
    with pytest.warns(RuntimeWarning, match="disagree with the reference"):
        assert kernels.resolved_impl("cuda", loss) == "reference"
    kernels._self_check.cache_clear()

    def broken(*args):
        raise RuntimeError("PTX JIT compilation failed")  # what an unsupported driver says

    monkeypatch.setattr(module, name, broken)
    with pytest.warns(RuntimeWarning, match="failed on cuda"):
        assert kernels.resolved_impl("cuda", loss) == "reference"
    # ... and the training objective then really runs the reference, without another warning.
    q, k, scale, _, _ = unit_inputs(f"fallback-{loss}", 33, 33, 64, torch.float32, None, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        if loss == "sigmoid":
            value = kernels.sigmoid_loss(q, k, scale, torch.tensor(-10.0, device="cuda"))
        else:
            value = kernels.contrastive_loss(q, k, scale)
    assert torch.isfinite(value)


def _configs() -> list:
    """(loss, dtype, forward shape, backward shape): the i-th forward and i-th backward tile config of each
    input width, so every row of FORWARD_SHAPES and BACKWARD_SHAPES runs once per loss."""
    out = []
    for loss in ("contrastive", "sigmoid"):
        for dtype in (torch.bfloat16, torch.float32):
            itemsize = torch.empty((), dtype=dtype).element_size()
            forward, backward = tiling.FORWARD_SHAPES[itemsize], tiling.BACKWARD_SHAPES[itemsize]
            for i in range(max(len(forward), len(backward))):
                shapes = (forward[i % len(forward)], backward[i % len(backward)])
                out.append(pytest.param(loss, dtype, *shapes, id=f"{loss}-{str(dtype)[6:]}-{i}"))
    return out


@pytest.mark.parametrize("loss,dtype,forward,backward", _configs())
def test_every_tile_config_matches_the_float64_formula(loss, dtype, forward, backward, monkeypatch):
    itemsize = torch.empty((), dtype=dtype).element_size()
    # The launcher is built from tiling.SHAPES: with one shape per kernel, that configuration is the one
    # that runs (if it did not fit this GPU the pruning would raise, and the test would say so).
    only = {"forward": {itemsize: [forward]}, "backward": {itemsize: [backward]}}
    monkeypatch.setattr(tiling, "SHAPES", only)
    LAUNCHERS[loss].cache_clear()
    try:
        # M, N not multiples of any block; D = 200 crosses BLOCK_K slices and, clamped to 256, BLOCK_DV ones.
        q, k, scale, q_ids, k_ids = unit_inputs(f"tiles-{loss}", 203, 203, 200, dtype, 37, device="cuda")
        upstream = -1.3
        if loss == "sigmoid":
            bias = torch.tensor(-8.0, device="cuda", requires_grad=True)
            got = test_sigmoid._run("triton", q, k, scale, bias, q_ids, k_ids, 0, upstream)
            want = test_sigmoid._float64_truth(q, k, scale, bias, q_ids, k_ids, 0, upstream)
            names = ("loss", "dq", "dk", "dscale", "dbias")
        else:
            got = test_contrastive._run("triton", q, k, scale, q_ids, k_ids, 0, True, upstream)
            want = test_contrastive._float64_truth(q, k, scale, q_ids, k_ids, 0, True, upstream)
            names = ("loss", "dq", "dk", "dscale")
    finally:
        LAUNCHERS[loss].cache_clear()  # the next test builds the launcher from every configuration again
    loss_tol, grad_tol = TOL[dtype]
    for what, a, b in zip(names, got, want, strict=True):
        close(a, b, loss_tol if what == "loss" else grad_tol, f"{forward} {backward} {what}")
