"""Distributed plumbing: read the torchrun environment, rank helpers, and the torchrun re-launch.

One process is the default; `--gpus N` / `--procs N` / `--nnodes M` re-launch the run under
`torch.distributed.run` with N processes per node, each of which calls `dist_init()`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from types import FrameType
from typing import Any

import torch
import torch.distributed as dist

# Environment variables torchrun sets in every worker; their presence means "we are a worker".
_WORKER_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


def in_torchrun() -> bool:
    """True inside a process started by torchrun (the worker environment is set)."""
    return all(name in os.environ for name in _WORKER_ENV)


def choose_device(name: str = "auto", option: str = "--device", cpu: str = "--device cpu") -> torch.device:
    """The device a `--device`-style option names: auto (the first CUDA device when one is visible, else
    the CPU), cpu, cuda or cuda:N. Every application picks its device here.

    option / cpu: how the user asked, and how to ask for the CPU instead, for the one-sentence error.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.split(":", 1)[0] not in ("cpu", "cuda"):
        raise ValueError(f"{option} {name!r} is not a device; use auto, cpu or cuda")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{option} asks for CUDA but no CUDA device is visible; use {cpu} for the CPU")
    try:
        return torch.device(name)
    except RuntimeError:  # e.g. "cuda:x"
        raise ValueError(f"{option} {name!r} is not a device; use auto, cpu, cuda or cuda:N") from None


def check_gpus(gpus: int) -> None:
    """Refuse `--gpus N` (N > 0) in one sentence when this machine has fewer than N visible CUDA devices.

    Called before torchrun starts: otherwise N workers each fail with the same sentence and torchrun adds
    its own traceback."""
    if gpus <= 0:
        return
    found = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if found >= gpus:
        return
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f" (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
    if found == 0:
        raise ValueError(
            f"--gpus {gpus} asks for CUDA but no CUDA device is visible{where}; use --gpus 0 for CPU"
        )
    raise ValueError(
        f"--gpus {gpus} asks for {gpus} CUDA devices but this machine shows {found}{where}; "
        f"use --gpus {found}"
    )


def dist_init(device: str = "auto") -> tuple[int, int, int, torch.device]:
    """Read the torchrun environment and join the process group; a no-op for a single process.

    device: "cuda" (NCCL, one GPU per local rank), "cpu" (gloo) or "auto" (CUDA when available).
    Returns (rank, local_rank, world_size, device).
    """
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, not {device!r}")
    try:
        use_cuda = choose_device(device, "--gpus", "--gpus 0").type == "cuda"
    except ValueError as err:  # pretrain reports a missing GPU as a failed start (exit status 1)
        raise RuntimeError(str(err)) from None
    if not in_torchrun():
        return 0, 0, 1, torch.device("cuda", 0) if use_cuda else torch.device("cpu")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return rank, local_rank, world_size, dev


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def print0(*args: object, **kwargs: Any) -> None:
    """print() on global rank 0 only (the process that talks to the user)."""
    if not is_dist() or dist.get_rank() == 0:
        print(*args, **kwargs)


def barrier() -> None:
    if is_dist():
        dist.barrier()


def dist_cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of a small tensor over ranks (the identity for one process)."""
    if not is_dist():
        return values
    out = values.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out / dist.get_world_size()


def launch_command(
    worker_args: Sequence[str],
    nproc_per_node: int,
    nnodes: int = 1,
    node_rank: int = 0,
    master_addr: str = "127.0.0.1",
    master_port: int = 29500,
) -> list[str]:
    """The torchrun command line that runs `python -m <worker_args...>` on nproc_per_node processes.

    One node uses `--standalone` (a free local port, so concurrent runs on one machine never collide);
    several nodes rendezvous at master_addr:master_port with a static node rank.
    """
    if nproc_per_node < 1 or nnodes < 1:
        raise ValueError(f"need at least one process and one node, got {nproc_per_node} x {nnodes}")
    if not 0 <= node_rank < nnodes:
        raise ValueError(f"--node-rank must be in [0, {nnodes}), got {node_rank}")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if nnodes == 1:
        cmd += ["--standalone", "--nnodes=1"]
    else:
        cmd += [
            f"--nnodes={nnodes}",
            f"--node-rank={node_rank}",
            f"--master-addr={master_addr}",
            f"--master-port={master_port}",
        ]
    return [*cmd, "-m", *worker_args]


def run_forwarding_signals(cmd: Sequence[str], env: dict[str, str] | None = None) -> tuple[int, int | None]:
    """Run cmd as a child, forwarding SIGINT/SIGTERM to it; returns (exit code, signal received or None).

    The child gets its own session so a terminal Ctrl-C reaches it once (through us), not twice; torchrun
    forwards the signal to its workers, which save a checkpoint and exit.
    """
    proc = subprocess.Popen(list(cmd), env=env, start_new_session=True)
    received: list[int] = []

    def forward(signum: int, frame: FrameType | None) -> None:
        received.append(signum)
        if proc.poll() is None:
            proc.send_signal(signum)

    # Handlers can only be installed from the main thread; elsewhere the child just inherits nothing.
    main_thread = threading.current_thread() is threading.main_thread()
    sigs = (signal.SIGINT, signal.SIGTERM) if main_thread else ()
    previous = {s: signal.signal(s, forward) for s in sigs}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    return code, (received[0] if received else None)
