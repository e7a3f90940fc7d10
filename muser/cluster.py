"""Ray as the engine of the data side (optional extra `muser[ray]`): connect to a cluster and run
independent work units on it as Ray tasks, each retried when the process running it dies.

`muser embed --ray`: a unit is a shard; it writes its part atomically to the catalogue folder (a path
every node sees), and the driver assembles the catalogue once all are done. Units are idempotent, so a
retried or a rerun unit only rewrites the same file.

`muser shard --ray`: a unit is a block of consecutive tracks, decoded, resampled and encoded on the
cluster; the samples come back to the driver, which stays the single writer of the tars and the manifest
(the same shards, byte for byte, as a run on one machine, and the same resume). The driver's disk and
network carry every encoded byte: about 0.5 MB per 30-s FLAC track.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
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


BLOCK = 32  # tracks per `muser shard --ray` task: a few seconds of work, so a retry loses little


def _encode_block(jobs: list[tuple | None]) -> list[Any]:
    """One shard-writer unit on a Ray worker: each job's Sample (or the reason it failed), None for a
    track without a job (its known error is the driver's)."""
    from muser.shards.sample import encode_track

    return [encode_track(*job) if job is not None else None for job in jobs]


def track_results(tracks: list, jobs: list[tuple | None], address: str) -> Iterator[tuple[Any, Any]]:
    """(track, result or None) in track order, the results computed in blocks of BLOCK tracks as Ray
    tasks; at most twice the cluster's CPUs blocks are in flight, so the driver holds a bounded number
    of encoded tracks."""
    ray = connect(address)
    remote = ray.remote(num_cpus=1, max_retries=RETRIES)(_encode_block)
    window = max(2, 2 * int(ray.cluster_resources().get("CPU", 1)))
    starts = list(range(0, len(tracks), BLOCK))
    pending = [remote.remote(jobs[i : i + BLOCK]) for i in starts[:window]]
    for n, start in enumerate(starts):
        block = ray.get(pending.pop(0))
        if n + window < len(starts):
            s = starts[n + window]
            pending.append(remote.remote(jobs[s : s + BLOCK]))
        yield from zip(tracks[start : start + BLOCK], block, strict=True)
