"""How the catalogue commands talk to the user: the embedding progress bar, the summary of an embed run
and the table of search results (all on rich)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table


class EmbedProgress:
    """A rich bar on stderr (tracks/s, audio hours/s, ETA), or nothing when disabled."""

    def __init__(self, enabled: bool, total: int, label: str = "embedding"):
        self.enabled, self.total, self.label = enabled, total, label
        self.progress: Progress | None = None
        self.done = 0
        self.start = time.perf_counter()

    def __enter__(self) -> EmbedProgress:
        if self.enabled:
            self.progress = Progress(
                TextColumn(self.label),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rates]}"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            self.progress.start()
            self.progress.add_task(self.label, total=self.total, rates="")
        self.start = time.perf_counter()
        return self

    def advance(self, tracks: int, audio_seconds: float) -> None:
        """`tracks` more tracks done; audio_seconds: audio embedded so far by this run."""
        self.done += tracks
        if self.progress is None:
            return
        dt = max(time.perf_counter() - self.start, 1e-9)
        rates = f"{self.done / dt:.1f} tracks/s  {audio_seconds / 3600 / dt:.3f} audio h/s"
        self.progress.update(self.progress.task_ids[0], completed=self.done, rates=rates)

    def __exit__(self, *exc: Any) -> None:
        if self.progress is not None:
            self.progress.stop()


def print_embed_summary(summary: dict[str, Any], console: Console) -> None:
    """The closing table of `muser embed` (what the catalogue holds) and a line on what this run did."""
    info = summary["catalogue"]
    counts = info["counts"]
    table = Table(title=f"muser embed -> {summary['output']}", show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("tracks", f"{counts['tracks']}")
    table.add_row("hours of audio", f"{counts['hours']:.3f}")
    table.add_row("shards / sources", f"{counts['shards']} / {counts['sources']}")
    table.add_row("unreadable tracks", f"{counts['unreadable']}")
    table.add_row("dimension / tower", f"{info['dimension']} / {info['tower']}")
    table.add_row("index", f"{info['index']['kind']} ({info['index']['metric']})")
    table.add_row("checkpoint", f"{info['checkpoint']['path']} ({info['checkpoint']['fingerprint'][:12]})")
    console.print(table)
    rate = summary.get("tracks_per_s")
    speed = f"; {rate:.1f} tracks/s, {summary['audio_hours_per_s']:.3f} audio h/s" if rate else ""
    console.print(
        f"shards embedded {summary['embedded_shards']}, already done {summary['reused_shards']}; "
        f"{summary['elapsed_s']:.1f} s in all{speed}",
        soft_wrap=True,
    )


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    minutes, sec = divmod(int(round(seconds)), 60)
    return f"{minutes}:{sec:02d}"


def hits_table(hits: Sequence[dict[str, Any]], title: str) -> Table:
    """Search results as a table: rank, score, title (else the key), artist, genres, duration."""
    table = Table(title=title)
    for name, justify in (("#", "right"), ("score", "right"), ("title", "left"), ("artist", "left")):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    table.add_column("genres")
    table.add_column("duration", justify="right")
    for hit in hits:
        table.add_row(
            str(hit["rank"]),
            f"{hit['score']:.3f}",
            hit.get("title") or hit["key"],
            hit.get("artist") or "",
            ", ".join(hit.get("genres") or []),
            _duration(hit.get("duration")),
        )
    return table
