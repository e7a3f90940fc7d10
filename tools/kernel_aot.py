"""Ahead-of-time compile check of the fused loss kernels, for GPUs this machine does not have.

The host code runs once per dtype under the interpreter to record every kernel variant it launches
(argument types and the constexprs it chooses). Each variant is then compiled with Triton's AOT path and
the ptxas shipped in the triton wheel for sm_80, sm_90 and sm_100, at every tile configuration the
autotuner may try, and reported with registers, spills, shared memory and (sm_100) tensor memory. A
configuration "is chosen" for a (kernel, arch, D, dtype) when it survives the same pruning the autotuner
applies before launching. Results are cached by a hash of everything that goes into the compiler.

    python -m tools.kernel_aot --out benchmarks/results/kernel_compile.json   # the full grid (minutes)
    python -m tools.kernel_aot --stamp   # re-verify the committed report on a subset, record the sources

The report records a hash of the kernel sources (KERNEL_SOURCES); tests/kernels/test_compile.py fails when
the sources no longer match it. `--stamp` is the cheap way to bring an unchanged report up to date (after
an edit that cannot change the compiled code, or for a report written before the hash existed): it
recomputes everything the rows imply, recompiles the default test tier and requires every result to equal
the committed row before it writes the current hash. After a change to a kernel or a tile shape, run the
full grid instead.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import re
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

from muser.atomic import atomic_write_text
from muser.kernels import triton_compat
from muser.kernels.tiling import (
    SHAPES,
    TMEM_COLUMNS,
    Launch,
    config,
    fit_configs,
    launch_options,
    recorded_launches,
    shared_memory_bytes,
)

# Shared memory per block (the opt-in maximum Triton checks at launch), bytes.
ARCH_SHARED = {80: 166912, 90: 232448, 100: 232448}
WIDTHS = (64, 128, 256, 512, 768, 1024)
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
# M and N of the compiled launch: like every width above, divisible by 16, which the JIT specialises on.
ROWS = 4096
MIN_SPILL_FREE = 2  # chosen configs per (kernel, arch, D, dtype) that must compile without spilling
# The files whose text decides what is compiled and which configs are kept: the kernels and the tiling.
KERNEL_SOURCES = ("contrastive_triton.py", "sigmoid_triton.py", "tiling.py")
KERNELS_DIR = Path(triton_compat.__file__).parent  # muser/kernels: where KERNEL_SOURCES live
# The default test tier (and what --stamp recompiles): the heaviest variant of each kernel, sm_90, bf16 and
# fp32, at the widths where the clamped configs differ.
DEFAULT_TIER = {
    "only": (
        ("muser.kernels.contrastive_triton._forward_kernel", (("SYMMETRIC", True),)),
        ("muser.kernels.contrastive_triton._backward_kernel", (("A_TERM", True), ("B_TERM", True))),
        ("muser.kernels.sigmoid_triton._forward_kernel", ()),
        ("muser.kernels.sigmoid_triton._backward_kernel", ()),
    ),
    "archs": (90,),
    "widths": (128, 512, 1024),
    "dtypes": ("bfloat16", "float32"),
}
# What a compiled config reports that must not change between runs of the same sources and compiler.
COMPILED_FIELDS = (
    "registers",
    "spill_stores",
    "spill_loads",
    "shared_bytes",
    "tmem_columns",
    "trap",
    "error",
)


def source_hash() -> str:
    """sha256 over the names and bytes of KERNEL_SOURCES: what the committed report was compiled from."""
    digest = hashlib.sha256()
    for name in KERNEL_SOURCES:
        digest.update(name.encode() + b"\0" + (KERNELS_DIR / name).read_bytes() + b"\0")
    return digest.hexdigest()


def toolchain_missing() -> str | None:
    """Why this Triton cannot compile for NVIDIA GPUs here (no CUDA backend or no ptxas), or None."""
    try:
        path = triton_compat.lookup("triton.knobs.nvidia").ptxas.path
    except (ImportError, RuntimeError) as exc:
        return f"Triton's NVIDIA backend is unavailable ({exc})"
    return None if path and os.path.exists(path) else "the ptxas shipped with Triton is missing"


def _exercise(dtype: torch.dtype) -> None:
    """Run each fused loss forward and backward, symmetric and rows-only, under the interpreter."""
    from muser.kernels import contrastive_loss, sigmoid_loss

    gen = torch.Generator().manual_seed(0)
    for m, n in ((12, 12), (9, 12)):
        q = F.normalize(torch.randn(m, 16, generator=gen), dim=1).to(dtype).requires_grad_()
        k = F.normalize(torch.randn(n, 16, generator=gen), dim=1).to(dtype).requires_grad_()
        scale = torch.tensor(10.0, requires_grad=True)
        contrastive_loss(q, k, scale, impl="triton").backward()
        sigmoid_loss(q, k, scale, torch.tensor(-10.0, requires_grad=True), impl="triton").backward()


def host_launches(dtype: torch.dtype) -> list[Launch]:
    """Every distinct kernel variant the host code launches for inputs of this dtype."""
    with recorded_launches() as seen:
        _exercise(dtype)
    return list(dict.fromkeys(seen))


@dataclass(frozen=True)
class Job:
    launch: Launch
    arch: int
    shape: tuple[int, ...]  # a row of SHAPES, clamped to the width


def _kernel(name: str):
    module, _, attr = name.rpartition(".")
    return getattr(__import__(module, fromlist=[attr]), attr)


def _source(job: Job) -> tuple:
    """(ASTSource arguments, compile options) of one job, as the JIT would build them at ROWS x ROWS."""
    kernel = _kernel(job.launch.kernel)
    dtype = job.launch.types[0][1:]  # operand A's element type, e.g. "bf16"
    torch_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype]
    cfg = config(job.shape)
    constexprs = {
        **dict(job.launch.host),
        **launch_options(job.launch.kind, torch_dtype, interpret=False),
        **cfg.kwargs,
    }
    signature, attrs = {}, {}
    for i, name in enumerate(kernel.arg_names):
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        signature[name] = job.launch.types[i]
        # Pointers from torch are 16-byte aligned and M, N, D and the row strides are multiples of 16:
        # the JIT specialises on both, so the compiled code does too.
        if signature[name].startswith("*") or signature[name] == "i32":
            attrs[(i,)] = [["tt.divisibility", 16]]
    options = {"num_warps": cfg.num_warps, "num_stages": cfg.num_stages}
    return kernel, signature, constexprs, attrs, options


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "muser" / "kernel-compile"


def _device_source(kernel) -> list[str]:
    """The source text of every @triton.jit function a kernel can reach: those of its module and of
    tiling.py. Unlike Triton's own cache key it ignores line numbers, which only move the line info: an
    edited comment above a kernel does not make the check recompile everything."""
    from muser.kernels import tiling

    modules = (sys.modules[kernel.fn.__module__], tiling)
    return sorted(
        v.src for m in modules for v in vars(m).values() if isinstance(v, triton_compat.JITFunction)
    )


def _cache_key(job: Job) -> str:
    kernel, signature, constexprs, attrs, options = _source(job)
    blob = json.dumps(
        [_device_source(kernel), signature, constexprs, sorted(attrs), options, job.arch, triton.__version__],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


def compile_job(job: Job) -> dict:
    """Compile one job and report registers, spill bytes, shared and tensor memory, and whether ptxas
    replaced the body with a trap (an sm_100 kernel over the tensor-memory budget)."""
    path = _cache_dir() / f"{_cache_key(job)}.json"
    if path.exists():
        return json.loads(path.read_text())
    kernel, signature, constexprs, attrs, options = _source(job)
    src = triton_compat.ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    target = triton_compat.GPUTarget("cuda", job.arch, 32)
    log = io.StringIO()
    start = time.perf_counter()
    triton_compat.capture_ptxas_log(True)
    try:
        with contextlib.redirect_stdout(log):
            compiled = triton.compile(src, target=target, options=options)
    except Exception as exc:  # a config that does not compile is a result, not a crash of the check
        return {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"}
    finally:
        triton_compat.capture_ptxas_log(False)
    text = log.getvalue()

    def number(pattern: str) -> int:
        found = re.search(pattern, text)
        if found is None:
            raise RuntimeError(f"ptxas printed no '{pattern}' for {job}; its report format changed")
        return int(found.group(1))

    result = {
        "registers": number(r"Used (\d+) registers"),
        "spill_stores": number(r"(\d+) bytes spill stores"),
        "spill_loads": number(r"(\d+) bytes spill loads"),
        "shared_bytes": int(compiled.metadata.shared),
        "tmem_columns": int(getattr(compiled.metadata, "tmem_size", 0) or 0),
        "trap": "trap;" in compiled.asm["ptx"],
        "compile_seconds": round(time.perf_counter() - start, 2),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(result))  # workers may race on one key: each temp name is unique
    return result


def _worker_init() -> None:
    # Triton's own cache would skip ptxas and with it the register report; ours keys on the same inputs.
    triton.knobs.compilation.always_compile = True
    torch.set_num_threads(1)


def _label(launch: Launch) -> str:
    kernel = launch.kernel.removeprefix("muser.kernels.")
    return f"{kernel}[{','.join(f'{k}={v}' for k, v in launch.host)}]" if launch.host else kernel


def candidates(kind: str, itemsize: int, width: int) -> list[tuple[int, ...]]:
    """The tile shapes the autotuner starts from at this width (clamped, without duplicates)."""
    shapes = SHAPES[kind][itemsize]
    clamped = fit_configs([config(s) for s in shapes], width, itemsize, shared_limit=1 << 40, arch=0)
    return [_shape(cfg) for cfg in clamped]


def _shape(cfg: triton.Config) -> tuple[int, ...]:
    names = ("BLOCK_M", "BLOCK_N", "BLOCK_K", "BLOCK_DV")
    return (*(cfg.kwargs[n] for n in names if n in cfg.kwargs), cfg.num_warps, cfg.num_stages)


def run(
    archs: Iterable[int] = tuple(ARCH_SHARED),
    widths: Iterable[int] = WIDTHS,
    dtypes: Iterable[str] = tuple(DTYPES),
    only: tuple[tuple[str, tuple], ...] | None = None,
    workers: int | None = None,
) -> list[dict]:
    """Compile every (launch, arch, config) of the grid and return one row per (kernel, arch, D, dtype).

    only: restrict to these (kernel, host constexprs) launches (the default test tier).
    """
    plan: list[tuple[Launch, str, int, int, list]] = []
    jobs: dict[Job, None] = {}
    for dtype_name in dtypes:
        dtype = DTYPES[dtype_name]
        itemsize = torch.empty((), dtype=dtype).element_size()
        for launch in host_launches(dtype):
            if only is not None and (launch.kernel, launch.host) not in only:
                continue
            for arch in archs:
                for width in widths:
                    shapes = candidates(launch.kind, itemsize, width)
                    chosen = {
                        _shape(c)
                        for c in fit_configs(
                            [config(s) for s in shapes], width, itemsize, ARCH_SHARED[arch], arch
                        )
                    }
                    plan.append((launch, dtype_name, arch, width, [(s, s in chosen) for s in shapes]))
                    jobs.update((Job(launch, arch, s), None) for s in shapes)
    ordered = list(jobs)
    context = get_context("spawn")
    with ProcessPoolExecutor(workers or os.cpu_count() or 1, context, initializer=_worker_init) as pool:
        results = dict(zip(ordered, pool.map(compile_job, ordered), strict=True))

    rows = []
    for launch, dtype_name, arch, width, shapes in plan:
        itemsize = torch.empty((), dtype=DTYPES[dtype_name]).element_size()
        configs = []
        for shape, chosen in shapes:
            estimate = shared_memory_bytes(config(shape), itemsize)
            configs.append(
                {"shape": list(shape), "chosen": chosen, "shared_estimate": estimate}
                | results[Job(launch, arch, shape)]
            )
        rows.append(
            {
                "kernel": _label(launch),
                "arch": f"sm_{arch}",
                "d": width,
                "dtype": dtype_name,
                "configs": configs,
            }
        )
    return rows


def problems(rows: list[dict]) -> list[str]:
    """Everything wrong with a grid: a chosen config that fails, exceeds a limit or traps; a compiled
    shared memory above the pruning estimate; fewer than MIN_SPILL_FREE spill-free chosen configs."""
    found = []
    for row in rows:
        where = f"{row['kernel']} {row['arch']} D={row['d']} {row['dtype']}"
        limit = ARCH_SHARED[int(row["arch"][3:])]
        spill_free = 0
        for c in row["configs"]:
            if "error" in c:
                if c["chosen"]:
                    found.append(f"{where} {c['shape']}: chosen but does not compile ({c['error']})")
                continue
            if c["shared_bytes"] > c["shared_estimate"]:
                found.append(
                    f"{where} {c['shape']}: {c['shared_bytes']} bytes of shared memory, above the pruning "
                    f"estimate {c['shared_estimate']}"
                )
            over = c["shared_bytes"] > limit or c["trap"] or c["tmem_columns"] > TMEM_COLUMNS
            if c["chosen"] and over:
                found.append(f"{where} {c['shape']}: chosen but over the hardware limits ({c})")
            spill_free += c["chosen"] and not over and c["spill_stores"] == 0 and c["spill_loads"] == 0
        if spill_free < MIN_SPILL_FREE:
            found.append(f"{where}: only {spill_free} chosen configs compile without spilling")
    return found


def grid_mismatches(rows: list[dict]) -> list[str]:
    """What no longer matches between a report's rows and the current tile configurations, without
    compiling: the row count of the full grid, each row's candidate shapes and which of them are chosen."""
    found = []
    expected = len(ARCH_SHARED) * len(WIDTHS) * len(DTYPES)
    if len(rows) != 7 * expected:
        found.append(f"{len(rows)} rows, the full grid has {7 * expected} (7 kernel variants x {expected})")
    for row in rows:
        where = f"{row['kernel']} {row['arch']} D={row['d']} {row['dtype']}"
        kind = "backward" if "backward" in row["kernel"] else "forward"
        itemsize = 4 if row["dtype"] == "float32" else 2
        shapes = [tuple(c["shape"]) for c in row["configs"]]
        if shapes != candidates(kind, itemsize, row["d"]):
            found.append(f"{where}: configs {shapes} are not the current candidates")
            continue
        arch = int(row["arch"][3:])
        kept = fit_configs([config(s) for s in shapes], row["d"], itemsize, ARCH_SHARED[arch], arch)
        chosen = {_shape(c) for c in kept}
        if [c["chosen"] for c in row["configs"]] != [s in chosen for s in shapes]:
            found.append(f"{where}: the chosen configs differ from the current pruning")
    return found


def subset_mismatches(report_rows: list[dict], fresh: list[dict]) -> list[str]:
    """Rows of `fresh` (just compiled) whose compiled results differ from the same rows of the report."""
    committed = {(r["kernel"], r["arch"], r["d"], r["dtype"]): r for r in report_rows}
    found = []
    for row in fresh:
        key = (row["kernel"], row["arch"], row["d"], row["dtype"])
        old = committed.get(key)
        if old is None:
            found.append(f"{' '.join(map(str, key))}: not in the report")
            continue
        for new_cfg, old_cfg in zip(row["configs"], old["configs"], strict=False):
            new = {f: new_cfg.get(f) for f in COMPILED_FIELDS}
            was = {f: old_cfg.get(f) for f in COMPILED_FIELDS}
            if new != was or new_cfg["shape"] != old_cfg["shape"]:
                where = f"{' '.join(map(str, key))} {new_cfg['shape']}"
                found.append(f"{where}: compiled {new}, the report says {was}")
    return found


def stamp(path: Path, workers: int | None = None) -> list[str]:
    """Re-verify the report at `path` without the full grid and, when nothing is wrong, record the current
    source_hash() in it. Returns what is wrong (empty when stamped)."""
    report = json.loads(path.read_text())
    rows = report["rows"]
    found = [f"problems recomputed from the rows: {p}" for p in problems(rows)]
    if report["problems"] != problems(rows):
        found.append("the report's problems are not the ones its rows imply")
    if report.get("triton") != triton.__version__:
        found.append(f"the report is from Triton {report.get('triton')}, this is {triton.__version__}")
    found += grid_mismatches(rows)
    if not found:
        found += subset_mismatches(rows, run(workers=workers, **DEFAULT_TIER))
    if not found:
        report["kernel_sources_sha256"] = source_hash()
        _write(path, report)
    return found


def _write(path: Path, report: dict) -> None:
    # One line per (kernel, arch, D, dtype) row: readable diffs when a config or the compiler changes.
    head = json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=1)[:-2]
    body = ",\n".join(json.dumps(row) for row in report["rows"])
    atomic_write_text(path, f'{head},\n "rows": [\n{body}\n ]\n}}\n')


def markdown(rows: list[dict], arch: str = "sm_90", dtype: str = "bfloat16") -> str:
    """The report as tables: every chosen config at one (arch, dtype) per kernel and D, then one line per
    (kernel, arch, dtype) over all widths for the rest."""
    out = [
        f"## Chosen configs on {arch}, {dtype}",
        "",
        "shape: BLOCK_M, BLOCK_N, BLOCK_K, (BLOCK_DV,) warps, stages; then registers / spill bytes / shared",
        "",
        "| kernel | D | configs |",
        "| --- | --- | --- |",
    ]
    merged: list[list] = []  # [kernel, first D, last D, cells]: consecutive widths with the same configs
    for row in rows:
        if row["arch"] != arch or row["dtype"] != dtype:
            continue
        cells = "; ".join(
            f"{tuple(c['shape'])}: {c['registers']} / {c['spill_stores']} / {c['shared_bytes'] / 1024:.0f} KB"
            for c in row["configs"]
            if c["chosen"] and "error" not in c
        )
        if merged and merged[-1][0] == row["kernel"] and merged[-1][3] == cells:
            merged[-1][2] = row["d"]
        else:
            merged.append([row["kernel"], row["d"], row["d"], cells])
    for kernel, first, last, cells in merged:
        out.append(f"| {kernel} | {first if first == last else f'{first}-{last}'} | {cells} |")
    out += [
        "",
        "## Every (kernel, arch, dtype), over D = " + ", ".join(str(w) for w in WIDTHS),
        "",
        "| kernel | arch | dtype | chosen | spill-free | max regs | max spill bytes | max shared KB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups: dict[tuple, list] = {}
    for row in rows:
        chosen = [c for c in row["configs"] if c["chosen"] and "error" not in c]
        groups.setdefault((row["kernel"], row["arch"], row["dtype"]), []).extend(chosen)
    for (kernel, arch_name, dtype_name), chosen in groups.items():
        free = sum(c["spill_stores"] == 0 and c["spill_loads"] == 0 for c in chosen)
        out.append(
            f"| {kernel} | {arch_name} | {dtype_name} | {len(chosen)} | {free} | "
            f"{max(c['registers'] for c in chosen)} | {max(c['spill_stores'] for c in chosen)} | "
            f"{max(c['shared_bytes'] for c in chosen) / 1024:.0f} |"
        )
    return "\n".join(out) + "\n"


def _compile_seconds(rows: list[dict]) -> dict[tuple, float]:
    """Seconds each distinct compilation took when it ran (the rows repeat them across widths)."""
    return {
        (row["kernel"], row["arch"], row["dtype"], tuple(c["shape"])): c.get("compile_seconds", 0.0)
        for row in rows
        for c in row["configs"]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kernel_compile.json"))
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument(
        "--stamp",
        action="store_true",
        help="re-verify the report at --out on the default tier and record the current kernel source hash",
    )
    args = parser.parse_args(argv)
    if args.stamp:
        found = stamp(args.out, args.workers)
        for line in found:
            print(" ", line)
        verdict = f"not stamped, {len(found)} problems" if found else f"stamped {source_hash()}"
        print(f"{args.out}: {verdict}")
        return 1 if found else 0
    start = time.perf_counter()
    rows = run(workers=args.workers)
    found = problems(rows)
    report = {
        "generated_by": "python -m tools.kernel_aot",
        "triton": triton.__version__,
        "kernel_sources_sha256": source_hash(),
        "config_fields": ["BLOCK_M", "BLOCK_N", "BLOCK_K", "(BLOCK_DV)", "num_warps", "num_stages"],
        "shared_limit_bytes": {f"sm_{a}": v for a, v in ARCH_SHARED.items()},
        "tmem_limit_columns": TMEM_COLUMNS,
        "problems": found,
        "seconds_this_run": round(time.perf_counter() - start, 1),  # small when the cache answered
        "compile_seconds_all": round(sum(_compile_seconds(rows).values()), 1),  # one worker, cold cache
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _write(args.out, report)
    atomic_write_text(
        args.out.with_suffix(".md"),
        f"# Kernel compile check (Triton {triton.__version__})\n\n" + markdown(rows),
    )
    print(f"{len(rows)} (kernel, arch, D, dtype) rows, {len(found)} problems -> {args.out} (and .md)")
    for line in found:
        print(" ", line)
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
