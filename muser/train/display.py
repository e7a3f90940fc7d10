"""The rank-0 live view of a training run (rich): a progress bar with ETA plus the latest loss, lr,
samples/s and data-wait share; and the closing summary table."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from muser.console import make_console


class TrainDisplay:
    """Context manager; `update(step, record)` after each step. Disabled (silent) on ranks other than 0."""

    def __init__(
        self, total: int, start: int = 0, enabled: bool = True, console: Console | None = None
    ) -> None:
        self.enabled = enabled
        self.console = console or make_console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]pretrain"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            console=self.console,
            disable=not enabled,
        )
        self.task = self.progress.add_task("pretrain", total=total, completed=start, stats="")

    def __enter__(self) -> TrainDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def update(self, step: int, record: dict[str, Any] | None = None) -> None:
        stats = ""
        if record:
            stats = (
                f"loss {record['loss']:.4f}  lr {record['lr']:.2e}  {record['samples_per_s']:.1f} samples/s  "
                f"data wait {100 * record['data_wait_frac']:.0f}%"
            )
            if "r1" in record:
                stats += f"  R@1 {record['r1']:.3f}"
        self.progress.update(self.task, completed=step, **({"stats": stats} if stats else {}))

    def log(self, message: str) -> None:
        if self.enabled:
            self.progress.console.print(message)


def summary_table(result: dict[str, Any]) -> Table:
    """A two-column table of a finished (or stopped) run's headline numbers."""
    table = Table(title="pretrain", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    rows = [
        ("output", result.get("output")),
        ("steps", f"{result.get('steps')} / {result.get('total_steps')}"),
        ("first loss", result.get("first_loss")),
        ("last loss", result.get("last_loss")),
        ("samples/s", result.get("samples_per_s")),
        ("data wait", _percent(result.get("data_wait_frac"))),
        ("wall time (s)", result.get("wall_s")),
        ("stopped by", result.get("stopped") or "-"),
        ("model", result.get("model") or "-"),
    ]
    for name, value in rows:
        if isinstance(value, float):
            value = f"{value:.4g}"
        table.add_row(name, str(value))
    for key, value in (result.get("eval") or {}).items():
        table.add_row(f"eval {key}", f"{value:.4g}")
    return table


def _percent(fraction: float | None) -> str | None:
    """A fraction as the progress line shows it (data wait 9%)."""
    return None if fraction is None else f"{100 * fraction:.0f}%"
