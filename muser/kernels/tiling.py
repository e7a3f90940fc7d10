"""What the fused losses share: the D-tiled similarity tile, tile configurations pruned to fit the GPU, and
one launcher that runs compiled kernels on CUDA tensors and the same kernels interpreted on CPU tensors.

Both losses walk the (M, N) similarity matrix tile by tile and never store it. A tile s = A_rows B_cols^T
is a K-loop over BLOCK_K-wide slices of the embedding dimension (`tile_dot`), so no tile holds a whole
embedding: shared memory and registers no longer grow with D. The backward's dA accumulator is split over
D as well: program (i, v) owns rows i and columns v * BLOCK_DV ... of dA (see `backward_grid`).

MUSER_AUTOTUNE=0 in the environment skips autotuning: each kernel runs the first configuration that fits
(one compilation per kernel variant instead of one per configuration; for correctness runs on a GPU).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import triton
import triton.language as tl

from muser.kernels.triton_compat import arg_type, helper, interpret_requested, interpreted, max_shared_memory

# ---------------------------------------------------------------------------------------------------------
# Device side


@helper
def tile_dot(
    A, B, offs_a, offs_b, mask_a, mask_b, D, stride_a, stride_b,
    BLOCK_K: tl.constexpr, PRECISION: tl.constexpr, DOT_FP32: tl.constexpr,
):  # fmt: skip
    """fp32 (len(offs_a), len(offs_b)) tile of <A[a], B[b]> over all D, in BLOCK_K-wide slices."""
    acc = tl.full([offs_a.shape[0], offs_b.shape[0]], 0.0, tl.float32)
    rows_a = offs_a.to(tl.int64)[:, None] * stride_a
    rows_b = offs_b.to(tl.int64)[None, :] * stride_b
    for start in range(0, D, BLOCK_K):
        offs_k = start + tl.arange(0, BLOCK_K)
        mask_k = offs_k < D
        a = tl.load(A + rows_a + offs_k[None, :], mask=mask_a[:, None] & mask_k[None, :], other=0.0)
        bt = tl.load(B + rows_b + offs_k[:, None], mask=mask_k[:, None] & mask_b[None, :], other=0.0)
        if DOT_FP32:
            a = a.to(tl.float32)
            bt = bt.to(tl.float32)
        acc = tl.dot(a, bt, acc, input_precision=PRECISION)
    return acc


@helper
def accumulate_rows(
    acc, ds, B, offs_b, mask_b, offs_v, mask_v, stride_b, PRECISION: tl.constexpr, DOT_FP32: tl.constexpr
):
    """acc + ds @ B[offs_b, offs_v]: one D-slice of dA = dS B, with dS rounded to B's dtype for the tensor
    cores (as flash attention does) and fp32 accumulation."""
    b = tl.load(
        B + offs_b.to(tl.int64)[:, None] * stride_b + offs_v[None, :],
        mask=mask_b[:, None] & mask_v[None, :],
        other=0.0,
    )
    ds_in = ds.to(B.dtype.element_ty)
    if DOT_FP32:
        ds_in = ds_in.to(tl.float32)
        b = b.to(tl.float32)
    return tl.dot(ds_in, b, acc, input_precision=PRECISION)


# ---------------------------------------------------------------------------------------------------------
# Tile configurations. BLOCK_K: the width of one D-slice of s; BLOCK_DV: the D-slice of dA one backward
# program owns. D / BLOCK_DV programs per row block recompute the same s tiles, so a wider slice saves FLOPs
# but costs registers (BLOCK_M x BLOCK_DV fp32 accumulators): at D = 512 a whole-width accumulator fits only
# 64 x 32 tiles, and at D = 1024 none does, so the autotuner chooses between fewer programs and bigger
# tiles. Every row below compiles without spills on sm_80, sm_90 and sm_100 (benchmarks/results/
# kernel_compile.json, written by `python -m tools.kernel_aot`; tests/kernels/test_compile.py keeps it so).
# fp32 inputs get their own, smaller tiles: their tf32x3 products need twice the registers and bytes.

# (BLOCK_M, BLOCK_N, BLOCK_K, num_warps, num_stages), by input bytes per element
FORWARD_SHAPES = {
    2: [
        (64, 64, 32, 4, 3),
        (64, 64, 64, 4, 3),
        (64, 64, 64, 4, 4),
        (128, 64, 64, 8, 3),
        (64, 128, 64, 8, 3),
        (128, 64, 32, 8, 4),
    ],
    4: [
        (32, 32, 32, 4, 3),
        (64, 32, 16, 4, 2),
        (64, 64, 16, 4, 2),
        (64, 64, 32, 8, 2),
    ],
}
# (BLOCK_M, BLOCK_N, BLOCK_K, BLOCK_DV, num_warps, num_stages), by input bytes per element
BACKWARD_SHAPES = {
    2: [
        (64, 64, 32, 64, 4, 2),
        (64, 64, 64, 128, 8, 2),
        (128, 64, 32, 128, 8, 2),
        (64, 128, 64, 128, 8, 2),
        (64, 64, 32, 256, 8, 2),
        (64, 32, 32, 512, 8, 2),
    ],
    4: [
        (32, 32, 32, 64, 8, 2),
        (64, 32, 16, 64, 8, 2),
        (32, 32, 32, 128, 4, 2),
        (64, 32, 32, 128, 8, 2),
    ],
}
SHAPES = {"forward": FORWARD_SHAPES, "backward": BACKWARD_SHAPES}

# Blocks under the interpreter: small, fixed (autotuning would rerun every config) and narrow enough in D
# that the tests' odd widths (20, 24) cross several K-slices and dA slices.
INTERPRET_BLOCKS = {
    "forward": {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16},
    "backward": {"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "BLOCK_DV": 16},
}

# Tensor memory on sm_100: 512 fp32 columns per SM hold the tcgen05 accumulators of s (BLOCK_N columns)
# and dA (BLOCK_DV). A kernel over that budget compiles to a trap instead of failing to compile.
TMEM_COLUMNS = 512


def config(shape: tuple[int, ...]) -> triton.Config:
    """A triton.Config from one row of FORWARD_SHAPES or BACKWARD_SHAPES."""
    names = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_DV")[: len(shape) - 2]
    return triton.Config(dict(zip(names, shape[:-2], strict=True)), num_warps=shape[-2], num_stages=shape[-1])


def shared_memory_bytes(cfg: triton.Config, itemsize: int) -> int:
    """An upper bound on the shared memory Triton allocates for one of our kernels at this config.

    The K-loop's pipeline holds num_stages BLOCK_K-slices of the row and the column operand; the backward's
    second product stages its dS tile and the B slice of dA = dS B instead (twice for fp32, whose operands
    are split into two tf32 halves), reusing the same memory; reductions and layout conversions need up to
    one fp32 tile of s on top. tests/kernels/test_compile.py checks the bound against what the compiler
    allocates, for every config, arch, dtype and kernel variant (the tightest case uses 88% of it).
    """
    kw = cfg.kwargs
    m, n, k = kw["BLOCK_M"], kw["BLOCK_N"], kw["BLOCK_K"]
    staged = cfg.num_stages * (m + n) * k * itemsize
    if "BLOCK_DV" in kw:
        staged = max(staged, (m * n + n * kw["BLOCK_DV"]) * itemsize * (2 if itemsize == 4 else 1))
    return staged + m * n * 4


def fit_configs(configs: list[triton.Config], d: int, itemsize: int, shared_limit: int, arch: int) -> list:
    """The configs that can run at width d: BLOCK_K and BLOCK_DV clamped to d (rounded up to a power of
    two, at least 16), duplicates dropped, and those over the shared memory (or sm_100 tensor memory)
    budget removed before any launch instead of failing at it."""
    width = max(16, triton.next_power_of_2(d))
    seen, fits = set(), []
    for cfg in configs:
        kw = dict(cfg.kwargs)
        for name in ("BLOCK_K", "BLOCK_DV"):
            if name in kw:
                kw[name] = min(kw[name], width)
        clamped = triton.Config(kw, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        key = (tuple(sorted(kw.items())), cfg.num_warps, cfg.num_stages)
        if key in seen or shared_memory_bytes(clamped, itemsize) > shared_limit:
            continue
        if arch >= 100 and kw["BLOCK_N"] + kw.get("BLOCK_DV", 0) > TMEM_COLUMNS:
            continue
        seen.add(key)
        fits.append(clamped)
    return fits


@functools.cache
def _device_limits(index: int) -> tuple[int, int]:
    """(shared memory per block in bytes, compute capability as 90 for sm_90) of a CUDA device."""
    major, minor = torch.cuda.get_device_capability(index)
    return max_shared_memory(index), 10 * major + minor


def _prune(configs: list[triton.Config], named_args: dict, **kwargs: Any) -> list[triton.Config]:
    """Triton autotuner hook (early_config_prune): keep the configs that fit this launch's device and D."""
    a = named_args["A"]
    shared, arch = _device_limits(a.device.index or 0)
    fits = fit_configs(configs, int(named_args["D"]), a.element_size(), shared, arch)
    if not fits:
        raise RuntimeError(
            f"no tile configuration of the fused loss fits {shared} bytes of shared memory at D = "
            f"{named_args['D']}; use impl='reference'"
        )
    return fits


def _prune_to_first(configs: list[triton.Config], named_args: dict, **kwargs: Any) -> list[triton.Config]:
    return _prune(configs, named_args, **kwargs)[:1]


# ---------------------------------------------------------------------------------------------------------
# Launching


def forward_grid(rows: int):
    return lambda meta: (triton.cdiv(rows, meta["BLOCK_M"]),)


def backward_grid(rows: int, d: int):
    return lambda meta: (triton.cdiv(rows, meta["BLOCK_M"]), triton.cdiv(d, meta["BLOCK_DV"]))


def partial_slots(rows: int) -> int:
    """Length of a per-row-block partial-sum buffer: enough for the smallest BLOCK_M of any config."""
    return triton.cdiv(rows, 16)


@dataclass(frozen=True)
class Launch:
    """What the host code passed to one kernel launch, apart from the values: the compile check compiles
    exactly these combinations."""

    kernel: str  # module.function of the @triton.jit kernel
    kind: str  # "forward" or "backward": which tile configurations it is autotuned over
    types: tuple[str, ...]  # Triton's type string per argument ("*bf16", "i32", ...)
    host: tuple[tuple[str, Any], ...]  # the constexprs the host code chose (not tiles or precision)


_recording: list[Launch] | None = None


@contextlib.contextmanager
def recorded_launches() -> Iterator[list[Launch]]:
    """Collect every launch inside the block: the compile check runs the host code once under the
    interpreter to learn exactly which kernel variants it launches."""
    global _recording
    _recording, previous = [], _recording
    try:
        yield _recording
    finally:
        _recording = previous


@dataclass(frozen=True)
class Launcher:
    """The forward and backward kernels of one loss: interpreted ({kind: kernel}) or autotuned, one
    autotuner per input width ({(kind, bytes per element): kernel})."""

    kernels: dict
    interpret: bool
    names: dict

    def launch(self, kind: str, grid, *args: Any, **host_constexprs: Any) -> None:
        """kernel[grid](*args) for kind "forward" or "backward"; args[0] is the operand A."""
        kernel = self.kernels[kind] if self.interpret else self.kernels[kind, args[0].element_size()]
        if _recording is not None:
            types = tuple(arg_type(a) for a in args)
            _recording.append(Launch(self.names[kind], kind, types, tuple(sorted(host_constexprs.items()))))
        kernel[grid](*args, **host_constexprs, **launch_options(kind, args[0].dtype, self.interpret))

    def tuned(self, m: int, n: int, d: int) -> list[dict]:
        """The tile shape the autotuner chose per kernel launched at (M, N, D) so far, with the backward's
        number of D-slices (each recomputes every tile of s: the work is (1 + 2 (slices + 1)) M N D
        multiply-adds against the 4 M N D of four matmuls). [] under the interpreter (fixed blocks)."""
        if self.interpret:
            return []
        out = []
        for (kind, itemsize), kernel in self.kernels.items():
            # Triton's Autotuner keeps its choices in `cache`, keyed by the key arguments' values followed by
            # the argument dtypes; tests/kernels/test_tiling.py fails if a Triton release renames it.
            for key, cfg in getattr(kernel, "cache", {}).items():
                if tuple(key[:3]) != (m, n, d) and tuple(key[:3]) != (n, m, d):
                    continue
                row = {"kernel": self.names[kind], "bytes_per_element": itemsize, "m_n_d": list(key[:3])}
                row.update(cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
                if "BLOCK_DV" in cfg.kwargs:
                    row["d_slices"] = triton.cdiv(int(key[2]), cfg.kwargs["BLOCK_DV"])
                out.append(row)
        return out


def launch_options(kind: str, dtype: torch.dtype, interpret: bool) -> dict:
    """PRECISION and DOT_FP32 for inputs of this dtype (plus fixed blocks under the interpreter)."""
    # fp32 inputs use three TF32 products per multiply ("tf32x3": fp32-level accuracy on the tensor cores)
    # instead of "ieee", which lowers tl.dot to scalar FMAs that spill at every useful tile size. The
    # interpreter multiplies bf16 tiles as raw integers (Triton 3.8), so there the operands are upcast to
    # fp32 (exact for bf16) after the same rounding of dS the GPU applies.
    dot_fp32 = interpret and dtype == torch.bfloat16
    precision = "tf32x3" if dtype == torch.float32 else "tf32"
    if interpret:
        return {"PRECISION": "ieee", "DOT_FP32": dot_fp32, **INTERPRET_BLOCKS[kind]}
    return {"PRECISION": precision, "DOT_FP32": False}


def make_launcher(forward_kernel, backward_kernel, interpret: bool, forward_reset=(), backward_reset=()):
    """Launcher for two @triton.jit kernels whose first operand argument is named A (the pruning hook reads
    its dtype and device) and that take D. reset_*: buffers accumulated by atomics or per-program slots,
    which the autotuner must zero before each trial run."""
    kernels = {"forward": forward_kernel, "backward": backward_kernel}
    names = {kind: f"{k.fn.__module__}.{k.fn.__name__}" for kind, k in kernels.items()}
    if interpret:
        return Launcher({kind: interpreted(k) for kind, k in kernels.items()}, True, names)
    reset = {"forward": list(forward_reset), "backward": list(backward_reset)}
    # Without autotuning the list keeps every candidate (the first one may not fit a small GPU) and the
    # pruning hook returns only the first that fits.
    prune = _prune if os.environ.get("MUSER_AUTOTUNE", "1") != "0" else _prune_to_first
    tuned = {
        (kind, itemsize): triton.autotune(
            [config(s) for s in shapes],
            key=["M", "N", "D"],
            reset_to_zero=reset[kind],
            prune_configs_by={"early_config_prune": prune},
        )(kernels[kind])
        for kind, by_size in SHAPES.items()
        for itemsize, shapes in by_size.items()
    }
    return Launcher(tuned, False, names)


def use_interpreter(device: torch.device) -> bool:
    """CUDA tensors run compiled kernels; anything else (or TRITON_INTERPRET=1) runs the interpreter."""
    return device.type != "cuda" or interpret_requested()
