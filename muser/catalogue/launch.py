"""Run `muser embed` on several processes: torchrun starts `python -m muser.catalogue SPEC`
(muser/catalogue/__main__.py) once per GPU (or CPU process), each embedding its share of the shards. A
leaf module: it knows the spec file and torchrun, never the embedding code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from muser.distributed import launch_command, run_forwarding_signals


def read_spec(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def launch(spec: Path, processes: int, nodes: tuple[int, int, str, int] = (1, 0, "127.0.0.1", 29500)) -> None:
    """Start torchrun with `processes` workers on this machine and wait for them; the spec file (config and
    plan, written by the caller) is removed afterwards. nodes: (nnodes, node_rank, master_addr,
    master_port) when several machines take part. RuntimeError when a worker failed (its own error is
    printed above by torchrun); the parts committed so far stay, so the same command resumes."""
    try:
        cmd = launch_command(["muser.catalogue", str(spec)], processes, *nodes)
        code, received = run_forwarding_signals(cmd)
    finally:
        spec.unlink(missing_ok=True)
    if received is not None:
        raise RuntimeError("embedding was interrupted; run the same command again to resume it")
    if code != 0:
        raise RuntimeError(
            f"a distributed embedding worker failed (torchrun exit code {code}); its error is printed above"
        )
