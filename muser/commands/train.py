"""`muser pretrain`: options override the config (or a resumed run's config) field by field, then
muser.train runs it."""

from __future__ import annotations

import click

from muser.commands.options import override_option, user_errors
from muser.config import (
    DEFAULT_PRESET,
    LOSS_TERMS,
    LOSSES,
    PRECISIONS,
    PRESETS,
    DataConfig,
    ModelConfig,
    TrainConfig,
)

# option name -> (config section, field); options left at None keep the config's (or resumed run's) value.
_PRETRAIN_FIELDS = {
    "shards": ("data", "shards"),
    "split": ("data", "split"),
    "crop_seconds": ("data", "crop_seconds"),
    "batch_size": ("data", "batch_size"),
    "workers": ("data", "num_workers"),
    "templates": ("data", "templates"),
    "field_dropout": ("data", "field_dropout"),
    "specaugment": ("model", "specaugment"),
    "wave_gain_db": ("model", "wave_gain_db"),
    "wave_shift": ("model", "wave_shift"),
    "wave_mix": ("model", "wave_mix"),
    "gpus": ("train", "gpus"),
    "procs": ("train", "procs"),
    "nnodes": ("train", "nnodes"),
    "node_rank": ("train", "node_rank"),
    "master_addr": ("train", "master_addr"),
    "master_port": ("train", "master_port"),
    "steps": ("train", "steps"),
    "epochs": ("train", "epochs"),
    "lr": ("train", "lr"),
    "text_lr": ("train", "text_lr"),
    "warmup": ("train", "warmup"),
    "weight_decay": ("train", "weight_decay"),
    "precision": ("train", "precision"),
    "grad_accum": ("train", "grad_accum"),
    "loss_terms": ("train", "loss_terms"),
    "loss": ("train", "loss"),
    "grad_checkpointing": ("train", "grad_checkpointing"),
    "save_every": ("train", "save_every"),
    "eval_every": ("train", "eval_every"),
    "log_every": ("train", "log_every"),
    "report_to": ("train", "report_to"),
    "seed": ("train", "seed"),
}


@click.command(context_settings={"max_content_width": 110})
@click.option("--shards", multiple=True, help="Shard folder (repeat to mix several; sampled by size).")
@click.option(
    "--split",
    default=None,
    help="Split of every folder to train on (default: train, or all in a folder without held-out splits).",
)
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option(
    "--gpus",
    type=int,
    default=None,
    help=f"0 = CPU (default {TrainConfig.gpus}; also when a GPU is visible: a note at the start "
    "says so), 1 = one GPU, N > 1: N processes, NCCL.",
)
@click.option(
    "--procs", type=int, default=None, help="CPU processes (gloo), to run distributed without GPUs."
)
@click.option("--nnodes", type=int, default=None, help="Machines taking part (torchrun).")
@click.option("--node-rank", type=int, default=None, help="This machine's index among --nnodes.")
@click.option("--master-addr", default=None, help="Address of node 0 (several nodes).")
@click.option("--master-port", type=int, default=None, help="Port on node 0 (several nodes).")
@click.option(
    "--preset",
    "preset_name",
    type=click.Choice(list(PRESETS)),
    default=None,
    help=f"Model (default {DEFAULT_PRESET}).",
)
@click.option(
    "--text-encoder",
    default=None,
    help="A transformers model folder or hub id org/name[@rev] (cached: offline); trained at a lower lr.",
)
@click.option(
    "--text-freeze-layers",
    type=click.IntRange(0),
    default=None,
    help="Freeze --text-encoder's embeddings and this many lower blocks; all of them (6 for MiniLM-L6) "
    "locks the text tower as LiT does: only its projection trains.",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help=f"Global batch per optimiser step (default {DataConfig.batch_size}). With --grad-accum > 1 "
    "each contrastive loss only sees micro-batch x processes negatives (batch / grad-accum), not the "
    "whole batch.",
)
@override_option("--steps", TrainConfig, "steps", int, "Optimiser steps")
@click.option("--epochs", type=float, default=None, help="Passes over the training data (not --steps).")
@override_option("--lr", TrainConfig, "lr", float, "Peak learning rate")
@click.option("--text-lr", type=float, default=None, help="Pretrained text encoder lr (default lr / 10).")
@override_option("--warmup", TrainConfig, "warmup", int, "Linear warmup steps")
@override_option("--weight-decay", TrainConfig, "weight_decay", float, "AdamW decay on matrices")
@override_option("--crop-seconds", DataConfig, "crop_seconds", float, "Random crop per sample")
@click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default=None,
    help=f"GPU autocast (default {TrainConfig.precision}): bf16, fp16 (with a loss scaler) or fp32; "
    "CPU runs are always fp32.",
)
@override_option("--grad-accum", TrainConfig, "grad_accum", int, "Micro-batches per optimiser step")
@click.option(
    "--loss-terms",
    default=None,
    help=f"Comma list of {', '.join(LOSS_TERMS)} (default {','.join(TrainConfig.loss_terms)}); "
    "a tower no term reads is not computed, nor part of the saved model's audio embedding.",
)
@click.option(
    "--loss",
    type=click.Choice(LOSSES),
    default=None,
    help=f"softmax: CLIP's symmetric cross-entropy; sigmoid: SigLIP's pairwise loss with a learnable bias "
    f"(default {TrainConfig.loss}).",
)
@click.option("--no-duplicate-aware", is_flag=True, help="Treat identical captions in a batch as negatives.")
@click.option(
    "--grad-checkpointing",
    is_flag=True,
    default=None,
    help="Recompute the towers' activations in the backward: the same gradients, far less memory, about "
    "one more forward per step (for large per-GPU batches).",
)
@override_option("--save-every", TrainConfig, "save_every", int, "Checkpoint period in steps")
@click.option("--eval-every", type=int, default=None, help="Valid-split retrieval/zero-shot period.")
@override_option("--log-every", TrainConfig, "log_every", int, "metrics.jsonl period in steps")
@click.option("--report-to", help="Trackers: tensorboard,wandb,trackio or none (default: tensorboard).")
@override_option("--seed", TrainConfig, "seed", int, "Seed of the init and the data stream")
@click.option("--templates", type=click.Path(exists=True, dir_okay=False), help="Templates file.")
@override_option(
    "--field-dropout",
    DataConfig,
    "field_dropout",
    click.FloatRange(0.0, 1.0, max_open=True),
    "Chance of leaving out each optional caption field",
)
@click.option(
    "--specaugment/--no-specaugment",
    default=None,
    help=f"Time/frequency masks on the spectrogram in training (default {ModelConfig.specaugment}).",
)
@override_option("--wave-gain-db", ModelConfig, "wave_gain_db", float, "Random gain in training, ± dB")
@click.option(
    "--wave-shift/--no-wave-shift",
    default=None,
    help=f"Circular time shift of each training clip (default {ModelConfig.wave_shift}).",
)
@override_option(
    "--wave-mix", ModelConfig, "wave_mix", float, "Mix in another batch track at a weight up to this"
)
@override_option("--workers", DataConfig, "num_workers", int, "Data-loading processes per rank")
@click.option("--resume", is_flag=True, help="Continue RUN from last.pt (options given again override).")
@user_errors
def pretrain(
    output: str,
    resume: bool,
    no_duplicate_aware: bool,
    preset_name: str | None,
    text_encoder: str | None,
    text_freeze_layers: int | None,
    **options,
) -> None:
    """Tri-modal contrastive pretraining on shard folders (CPU, one GPU, or many through torchrun).

    Writes RUN/config.json, metrics.jsonl, last.pt and step-K.pt checkpoints, init/ (the untrained
    initial model, for the other ranks and --resume), model/ (the trained weights of the latest checkpoint,
    re-exported atomically at every save, at a stop and at the end; load with MUSER.from_pretrained or
    `muser eval --checkpoint RUN`) and result.json. SIGTERM saves a checkpoint and exits 0, Ctrl-C saves
    and exits 130; continue either with --resume.

    \b
    Examples:
      muser shard my_music/ shards/mine && muser pretrain --shards shards/mine --output runs/mine
      muser pretrain --shards shards/fma --shards shards/mtt --output runs/x --gpus 0 --steps 200
      muser pretrain --shards shards/fma --output runs/big --gpus 8 --preset base --batch-size 1024
      muser pretrain --output runs/x --resume
    """
    import json

    from muser.config import DEFAULT_PRESET, preset
    from muser.console import make_console
    from muser.train import pretrain as run_pretrain
    from muser.train.display import summary_table
    from muser.train.run_folder import run_configs

    overrides: dict[str, dict] = {"data": {}, "model": {}, "train": {}}
    for option, (section, field_name) in _PRETRAIN_FIELDS.items():
        value = options.get(option)
        if value is None or value == ():
            continue
        if option == "shards":
            value = list(value)
        if option == "loss_terms":
            value = [t.strip() for t in value.split(",") if t.strip()]
        overrides[section][field_name] = value
    if no_duplicate_aware:
        overrides["train"]["duplicate_aware"] = False
    if text_freeze_layers is not None and not text_encoder:
        raise ValueError("--text-freeze-layers freezes a pretrained encoder: give it with --text-encoder")
    model = None
    if preset_name or text_encoder:
        chosen = {"text_encoder": text_encoder} if text_encoder else {}
        if text_freeze_layers is not None:
            chosen["text_freeze_layers"] = text_freeze_layers
        model = preset(preset_name or DEFAULT_PRESET, **chosen)
    data, model_cfg, train = run_configs(output, overrides, resume, model)
    result = run_pretrain(data, model_cfg, train)
    if result.get("steps") is not None:
        make_console(stderr=True).print(summary_table(result))
    click.echo(json.dumps(result))
    if result.get("stopped") == "SIGINT":
        raise SystemExit(130)
