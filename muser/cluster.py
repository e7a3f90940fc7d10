"""Ray as the engine of the data side (optional extra `muser[ray]`): connect to a cluster and run a list
of independent work units on it as Ray tasks, each retried when the process running it dies.

A unit writes its own output atomically to a path every node sees (a shared file system); the driver
waits for all of them and then writes what joins them (for `muser embed`: the catalogue). Units are
idempotent, so a retried or a rerun unit only rewrites the same file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

RETRIES = 3  # a unit whose worker process dies (killed, out of memory, node lost) runs again this often


def ray_module() -> Any:
    """The `ray` package, or a ValueError in one sentence saying what to install."""
    try:
        import ray
    except ImportError:
        raise ValueError(
            "--ray needs Ray, which is not installed: pip install 'muser[ray]' (or pip install ray)"
        ) from None
    return ray


def connect(address: str) -> Any:
    """Join the Ray cluster at `address` ("auto": the one this machine belongs to, "local": start one on
    this machine) unless this process is connected already (a test's cluster, a notebook's). Returns ray."""
    ray = ray_module()
    if not ray.is_initialized():
        ray.init(address=None if address == "local" else address, log_to_driver=False)
    return ray


def run_units(
    fn: Callable[..., Any],
    units: Sequence[tuple],
    address: str,
    num_gpus: float = 0,
    retries: int = RETRIES,
) -> list[Any]:
    """fn(*unit) for every unit, each as a Ray task (one CPU, or `num_gpus` GPUs), retried up to `retries`
    times when its process dies; returns the results in the order of `units`. fn must be importable by
    the workers (a module-level function) and its arguments picklable."""
    ray = connect(address)
    remote = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=retries)(fn)
    return ray.get([remote.remote(*unit) for unit in units])
