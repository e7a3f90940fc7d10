"""The pretraining loop: `pretrain(data, model, train)` joins the shard reader, MUSER and the tri-modal loss.

One process runs in place; `--gpus N` / `--procs N` / `--nnodes M` re-launch this same function under
torchrun (muser.train.launch). Every rank runs the loop on its slice of the global batch; rank 0 alone
prints and writes the run folder (config.json, metrics.jsonl, last.pt, step-K.pt, init/, model/,
result.json). One optimiser step is muser.train.step; the run folder's files are muser.train.run_folder.

init/ is the untrained initial model (tokenizer, architecture, init weights), written before the first step
so that the other ranks and a later --resume rebuild the same tokenizer and architecture. model/ only ever
holds trained weights: it is re-exported (atomically) with every checkpoint save (periodic, at a signal
stop, at the end), so it always matches the latest last.pt and `muser eval --checkpoint RUN` never sees
the init.
"""

from __future__ import annotations

import math
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from muser.config import DataConfig, ModelConfig, TrainConfig, to_dict
from muser.distributed import barrier, dist_cleanup, dist_init, get_world_size, in_torchrun
from muser.train import checkpoint as ckpt
from muser.train.data import (
    MIN_EPOCH_BATCHES,
    MicroBatches,
    check_sources,
    epochs_need_manifests,
    has_split,
    tokenizer_texts,
)
from muser.train.display import TrainDisplay
from muser.train.optim import build_optimizer, build_scheduler
from muser.train.run_folder import MetricsLog, load_resume, write_config, write_result
from muser.train.step import apply_update, build_objective, forward_backward, reduce_and_clip

TERMS = ("at", "st", "as")
PRECISIONS = ("bf16", "fp16", "fp32")


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became inf/NaN; nothing was saved after the last good checkpoint."""


def world_of(train: TrainConfig) -> int:
    """Processes the run will have: (GPUs or CPU processes per node) x nodes."""
    return max(1, train.gpus if train.gpus > 0 else train.procs) * max(1, train.nnodes)


def check_config(data: DataConfig, model: ModelConfig, train: TrainConfig, world: int) -> None:
    """Every option mistake as one ValueError naming the option, before any process starts."""
    if train.gpus < 0 or train.procs < 1 or train.nnodes < 1:
        raise ValueError("--gpus must be >= 0, --procs and --nnodes >= 1")
    if train.gpus > 0 and train.procs > 1:
        raise ValueError("--procs is for CPU runs; with GPUs use --gpus N (one process per GPU)")
    if not train.loss_terms or set(train.loss_terms) - set(TERMS):
        raise ValueError(f"--loss-terms must be a comma list of {', '.join(TERMS)}, got {train.loss_terms}")
    if train.precision not in PRECISIONS:
        raise ValueError(f"--precision must be one of {', '.join(PRECISIONS)}, got {train.precision!r}")
    if train.grad_accum < 1:
        raise ValueError("--grad-accum must be >= 1")
    if data.batch_size % (world * train.grad_accum):
        raise ValueError(
            f"--batch-size {data.batch_size} must be divisible by processes x --grad-accum "
            f"({world} x {train.grad_accum}); each rank takes an equal slice of the global batch"
        )
    if train.epochs is None and train.steps < 1:
        raise ValueError("--steps must be >= 1")
    if train.epochs is not None and train.epochs <= 0:
        raise ValueError("--epochs must be > 0")
    if train.save_every < 1 or train.log_every < 1 or train.eval_every < 0:
        raise ValueError("--save-every and the log period must be >= 1, --eval-every >= 0")
    if data.crop_seconds <= 0:
        raise ValueError("--crop-seconds must be > 0")


def pretrain(data: DataConfig, model: ModelConfig, train: TrainConfig) -> dict[str, Any]:
    """Train MUSER on the shard folders of `data`; returns the run summary (also RUN/result.json).

    Raises ValueError for bad options or shards, NonFiniteLossError when training diverges. A SIGTERM or
    SIGINT stops after the current step with a checkpoint saved (result["stopped"] names the signal).
    """
    world = world_of(train)
    check_config(data, model, train, world)
    if check_sources(data.shards, data.split) is None and train.epochs is not None:
        raise ValueError(epochs_need_manifests(data.shards))
    if world > 1 and not in_torchrun():
        from muser.train.launch import launch

        return launch(data, model, train)
    return _Run(data, model, train).run()


class _StopFlag:
    """SIGTERM/SIGINT set a flag the loop checks after each step (a second SIGINT aborts at once)."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)


def _cuda_visible() -> bool:
    return torch.cuda.is_available()


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _Run:
    """One rank's training run; built and driven by pretrain()."""

    def __init__(self, data: DataConfig, model: ModelConfig, train: TrainConfig) -> None:
        self.data, self.model_cfg, self.train = data, model, train
        self.out = Path(train.output)

    # ---- setup --------------------------------------------------------------------------------------

    def _build_model(self, resume: dict[str, Any] | None) -> Any:
        from muser.models.muser import MUSER

        init_dir = self.out / ckpt.INIT
        if resume is None and self.rank == 0:
            texts = (
                None if self.model_cfg.text_encoder else tokenizer_texts(self.data.shards, self.data.split)
            )
            model = MUSER.from_config(self.model_cfg, tokenizer_texts=texts)
            # Saved now so every rank (and a later --resume) rebuilds the same tokenizer and architecture.
            # Not into model/: that folder is what gets evaluated, and must only ever hold trained weights.
            model.save_pretrained(init_dir)
        barrier()
        if resume is not None or self.rank != 0:
            # Runs written before init/ existed kept the tokenizer and architecture in model/ only.
            source = init_dir if (init_dir / "config.json").is_file() else self.out / ckpt.MODEL
            if not (source / "config.json").is_file():
                raise RuntimeError(f"{init_dir} is missing; the run folder {self.out} is incomplete")
            model = MUSER.from_pretrained(source)
        return model

    def _total_steps(self, samples: int | None) -> int:
        if self.train.epochs is None:
            return self.train.steps
        if samples is None:
            raise ValueError(epochs_need_manifests(self.data.shards))
        return max(1, math.ceil(self.train.epochs * samples / self.data.batch_size))

    # ---- checkpoints --------------------------------------------------------------------------------

    def _gather_rng(self, state: dict[str, Any]) -> list[dict[str, Any]]:
        if get_world_size() == 1:
            return [state]
        states: list[Any] = [None] * get_world_size()
        torch.distributed.all_gather_object(states, state)
        return states

    def _save(self, step: int, keep_step: bool, boundary: tuple[int, dict[str, Any]] | None = None) -> None:
        """Write last.pt (and step-K.pt with keep_step) and re-export model/ from the same weights.

        boundary: (data position, RNG state) at the end of `step`, for a stop that broke off a step in the
        middle of its gradient accumulation (the stream and the RNGs had already moved on into step + 1);
        None when the loop stands at a step boundary now.
        """
        position, rng_now = boundary if boundary is not None else (self.stream.position, ckpt.rng_state())
        rng = self._gather_rng(rng_now)  # collective: every rank takes part
        if self.rank == 0:
            state = {
                "format_version": 1,
                "step": step,
                "data_position": position,
                "data_per_epoch": self.stream.per_epoch,
                "world_size": get_world_size(),
                "model": self.model.state_dict(),
                "loss": self.loss.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "rng": rng,
                "config": {
                    "data": to_dict(self.data),
                    "model": to_dict(self.model.config),
                    "train": to_dict(self.train),
                },
            }
            ckpt.save_checkpoint(state, self.out, step, keep_step=keep_step)
            ckpt.export_model(self.model, self.out)
        barrier()

    def _restore(self, state: dict[str, Any]) -> int:
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        sched = dict(state["scheduler"])
        # keep this run's schedule (a resume may extend --steps): its own fields replace the saved ones
        sched["lr_lambdas"] = self.scheduler.state_dict()["lr_lambdas"]
        self.scheduler.load_state_dict(sched)
        self.scaler.load_state_dict(state["scaler"])
        rng = state["rng"]
        if len(rng) == get_world_size():
            ckpt.set_rng_state(rng[self.rank])
        else:  # a different world size cannot replay the same streams; fresh, distinct seeds per rank
            _seed_all(self.train.seed + 1000 * self.rank + state["step"])
        position = state["data_position"]
        if (
            state.get("data_per_epoch") != self.stream.per_epoch
            or state.get("world_size") != get_world_size()
        ):
            position = state["step"] * self.train.grad_accum  # same count of micro-batches, new epochs
        self.stream.seek(position)
        return int(state["step"])

    # ---- the loop -----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        train = self.train
        self.rank, _, world, device = dist_init("cuda" if train.gpus > 0 else "cpu")
        try:
            return self._run(world, device)
        finally:
            dist_cleanup()

    def _run(self, world: int, device: torch.device) -> dict[str, Any]:
        from muser.losses import TriModalLoss
        from muser.shards.reader import make_loader

        train, data = self.train, self.data
        samples = check_sources(data.shards, data.split)
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            if device.type == "cpu" and _cuda_visible():
                print(
                    "muser pretrain: a CUDA device is visible but --gpus is 0: training runs on the CPU "
                    "(pass --gpus 1 to use the GPU)",
                    file=sys.stderr,
                )
        resume = load_resume(self.out, data, train)
        total = self._total_steps(samples)
        _seed_all(train.seed)
        self.model = self._build_model(resume).to(device)
        self.model.train()
        self.loss = TriModalLoss(terms=tuple(train.loss_terms), duplicate_aware=train.duplicate_aware).to(
            device
        )
        objective, self.model = build_objective(self.model, self.loss, train, world, device)
        self.optimizer = build_optimizer(
            self.model.param_groups(), list(self.loss.parameters()), train, self.model.text_is_pretrained
        )
        self.scheduler = build_scheduler(self.optimizer, train.warmup, total)
        fp16 = device.type == "cuda" and train.precision == "fp16"
        self.scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        micro = data.batch_size // (world * train.grad_accum)
        loader = make_loader(
            data.shards,
            split=data.split,
            mode="train",
            batch_size=micro,
            crop_seconds=data.crop_seconds,
            num_workers=data.num_workers,
            steps=max(MIN_EPOCH_BATCHES, (samples or 0) // (micro * world)),
            seed=train.seed,
            tokenizer=self.model.tokenizer,
            templates=data.templates,
            max_length=self.model.config.text_max_length,
            shuffle_buffer=data.shuffle_buffer,
            field_dropout=data.field_dropout,
        )
        self.stream = MicroBatches(loader)
        # Ranks draw different SpecAugment masks and dropout; the model init above was identical.
        _seed_all(train.seed + 1000 * self.rank + 1)
        step = self._restore(resume) if resume is not None else 0
        metrics = MetricsLog(self.out, tensorboard=self.rank == 0, start_step=step)
        if self.rank == 0:
            write_config(self.out, world, total, data, self.model.config, train)
            metrics.truncate(step)
        valid = [s for s in data.shards if has_split(s, data.valid_split)] if train.eval_every else []
        return self._loop(objective, step, total, world, device, metrics, valid)

    def _loop(
        self,
        objective: nn.Module,
        step: int,
        total: int,
        world: int,
        device: torch.device,
        metrics: MetricsLog,
        valid: list[str],
    ) -> dict[str, Any]:
        train, data = self.train, self.data
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        first_loss = last_loss = None
        last_eval: dict[str, float] = {}
        started = time.perf_counter()
        window_start, window_wait, window_steps = started, 0.0, 0
        stopped = None
        with _StopFlag() as stop, TrainDisplay(total, step, enabled=self.rank == 0) as display:
            broken_off = None
            while step < total:
                # Where a stop in the middle of this step's gradient accumulation rewinds to: the
                # micro-batches it drew and the random numbers their forward passes used are the next step's.
                boundary = self.stream.position, ckpt.rng_state()
                try:
                    losses, wait = forward_backward(objective, self.stream, self.scaler, train, device)
                except Exception:
                    if stop.signum:  # a Ctrl-C also reaches the DataLoader workers, which then die
                        broken_off = boundary
                        break
                    raise
                values, grad_norm = reduce_and_clip(
                    losses, stop.signum, self.scaler, self.optimizer, params, train.grad_clip
                )
                if not math.isfinite(values[0]) or (
                    not self.scaler.is_enabled() and not torch.isfinite(grad_norm)
                ):
                    raise NonFiniteLossError(
                        f"the loss became non-finite at step {step + 1} (loss {values[0]}, grad norm "
                        f"{grad_norm.item()}); stopped without saving: {self.out / ckpt.LAST} holds the last "
                        "good state. Lower --lr, raise --warmup or use --precision fp32, then --resume."
                    )
                lrs = apply_update(self.scaler, self.optimizer, self.scheduler, self.loss)
                step += 1
                window_wait += wait
                window_steps += 1
                first_loss = values[0] if first_loss is None else first_loss
                last_loss = values[0]
                evaluated = {}
                if train.eval_every and valid and (step % train.eval_every == 0 or step == total):
                    evaluated = last_eval = self._evaluate(valid)
                if step % train.log_every == 0 or step == 1 or step == total or evaluated:
                    now = time.perf_counter()
                    elapsed = max(now - window_start, 1e-9)
                    record = {
                        "step": step,
                        "epoch": round(self.stream.epoch, 4),
                        "loss": values[0],
                        **{f"loss_{t}": v for t, v in zip(train.loss_terms, values[1:-1], strict=True)},
                        "lr": lrs[self.optimizer.param_groups[0]["name"]],
                        **({"lr_text": lrs["text"]} if "text" in lrs else {}),
                        **{f"scale_{k}": v for k, v in self.loss.scales().items()},
                        "grad_norm": grad_norm.item(),
                        "samples_per_s": data.batch_size * window_steps / elapsed,
                        "data_wait_frac": min(1.0, window_wait / elapsed),
                        **evaluated,
                    }
                    window_start, window_wait, window_steps = now, 0.0, 0
                    if self.rank == 0:
                        metrics.append(record)
                    display.update(step, record)
                else:
                    display.update(step)
                if values[-1] > 0:
                    stopped = signal.Signals(stop.signum or signal.SIGTERM).name
                    break
                if step % train.save_every == 0 and step < total:
                    self._save(step, keep_step=True)
            # After a signal the run must still leave a checkpoint, so the save is not optional here.
            if stopped is None and stop.signum:
                stopped = signal.Signals(stop.signum).name
            self._save(step, keep_step=False, boundary=broken_off)
        wall = time.perf_counter() - started
        result = {
            "output": str(self.out),
            "steps": step,
            "total_steps": total,
            "first_loss": first_loss,
            "last_loss": last_loss,
            "wall_s": wall,
            "world_size": world,
            "stopped": stopped,
            "checkpoint": str(self.out / ckpt.LAST),
            "model": str(self.out / ckpt.MODEL),
            "eval": last_eval,
        }
        if self.rank == 0:
            result.update(metrics.mean_rates())
            write_result(self.out, result)
        return result

    def _evaluate(self, valid: list[str]) -> dict[str, float]:
        from muser.train.validate import evaluate

        out: dict[str, float] = {}
        if self.rank == 0:
            self.model.eval()
            with torch.random.fork_rng(devices=[]):  # eval must not shift the training RNG stream
                out = evaluate(
                    self.model,
                    valid,
                    self.data.valid_split,
                    self.data.crop_seconds,
                    batch_size=max(1, self.data.batch_size // get_world_size()),
                    max_tracks=self.train.eval_tracks,
                )
            self.model.train()
        barrier()
        return out
