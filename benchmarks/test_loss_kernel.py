"""Loss benchmark, softmax (CLIP) and sigmoid (SigLIP): fused Triton kernels vs the naive reference (full
logits) vs a chunked PyTorch loss, against the floor of 4 plain (N x D) @ (D x N) matmuls measured in the
same run.

GPU cases (marked `gpu`): forward + backward time and peak extra memory for N in {1k .. 256k}, D in
{256, 512}, bf16, each loss; targets: the loss AND the gradients (dq, dk, dscale) of the fused kernel and
the chunked loss agree with the naive loss wherever it fits in memory (else the kernel with the chunked
loss), and from N = 4096 the kernel needs at most half the naive loss's peak memory. On CPU small sizes run
for correctness (the Triton kernels under the interpreter), and the GPU case's own code path runs at a
tiny size. Writes benchmarks/results/loss_kernel.json, one row per case.
Run: `pytest benchmarks/test_loss_kernel.py -q -s`; `make gpu-check` runs the D = 512 cases up to
N = 64k (`-k "d512 and not n262144"`).
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import muser.kernels as kernels
from benchmarks.common import entry
from muser.kernels import contrastive_loss, sigmoid_loss

SIZES = [1024, 4096, 16384, 65536, 262144]
DIMS = [256, 512]
LOSSES = ["softmax", "sigmoid"]
SCALE = {"softmax": 1 / 0.07, "sigmoid": 10.0}
BIAS = -10.0  # the sigmoid loss's bias (SigLIP's initialisation)


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


def _floor(q: torch.Tensor, k: torch.Tensor, repeats: int, device: str = "cuda") -> dict:
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

    return _measure(run, device, repeats)


# Relative tolerance of each output (loss, dq, dk, dscale) against the naive loss, per input dtype: bf16
# inputs give the fused kernel's bf16 gradients about 3 significant digits.
TOL = {torch.float32: 1e-5, torch.bfloat16: 2e-2}
OUTPUTS = ("loss", "grad_q", "grad_k", "grad_scale")


def compare(out: tuple, ref: tuple) -> dict[str, float]:
    """Max abs error of each output of `_fwd_bwd` (loss, dq, dk, dscale) relative to the reference's max
    magnitude: the scalar loss alone can agree while a gradient is wrong."""
    errs = {}
    for name, a, b in zip(OUTPUTS, out, ref, strict=True):
        scale = max(b.double().abs().max().item(), 1e-12)
        errs[name] = (a.double() - b.double()).abs().max().item() / scale
    return errs


def _judge(row, errs: dict[str, float], what: str, tol: float) -> None:
    """One target per comparison: the worst of (error / its tolerance) over the loss and the gradients. The
    scalar loss is accumulated in fp32 in every implementation, so it is held to 1e-3 even where bf16
    gradients get `tol`."""
    limits = {name: min(tol, 1e-3) if name == "loss" else tol for name in errs}
    worst = max(errs, key=lambda name: errs[name] / limits[name])
    row.target(
        f"{what}: loss and gradients, worst error / tolerance ({worst})",
        errs[worst] / limits[worst],
        at_most=1.0,
    )


def _case(row, n: int, d: int, loss: str, device: str, dtype: torch.dtype, repeats: int) -> None:
    """One (N, D, loss) case: time (and on CUDA peak memory) of each implementation, the 4-matmul floor, and
    every implementation's loss AND gradients against the naive loss where that fits (else the fused
    kernel's against the chunked loss)."""
    inputs = _inputs(n, d, dtype, device, loss)
    q, k = inputs[:2]
    row.update({"n": n, "d": d, "dtype": str(dtype).removeprefix("torch."), "loss": loss, "device": device})
    row["floor_4_matmuls"] = _floor(q, k, repeats, device)
    outputs = {}
    impls = _impls(loss, chunk=max(8, n // 3) if device == "cpu" else 4096)
    if kernels._triton_mode()[0] is None:
        impls.pop("triton")
        row["triton"] = {"skipped": "Triton cannot run on this machine"}
    for name, fn in impls.items():
        # The naive loss keeps several fp32 N x N matrices alive (logits, probabilities, their gradients).
        if name == "naive" and device == "cuda" and 5 * 4 * n * n > torch.cuda.mem_get_info()[0]:
            row[name] = {"skipped": f"needs about {5 * 4 * n * n / 2**30:.0f} GiB for the full logits"}
            continue
        try:
            run = _fwd_bwd(fn, *inputs)
            row[name] = _measure(run, device, repeats)
            outputs[name] = tuple(x.detach().clone() for x in run())
        except torch.cuda.OutOfMemoryError:
            row[name] = {"skipped": "out of memory"}
        if device == "cuda":
            torch.cuda.empty_cache()
    ref_name = "naive" if "naive" in outputs else "chunked"
    for name in [x for x in ("triton", "chunked") if x in outputs and x != ref_name]:
        errs = compare(outputs[name], outputs[ref_name])
        row[name][f"relative_error_vs_{ref_name}"] = errs
        _judge(row, errs, f"{loss} n{n} d{d} {name} vs {ref_name}", TOL[dtype])
    if "seconds" in row.get("triton", {}):
        tri = row["triton"]["seconds"]
        if device == "cuda":  # which tiles won: the backward's D-slices say how often s was recomputed
            row["triton"]["tuned"] = kernels._triton(loss)._launcher(False).tuned(n, n, d)
        row["triton_over_floor"] = tri / row["floor_4_matmuls"]["seconds"]
        for name in ("naive", "chunked"):
            if "seconds" in row.get(name, {}):
                row[f"{name}_over_triton"] = row[name]["seconds"] / tri
        if "peak_extra_bytes" in row.get("naive", {}) and n >= 4096:
            row.target(
                f"{loss} n{n} d{d}: fused kernel peak memory / naive loss peak memory",
                row["triton"]["peak_extra_bytes"] / row["naive"]["peak_extra_bytes"],
                at_most=0.5,
            )


@pytest.mark.parametrize("loss", LOSSES)
def test_cpu_correctness_small(loss: str):
    """Reference vs chunked vs Triton (interpreted) at small sizes, loss and every gradient."""
    with entry("loss_kernel", f"cpu_correctness_{loss}") as row:
        impls = _impls(loss, chunk=40)
        inputs = _inputs(96, 32, torch.float32, "cpu", loss, seed=1)
        ref = _fwd_bwd(impls["naive"], *inputs)()
        errs = compare(_fwd_bwd(impls["chunked"], *inputs)(), ref)
        row.update({"n": 96, "d": 32, "dtype": "float32", "chunked_vs_reference": errs})
        _judge(row, errs, f"{loss} n96 d32 chunked vs reference", TOL[torch.float32])
        if kernels._triton_mode()[0] is not None:
            # The interpreter is slow: a 37 x 37 problem with D = 16 exercises padding and several tiles.
            device = "cuda" if kernels._triton_mode()[0] == "native" else "cpu"
            small = _inputs(37, 16, torch.float32, device, loss, seed=2)
            tri = _fwd_bwd(impls["triton"], *small)()
            errs = row["triton_vs_reference_37x16"] = compare(tri, _fwd_bwd(impls["naive"], *small)())
            _judge(row, errs, f"{loss} n37 d16 triton vs reference", TOL[torch.float32])
        row["triton_mode"] = kernels._triton_mode()[0]  # which path ran: "native", "interpret" or None


@pytest.mark.parametrize("loss", LOSSES)
def test_gpu_case_path_on_cpu_tiny(loss: str):
    """The GPU benchmark's own code path (timing, floor, gradient comparison) at a tiny size on CPU, so that
    a machine without CUDA shows it runs; its times are not results."""
    with entry("loss_kernel", f"cpu_tiny_case_{loss}") as row:
        _case(row, 37, 16, loss, "cpu", torch.float32, repeats=1)


@pytest.mark.gpu
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("d", DIMS, ids=lambda d: f"d{d}")
@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"n{n}")
def test_gpu_speed_memory_gradients(n: int, d: int, loss: str):
    torch.cuda.empty_cache()
    with entry("loss_kernel", f"gpu_{loss}_n{n}_d{d}") as row:
        _case(row, n, d, loss, "cuda", torch.bfloat16, repeats=10 if n <= 16384 else 3)
