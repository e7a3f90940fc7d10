"""The run folder's bookkeeping files (rank 0 writes them): the run's configs (new, or merged with a
resumed run's config.json), the --resume check against last.pt, config.json (what ran), metrics.jsonl
(one record per logged step) and result.json (the run summary)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from muser import __version__
from muser.atomic import atomic_write_json, atomic_write_text
from muser.config import DEFAULT_PRESET, DataConfig, ModelConfig, TrainConfig, from_dict, preset, to_dict
from muser.runs import RunFolder
from muser.train import checkpoint as ckpt
from muser.train.trackers import Trackers, parse_report_to

# Options a resumed run must share with the saved one: they fix the data stream and the step arithmetic.
_RESUME_FIXED = (
    ("data", ("batch_size", "shards", "split", "crop_seconds")),
    ("train", ("grad_accum", "seed", "loss")),
)


def run_configs(
    output: str,
    overrides: dict[str, dict[str, Any]],
    resume: bool = False,
    model: ModelConfig | None = None,
) -> tuple[DataConfig, ModelConfig, TrainConfig]:
    """The three configs of a run: `overrides` {"data": {field: value}, "train": {...}} over the defaults
    or, with `resume`, over the run's own config.json, so options given again win and the rest continue.

    model: the architecture when chosen now (a preset, a text encoder); None keeps the resumed run's, or
    the tiny preset for a new run. overrides["model"] (training-mode augmentation fields) applies on top
    of either. Raises ValueError naming the problem.
    """
    saved: dict[str, Any] = {}
    path = RunFolder(output).config
    if resume:
        if not path.is_file():
            raise ValueError(f"--resume: {path} not found; --output must be an earlier run's folder")
        try:
            saved = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(
                f"--resume: {path} is not valid JSON ({err}); it cannot describe the run"
            ) from None
        if not isinstance(saved, dict):
            raise ValueError(f"--resume: {path} is not a run configuration (a JSON object)")
    elif not overrides.get("data", {}).get("shards"):
        raise ValueError("--shards is required (a folder written by `muser shard`; repeat to mix)")
    sections = {name: {**saved.get(name, {}), **overrides.get(name, {})} for name in ("data", "train")}
    sections["train"]["output"] = output
    sections["train"]["resume"] = resume
    if "steps" in overrides.get("train", {}):
        sections["train"]["epochs"] = None  # --steps on a resumed --epochs run: the step count wins
    if model is not None:
        model_dict = to_dict(model)
    elif "model" in saved:
        model_dict = saved["model"]
    else:
        model_dict = to_dict(preset(DEFAULT_PRESET))
    model_dict = {**model_dict, **overrides.get("model", {})}
    try:
        return (
            from_dict(DataConfig, sections["data"]),
            from_dict(ModelConfig, model_dict),
            from_dict(TrainConfig, sections["train"]),
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"cannot build the run configuration: {err}") from None


def load_resume(out: Path, data: DataConfig, train: TrainConfig) -> dict[str, Any] | None:
    """The checkpoint state --resume continues from, or None for a fresh run.

    Raises ValueError when `out` already holds a run and --resume is not set, or when an option that fixes
    the data stream differs from the saved run's.
    """
    if not train.resume:
        if RunFolder(out).last.exists():
            raise ValueError(
                f"{out} already holds a run (last.pt); pass --resume to continue it "
                "or choose another --output"
            )
        return None
    state = ckpt.read_state(RunFolder(out).last)
    saved = state.get("config", {})
    configs = {"data": data, "train": train}
    for section, fields in _RESUME_FIXED:
        for name in fields:
            before, now = saved.get(section, {}).get(name), to_dict(configs[section])[name]
            if before is not None and before != now:
                raise ValueError(
                    f"--resume needs the same {name.replace('_', '-')} as the run ({before!r}, now {now!r})"
                )
    return state


def write_config(
    out: Path, world: int, total: int, data: DataConfig, model: ModelConfig, train: TrainConfig
) -> None:
    """RUN/config.json: the version, world size, step count and the three config sections (atomic)."""
    config = {
        "muser_version": __version__,
        "world_size": world,
        "total_steps": total,
        "data": to_dict(data),
        "model": to_dict(model),
        "train": to_dict(train),
    }
    atomic_write_text(RunFolder(out).config, json.dumps(config, indent=2) + "\n")


def write_result(out: Path, result: dict[str, Any]) -> None:
    """RUN/result.json: the summary pretrain() returns (atomic: the demo and eval read it back)."""
    atomic_write_json(RunFolder(out).result, result)


class RateWindow:
    """Throughput since the last logged step: samples per second and the fraction spent waiting for data."""

    def __init__(self) -> None:
        self.start, self.wait, self.steps = time.perf_counter(), 0.0, 0

    def add(self, data_wait: float) -> None:
        self.wait += data_wait
        self.steps += 1

    def take(self, batch_size: int) -> dict[str, float]:
        """{samples_per_s, data_wait_frac} of the steps added since the last take, and start a new window."""
        now = time.perf_counter()
        elapsed = max(now - self.start, 1e-9)
        rates = {
            "samples_per_s": batch_size * self.steps / elapsed,
            "data_wait_frac": min(1.0, self.wait / elapsed),
        }
        self.start, self.wait, self.steps = now, 0.0, 0
        return rates


class MetricsLog:
    """RUN/metrics.jsonl: one JSON record per logged step, appended as the run goes; the numeric fields also
    go to the trackers of --report-to (muser.train.trackers; default TensorBoard, RUN/tensorboard/, when
    the `tensorboard` package is installed). report: whether this process reports to them (rank 0)."""

    def __init__(
        self,
        out: Path,
        report: bool = True,
        start_step: int = 0,
        report_to: str | None = None,
        config: dict[str, Any] | None = None,
    ) -> None:
        self.path = RunFolder(out).metrics
        names = parse_report_to(report_to) if report else []
        self.trackers = Trackers(names, out, config or {}, start_step)

    def read(self) -> list[dict[str, Any]]:
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:  # a torn last line (a kill or a full disk mid-append)
                continue
        return [r for r in records if isinstance(r, dict)]

    def truncate(self, step: int) -> None:
        """Drop records past `step` (logged after the checkpoint a resume starts from): steps never repeat."""
        if not self.path.is_file():
            return
        keep = [m for m in self.read() if m.get("step", 0) <= step]
        atomic_write_text(self.path, "".join(json.dumps(m) + "\n" for m in keep))

    def append(self, record: dict[str, Any]) -> None:
        # Appended in place, not through muser.atomic: rewriting the whole log each step would cost O(steps),
        # and a kill can only tear the last line, which read() skips and truncate() drops on resume.
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        self.trackers.log(record)

    def close(self) -> None:
        """Flush and finish the tracker runs (the end of training)."""
        self.trackers.close()

    def mean_rates(self) -> dict[str, float]:
        """Mean samples_per_s and data_wait_frac over the records ({} when none were logged).

        The first record is left out when there are others: its window includes the warm-up (worker start,
        first CUDA kernels), which says nothing about the steady rate.
        """
        metrics = self.read()
        if not metrics:
            return {}
        steady = metrics[1:] or metrics
        return {k: float(np.mean([m[k] for m in steady])) for k in ("samples_per_s", "data_wait_frac")}
