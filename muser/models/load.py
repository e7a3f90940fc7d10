"""A model from `--checkpoint`: a run folder (its model/ export), a model folder (save_pretrained), or
`random` (a preset with seeded random weights), with the fingerprint that says which weights they are.

Every application (eval, the catalogue, search) loads its model here, so the same spec always gives the
same model and the same fingerprint, and feature caches and catalogues keyed by it stay comparable.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from muser.config import ModelConfig, to_dict
from muser.runs import RunFolder


def fingerprint_files(paths: list[Path]) -> str:
    """sha256 over the names and bytes of files (model weights + config, or a manifest)."""
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(path.name.encode())
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def fingerprint_text(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


def random_fingerprint(config: ModelConfig, seed: int) -> str:
    """The fingerprint of random weights: the architecture and the seed they were drawn with."""
    return fingerprint_text("random", json.dumps(to_dict(config), sort_keys=True), str(seed))


def model_folder(spec: str | Path) -> Path:
    """The model folder a --checkpoint path names: a run folder's model/ export, or the folder itself.
    Raises ValueError naming the path when it is missing or a file."""
    path = Path(spec)
    if not path.exists():
        raise ValueError(f"checkpoint {path} does not exist; pass a model/ folder, a run folder or `random`")
    run = RunFolder(path)
    if run.has_model():
        return run.model  # `--checkpoint RUN` means RUN/model
    if not path.is_dir():
        raise ValueError(
            f"checkpoint {path} is a file; pass the run folder or its model/ folder "
            "(written by MUSER.save_pretrained)"
        )
    return path


def load_model(spec: str, preset: str, seed: int, device: torch.device) -> tuple[Any, str, str]:
    """(model in eval mode on `device`, fingerprint, resolved path or 'random:<preset>') for --checkpoint.

    spec: a run folder, a model folder, a hub id `org/name[@rev]` (muser.hub), or `random` (preset `preset`,
    weights drawn with `seed`).
    """
    from muser.hub import resolve_model
    from muser.models.muser import MUSER

    spec = resolve_model(spec)  # a hub id org/name[@rev] -> its cached snapshot folder; a local path wins
    if spec == "random":
        torch.manual_seed(seed)
        model = MUSER.from_preset(preset)
        return model.to(device).eval(), random_fingerprint(model.config, seed), f"random:{preset}"
    path = model_folder(spec)
    model = MUSER.from_pretrained(path, map_location=device)
    fp = fingerprint_files([path / "config.json", path / "model.safetensors"])
    return model.eval(), fp, str(path.resolve())
