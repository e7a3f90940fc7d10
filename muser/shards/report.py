"""How sharding talks to the user: the --max-size parser, the live progress bar and the closing summary
table of a write_shards run."""

from __future__ import annotations

import re
import time
from typing import Any

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1024,
    "kb": 1024,
    "kib": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "mib": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "gib": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    "tib": 1024**4,
}


def parse_size(text: str | int) -> int:
    """'512MB', '1GB', '300k', '1048576' -> bytes (powers of 1024, like the default 512 MiB)."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(
            f"cannot read size {text!r}; write a number with an optional unit, e.g. 512MB or 1GB"
        )
    size = int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    if size <= 0:
        raise ValueError(f"size {text!r} must be positive")
    return size


class ShardProgress:
    """A rich bar (tracks/s, audio hours/s, ETA) on stderr, or nothing when quiet."""

    def __init__(self, enabled: bool, total: int):
        self.enabled, self.total, self.progress, self.task = enabled, total, None, None
        self.start = time.perf_counter()

    def __enter__(self) -> ShardProgress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(
                TextColumn("sharding"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rates]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.progress.start()
            self.task = self.progress.add_task("shard", total=self.total, rates="")
        self.start = time.perf_counter()
        return self

    def advance(self, audio_seconds: float) -> None:
        """One more track done; audio_seconds: audio written so far by this run."""
        if self.progress is None:
            return
        dt = max(time.perf_counter() - self.start, 1e-9)
        done = self.progress.tasks[0].completed + 1
        rates = f"{done / dt:.1f} tracks/s  {audio_seconds / 3600 / dt:.3f} audio h/s"
        self.progress.update(self.task, advance=1, rates=rates)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()


def summary_table(summary: dict[str, Any]) -> Any:
    """A rich table of a write_shards summary: per split shards/samples/hours, then errors."""
    from rich.table import Table

    table = Table(title=f"muser shard -> {summary['dst']}")
    for col in ("split", "shards", "samples", "hours"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name, s in summary["splits"].items():
        table.add_row(name, str(s["shards"]), str(s["samples"]), f"{s['hours']:.3f}")
    table.add_row("errors", "", str(summary["errors"]), f"{summary['error_fraction']:.1%} of tracks")
    if summary.get("clipped_tracks"):  # float audio beyond [-1, 1]: stored clipped, counted per track
        table.add_row("clipped", "", str(summary["clipped_tracks"]), f"{summary['clipped_samples']} samples")
    table.caption = (
        f"{summary['written']} written, {summary['resumed']} already done, "
        f"{summary['tracks_per_s']:.1f} tracks/s, {summary['realtime_factor']:.0f}x real time"
    )
    if summary.get("worker_restarts"):
        table.caption += f", {summary['worker_restarts']} worker processes replaced after they died"
    return table
