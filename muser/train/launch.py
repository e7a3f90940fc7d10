"""Run `pretrain` on several processes: write the three configs to a spec file and start torchrun on
`python -m muser.train SPEC`, whose workers call `pretrain` again inside the torchrun environment."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from muser.config import DataConfig, ModelConfig, TrainConfig, from_dict, to_dict
from muser.distributed import launch_command, run_forwarding_signals


def write_spec(data: DataConfig, model: ModelConfig, train: TrainConfig) -> Path:
    """RUN/launch-node{R}.json (atomically): what every worker of this node rebuilds its configs from."""
    out = Path(train.output)
    out.mkdir(parents=True, exist_ok=True)
    spec = out / f"launch-node{train.node_rank}.json"
    tmp = spec.with_name(f".{spec.name}.tmp")
    tmp.write_text(
        json.dumps({"data": to_dict(data), "model": to_dict(model), "train": to_dict(train)}, indent=2)
    )
    os.replace(tmp, spec)
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
    result_path = Path(train.output) / "result.json"
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


def main(argv: list[str] | None = None) -> int:
    """Worker entry (`python -m muser.train SPEC`): 0 when done or stopped by SIGTERM, 130 after SIGINT."""
    from muser.train.trainer import pretrain

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            "usage: python -m muser.train RUN/launch-node0.json (started by `muser pretrain`)",
            file=sys.stderr,
        )
        return 2
    try:
        result = pretrain(*read_spec(args[0]))
    except (ValueError, RuntimeError) as err:
        print(f"muser pretrain: {err}", file=sys.stderr)
        return 1
    return 130 if result.get("stopped") == "SIGINT" else 0
