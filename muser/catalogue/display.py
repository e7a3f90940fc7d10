"""How the catalogue commands talk to the user: the summary of an embed run and the table of search
results (on rich; the live bar is muser.progress)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table


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
