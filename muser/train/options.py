"""What a pretraining run is asked to do, checked before any process starts: every option mistake (a
zero batch, an infinite epoch count, a NaN learning rate...) is one ValueError naming the option; and which
options lower the memory a step needs, when it ran out."""

from __future__ import annotations

import dataclasses
import math

from muser.config import LOSS_TERMS, LOSSES, DataConfig, ModelConfig, TrainConfig
from muser.train.trackers import parse_report_to

PRECISIONS = ("bf16", "fp16", "fp32")


def world_of(train: TrainConfig) -> int:
    """Processes the run will have: (GPUs or CPU processes per node) x nodes."""
    return max(1, train.gpus if train.gpus > 0 else train.procs) * max(1, train.nnodes)


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def check_config(data: DataConfig, model: ModelConfig, train: TrainConfig, world: int) -> None:
    """Every option mistake as one ValueError naming the option, before any process starts."""
    if train.gpus < 0 or train.procs < 1 or train.nnodes < 1:
        raise ValueError("--gpus must be >= 0, --procs and --nnodes >= 1")
    if train.gpus > 0 and train.procs > 1:
        raise ValueError("--procs is for CPU runs; with GPUs use --gpus N (one process per GPU)")
    if not train.loss_terms or set(train.loss_terms) - set(LOSS_TERMS):
        raise ValueError(
            f"--loss-terms must be a comma list of {', '.join(LOSS_TERMS)}, got {train.loss_terms}"
        )
    if train.loss not in LOSSES:
        raise ValueError(f"--loss must be one of {', '.join(LOSSES)}, got {train.loss!r}")
    parse_report_to(train.report_to)  # an unknown or uninstalled tracker, before any process starts
    if train.precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {train.precision!r}")
    if train.grad_accum < 1:
        raise ValueError("--grad-accum must be >= 1")
    if data.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {data.batch_size}")
    if data.batch_size % (world * train.grad_accum):
        raise ValueError(
            f"--batch-size {data.batch_size} must be divisible by processes x --grad-accum "
            f"({world} x {train.grad_accum}); each rank takes an equal slice of the global batch"
        )
    if train.epochs is None and train.steps < 1:
        raise ValueError("--steps must be >= 1")
    if train.epochs is not None and not (_finite(train.epochs) and train.epochs > 0):
        raise ValueError(f"--epochs must be a finite number > 0, got {train.epochs}")
    for name, value in (
        ("--lr", train.lr),
        ("--weight-decay", train.weight_decay),
        ("--grad-clip", train.grad_clip),
    ):
        if not (_finite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if train.text_lr is not None and not (_finite(train.text_lr) and train.text_lr >= 0):
        raise ValueError(f"--text-lr must be a finite number >= 0, got {train.text_lr}")
    if train.warmup < 0:
        raise ValueError(f"--warmup must be >= 0, got {train.warmup}")
    if train.save_every < 1 or train.log_every < 1 or train.eval_every < 0:
        raise ValueError("--save-every and the log period must be >= 1, --eval-every >= 0")
    if not (_finite(data.crop_seconds) and data.crop_seconds > 0):
        raise ValueError(f"--crop-seconds must be a finite number > 0, got {data.crop_seconds}")


# The audio towers by the modality name the loss terms read them under.
_TOWER_OF = {"audio": "waveform", "spec": "spectrogram"}


def embed_with_trained_towers(model: ModelConfig, train: TrainConfig) -> tuple[ModelConfig, str | None]:
    """(the model config whose audio embedding reads only towers some loss term trains, a note when it
    changed). w/o spec (--loss-terms at) never trains the spectrogram tower: saved as "both", every
    `muser embed` / eval of that run would average in a tower still at its random init. A config that names
    an untrained tower alone is refused: its every embedding would be noise."""
    terms = ",".join(train.loss_terms)
    trained = [
        tower for name, tower in _TOWER_OF.items() if any(name in LOSS_TERMS[t] for t in train.loss_terms)
    ]
    which = model.audio_embedding
    if which == "both" and len(trained) == 1:
        untrained = next(tower for tower in _TOWER_OF.values() if tower not in trained)
        note = (
            f"--loss-terms {terms} trains no {untrained} tower: audio is embedded by the {trained[0]} tower"
        )
        return dataclasses.replace(model, audio_embedding=trained[0]), note
    if which in _TOWER_OF.values() and which not in trained:
        raise ValueError(
            f"audio_embedding {which!r} reads a tower --loss-terms {terms} never trains; "
            f"use {' or '.join(trained) or 'loss terms that train it'}"
        )
    return model, None


def out_of_memory(err: BaseException) -> bool:
    """Whether err is the allocator running out: CUDA (torch.OutOfMemoryError), the CPU allocator's
    RuntimeError ("not enough memory"), or Python's MemoryError."""
    if isinstance(err, MemoryError):
        return True
    # torch.OutOfMemoryError is a RuntimeError saying "CUDA out of memory"; matched by its words, so this
    # module stays free of torch (the CLI imports it for --help).
    return isinstance(err, RuntimeError) and any(
        words in str(err) for words in ("not enough memory", "out of memory", "Cannot allocate memory")
    )


def memory_advice(data: DataConfig, train: TrainConfig, world: int, device: str, step: int) -> str:
    """A step that ran out of memory, in one sentence: what ran out, at which sizes, which options help."""
    micro = data.batch_size // (world * train.grad_accum)
    where = "GPU" if device == "cuda" else "CPU (host)"
    ways = [
        f"--batch-size (now {data.batch_size})",
        f"--crop-seconds (now {data.crop_seconds:g})",
        f"raise --grad-accum (now {train.grad_accum}; same batch, smaller micro-batches)",
    ]
    if not train.grad_checkpointing:
        ways.append("add --grad-checkpointing")
    if device == "cuda" and train.precision == "fp32":
        ways.append("use --precision bf16")
    return (
        f"out of {where} memory in training step {step}: {micro} clips of {data.crop_seconds:g} s per "
        f"micro-batch on each of {world} process(es) did not fit; lower {ways[0]} or {ways[1]}, "
        f"{', '.join(ways[2:])}, then --resume"
    )
