"""RunFolder: the one object that knows a training run's folder on disk.

    RUN/config.json      what ran: version, world size, step count, the data/model/train configs
    RUN/metrics.jsonl    one JSON record per logged step (RUN/tensorboard/ and trackers.json beside it)
    RUN/last.pt          the latest training state; step-KKKKKKK.pt the kept ones (checksums.json: sha256)
    RUN/init/            the untrained model (tokenizer, architecture) every rank and --resume rebuild from
    RUN/model/           the trained model's export (save_pretrained): `--checkpoint RUN` means RUN/model
    RUN/result.json      the run summary pretrain() returns

Training writes these files; eval, the catalogue and the demo only read RUN/model and result.json, so the
folder's owner lives on the library floor where all of them can ask it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class RunFolder:
    root: Path

    CONFIG = "config.json"
    METRICS = "metrics.jsonl"
    TENSORBOARD = "tensorboard"
    TRACKERS = "trackers.json"  # the --report-to trackers' run ids, so --resume continues the same runs
    LAST = "last.pt"
    CHECKSUMS = "checksums.json"
    INIT = "init"
    MODEL = "model"
    RESULT = "result.json"

    def __init__(self, root: str | Path) -> None:
        object.__setattr__(self, "root", Path(root))

    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / self.METRICS

    @property
    def tensorboard(self) -> Path:
        return self.root / self.TENSORBOARD

    @property
    def trackers(self) -> Path:
        return self.root / self.TRACKERS

    @property
    def last(self) -> Path:
        return self.root / self.LAST

    @property
    def checksums(self) -> Path:
        return self.root / self.CHECKSUMS

    @property
    def init(self) -> Path:
        return self.root / self.INIT

    @property
    def model(self) -> Path:
        return self.root / self.MODEL

    @property
    def result(self) -> Path:
        return self.root / self.RESULT

    @staticmethod
    def step_name(step: int) -> str:
        return f"step-{step:07d}.pt"

    def step(self, step: int) -> Path:
        """RUN/step-KKKKKKK.pt, the training state kept at `step`."""
        return self.root / self.step_name(step)

    def steps(self) -> list[Path]:
        """The kept step-K.pt files, newest first."""
        return sorted(self.root.glob("step-*.pt"), reverse=True)

    def has_model(self) -> bool:
        """True when RUN/model holds an export (what `--checkpoint RUN` loads)."""
        return (self.model / "config.json").is_file()

    def read_result(self) -> dict[str, Any] | None:
        """RUN/result.json, or None when the run has not written one (or it is not a JSON object)."""
        try:
            result = json.loads(self.result.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return result if isinstance(result, dict) else None
