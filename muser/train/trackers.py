"""Experiment trackers for `muser pretrain --report-to tensorboard,wandb,trackio`: each gets the numeric
fields of every metrics.jsonl record at its step, and the run config once. The tracker run's id is kept
in RUN/trackers.json, so --resume continues the same tracker run. wandb and trackio are optional extras,
imported only when asked for."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from muser.atomic import atomic_write_text
from muser.runs import RunFolder

TRACKERS = ("tensorboard", "wandb", "trackio")
EXTRA = {"tensorboard": "tensorboard", "wandb": "muser[wandb]", "trackio": "muser[trackio]"}


def installed(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def parse_report_to(text: str | None) -> list[str]:
    """'tensorboard,wandb' -> the tracker names; None: TensorBoard when installed (as before trackers
    were choosable); 'none' or '': no tracker. Raises ValueError for an unknown or missing tracker."""
    if text is None:
        return ["tensorboard"] if installed("tensorboard") else []
    names = [n.strip().lower() for n in text.split(",") if n.strip() and n.strip().lower() != "none"]
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise ValueError(f"unknown --report-to {unknown[0]!r}; choose from {', '.join(TRACKERS)} (or none)")
    for name in names:
        if not installed(name):
            raise ValueError(f"--report-to {name} needs the {name} package: pip install '{EXTRA[name]}'")
    return list(dict.fromkeys(names))


def numeric(record: dict[str, Any]) -> dict[str, float]:
    """The fields of a metrics record a tracker plots (numbers, not booleans, not the step itself)."""
    return {
        k: v
        for k, v in record.items()
        if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class TensorBoard:
    def __init__(self, out: Path, config: dict[str, Any], start_step: int, state: dict[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events a resumed run logged past its checkpoint, as metrics.jsonl's truncate does
        self.writer = SummaryWriter(str(RunFolder(out).tensorboard), purge_step=start_step or None)
        if not start_step:
            self.writer.add_text("config", "```json\n" + json.dumps(config, indent=2) + "\n```")

    def log(self, values: dict[str, float], step: int) -> None:
        for key, value in values.items():
            self.writer.add_scalar(key, value, step)
        self.writer.flush()  # a killed run keeps what it logged, as metrics.jsonl does

    def close(self) -> None:
        self.writer.close()


class WandB:
    """Weights & Biases; mode (online, offline, disabled) from WANDB_MODE or `wandb login` as usual."""

    def __init__(self, out: Path, config: dict[str, Any], start_step: int, state: dict[str, Any]) -> None:
        import wandb

        state.setdefault("id", uuid.uuid4().hex[:16])
        state.setdefault("project", "muser")
        self.run = wandb.init(
            project=state["project"],
            id=state["id"],
            name=out.name,
            dir=str(out),
            config=config,
            resume="allow",
        )

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


class Trackio:
    """trackio's local store (TRACKIO_DIR, default HF_HOME/trackio), or a Space if TRACKIO_SPACE_ID is set."""

    def __init__(self, out: Path, config: dict[str, Any], start_step: int, state: dict[str, Any]) -> None:
        import trackio

        state.setdefault("project", "muser")
        state.setdefault("id", f"{out.name}-{uuid.uuid4().hex[:8]}")
        self.run = trackio.init(project=state["project"], name=state["id"], config=config, resume="allow")

    def log(self, values: dict[str, float], step: int) -> None:
        self.run.log(values, step=step)

    def close(self) -> None:
        self.run.finish()


_CLASSES = {"tensorboard": TensorBoard, "wandb": WandB, "trackio": Trackio}


class Trackers:
    """The trackers of one run (rank 0): `log(record)` sends a metrics.jsonl record to each, `close()`
    flushes them. A resumed run reuses the ids in RUN/trackers.json."""

    def __init__(self, names: list[str], out: Path, config: dict[str, Any], start_step: int = 0) -> None:
        path = RunFolder(out).trackers  # {name: {"id": ..., "project": ...}}
        saved = json.loads(path.read_text()) if path.is_file() and start_step else {}
        self.state = {name: dict(saved.get(name, {})) for name in names}
        self.active = [_CLASSES[name](out, config, start_step, self.state[name]) for name in names]
        if names:
            atomic_write_text(path, json.dumps({**saved, **self.state}, indent=2) + "\n")

    def log(self, record: dict[str, Any]) -> None:
        if "step" not in record:
            return
        values = numeric(record)
        for tracker in self.active:
            tracker.log(values, int(record["step"]))

    def close(self) -> None:
        for tracker in self.active:
            tracker.close()
        self.active = []
