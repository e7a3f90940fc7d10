"""Dataset sources: one module per on-disk layout (fma, gtzan, mtt, folder), each turning SRC into a sorted
list of Track records; `discover` picks the layout (`--source auto` detects it) and dispatches."""

from __future__ import annotations

from pathlib import Path

from muser.config import SOURCES, ShardConfig
from muser.shards.sources import fma, folder, gtzan, mtt
from muser.shards.sources.base import AUDIO_EXTENSIONS, SourceListing, Track

LABEL_TASKS: dict[str, dict[str, str]] = {
    "fma": fma.LABEL_TASKS,
    "gtzan": gtzan.LABEL_TASKS,
    "mtt": mtt.LABEL_TASKS,
    "folder": folder.LABEL_TASKS,
}

__all__ = ["AUDIO_EXTENSIONS", "LABEL_TASKS", "SOURCES", "SourceListing", "Track", "detect", "discover"]


def detect(src: Path) -> str:
    """Layout of SRC: MTT by annotations_final.csv, FMA by fma_* folders, GTZAN by genres/, else folder."""
    if mtt.looks_like(src):
        return "mtt"
    if fma.looks_like(src):
        return "fma"
    if gtzan.find_genres(src) is not None:
        return "gtzan"
    return "folder"


def discover(cfg: ShardConfig) -> SourceListing:
    """List the tracks of cfg.src for cfg.source (auto | fma | gtzan | mtt | folder), sorted by id.

    Raises ValueError with one sentence naming what was expected where when SRC does not match the layout.
    """
    src = Path(cfg.src).expanduser()
    if not src.is_dir():
        raise ValueError(
            f"SRC {src} is not a folder (pass the dataset folder, e.g. fma_small/ or a GTZAN root)"
        )
    source = detect(src) if cfg.source == "auto" else cfg.source
    if source == "fma":
        return fma.discover(src, cfg.metadata, cfg.subset)
    if source == "gtzan":
        return gtzan.discover(src, cfg.split_dir)
    if source == "mtt":
        return mtt.discover(src)
    if source == "folder":
        return folder.discover(src, cfg.metadata)
    raise ValueError(f"--source {cfg.source!r} is not one of auto, {', '.join(SOURCES)}")
