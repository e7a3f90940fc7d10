"""The evaluation report: results.json, a rich table with margins over the baselines, and two PNG plots.

Plots use matplotlib's Agg backend (no display needed): confusion.png (the main model's probe
predictions pooled over folds; per-tag TN/FP/FN/TP rates for multi-label tasks) and fewshot.png (metric
against training fraction, one line per model and protocol, error bars = std over folds and seeds).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from muser.atomic import atomic_write, atomic_write_json  # noqa: E402
from muser.console import make_console  # noqa: E402


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    """Write atomically so a crashed run never leaves a half-written results.json."""
    atomic_write_json(path, result)
    return Path(path)


def _savefig(fig: Any, path: str | Path) -> None:
    # the format from the final name: the temporary name ends in .tmp, which matplotlib cannot read
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format=Path(path).suffix.lstrip(".") or "png", dpi=110)


def _fmt(value: float | None, pct: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f}" if pct else f"{value:.3f}"


def table(result: dict[str, Any]) -> Table:
    """Rows: model x protocol x fraction x metric; values in percent, margins in percentage points."""
    t = Table(title=f"muser eval {result['task']} ({result['label_task']}, {result['split_scheme']})")
    for name, justify in (
        ("model", "left"),
        ("protocol", "left"),
        ("frac", "right"),
        ("metric", "left"),
        ("mean ± std %", "right"),
        ("Δ random", "right"),
        ("Δ mfcc", "right"),
    ):
        t.add_column(name, justify=justify, no_wrap=True)
    for row in result["results"]:
        margins = row.get("margins", {})
        t.add_row(
            row["model"],
            row["protocol"],
            "-" if row["fraction"] is None else f"{row['fraction']:g}",
            row["metric"],
            f"{_fmt(row['mean'])} ± {_fmt(row['std'])}",
            _signed(margins.get("random")),
            _signed(margins.get("mfcc")),
        )
    return t


def _signed(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:+.1f}"


def print_table(result: dict[str, Any], console: Console | None = None) -> None:
    (console or make_console()).print(table(result))


def plot_confusion(
    matrix: np.ndarray, rows: list[str], cols: list[str], path: str | Path, title: str
) -> Path:
    """matrix: (R, C) counts or rates; rows/cols: tick labels. Each row is normalised to sum to one."""
    matrix = np.asarray(matrix, dtype=np.float64)
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1e-12)
    size = max(4.0, 0.35 * max(len(rows), len(cols)) + 2.0)
    fig, ax = plt.subplots(figsize=(size if len(cols) > 4 else 5.0, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(rows)), rows, fontsize=8)
    if len(rows) * len(cols) <= 400:
        for i in range(len(rows)):
            for j in range(len(cols)):
                ax.text(
                    j,
                    i,
                    f"{matrix[i, j]:.0f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return Path(path)


def plot_fewshot(result: dict[str, Any], path: str | Path, metric: str) -> Path:
    """Metric against training fraction, one line per (model, protocol) that has a fraction."""
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    lines: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for row in result["results"]:
        if row["metric"] == metric and row["fraction"] is not None:
            lines.setdefault((row["model"], row["protocol"]), []).append(
                (row["fraction"], row["mean"], row["std"])
            )
    for (model, protocol), points in sorted(lines.items()):
        points.sort()
        x, y, e = (np.array(v) for v in zip(*points, strict=True))
        ax.errorbar(x, 100 * y, yerr=100 * e, marker="o", capsize=3, label=f"{model} / {protocol}")
    fractions = sorted({p[0] for pts in lines.values() for p in pts})
    if len(fractions) > 1 and fractions[0] > 0 and fractions[-1] / fractions[0] >= 10:
        ax.set_xscale("log")
    ax.set_xlabel("fraction of training tracks")
    ax.set_ylabel(f"{metric} (%)")
    ax.set_title(f"few-shot: {result['task']}", fontsize=10)
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(fontsize=7)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)
    return Path(path)
