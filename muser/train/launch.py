"""Run `pretrain` on several processes: write the three configs to a spec file and start torchrun on
`python -m muser.train SPEC` (muser/train/__main__.py), whose workers call `pretrain` again inside the
torchrun environment. A leaf module: it knows the configs and torchrun, never the trainer."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

from muser.atomic import atomic_write_text
from muser.config import DataConfig, ModelConfig, TrainConfig, from_dict, to_dict
from muser.distributed import launch_command, run_forwarding_signals
from muser.runs import RunFolder


def write_spec(data: DataConfig, model: ModelConfig, train: TrainConfig) -> Path:
    """RUN/launch-node{R}.json (atomically): what every worker of this node rebuilds its configs from."""
    out = Path(train.output)
    out.mkdir(parents=True, exist_ok=True)
    spec = out / f"launch-node{train.node_rank}.json"
    atomic_write_text(
        spec, json.dumps({"data": to_dict(data), "model": to_dict(model), "train": to_dict(train)}, indent=2)
    )
    return spec


def read_spec(path: str | Path) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    spec = json.loads(Path(path).read_text())
    return (
        from_dict(DataConfig, spec["data"]),
        from_dict(ModelConfig, spec["model"]),
        from_dict(TrainConfig, spec["train"]),
    )


def launch(data: DataConfig, model: ModelConfig, train: TrainConfig) -> dict[str, Any]:
    """Start torchrun with one process per GPU (or --procs CPU processes) on this node and wait for it.

    Returns rank 0's result (RUN/result.json) on the node that has rank 0; raises RuntimeError when the
    workers fail (their own errors are printed above by torchrun).
    """
    spec = write_spec(data, model, train)
    result_path = RunFolder(train.output).result
    result_path.unlink(missing_ok=True)
    nproc = train.gpus if train.gpus > 0 else train.procs
    cmd = launch_command(
        ["muser.train", str(spec)], nproc, train.nnodes, train.node_rank, train.master_addr, train.master_port
    )
    code, received = run_forwarding_signals(cmd)
    result: dict[str, Any] = json.loads(result_path.read_text()) if result_path.is_file() else {}
    if code != 0 and not (received and result):
        raise RuntimeError(
            f"the distributed run failed (torchrun exit code {code}); the workers' errors are printed above"
        )
    if received and not result.get("stopped"):
        result["stopped"] = signal.Signals(received).name
    return result or {"output": train.output, "node_rank": train.node_rank, "exit_code": code}
