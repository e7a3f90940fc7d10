"""What a shared model is made of on disk: its model folder (written by MUSER.save_pretrained) and, when
it came from `muser pretrain`, the run folder around it (config.json, metrics.jsonl, result.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from muser.hub import resolve_model


@dataclass(frozen=True)
class Located:
    model_dir: Path  # config.json + model.safetensors + text/ + tokenizer/
    run_dir: Path | None  # the `muser pretrain` folder holding model_dir, when there is one


def locate(spec: str) -> Located:
    """A run folder, its model/ folder, or a hub id -> the model folder (and its run folder, if any).
    Raises ValueError naming the path when it is neither."""
    path = Path(resolve_model(spec))
    if (path / "model" / "config.json").is_file():
        return Located(path / "model", path)
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        parent = path.parent
        run = parent if (parent / "config.json").is_file() and (parent / "metrics.jsonl").is_file() else None
        return Located(path, run)
    raise ValueError(
        f"{spec} is not a run folder or a model folder (needs model/config.json, or config.json and "
        "model.safetensors as written by MUSER.save_pretrained)"
    )


def read_json(path: Path) -> Any:
    """A JSON file's content, or None when it is absent or unreadable (a card leaves such facts out)."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (a torn last line is skipped), [] when absent."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records
