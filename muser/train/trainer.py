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
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from muser import __version__
from muser.config import DataConfig, EvalConfig, ModelConfig, TrainConfig, to_dict
from muser.distributed import (
    barrier,
    check_gpus,
    dist_cleanup,
    dist_init,
    get_world_size,
    in_torchrun,
    print0,
)
from muser.runs import RunFolder
from muser.shards.cache import check_sample_rate
from muser.train import checkpoint as ckpt
from muser.train.data import MIN_EPOCH_BATCHES, MicroBatches, TrainSources, tokenizer_texts
from muser.train.display import TrainDisplay
from muser.train.launch import launch
from muser.train.optim import build_optimizer, build_scheduler
from muser.train.options import (
    check_config,
    embed_with_trained_towers,
    memory_advice,
    out_of_memory,
    world_of,
)
from muser.train.run_folder import MetricsLog, RateWindow, load_resume, write_config, write_result
from muser.train.signals import StopSignal
from muser.train.step import DataBrokenOff, StepResult, TrainingState, build_objective, train_step


class NonFiniteLossError(RuntimeError):
    """The loss or the gradient norm became inf/NaN; nothing was saved after the last good checkpoint."""


def pretrain(data: DataConfig, model: ModelConfig, train: TrainConfig) -> dict[str, Any]:
    """Train MUSER on the shard folders of `data`; returns the run summary (also RUN/result.json).

    Raises ValueError for bad options or shards, NonFiniteLossError when training diverges. A SIGTERM or
    SIGINT stops after the current step with a checkpoint saved (result["stopped"] names the signal).
    """
    world = world_of(train)
    check_config(data, model, train, world)
    model, note = embed_with_trained_towers(model, train)
    if note and not in_torchrun():  # the launcher said it; its workers get the changed config
        print(f"muser pretrain: {note}", file=sys.stderr)
    if not in_torchrun():  # a worker's launcher has checked its node's devices already
        check_gpus(train.gpus)
    sources = TrainSources.open(data.shards, data.split)
    if sources.samples is None and train.epochs is not None:
        raise ValueError(sources.epochs_message())
    check_sample_rate("--shards", sources.sample_rate, model.sample_rate)
    if world > 1 and not in_torchrun():
        return launch(data, model, train)
    return _PretrainRun(data, model, train, sources).run()


def _cuda_visible() -> bool:
    return torch.cuda.is_available()


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _PretrainRun:
    """One rank's training run; built and driven by pretrain()."""

    def __init__(self, data: DataConfig, model: ModelConfig, train: TrainConfig, sources: TrainSources):
        self.data, self.model_cfg, self.train, self.sources = data, model, train, sources
        self.out = Path(train.output)

    def run(self) -> dict[str, Any]:
        self.rank, _, self.world, self.device = dist_init("cuda" if self.train.gpus > 0 else "cpu")
        try:
            step = self._build()
            return self._loop(step)
        finally:
            dist_cleanup()

    # ---- build --------------------------------------------------------------------------------------

    def _build(self) -> int:
        """Model, loss, optimiser, schedule and data stream of this rank; returns the step to start at."""
        fresh = self.rank == 0 and not self.out.exists()
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
        try:
            return self._build_in_folder()
        except BaseException:
            # A run refused while building (a bad model option, an unreadable corpus) leaves no folder
            # behind that it made itself: nothing was trained, and an empty RUN would look like a run.
            if fresh:
                shutil.rmtree(self.out, ignore_errors=True)
            raise

    def _build_in_folder(self) -> int:
        from muser.losses import TriModalLoss
        from muser.shards.reader import make_loader

        train, data, device = self.train, self.data, self.device
        if device.type == "cpu" and _cuda_visible():
            print0(
                "muser pretrain: a CUDA device is visible but --gpus is 0: training runs on the CPU "
                "(pass --gpus 1 to use the GPU)",
                file=sys.stderr,
            )
        for note in self.sources.notes():
            print0(f"muser pretrain: {note}", file=sys.stderr)
        resume = load_resume(self.out, data, train)
        samples = self.sources.samples
        self.total = (
            train.steps
            if train.epochs is None
            else max(1, math.ceil(train.epochs * (samples or 0) / data.batch_size))
        )
        _seed_all(train.seed)
        self.model = self._build_model(resume).to(device)
        self.model.train()
        if train.grad_checkpointing:
            self.model.set_grad_checkpointing(True)
        loss = TriModalLoss(
            terms=tuple(train.loss_terms), duplicate_aware=train.duplicate_aware, loss=train.loss
        ).to(device)
        objective, self.model = build_objective(self.model, loss, train, self.world, device)
        optimizer = build_optimizer(
            self.model.param_groups(), list(loss.parameters()), train, self.model.text_is_pretrained
        )
        self.training = TrainingState(
            objective=objective,
            loss=loss,
            optimizer=optimizer,
            scheduler=build_scheduler(optimizer, train.warmup, self.total),
            scaler=torch.amp.GradScaler("cuda", enabled=device.type == "cuda" and train.precision == "fp16"),
            device=device,
        )
        micro = data.batch_size // (self.world * train.grad_accum)
        sources, split = self.sources.read_args()
        loader = make_loader(
            sources,
            split=split,
            mode="train",
            batch_size=micro,
            crop_seconds=data.crop_seconds,
            num_workers=data.num_workers,
            steps=max(MIN_EPOCH_BATCHES, (samples or 0) // (micro * self.world)),
            seed=train.seed,
            tokenize=self.model.tokenize,
            templates=data.templates,
            shuffle_buffer=data.shuffle_buffer,
            field_dropout=data.field_dropout,
        )
        self.stream = MicroBatches(loader)
        # Ranks draw different SpecAugment masks and dropout; the model init above was identical.
        _seed_all(train.seed + 1000 * self.rank + 1)
        step = self._restore(resume) if resume is not None else 0
        config = {"data": to_dict(data), "model": to_dict(self.model.config), "train": to_dict(train)}
        self.metrics = MetricsLog(self.out, self.rank == 0, step, train.report_to, config)
        if self.rank == 0:
            write_config(self.out, self.world, self.total, data, self.model.config, train)
            self.metrics.truncate(step)
        self.valid = [f for f in self.sources.folders if f.has_manifest and f.has(data.valid_split)]
        return step

    def _build_model(self, resume: dict[str, Any] | None) -> Any:
        from muser.models.muser import MUSER

        init_dir = RunFolder(self.out).init
        if resume is None and self.rank == 0:
            texts = None
            if not self.model_cfg.text_encoder:
                texts, skipped = tokenizer_texts(self.sources)
                if skipped:
                    print(
                        f"muser pretrain: the tokenizer pass skipped {skipped} unreadable members",
                        file=sys.stderr,
                    )
            model = MUSER.from_config(self.model_cfg, tokenizer_texts=texts)
            # Saved now so every rank (and a later --resume) rebuilds the same tokenizer and architecture.
            # Not into model/: that folder is what gets evaluated, and must only ever hold trained weights.
            model.save_pretrained(init_dir)
        barrier()
        if resume is not None or self.rank != 0:
            if not (init_dir / "config.json").is_file():
                if resume is not None and (RunFolder(self.out).model / "config.json").is_file():
                    # a pre-release run kept its tokenizer and architecture in model/ only
                    raise ValueError(
                        f"{self.out} has no init/: it was written by a muser before 0.1, and muser "
                        f"{__version__} resumes only runs of its own format; start a new run"
                    )
                raise RuntimeError(f"{init_dir} is missing; the run folder {self.out} is incomplete")
            model = MUSER.from_pretrained(init_dir)
            # The architecture is the run's own; its augmentation options given again (--resume) apply.
            model.set_augmentation(self.model_cfg)
        return model

    # ---- the loop -----------------------------------------------------------------------------------

    def _loop(self, step: int) -> dict[str, Any]:
        train, total = self.train, self.total
        window, started = RateWindow(), time.perf_counter()
        first_loss = last_loss = None
        last_eval: dict[str, float] = {}
        broken_off = None  # where a step broken off by a stop rewinds to: (data position, RNG state)
        result: StepResult | None = None
        with StopSignal() as stop, TrainDisplay(total, step, enabled=self.rank == 0) as display:
            while step < total:
                mark = self.stream.position, ckpt.rng_state()
                try:
                    result = train_step(self.training, self.stream, train, stop.requested)
                except DataBrokenOff:
                    broken_off = mark
                    break
                except (RuntimeError, MemoryError) as err:
                    if not out_of_memory(err):
                        raise
                    # The allocator's own words name bytes and caching settings, not what to change.
                    advice = memory_advice(self.data, train, self.world, self.device.type, step + 1)
                    raise RuntimeError(
                        f"{advice}; {self.out / ckpt.LAST} holds the last saved state"
                    ) from None
                if not result.updated:
                    raise NonFiniteLossError(
                        f"the loss became non-finite at step {step + 1} (loss {result.loss}, grad norm "
                        f"{result.grad_norm}); stopped without saving: {RunFolder(self.out).last} "
                        "holds the last good state. Lower --lr, raise --warmup or use --precision fp32, "
                        "then --resume."
                    )
                step += 1
                first_loss = result.loss if first_loss is None else first_loss
                last_loss = result.loss
                window.add(result.data_wait)

                # evaluate
                evaluated: dict[str, float] = {}
                if self.valid and train.eval_every and (step % train.eval_every == 0 or step == total):
                    evaluated = last_eval = self._evaluate()

                # log
                if step % train.log_every == 0 or step in (1, total) or evaluated:
                    record = self._record(step, result, window.take(self.data.batch_size), evaluated)
                    if self.rank == 0:
                        self.metrics.append(record)
                    display.update(step, record)
                else:
                    display.update(step)

                # save (and stop, when any rank was signalled)
                if result.stop:
                    break
                if step % train.save_every == 0 and step < total:
                    self._save(step, keep_step=True)
            # After a signal the run must still leave a checkpoint, so this save is not optional.
            self._save(step, keep_step=False, boundary=broken_off)
        if stop.signum:
            stopped = signal.Signals(stop.signum).name
        else:  # another rank was signalled (torchrun forwards SIGTERM), or nobody was
            stopped = "SIGTERM" if result is not None and result.stop else None
        return self._finish(step, first_loss, last_loss, last_eval, stopped, time.perf_counter() - started)

    def _record(
        self, step: int, result: StepResult, rates: dict[str, float], evaluated: dict[str, float]
    ) -> dict[str, Any]:
        """One metrics.jsonl line."""
        first_group = self.training.optimizer.param_groups[0]["name"]
        return {
            "step": step,
            "epoch": round(self.stream.epoch, 4),
            "loss": result.loss,
            **{f"loss_{term}": value for term, value in result.terms.items()},
            "lr": result.lrs[first_group],
            **({"lr_text": result.lrs["text"]} if "text" in result.lrs else {}),
            **{f"scale_{k}": v for k, v in self.training.loss.scales().items()},
            **{f"bias_{k}": v for k, v in self.training.loss.biases().items()},
            "grad_norm": result.grad_norm,
            **rates,
            "skipped": self.stream.skipped,
            **evaluated,
        }

    def _finish(
        self,
        step: int,
        first_loss: float | None,
        last_loss: float | None,
        last_eval: dict[str, float],
        stopped: str | None,
        wall: float,
    ) -> dict[str, Any]:
        result = {
            "output": str(self.out),
            "steps": step,
            "total_steps": self.total,
            "first_loss": first_loss,
            "last_loss": last_loss,
            "wall_s": wall,
            "world_size": self.world,
            # what computed the loss: "auto" falls back to the reference when the Triton self-check fails
            "loss_impl": self.training.loss.implementation(self.device),
            "stopped": stopped,
            "skipped": self.stream.skipped,
            "checkpoint": str(RunFolder(self.out).last),
            "model": str(RunFolder(self.out).model),
            "eval": last_eval,
        }
        if self.rank == 0:
            result.update(self.metrics.mean_rates())
            write_result(self.out, result)
        self.metrics.close()
        return result

    def _evaluate(self) -> dict[str, float]:
        from muser.train.validate import evaluate

        out: dict[str, float] = {}
        if self.rank == 0:
            self.model.eval()
            with torch.random.fork_rng(devices=[]):  # eval must not shift the training RNG stream
                out = evaluate(
                    self.model,
                    self.valid,
                    self.data.valid_split,
                    EvalConfig.chunk_seconds,  # eval's chunk length: the numbers mirror `muser eval`'s
                    batch_size=max(1, self.data.batch_size // get_world_size()),
                    max_tracks=self.train.eval_tracks,
                )
            self.model.train()
        barrier()
        return out

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
            t = self.training
            state = {
                "format_version": 1,
                "step": step,
                "data_position": position,
                "data_per_epoch": self.stream.per_epoch,
                "world_size": get_world_size(),
                "model": self.model.state_dict(),
                "loss": t.loss.state_dict(),
                "optimizer": t.optimizer.state_dict(),
                "scheduler": t.scheduler.state_dict(),
                "scaler": t.scaler.state_dict(),
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
        t = self.training
        ckpt.check_architecture(self.model, state["model"], str(RunFolder(self.out).last))
        self.model.load_state_dict(state["model"])
        t.loss.load_state_dict(state["loss"])
        t.optimizer.load_state_dict(state["optimizer"])
        sched = dict(state["scheduler"])
        # keep this run's schedule (a resume may extend --steps): its own fields replace the saved ones
        sched["lr_lambdas"] = t.scheduler.state_dict()["lr_lambdas"]
        t.scheduler.load_state_dict(sched)
        t.scaler.load_state_dict(state["scaler"])
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
