"""The `muser` command line: a click group; each command builds a config and calls one library function.

Imports of heavy modules (torch, the model, the data engine) happen inside the commands so that
`muser --help` answers at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from muser import __version__
from muser.config import (
    INDEX_KINDS,
    LOSS_TERMS,
    LOSSES,
    PRESETS,
    TOWERS,
    DataConfig,
    EmbedConfig,
    EvalConfig,
    ShardConfig,
    TrainConfig,
)
from muser.share.cli import register as register_share_commands


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="muser")
def main() -> None:
    """MUSER: learn music representations from text metadata.

    \b
    muser shard fma_small/ shards/                 pack audio + metadata into tar shards
    muser inspect shards/                          what a shard folder holds
    muser pretrain --shards shards/ --gpus 8       tri-modal contrastive pretraining
    muser eval gtzan --checkpoint runs/x/model     downstream protocols
    muser embed shards/ --checkpoint runs/x -o cat a searchable catalogue of the tracks
    muser search cat "calm piano"                  search it; `muser serve cat` for a web page
    muser demo                                     the whole loop on a built-in corpus
    """


# --- shard / inspect (muser.shards) -----------------------------------------------------------------


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from muser.shards.report import parse_size

    try:
        return None if value is None else parse_size(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err


def _config_option(
    cls: type, flag: str, kind: Any, what: str, name: str = "", shown: object = True, **extra: Any
) -> Callable:
    """An option whose default is the config field cls.name (shown in --help, or `shown` when that is text);
    name, the field and parameter name, defaults to the flag's (--max-count -> max_count)."""
    name = name or flag.lstrip("-").replace("-", "_")
    return click.option(
        flag, name, type=kind, default=getattr(cls, name), show_default=shown, help=what, **extra
    )


@main.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@_config_option(
    ShardConfig,
    "--source",
    click.Choice(["auto", "fma", "gtzan", "mtt", "folder"]),
    "Dataset layout of SRC (auto detects it).",
)
@_config_option(ShardConfig, "--sample-rate", int, "Resample every track to this (Hz).")
@_config_option(
    ShardConfig,
    "--codec",
    click.Choice(["flac", "pcm"]),
    "flac: 16-bit, compact; pcm: raw int16, fastest reads.",
)
@_config_option(ShardConfig, "--workers", int, "Decode processes.", shown="all cores")
@_config_option(ShardConfig, "--max-count", int, "Samples per shard at most.")
@_config_option(
    ShardConfig,
    "--max-size",
    str,
    "Bytes per shard at most (512MB, 1GB; powers of 1024).",
    shown=f"{ShardConfig.max_size // 1024**2}MB",
    callback=_size,
)
@_config_option(
    ShardConfig, "--split-dir", click.Path(exists=True, file_okay=False), "GTZAN fault-filtered split lists."
)
@_config_option(
    ShardConfig,
    "--metadata",
    click.Path(exists=True),
    "FMA fma_metadata/ folder, or a folder source's CSV/JSONL sidecar keyed by relative path "
    "(column `path`; `label_<task>` columns become label vocabularies).",
)
@_config_option(ShardConfig, "--subset", click.Choice(["small", "medium", "large", "full"]), "FMA subset.")
@_config_option(ShardConfig, "--max-errors", float, "Failed-track fraction above which the exit status is 2.")
@_config_option(
    ShardConfig,
    "--valid-fraction",
    float,
    "For sources without splits (a folder): this fraction of tracks goes to split valid, chosen by a hash "
    "of each key, so re-sharding or adding tracks never moves one (0: all tracks stay in split `all`).",
)
@_config_option(
    ShardConfig, "--test-fraction", float, "Likewise for split test; the remaining tracks go to train."
)
@click.option(
    "--ray",
    default=None,
    metavar="ADDRESS",
    help="Decode the tracks on a Ray cluster: auto (this machine's cluster), an address, or local.",
)
@click.option("--overwrite", is_flag=True, help="Delete this DST's previous shards and start over.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary table.")
def shard(src: str, dst: str, quiet: bool, **options: object) -> None:
    """Pack the audio and metadata of SRC into tar shards in DST (resumes an interrupted run).

    \b
    Example:
      muser shard fma_small/ shards/fma --workers 8 --max-size 1GB
      muser shard music/ shards/mine --valid-fraction 0.1 --test-fraction 0.1
    """
    from muser.shards.writer import TooManyErrors, write_shards

    cfg = ShardConfig(src=src, dst=dst, **options)
    try:
        write_shards(cfg, progress=not quiet)
    except TooManyErrors as err:
        click.echo(f"Error: {err}", err=True)
        raise SystemExit(2) from None
    except (ValueError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    except OSError as err:  # reading SRC (writes into DST come back as RuntimeError)
        raise click.ClickException(f"cannot read {err.filename or src}: {err.strerror or err}") from None


@main.command("inspect")
@click.argument("dst", type=click.Path(exists=True, file_okay=False))
@click.option("--verify", is_flag=True, help="Re-hash every shard against the manifest (exit 1 on mismatch).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
def inspect_cmd(dst: str, verify: bool, as_json: bool) -> None:
    """Show what a shard folder holds: splits, hours, labels, errors, one sample's metadata.

    \b
    Example:
      muser inspect shards/fma --verify
    """
    import json

    from muser.shards.inspect import inspect_shards, print_report

    try:
        report = inspect_shards(dst, verify=verify)
    except ValueError as err:
        raise click.ClickException(str(err)) from None
    if as_json:
        click.echo(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        print_report(report)
    if report["verify"]:
        raise SystemExit(1)


# --- pretrain (muser.train) -------------------------------------------------------------------------

# option name -> (config section, field); options left at None keep the config's (or resumed run's) value.
_PRETRAIN_FIELDS = {
    "shards": ("data", "shards"),
    "split": ("data", "split"),
    "crop_seconds": ("data", "crop_seconds"),
    "batch_size": ("data", "batch_size"),
    "workers": ("data", "num_workers"),
    "templates": ("data", "templates"),
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


def _d(cls: type, name: str) -> object:
    """The default of a config field, for help texts: each default is written once, in muser.config."""
    return getattr(cls, name)


def _field(flag: str, cls: type, name: str, kind: type, what: str) -> Callable:
    """An option that overrides config field cls.name when given (None keeps the config's or the resumed
    run's value); its help names the field's default."""
    return click.option(flag, type=kind, default=None, help=f"{what} (default {_d(cls, name)}).")


@main.command(context_settings={"max_content_width": 110})
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
    help=f"0 = CPU (default {_d(TrainConfig, 'gpus')}; also when a GPU is visible: a note at the start "
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
    "--preset", "preset_name", type=click.Choice(list(PRESETS)), default=None, help="Model (default tiny)."
)
@click.option(
    "--text-encoder",
    default=None,
    help="A transformers model folder or hub id org/name[@rev] (cached: offline); trained at a lower lr.",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help=f"Global batch per optimiser step (default {_d(DataConfig, 'batch_size')}). With --grad-accum > 1 "
    "each contrastive loss only sees micro-batch x processes negatives (batch / grad-accum), not the "
    "whole batch.",
)
@_field("--steps", TrainConfig, "steps", int, "Optimiser steps")
@click.option("--epochs", type=float, default=None, help="Passes over the training data (not --steps).")
@_field("--lr", TrainConfig, "lr", float, "Peak learning rate")
@click.option("--text-lr", type=float, default=None, help="Pretrained text encoder lr (default lr / 10).")
@_field("--warmup", TrainConfig, "warmup", int, "Linear warmup steps")
@_field("--weight-decay", TrainConfig, "weight_decay", float, "AdamW decay on matrices")
@_field("--crop-seconds", DataConfig, "crop_seconds", float, "Random crop per sample")
@click.option(
    "--precision",
    type=click.Choice(["bf16", "fp16", "fp32"]),
    default=None,
    help=f"GPU autocast (default {_d(TrainConfig, 'precision')}): bf16, fp16 (with a loss scaler) or fp32; "
    "CPU runs are always fp32.",
)
@_field("--grad-accum", TrainConfig, "grad_accum", int, "Micro-batches per optimiser step")
@click.option(
    "--loss-terms",
    default=None,
    help=f"Comma list of {', '.join(LOSS_TERMS)} (default {','.join(_d(TrainConfig, 'loss_terms'))}).",
)
@click.option(
    "--loss",
    type=click.Choice(LOSSES),
    default=None,
    help=f"softmax: CLIP's symmetric cross-entropy; sigmoid: SigLIP's pairwise loss with a learnable bias "
    f"(default {_d(TrainConfig, 'loss')}).",
)
@click.option("--no-duplicate-aware", is_flag=True, help="Treat identical captions in a batch as negatives.")
@click.option(
    "--grad-checkpointing",
    is_flag=True,
    default=None,
    help="Recompute the towers' activations in the backward: the same gradients, far less memory, about "
    "one more forward per step (for large per-GPU batches).",
)
@_field("--save-every", TrainConfig, "save_every", int, "Checkpoint period in steps")
@click.option("--eval-every", type=int, default=None, help="Valid-split retrieval/zero-shot period.")
@_field("--log-every", TrainConfig, "log_every", int, "metrics.jsonl period in steps")
@click.option("--report-to", help="Trackers: tensorboard,wandb,trackio or none (default: tensorboard).")
@_field("--seed", TrainConfig, "seed", int, "Seed of the init and the data stream")
@click.option("--templates", type=click.Path(exists=True, dir_okay=False), help="Templates file.")
@_field("--workers", DataConfig, "num_workers", int, "Data-loading processes per rank")
@click.option("--resume", is_flag=True, help="Continue RUN from last.pt (options given again override).")
def pretrain(
    output: str,
    resume: bool,
    no_duplicate_aware: bool,
    preset_name: str | None,
    text_encoder: str | None,
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

    from muser.config import preset
    from muser.console import make_console
    from muser.train import pretrain as run_pretrain
    from muser.train.display import summary_table
    from muser.train.run_folder import run_configs

    overrides: dict[str, dict] = {"data": {}, "train": {}}
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
    try:
        model = None
        if preset_name or text_encoder:
            model = preset(preset_name or "tiny", **({"text_encoder": text_encoder} if text_encoder else {}))
        data, model_cfg, train = run_configs(output, overrides, resume, model)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    try:
        result = run_pretrain(data, model_cfg, train)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    except (RuntimeError, OSError) as err:
        raise click.ClickException(str(err)) from None
    if result.get("steps") is not None:
        make_console(stderr=True).print(summary_table(result))
    click.echo(json.dumps(result))
    if result.get("stopped") == "SIGINT":
        raise SystemExit(130)


# --- eval (muser.eval) ------------------------------------------------------------------------------


def _fractions(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers in (0, 1], got {value!r}") from None
    if not out or any(not 0.0 < f <= 1.0 for f in out):
        raise click.BadParameter(f"expected comma-separated numbers in (0, 1], got {value!r}")
    return out


@main.command("eval")
@click.argument("task", type=click.Choice(["gtzan", "mtt", "fma", "shards"]))
@_config_option(
    EvalConfig,
    "--checkpoint",
    str,
    "A run folder, its model/ folder, a hub id org/name[@rev], or `random` (random weights).",
)
@click.option(
    "--data",
    type=click.Path(path_type=str),
    default=None,
    help="Raw dataset root (sharded once into a cache) or a shard folder; default $MUSER_DATA/TASK.",
)
@_config_option(
    EvalConfig, "--protocol", str, "probe | zeroshot | finetune | retrieval | all (or a comma list)."
)
@click.option(
    "--fractions",
    default=",".join(f"{f:g}" for f in EvalConfig.fractions),
    show_default=True,
    callback=_fractions,
    help="Training fractions for few-shot curves, e.g. 0.01,0.05,0.1,0.5,1.",
)
@click.option(
    "--probe",
    "probes",
    default=",".join(EvalConfig.probes),
    show_default=True,
    callback=lambda ctx, param, value: tuple(v.strip() for v in value.split(",") if v.strip()),
    help="Probe heads, a comma list: logistic, mlp, marble (MARBLE's protocol: 512 hidden, dropout 0.2, "
    "batch 64, lr chosen on validation, early stopping).",
)
@_config_option(EvalConfig, "--seeds", click.IntRange(1), "Probe seeds per fold.")
@_config_option(
    EvalConfig, "--folds", click.IntRange(2), "Stratified K-fold when the data has no test split."
)
@_config_option(
    EvalConfig,
    "--output",
    click.Path(path_type=str),
    "Folder for results.json, confusion.png and fewshot.png.",
)
@click.option(
    "--baseline",
    type=click.Choice(["mfcc"]),
    default=None,
    help="Add the MFCC mean/std + logistic regression baseline.",
)
@_config_option(EvalConfig, "--preset", click.Choice(list(PRESETS)), "Architecture of --checkpoint random.")
@click.option("--label-task", default=None, help="Label vocabulary to score (shards task).")
@click.option(
    "--no-random-baseline", is_flag=True, help="Skip the random-weights baseline of a real checkpoint."
)
@_config_option(EvalConfig, "--chunk-seconds", float, "Chunk length of track features.")
@_config_option(EvalConfig, "--batch-size", click.IntRange(1), "Chunks per batch.")
@_config_option(EvalConfig, "--workers", click.IntRange(0), "Reader workers.", name="num_workers")
@_config_option(EvalConfig, "--device", str, "auto | cpu | cuda")
@_config_option(EvalConfig, "--finetune-epochs", click.IntRange(1), "PT+FT training epochs.")
@_config_option(EvalConfig, "--finetune-lr", click.FloatRange(0.0, min_open=True), "PT+FT learning rate.")
@_config_option(EvalConfig, "--seed", int, "Seed of folds, random weights and fine-tuning.")
@click.option(
    "--split-dir",
    type=click.Path(exists=True, file_okay=False, path_type=str),
    default=None,
    help="GTZAN fault-filtered split lists (train_filtered.txt, ...); default: those in the --data root.",
)
@click.option(
    "--cache-dir",
    default=None,
    type=click.Path(path_type=str),
    help="Shard and feature cache (default OUT/../.muser_cache).",
)
def eval_cmd(task: str, no_random_baseline: bool, **options: Any) -> None:
    """Evaluate a checkpoint on TASK (gtzan | mtt | fma | shards): probe, zero-shot, fine-tune, retrieval.

    Writes OUT/results.json, confusion.png and fewshot.png, with the random-weights baseline (and
    --baseline mfcc) beside every result. A raw dataset is sharded once into a cache beside OUT.

    \b
    Examples:
      muser eval gtzan --data data/gtzan --checkpoint runs/x --protocol all --baseline mfcc
      muser eval mtt --data data/mtt --checkpoint runs/x/model --protocol probe,zeroshot --seeds 1
      muser eval fma --data shards/fma --checkpoint runs/x --protocol probe --fractions 0.01,0.1,1
      muser eval gtzan --data data/gtzan --checkpoint runs/x --protocol probe --probe logistic,marble
      muser eval shards --data shards/mine --label-task genre --checkpoint random --folds 5
    """
    from muser.eval import run_eval

    # Every option's name is its EvalConfig field, so the options map onto the config one to one.
    cfg = EvalConfig(task=task, random_baseline=not no_random_baseline, **options)
    try:
        result = run_eval(cfg)
    except (ValueError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {result['outputs']['results.json']}")


# --- embed / search / serve (muser.catalogue) -------------------------------------------------------


@main.command("embed")
@click.argument("src", nargs=-1, required=True, type=click.Path(exists=True, file_okay=False))
@click.option(
    "--checkpoint", required=True, help="A run folder, its model/ folder, hub id org/name[@rev] or `random`."
)
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Catalogue folder EMB.")
@_config_option(
    EmbedConfig,
    "--chunk-seconds",
    click.FloatRange(0.0, min_open=True),
    "Chunk length of the whole-track features (as `muser eval`).",
)
@click.option(
    "--tower",
    type=click.Choice(TOWERS),
    default=None,
    help="Audio tower to embed with (default: what the model was trained with).",
)
@_config_option(
    EmbedConfig,
    "--index",
    click.Choice(INDEX_KINDS),
    "auto: exact up to N x D = 16.8M, else IVF (PQ + exact re-ranking beyond --index-memory); "
    "flat: exact inner product; hnsw: approximate graph.",
)
@click.option(
    "--index-key",
    default=None,
    help="A FAISS factory string instead of --index, e.g. IVF4096,PQ64x4fs,RFlat or IVF1024,Flat.",
)
@click.option(
    "--index-memory",
    default=None,
    help="RAM budget of --index auto, e.g. 2G (default: a quarter of the vectors' size, at least 256M).",
)
@_config_option(EmbedConfig, "--batch-size", click.IntRange(1), "Chunks per forward pass.")
@_config_option(EmbedConfig, "--workers", click.IntRange(0), "Reader processes per rank.", name="num_workers")
@click.option(
    "--gpus",
    type=click.IntRange(0),
    default=None,
    help="0 = CPU, 1 = one GPU, N > 1 = N GPUs under torchrun (default: a GPU when there is one).",
)
@click.option("--procs", type=click.IntRange(0), default=0, help="CPU processes under torchrun (gloo).")
@click.option(
    "--ray",
    default=None,
    metavar="ADDRESS",
    help="Embed each shard as a task on a Ray cluster: auto (this machine's cluster), an address, or local.",
)
@click.option("--nnodes", type=click.IntRange(1), default=1, help="Machines taking part (torchrun).")
@click.option("--node-rank", type=click.IntRange(0), default=0, help="This machine's index among --nnodes.")
@click.option("--master-addr", default="127.0.0.1", help="Address of node 0 (several nodes).")
@click.option("--master-port", type=int, default=29500, help="Port on node 0 (several nodes).")
@click.option("--overwrite", is_flag=True, help="Delete EMB's catalogue and start over.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where a raw SRC folder is sharded once (default EMB/../.muser_cache, as `muser eval` does).",
)
@_config_option(EmbedConfig, "--preset", str, "Architecture of `random`.")
@_config_option(EmbedConfig, "--seed", int, "Seed of `random`.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary table.")
def embed_cmd(src: tuple[str, ...], quiet: bool, **options: object) -> None:
    """Embed the tracks of SRC (shard folders, or folders of audio) into a searchable catalogue EMB.

    Writes EMB/embeddings.parquet (one row per track: key, audio and caption embeddings, metadata, shard
    + member), EMB/index.faiss and EMB/catalogue.json. Each shard is committed as it is done: a killed run
    resumes when the same command runs again; new SRC folders are added to an existing catalogue.

    \b
    Examples:
      muser embed shards/fma --checkpoint runs/x --output catalogue/fma
      muser embed shards/fma shards/mtt --checkpoint runs/x -o catalogue/all --gpus 8 --index-memory 4G
      muser embed my_music/ --checkpoint runs/x/model -o catalogue/mine
    """
    import json

    from muser.catalogue.display import print_embed_summary
    from muser.catalogue.embed import embed
    from muser.console import make_console

    cfg = EmbedConfig(sources=list(src), progress=not quiet, **options)  # type: ignore[arg-type]
    try:
        summary = embed(cfg)
    except ValueError as err:
        raise click.UsageError(str(err)) from None
    except (RuntimeError, OSError) as err:
        raise click.ClickException(str(err)) from None
    if not quiet and "catalogue" in summary:  # node 0 (or one machine): it assembled the catalogue
        print_embed_summary(summary, make_console(stderr=True))
    click.echo(json.dumps({k: v for k, v in summary.items() if k != "catalogue"}))


def _years(ctx: click.Context, param: click.Parameter, value: str | None) -> object:
    from muser.catalogue.search import parse_years

    try:
        return parse_years(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None


@main.command("search")
@click.argument("emb", type=click.Path(exists=True, file_okay=False))
@click.argument("query", required=False)
@click.option("--top", "-k", type=click.IntRange(1), default=10, show_default=True, help="Results to show.")
@click.option(
    "--audio", type=click.Path(exists=True, dir_okay=False), help="Query by example: tracks like this file."
)
@click.option("--similar", "similar_key", help="Tracks like this catalogue track (its key).")
@click.option("--genre", help="Only tracks with this genre.")
@click.option("--tag", help="Only tracks with this tag.")
@click.option("--artist", help="Only tracks whose artist contains this.")
@click.option("--year", callback=_years, help="1998, 1990-2000, 1990- or -2000.")
@click.option("--checkpoint", help="Model (folder, hub id) for text/audio queries (default: catalogue's).")
@click.option(
    "--queries",
    "queries_file",
    type=click.Path(exists=True, dir_okay=False),
    help="A file of text queries, one a line: searched in one batch, one JSON line of results each.",
)
@click.option(
    "--nprobe", type=click.IntRange(1), help="IVF index: lists scanned per query (recall vs speed)."
)
@click.option("--ef-search", type=click.IntRange(1), help="HNSW index: candidate list per query.")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
def search_cmd(
    emb: str,
    query: str | None,
    top: int,
    audio: str | None,
    similar_key: str | None,
    checkpoint: str | None,
    queries_file: str | None,
    nprobe: int | None,
    ef_search: int | None,
    as_json: bool,
    **filters: object,
) -> None:
    """Search the catalogue EMB by text (QUERY), by example (--audio), by a track (--similar) or by a file
    of text queries (--queries).

    \b
    Examples:
      muser search catalogue/fma "calm piano with strings" --top 5
      muser search catalogue/fma --audio clip.mp3 --genre jazz --year 1990-2000
      muser search catalogue/fma --similar fma_000426 --json
      muser search catalogue/fma --queries queries.txt --nprobe 64 > results.jsonl
    """
    import json

    from muser.catalogue.display import hits_table
    from muser.catalogue.search import read_queries, run_batch, run_search
    from muser.console import make_console

    tuning = {"nprobe": nprobe, "ef_search": ef_search}
    if queries_file:
        if query or audio or similar_key:
            raise click.UsageError("--queries replaces QUERY, --audio and --similar; give only one of them")
        try:
            batch = run_batch(emb, read_queries(queries_file), top, checkpoint, **tuning, **filters)
        except ValueError as err:
            raise click.UsageError(str(err)) from None
        for item in batch["queries"]:
            click.echo(json.dumps(item, ensure_ascii=False))
        t = batch["timing"]
        click.echo(
            f"{t['queries']} queries: text tower {t['embed_s']:.3f} s, search {t['search_s']:.3f} s "
            f"({t['queries_per_s']} queries/s)",
            err=True,
        )
        return
    try:
        out = run_search(emb, query, audio, similar_key, top, checkpoint, **tuning, **filters)
    except (ValueError, KeyError) as err:
        raise click.UsageError(str(err).strip("'\"")) from None
    if as_json:
        click.echo(json.dumps(out, indent=1, ensure_ascii=False))
        return
    seed = out.get("track") or {}
    named = " by ".join(x for x in (seed.get("title"), seed.get("artist")) if x) or out["query"]
    title = {"text": f"text: {out['query']}", "audio": f"sounds like {out['query']}"}.get(out["kind"])
    make_console().print(hits_table(out["results"], title or f"tracks like {named}"))


@main.command("serve")
@click.argument("emb", type=click.Path(exists=True, file_okay=False))
@click.option("--checkpoint", help="Model (folder or hub id) for text queries (default: the catalogue's).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind (0.0.0.0: everyone).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda")
def serve_cmd(emb: str, checkpoint: str | None, host: str, port: int, device: str) -> None:
    """A search page and JSON API over the catalogue EMB, with audio streamed from its shards.

    \b
    Examples:
      muser serve catalogue/fma                 # then open http://127.0.0.1:8000
      muser serve catalogue/fma --port 9000 --checkpoint runs/x
    """
    from muser.catalogue.serve import serve

    click.echo(f"muser serve: loading {emb} and its model ...", err=True)

    def announce(url: str) -> None:
        click.echo(f"muser serve: {url}  (Ctrl-C to stop)", err=True)

    try:
        serve(emb, checkpoint=checkpoint, host=host, port=port, device=device, announce=announce)
    except ValueError as err:
        raise click.UsageError(str(err)) from None


# --- demo (muser.demo) ------------------------------------------------------------------------------


@main.command()
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default="demo_out",
    show_default=True,
    help="Folder for the corpus, shards, run and report (reused by a second run).",
)
@click.option("--quick", is_flag=True, help="A ~1-minute version: fewer tracks, fewer steps, one seed.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the corpus and the run.")
def demo(out: str, quick: bool, seed: int) -> None:
    """The whole loop on the built-in corpus: generate, shard, pretrain (tiny), evaluate.

    \b
    Ends with a table of zero-shot, probe and retrieval scores on held-out tracks against random
    weights and an MFCC baseline, and the commands to run the same on real data.

    \b
    Examples:
      muser demo                 # ~5 minutes on 2 CPU cores
      muser demo --quick --out /tmp/demo
    """
    from muser.demo import DemoInterrupted, run_demo

    try:
        run_demo(out, quick=quick, seed=seed)
    except DemoInterrupted as exc:
        click.echo(str(exc), err=True)
        raise SystemExit(130) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


register_share_commands(main)  # muser export / card / push (muser.share.cli)

if __name__ == "__main__":
    main()
