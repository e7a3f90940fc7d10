"""Training checkpoints: atomic writes, `weights_only=True` loads, and RNG states stored as tensors.

A checkpoint holds only tensors and plain Python values (dicts, lists, numbers, strings) so that loading it
never unpickles arbitrary objects: model, loss (logit scales), optimiser, scheduler and scaler state, the
CPU/CUDA/Python/NumPy RNG states, the step and data position, and the run's config dicts.
Beside last.pt, model/ is the export (save_pretrained) of the same weights, swapped in atomically.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

LAST = "last.pt"
MODEL = "model"  # the trained model's export (what `muser eval --checkpoint RUN` loads)
INIT = "init"  # the untrained initial model: tokenizer and architecture for the other ranks and --resume


def step_name(step: int) -> str:
    return f"step-{step:07d}.pt"


def rng_state() -> dict[str, Any]:
    """Every RNG the training loop draws from, as tensors (Python's and NumPy's states converted)."""
    py_version, py_state, py_gauss = random.getstate()
    np_kind, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_version": py_version,
        "python_gauss": py_gauss,
        "numpy": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "numpy_kind": str(np_kind),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what rng_state() captured (CUDA states only when this machine has as many devices)."""
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(int(x) for x in state["python"]), state["python_gauss"]))
    np.random.set_state(
        (
            state["numpy_kind"],
            state["numpy"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(state: dict[str, Any], run_dir: str | Path, step: int, keep_step: bool = False) -> Path:
    """Write run_dir/last.pt atomically (temp file + fsync + os.replace); with keep_step also step-K.pt.

    A crash during the write leaves the previous last.pt untouched. The step file is a hard link to the
    same bytes when the filesystem allows it (no second write), a copy otherwise.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / LAST
    tmp = run_dir / f".{LAST}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    if keep_step:
        kept = run_dir / step_name(step)
        tmp_kept = run_dir / f".{kept.name}.tmp-{os.getpid()}"
        tmp_kept.unlink(missing_ok=True)
        try:
            os.link(final, tmp_kept)
        except OSError:
            shutil.copyfile(final, tmp_kept)
        os.replace(tmp_kept, kept)
    return final


def _fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())


def export_model(model: Any, run_dir: str | Path) -> Path:
    """Write run_dir/model/ (model.save_pretrained) and return it, replacing the previous export.

    The export is written to a temp folder beside it, synced, then renamed over: a reader finds either the
    old complete export or the new one, never a half-written folder (for the instant between moving the
    old one aside and renaming the new one in, model/ is absent; last.pt holds the same weights).
    """
    run_dir = Path(run_dir)
    final = run_dir / MODEL
    for stale in [*run_dir.glob(f".{MODEL}.tmp-*"), *run_dir.glob(f".{MODEL}.old-*")]:
        shutil.rmtree(stale, ignore_errors=True)  # left by a process killed mid-export
    tmp = run_dir / f".{MODEL}.tmp-{os.getpid()}"
    old = run_dir / f".{MODEL}.old-{os.getpid()}"
    try:
        model.save_pretrained(tmp)
        _fsync_tree(tmp)
        if final.exists():
            os.replace(final, old)  # a directory cannot be renamed over a non-empty one
        try:
            os.replace(tmp, final)
        except OSError:
            if old.exists():
                os.replace(old, final)  # keep the previous export rather than none
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (weights_only=True); a missing or unreadable file is one clear error."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; --resume needs the run folder of an earlier run")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which one, not a pickle traceback
        raise RuntimeError(f"cannot read checkpoint {path}: {err}") from err
