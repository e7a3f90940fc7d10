"""How sharding talks to the user: the --max-size parser and the closing summary table of a write_shards
run (the live bar is muser.progress)."""

from __future__ import annotations

import re
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


def silent_note(shown: list[str], count: int) -> str:
    """What the shard and inspect reports say of (near-)silent tracks: the rule and the first ids."""
    more = f" and {count - len(shown)} more" if count > len(shown) else ""
    return f"warning: peak below -60 dBFS, sharded anyway: {', '.join(shown)}{more} (manifest.json: silent)"


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
    if summary.get("silent_tracks"):  # sharded, but silence teaches nothing: the user should know
        table.add_row(
            "silent",
            "",
            str(summary["silent_tracks"]),
            silent_note(summary["silent"], summary["silent_tracks"]),
        )
    table.caption = (
        f"{summary['written']} written, {summary['resumed']} already done, "
        f"{summary['tracks_per_s']:.1f} tracks/s, {summary['realtime_factor']:.0f}x real time"
    )
    if summary.get("worker_restarts"):
        table.caption += f", {summary['worker_restarts']} worker processes replaced after they died"
    return table
