"""Training checkpoints: atomic writes, `weights_only=True` loads, and RNG states stored as tensors.

A checkpoint holds only tensors and plain Python values (dicts, lists, numbers, strings) so that loading it
never unpickles arbitrary objects: model, loss (logit scales), optimiser, scheduler and scaler state, the
CPU/CUDA/Python/NumPy RNG states, the step and data position, and the run's config dicts.
Beside last.pt, model/ is the export (save_pretrained) of the same weights, swapped in atomically.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from muser.atomic import atomic_dir, atomic_write, atomic_write_json, remove_leftovers
from muser.runs import RunFolder

# The run folder's names are RunFolder's (muser.runs); these are the ones this module writes.
LAST, CHECKSUMS, MODEL, INIT = RunFolder.LAST, RunFolder.CHECKSUMS, RunFolder.MODEL, RunFolder.INIT
step_name = RunFolder.step_name


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


def _sums(run_dir: Path) -> dict[str, list[str]]:
    """checksums.json: file name -> the sha256 digests it may have (two only while a save is under way)."""
    try:
        sums = json.loads((run_dir / CHECKSUMS).read_text())
    except (OSError, ValueError):
        return {}
    return sums if isinstance(sums, dict) else {}


def _write_sums(run_dir: Path, sums: dict[str, list[str]]) -> None:
    atomic_write_json(run_dir / CHECKSUMS, sums, indent=1, sort_keys=True)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(state: dict[str, Any], run_dir: str | Path, step: int, keep_step: bool = False) -> Path:
    """Write run_dir/last.pt through muser.atomic (temp file, fsync, rename); with keep_step also step-K.pt.

    A crash during the write leaves the previous last.pt untouched. The step file is a hard link to the
    same bytes when the filesystem allows it (no second write), a copy otherwise. Each file's sha256 goes
    to checksums.json so a damaged file is refused on load; while last.pt is being replaced both its old
    and its new digest are accepted, so no crash point can make an intact file look damaged.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / LAST
    remove_leftovers(final)  # a checkpoint killed mid-write leaves its (large) temporary file
    try:
        out = atomic_write(final, "wb")
        with out as f:
            torch.save(state, f)
            f.flush()
            digest = _sha256(out.tmp)
            sums = _sums(run_dir)
            # before the rename: from here on both the old and the new last.pt are accepted
            _write_sums(run_dir, {**sums, LAST: [digest, *sums.get(LAST, [])[:1]]})
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise RuntimeError(
                f"cannot write checkpoint {final}: no space left on device; free some space and --resume "
                "(the previous checkpoint is intact)"
            ) from None
        raise
    sums = {**_sums(run_dir), LAST: [digest]}
    if keep_step:
        kept = run_dir / step_name(step)
        with atomic_write(kept) as tmp:
            try:
                os.link(final, tmp)
            except OSError:
                shutil.copyfile(final, tmp)
        sums[kept.name] = [digest]
    _write_sums(run_dir, sums)
    return final


def export_model(model: Any, run_dir: str | Path) -> Path:
    """Write run_dir/model/ (model.save_pretrained) and return it, replacing the previous export.

    The export is written to a temp folder beside it, synced, then swapped in (muser.atomic.atomic_dir): a
    reader finds either the old complete export or the new one, never a half-written folder.
    """
    final = Path(run_dir) / MODEL
    with atomic_dir(final) as tmp:
        model.save_pretrained(tmp)
    return final


def check_architecture(model: torch.nn.Module, saved: dict[str, Any], where: str) -> None:
    """One sentence naming the first difference when `saved` (a state dict) was written by another
    architecture than `model`'s, instead of load_state_dict's list of every mismatched tensor."""
    from muser.models.muser import architecture_mismatch

    problem = architecture_mismatch(model, {k: tuple(v.shape) for k, v in saved.items()})
    if problem is not None:
        raise ValueError(
            f"{where} was saved by a different architecture ({problem}); it cannot continue this run"
        )


def verify_checkpoint(path: Path) -> str | None:
    """None when `path` matches the sha256 recorded when it was written (or none was: an older run),
    else the reason it does not. Any checkpoint of the run is accepted under any name, so a step-K.pt
    copied over last.pt loads."""
    sums = _sums(path.parent)
    recorded = sums.get(path.name)
    if not recorded:
        return None
    digest = _sha256(path)
    if any(digest in digests for digests in sums.values()):
        return None
    return f"its sha256 {digest[:12]}... is not the {recorded[0][:12]}... recorded when it was written"


def intact_steps(run_dir: Path) -> list[Path]:
    """The step-K.pt files of run_dir whose checksum matches, newest first."""
    return [p for p in RunFolder(run_dir).steps() if verify_checkpoint(p) is None]


def read_state(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (weights_only=True) after checking its sha256; a missing, damaged or
    unreadable file is one clear error that names the newest intact step-K.pt to resume from instead."""
    path = Path(path)
    if path.is_dir():
        path = path / LAST
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}; --resume needs the run folder of an earlier run")
    problem = verify_checkpoint(path)
    if problem is None:
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except Exception as err:  # a truncated or foreign file: say which one, not a pickle traceback
            problem = f"cannot read checkpoint {path}: {err}"
    else:
        problem = f"checkpoint {path} is damaged ({problem}); refusing to load it"
    good = [p for p in intact_steps(path.parent) if p != path]
    hint = (
        f"; the newest intact one is {good[0].name}: `cp {good[0]} {path.parent / LAST}` and --resume again"
        if good and path.name == LAST
        else ""
    )
    raise RuntimeError(problem + hint)
