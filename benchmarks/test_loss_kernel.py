"""Loss benchmark, softmax (CLIP) and sigmoid (SigLIP): fused Triton kernels vs the naive reference (full
logits) vs a chunked PyTorch loss, against the floor of 4 plain (N x D) @ (D x N) matmuls measured in the
same run.

GPU cases (marked `gpu`): forward + backward time and peak extra memory for N in {1k .. 256k}, D in
{256, 512}, bf16, each loss. On CPU only small sizes run, for correctness (the Triton kernels under the
interpreter). Writes benchmarks/results/loss_kernel.json (entries merge across runs, so a GPU run adds to a
CPU run). Run: `pytest benchmarks/test_loss_kernel.py -q -s`; `make gpu-check` runs the D = 512 cases up to
N = 64k (`-k "d512 and not n262144"`).
"""

from __future__ import annotations

import json
import statistics
import time

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import muser.kernels as kernels
from benchmarks.common import machine_info, read_result, write_result
from muser.kernels import contrastive_loss, sigmoid_loss

SIZES = [1024, 4096, 16384, 65536, 262144]
DIMS = [256, 512]
LOSSES = ["softmax", "sigmoid"]
SCALE = {"softmax": 1 / 0.07, "sigmoid": 10.0}
BIAS = -10.0  # the sigmoid loss's bias (SigLIP's initialisation)


def _record(section: str, key: str, value: dict) -> None:
    data = read_result("loss_kernel")
    data["machine"] = machine_info()
    data["triton_mode"] = kernels._triton_mode()[0]  # which path ran: "native", "interpret" or None
    if not torch.cuda.is_available():
        data.setdefault("gpu", {"status": "not run: no CUDA device on this machine"})
    data.setdefault(section, {})
    if section == "gpu":
        data[section].pop("status", None)
    data[section][key] = value
    write_result("loss_kernel", data)
    print(f"\n{section}/{key}: {json.dumps(value)}")


def chunked_loss(q: torch.Tensor, k: torch.Tensor, scale: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Symmetric diagonal-positive CLIP loss in row chunks with activation checkpointing: what a user
    writes to avoid the full logits in PyTorch. Memory O(chunk x N); backward recomputes a chunk's logits.
    """
    n = q.shape[0]

    def block(qc: torch.Tensor, start: int):
        s = scale.float() * (qc.float() @ k.float().T)
        diag = s.diagonal(offset=start)
        return torch.logsumexp(s, 1).sum() - diag.sum(), torch.logsumexp(s, 0), diag.sum()

    row_sum, col_parts, pos_sum = 0.0, [], 0.0
    for start in range(0, n, chunk):
        rows, col_lse, pos = checkpoint(block, q[start : start + chunk], start, use_reentrant=False)
        row_sum, pos_sum = row_sum + rows, pos_sum + pos
        col_parts.append(col_lse)
    col_loss = torch.logsumexp(torch.stack(col_parts), 0).sum() - pos_sum
    return 0.5 * (row_sum + col_loss) / n


def chunked_sigmoid_loss(
    q: torch.Tensor, k: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, chunk: int = 4096
) -> torch.Tensor:
    """Diagonal-positive SigLIP loss in row chunks with activation checkpointing (the PyTorch way around
    the full logits): memory O(chunk x N), the backward recomputes a chunk's logits."""
    n = q.shape[0]

    def block(qc: torch.Tensor, start: int):
        z = scale.float() * (qc.float() @ k.float().T) + bias.float()
        sign = torch.full_like(z, -1.0)
        sign.diagonal(offset=start).fill_(1.0)
        return -F.logsigmoid(sign * z).sum()

    total = sum(checkpoint(block, q[s : s + chunk], s, use_reentrant=False) for s in range(0, n, chunk))
    return total / n


def _impls(loss: str, chunk: int = 4096) -> dict:
    """name -> fn(q, k, scale, bias) for the fused, naive and chunked versions of one loss."""
    if loss == "softmax":
        return {
            "triton": lambda q, k, s, b: contrastive_loss(q, k, s, impl="triton"),
            "naive": lambda q, k, s, b: contrastive_loss(q, k, s, impl="reference"),
            "chunked": lambda q, k, s, b: chunked_loss(q, k, s, chunk=chunk),
        }
    return {
        "triton": lambda q, k, s, b: sigmoid_loss(q, k, s, b, impl="triton"),
        "naive": lambda q, k, s, b: sigmoid_loss(q, k, s, b, impl="reference"),
        "chunked": lambda q, k, s, b: chunked_sigmoid_loss(q, k, s, b, chunk=chunk),
    }


def _inputs(n: int, d: int, dtype: torch.dtype, device: str, loss: str, seed: int = 0):
    gen = torch.Generator(device=device).manual_seed(seed)
    q = F.normalize(torch.randn(n, d, device=device, generator=gen), dim=1).to(dtype).requires_grad_()
    k = F.normalize(torch.randn(n, d, device=device, generator=gen), dim=1).to(dtype).requires_grad_()
    scale = torch.tensor(SCALE[loss], device=device, requires_grad=True)
    return q, k, scale, torch.tensor(BIAS, device=device, requires_grad=True)


def _fwd_bwd(fn, q, k, scale, bias):
    def run():
        q.grad = k.grad = scale.grad = bias.grad = None
        loss = fn(q, k, scale, bias)
        loss.backward()
        return loss.detach(), q.grad, k.grad, scale.grad

    return run


def _measure(run, device: str, repeats: int) -> dict:
    """Median seconds and peak extra memory (bytes above what was allocated before) of run()."""
    run()  # warm-up: autotuning, allocator
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        run()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    out = {"seconds": statistics.median(times)}
    if device == "cuda":
        out["peak_extra_bytes"] = torch.cuda.max_memory_allocated() - base
    return out


def _floor(q: torch.Tensor, k: torch.Tensor, repeats: int) -> dict:
    """Time of 4 plain (N x D) @ (D x N) matmuls (the FLOPs of a forward and backward), done in row blocks
    into one reused output so that it runs at sizes where N x N does not fit."""
    n = q.shape[0]
    block = min(n, 8192)
    out = torch.empty(block, n, device=q.device, dtype=q.dtype)
    qd, kt = q.detach(), k.detach().T

    def run():
        for _ in range(4):
            for start in range(0, n, block):
                torch.mm(qd[start : start + block], kt, out=out[: min(block, n - start)])

    return _measure(run, "cuda", repeats)


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("loss", LOSSES)
def test_cpu_correctness_small(loss: str):
    """Reference vs chunked vs Triton (interpreted) at small sizes; times are for the record, not speed."""
    impls = _impls(loss, chunk=40)
    inputs = _inputs(96, 32, torch.float32, "cpu", loss, seed=1)
    ref = _fwd_bwd(impls["naive"], *inputs)()
    chk = _fwd_bwd(impls["chunked"], *inputs)()
    errs = {"chunked_vs_reference": max(_max_err(a, b) for a, b in zip(chk, ref, strict=True))}
    assert errs["chunked_vs_reference"] < 1e-5
    timing = {name: _measure(_fwd_bwd(impls[name], *inputs), "cpu", 3) for name in ("naive", "chunked")}
    value = {"n": 96, "d": 32, "dtype": "float32", "max_abs_error": errs, "cpu_seconds": timing}
    if kernels._triton_mode()[0] is not None:
        # The interpreter is slow: a 37 x 37 problem with D = 16 exercises padding and several tiles.
        device = "cuda" if kernels._triton_mode()[0] == "native" else "cpu"
        small = _inputs(37, 16, torch.float32, device, loss, seed=2)
        tri = _fwd_bwd(impls["triton"], *small)()
        ref_small = _fwd_bwd(impls["naive"], *small)()
        errs["triton_vs_reference_37x16"] = max(_max_err(a, b) for a, b in zip(tri, ref_small, strict=True))
        assert errs["triton_vs_reference_37x16"] < 1e-5
    _record("cpu", f"correctness_{loss}", value)


@pytest.mark.gpu
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("d", DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"n{n}")
def test_gpu_speed_and_memory(n: int, d: int, loss: str):
    torch.cuda.empty_cache()
    inputs = _inputs(n, d, torch.bfloat16, "cuda", loss)
    q, k = inputs[:2]
    repeats = 10 if n <= 16384 else 3
    row: dict = {"n": n, "d": d, "dtype": "bfloat16", "loss": loss, "floor_4_matmuls": _floor(q, k, repeats)}
    outputs = {}
    for name, fn in _impls(loss).items():
        # The naive loss keeps several fp32 N x N matrices alive (logits, probabilities, their gradients).
        if name == "naive" and 5 * 4 * n * n > torch.cuda.mem_get_info()[0]:
            row[name] = {"skipped": f"needs about {5 * 4 * n * n / 2**30:.0f} GiB for the full logits"}
            continue
        try:
            run = _fwd_bwd(fn, *inputs)
            row[name] = _measure(run, "cuda", repeats)
            outputs[name] = run()
        except torch.cuda.OutOfMemoryError:
            row[name] = {"skipped": "out of memory"}
        torch.cuda.empty_cache()
    if "naive" in outputs:
        # bf16 gradients: compare relative to their size.
        for name in ("triton", "chunked"):
            loss_err = _max_err(outputs[name][0], outputs["naive"][0])
            row[name]["loss_error_vs_naive"] = loss_err
            assert loss_err < 1e-3 * max(1.0, outputs["naive"][0].abs().item())
    floor = row["floor_4_matmuls"]["seconds"]
    tri = row["triton"]["seconds"]
    row["triton_over_floor"] = tri / floor
    if "seconds" in row.get("naive", {}):
        row["naive_over_triton"] = row["naive"]["seconds"] / tri
    if "seconds" in row.get("chunked", {}):
        row["chunked_over_triton"] = row["chunked"]["seconds"] / tri
    _record("gpu", f"{loss}_n{n}_d{d}", row)
