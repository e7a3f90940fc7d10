"""The live progress bar of the commands that work through a list of tracks (`muser shard`, `muser embed`):
tracks done of the total, tracks/s, audio hours/s and ETA, on stderr so that stdout stays parseable."""

from __future__ import annotations

import time
from typing import Any


class TrackProgress:
    """A rich bar labelled `label`, or nothing when disabled (--quiet, a library call)."""

    def __init__(self, enabled: bool, total: int, label: str):
        self.enabled, self.total, self.label = enabled, total, label
        self.progress: Any = None
        self.done = 0
        self.start = time.perf_counter()

    def __enter__(self) -> TrackProgress:
        if self.enabled:
            # rich is imported here, not at module level: `muser --help` must not pay for it.
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            from muser.console import make_console

            self.progress = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rates]}"),
                TimeRemainingColumn(),
                console=make_console(stderr=True),
            )
            self.progress.start()
            self.progress.add_task(self.label, total=self.total, rates="")
        self.start = time.perf_counter()
        return self

    def advance(self, tracks: int, audio_seconds: float) -> None:
        """`tracks` more tracks done; audio_seconds: all audio this run has processed so far."""
        self.done += tracks
        if self.progress is None:
            return
        dt = max(time.perf_counter() - self.start, 1e-9)
        rates = f"{self.done / dt:.1f} tracks/s  {audio_seconds / 3600 / dt:.3f} audio h/s"
        self.progress.update(self.progress.task_ids[0], completed=self.done, rates=rates)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()
