"""What the downstream ablation benchmark (test_downstream.py) compares and how it reports: the pretraining
variants of the paper's Table 2, the CPU budget, where the real soundtracks come from, their label sidecar,
and the JSON + markdown report with a reading computed from the numbers (never written in advance).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import common

SHARED = Path(__file__).resolve().parent.parent.parent / "shared"
SOUNDTRACKS_SCRIPT = SHARED / "data" / "get-soundtracks.sh"
DEFAULT_SOUNDTRACKS = Path.home() / ".cache" / "muser" / "soundtracks"


@dataclass(frozen=True)
class Variant:
    name: str  # row label in the report
    loss_terms: tuple[str, ...]  # TrainConfig.loss_terms
    audio_embedding: str  # ModelConfig.audio_embedding: what the frozen probe sees


# (a) and (b) of the paper's Table 2. Without L(S,T) the spectrogram tower gets no gradient, so (b) is
# probed on the waveform tower alone; (c) random weights and (d) MFCCs come from run_eval's baselines.
VARIANTS = (
    Variant("MUSER L(A,T)+L(S,T)", ("at", "st"), "both"),
    Variant("L(A,T) only (no spectrogram tower)", ("at",), "waveform"),
)
RANDOM = "random weights (tiny, both towers)"
MFCC = "MFCC mean+std (40-d)"


@dataclass(frozen=True)
class Budget:
    """One pretraining run; every variant of a corpus gets the same one."""

    steps: int  # optimiser steps
    batch_size: int
    crop_seconds: float  # random crop per sample
    lr: float
    warmup: int


def scale() -> float:
    """$MUSER_DOWNSTREAM_SCALE multiplies the pretraining steps (a quick check of the benchmark itself);
    a smoke run (benchmarks.common.smoke) defaults it to 0.02."""
    value = float(os.environ.get("MUSER_DOWNSTREAM_SCALE", "0.02" if common.smoke() else "1"))
    if not 0 < value <= 10:
        raise ValueError(f"MUSER_DOWNSTREAM_SCALE must be in (0, 10], got {value}")
    return value


def scaled(budget: Budget) -> Budget:
    steps = max(4, round(budget.steps * scale()))
    return Budget(
        steps, budget.batch_size, budget.crop_seconds, budget.lr, max(2, min(budget.warmup, steps // 5))
    )


def _has_audio(folder: Path) -> bool:
    from muser.shards.sources.base import is_audio

    return folder.is_dir() and any(is_audio(p) for p in folder.rglob("*"))


def soundtracks_dir() -> tuple[Path | None, str]:
    """(folder of the Debian game soundtracks, how it was found) or (None, why not).

    $MUSER_SOUNDTRACKS, else ~/.cache/muser/soundtracks, else ../shared/data/get-soundtracks.sh into that
    cache when apt-get and dpkg-deb exist.
    """
    env = os.environ.get("MUSER_SOUNDTRACKS")
    if env:
        path = Path(env).expanduser()
        return (path, "$MUSER_SOUNDTRACKS") if _has_audio(path) else (None, f"no audio under {path}")
    if _has_audio(DEFAULT_SOUNDTRACKS):
        return DEFAULT_SOUNDTRACKS, "cache"
    if not SOUNDTRACKS_SCRIPT.is_file():
        return None, f"{SOUNDTRACKS_SCRIPT} not found and {DEFAULT_SOUNDTRACKS} is empty"
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        return None, "apt-get/dpkg-deb not available to run get-soundtracks.sh"
    try:
        subprocess.run(
            ["bash", str(SOUNDTRACKS_SCRIPT), str(DEFAULT_SOUNDTRACKS)],
            check=True,
            capture_output=True,
            timeout=1800,
        )
    except (OSError, subprocess.SubprocessError) as err:
        return None, f"get-soundtracks.sh failed: {err}"
    if not _has_audio(DEFAULT_SOUNDTRACKS):
        return None, "get-soundtracks.sh wrote no audio"
    return DEFAULT_SOUNDTRACKS, "downloaded by get-soundtracks.sh"


def write_label_sidecar(root: Path, path: Path, task: str = "soundtrack") -> dict[str, int]:
    """A CSV sidecar giving every audio file under `root` the label `label_<task>` = its top folder (one
    Debian package per folder); returns the class counts. Files directly in `root` get no label."""
    from muser.shards.sources.base import is_audio

    counts: dict[str, int] = {}
    with open(path, "w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        out.writerow(["path", f"label_{task}"])
        for p in sorted(root.rglob("*")):
            rel = p.relative_to(root).as_posix()
            if is_audio(p) and "/" in rel:
                label = rel.split("/", 1)[0]
                out.writerow([rel, label])
                counts[label] = counts.get(label, 0) + 1
    return counts


def tagged_tracks(root: Path, sidecar: Path) -> int:
    """How many audio files under `root` carry an artist or album (from tags): the rest have captions
    made of their file name alone."""
    from muser.config import ShardConfig
    from muser.shards.sources import discover

    listing = discover(ShardConfig(src=str(root), source="folder", metadata=str(sidecar)))
    return sum(1 for t in listing.tracks if t.meta.get("artist") or t.meta.get("album"))


def rows_of(result: dict[str, Any], name_of: dict[str, str]) -> list[dict[str, Any]]:
    """Full-data accuracy rows of a run_eval result, with run_eval's model names mapped by `name_of`."""
    out = []
    for r in result["results"]:
        if r["model"] not in name_of or r["fraction"] not in (None, 1.0) or r["metric"] != "accuracy":
            continue
        out.append(
            {
                "variant": name_of[r["model"]],
                "protocol": r["protocol"],
                "mean": r["mean"],
                "std": r["std"],
                "n": len(r["values"]),
                "values": r["values"],
            }
        )
    return out


def write_markdown() -> Path:
    """Rewrite downstream.md beside downstream.json from its finished rows (the report never mixes code
    versions: the JSON holds one)."""
    data = common.read_result("downstream")
    path = common.results_dir() / "downstream.md"
    path.write_text(markdown(data))
    return path


PROTOCOLS = ("probe-logistic", "probe-mlp", "zeroshot")


def _cell(rows: list[dict], variant: str, protocol: str) -> str:
    row = next((r for r in rows if r["variant"] == variant and r["protocol"] == protocol), None)
    return "–" if row is None else f"{100 * row['mean']:.1f} ± {100 * row['std']:.1f}"


def markdown(data: dict[str, Any]) -> str:
    lines = [
        "# Downstream ablation (paper Table 2, small replica)",
        "",
        "Written by `pytest benchmarks/test_downstream.py` from downstream.json. Accuracy in %, mean ± std",
        "over probe folds x seeds (one pretraining run per variant). `–`: not applicable (MFCC has no text",
        "tower for zero-shot and is probed with the logistic head only; zero-shot needs the labels to appear",
        "in captions).",
        "",
    ]
    entries = [r for r in data.get("rows", {}).values() if "rows" in r]
    for entry in entries:
        rows = entry["rows"]
        lines += [f"## {entry['title']}", "", entry["setup"], ""]
        protocols = [p for p in PROTOCOLS if any(r["protocol"] == p for r in rows)]
        lines.append("| model / variant | " + " | ".join(protocols) + " |")
        lines.append("|---|" + "---:|" * len(protocols))
        for variant in [v.name for v in VARIANTS] + [RANDOM, MFCC]:
            if any(r["variant"] == variant for r in rows):
                lines.append(
                    f"| {variant} | " + " | ".join(_cell(rows, variant, p) for p in protocols) + " |"
                )
        walls = entry.get("wall_s", {})
        lines += ["", f"Status: {entry['status']}."] + [
            f"- {t['outcome']}: {t['target']} = {t['value']} (target {t['bound']})" for t in entry["targets"]
        ]
        lines += [
            "",
            f"Chance ({entry.get('chance_note', 'uniform')}): {100 * entry['chance']:.1f} %. Wall time: "
            + ", ".join(f"{k} {v / 60:.1f} min" for k, v in walls.items())
            + ".",
            "",
            "**Reading.** " + entry["reading"],
            "",
        ]
    for entry in entries[-1:]:
        m = entry.get("machine", {})
        lines.append(
            f"Code version {data.get('code_version')}. Machine: {m.get('cpu_count')} x {m.get('cpu')}, torch "
            f"{m.get('torch')}, device {m.get('device')}, 1/5/15-min load average at the end "
            f"{m.get('load_average')} (above the core count means other jobs shared the CPU; accuracy does "
            "not depend on it, wall time does)."
        )
    return "\n".join(lines) + "\n"


def _get(rows: list[dict], variant: str, protocol: str) -> dict | None:
    return next((r for r in rows if r["variant"] == variant and r["protocol"] == protocol), None)


def _versus(a: dict, b: dict) -> tuple[float, str]:
    """(mean difference in points, words): paired over the runs both rows share (same folds and probe
    seeds, in the same order), since fold difficulty moves every model together."""
    import numpy as np

    x, y = np.asarray(a["values"]), np.asarray(b["values"])
    if len(x) != len(y):  # not paired: compare the means against the larger spread
        diff, spread = 100 * (x.mean() - y.mean()), 100 * max(x.std(), y.std())
        return diff, f"{diff:+.1f} points (std up to {spread:.1f})"
    d = 100 * (x - y)
    ahead, behind = int((d > 1e-9).sum()), int((d < -1e-9).sum())
    noise = "" if abs(d.mean()) > d.std() else "; within the run-to-run spread"
    return float(d.mean()), (
        f"{d.mean():+.1f} ± {d.std():.1f} points paired over {len(d)} fold x seed runs "
        f"(ahead in {ahead}, behind in {behind}{noise})"
    )


def paired(rows: list[dict], a: str, b: str, protocol: str = "probe-logistic") -> dict[str, float]:
    """Variant `a` against `b` over the fold x seed runs they share: mean difference in points, and the
    share of runs where `a` is ahead."""
    import numpy as np

    x, y = np.asarray(_get(rows, a, protocol)["values"]), np.asarray(_get(rows, b, protocol)["values"])
    d = 100 * (x - y)
    return {
        "mean_points": float(d.mean()),
        "std_points": float(d.std()),
        "ahead_share": float((d > 1e-9).mean()),
    }


def reading(rows: list[dict], caveat: str) -> str:
    """2-4 sentences computed from the logistic-probe rows: (a) vs (b), learned vs random and MFCC."""
    full, ablated = (_get(rows, v.name, "probe-logistic") for v in VARIANTS)
    rnd, mfcc = _get(rows, RANDOM, "probe-logistic"), _get(rows, MFCC, "probe-logistic")
    parts = []
    if full and ablated:
        diff, words = _versus(full, ablated)
        verdict = "made no clear difference to" if "within" in words else ("helped" if diff > 0 else "hurt")
        parts.append(
            f"Adding the spectrogram tower and L(S,T) {verdict} the linear probe: "
            f"full vs L(A,T) only {words}."
        )
    if full and rnd and mfcc:
        best = max((full, "full MUSER"), (rnd, "random weights"), (mfcc, "MFCC"), key=lambda t: t[0]["mean"])
        parts.append(
            f"Pretraining vs the same network with random weights: {_versus(full, rnd)[1]}; vs MFCC: "
            f"{_versus(full, mfcc)[1]}; the best logistic probe is {best[1]}."
        )
    parts.append(caveat)
    return " ".join(parts)


SYNTH_CAVEAT = (
    "One pretraining run per variant at a CPU-minutes budget, so the variance of pretraining itself is not "
    "in these spreads; a gap inside them says nothing about the paper's claim either way."
)


def soundtrack_caveat(tagged: int, tracks: int) -> str:
    return (
        "Pretraining saw every track's audio and caption (never the package label), and captions hint at "
        f"the package: the album tag names the game and file-name titles share prefixes (only {tagged} of "
        f"{tracks} files have artist/album tags); one pretraining run per variant."
    )
