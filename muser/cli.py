"""The `muser` command line: a click group; each command builds a config and calls one library function.

Imports of heavy modules (torch, the model, the data engine) happen inside the commands so that
`muser --help` answers at once.
"""

from __future__ import annotations

import click

from muser import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="muser")
def main() -> None:
    """MUSER: learn music representations from text metadata.

    \b
    muser shard fma_small/ shards/                 pack audio + metadata into tar shards
    muser inspect shards/                          what a shard folder holds
    muser pretrain --shards shards/ --gpus 8       tri-modal contrastive pretraining
    muser eval gtzan --checkpoint runs/x/model     downstream protocols
    muser demo                                     the whole loop on a built-in corpus
    """


# --- shard / inspect (muser.shards) -----------------------------------------------------------------


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from muser.shards.report import parse_size

    try:
        return None if value is None else parse_size(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err


@main.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@click.option(
    "--source",
    type=click.Choice(["auto", "fma", "gtzan", "mtt", "folder"]),
    default="auto",
    show_default=True,
    help="Dataset layout of SRC (auto detects it).",
)
@click.option(
    "--sample-rate", type=int, default=16000, show_default=True, help="Resample every track to this (Hz)."
)
@click.option(
    "--codec",
    type=click.Choice(["flac", "pcm"]),
    default="flac",
    show_default=True,
    help="flac: 16-bit, compact; pcm: raw int16, fastest reads.",
)
@click.option("--workers", type=int, default=None, help="Decode processes (default: all cores).")
@click.option("--max-count", type=int, default=1000, show_default=True, help="Samples per shard at most.")
@click.option(
    "--max-size",
    callback=_size,
    default="512MB",
    show_default=True,
    help="Bytes per shard at most (512MB, 1GB; powers of 1024).",
)
@click.option(
    "--split-dir",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="GTZAN fault-filtered split lists (train_filtered.txt, ...).",
)
@click.option(
    "--metadata",
    type=click.Path(exists=True),
    default=None,
    help="FMA fma_metadata/ folder, or a folder source's CSV/JSONL sidecar keyed by relative path "
    "(column `path`; `label_<task>` columns become label vocabularies).",
)
@click.option(
    "--subset",
    type=click.Choice(["small", "medium", "large", "full"]),
    default="small",
    show_default=True,
    help="FMA subset.",
)
@click.option(
    "--max-errors",
    type=float,
    default=0.01,
    show_default=True,
    help="Failed-track fraction above which the exit status is 2.",
)
@click.option(
    "--valid-fraction",
    type=float,
    default=None,
    help="For sources without splits (a folder): this fraction of tracks goes to split valid, chosen by "
    "a hash of each key, so re-sharding or adding tracks never moves one (default 0: split `all`).",
)
@click.option(
    "--test-fraction",
    type=float,
    default=None,
    help="Likewise for split test; the remaining tracks go to train.",
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
    from muser.config import ShardConfig
    from muser.shards.writer import TooManyErrors, write_shards

    cfg = ShardConfig(src=src, dst=dst, **{k: v for k, v in options.items() if v is not None})
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
    "crop_seconds": ("data", "crop_seconds"),
    "batch_size": ("data", "batch_size"),
    "workers": ("data", "num_workers"),
    "templates": ("data", "templates"),
    "output": ("train", "output"),
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
    "save_every": ("train", "save_every"),
    "eval_every": ("train", "eval_every"),
    "log_every": ("train", "log_every"),
    "seed": ("train", "seed"),
}


def _pretrain_configs(options: dict, resume: bool, no_duplicate_aware: bool, preset_name, text_encoder):
    """The three configs from the options; with --resume the run's config.json is the base."""
    import json
    from pathlib import Path

    from muser.config import DataConfig, ModelConfig, TrainConfig, from_dict, preset, to_dict

    saved: dict = {}
    if resume:
        path = Path(options["output"]) / "config.json"
        if not path.is_file():
            raise click.UsageError(f"--resume: {path} not found; --output must be an earlier run's folder")
        saved = json.loads(path.read_text())
    elif not options.get("shards"):
        raise click.UsageError("--shards is required (a folder written by `muser shard`; repeat to mix)")
    sections = {name: dict(saved.get(name, {})) for name in ("data", "model", "train")}
    if "model" not in saved or preset_name or text_encoder:
        overrides = {"text_encoder": text_encoder} if text_encoder else {}
        sections["model"] = to_dict(preset(preset_name or "tiny", **overrides))
    for option, (section, field_name) in _PRETRAIN_FIELDS.items():
        value = options.get(option)
        if value is None or value == ():
            continue
        if option == "shards":
            value = list(value)
        if option == "loss_terms":
            value = [t.strip() for t in value.split(",") if t.strip()]
        sections[section][field_name] = value
    if options.get("steps") is not None:
        sections["train"]["epochs"] = None  # --steps on a resumed --epochs run: the step count wins
    if no_duplicate_aware:
        sections["train"]["duplicate_aware"] = False
    sections["train"]["resume"] = resume
    try:
        return (
            from_dict(DataConfig, sections["data"]),
            from_dict(ModelConfig, sections["model"]),
            from_dict(TrainConfig, sections["train"]),
        )
    except (TypeError, ValueError) as err:
        raise click.UsageError(f"cannot build the run configuration: {err}") from err


@main.command(context_settings={"max_content_width": 110})
@click.option("--shards", multiple=True, help="Shard folder (repeat to mix several; sampled by size).")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option(
    "--gpus",
    type=int,
    default=None,
    help="0 = CPU (the default, even when a GPU is visible: a note at the start says so); 1 = one GPU; "
    "N > 1: N processes, NCCL.",
)
@click.option(
    "--procs", type=int, default=None, help="CPU processes (gloo), to run distributed without GPUs."
)
@click.option("--nnodes", type=int, default=None, help="Machines taking part (torchrun).")
@click.option("--node-rank", type=int, default=None, help="This machine's index among --nnodes.")
@click.option("--master-addr", default=None, help="Address of node 0 (several nodes).")
@click.option("--master-port", type=int, default=None, help="Port on node 0 (several nodes).")
@click.option("--preset", "preset_name", type=click.Choice(["tiny", "base"]), default=None, help="Model.")
@click.option(
    "--text-encoder",
    default=None,
    help="A transformers model folder or hub id (offline: a folder); trained at a lower lr.",
)
@click.option(
    "--batch-size",
    type=int,
    default=None,
    help="Global batch per optimiser step (default 32). With --grad-accum > 1 each contrastive loss only "
    "sees micro-batch x processes negatives (batch / grad-accum), not the whole batch.",
)
@click.option("--steps", type=int, default=None, help="Optimiser steps (default 200).")
@click.option("--epochs", type=float, default=None, help="Passes over the training data (not --steps).")
@click.option("--lr", type=float, default=None, help="Peak learning rate (default 1e-3).")
@click.option("--text-lr", type=float, default=None, help="Pretrained text encoder lr (default lr / 10).")
@click.option("--warmup", type=int, default=None, help="Linear warmup steps (default 20).")
@click.option("--weight-decay", type=float, default=None, help="AdamW decay on matrices (default 0.05).")
@click.option("--crop-seconds", type=float, default=None, help="Random crop per sample (default 3.0).")
@click.option(
    "--precision",
    type=click.Choice(["bf16", "fp16", "fp32"]),
    default=None,
    help="GPU autocast: bf16 (default), fp16 (with a loss scaler) or fp32; CPU runs are always fp32.",
)
@click.option("--grad-accum", type=int, default=None, help="Micro-batches per optimiser step (default 1).")
@click.option("--loss-terms", default=None, help="Comma list of at, st, as (default at,st).")
@click.option("--no-duplicate-aware", is_flag=True, help="Treat identical captions in a batch as negatives.")
@click.option("--save-every", type=int, default=None, help="Checkpoint period in steps (default 100).")
@click.option("--eval-every", type=int, default=None, help="Valid-split retrieval/zero-shot period.")
@click.option("--log-every", type=int, default=None, help="metrics.jsonl period in steps (default 10).")
@click.option("--seed", type=int, default=None, help="Seed of the init and the data stream (default 0).")
@click.option("--templates", type=click.Path(exists=True, dir_okay=False), help="Templates file.")
@click.option("--workers", type=int, default=None, help="Data-loading processes per rank (default 2).")
@click.option("--resume", is_flag=True, help="Continue RUN from last.pt (options given again override).")
def pretrain(resume: bool, no_duplicate_aware: bool, preset_name, text_encoder, **options) -> None:
    """Tri-modal contrastive pretraining on shard folders (CPU, one GPU, or many through torchrun).

    Writes RUN/config.json, metrics.jsonl, last.pt and step-K.pt checkpoints, init/ (the untrained
    initial model, for the other ranks and --resume), model/ (the trained weights of the latest checkpoint,
    re-exported atomically at every save, at a stop and at the end; load with MUSER.from_pretrained or
    `muser eval --checkpoint RUN`) and result.json. SIGTERM saves a checkpoint and exits 0, Ctrl-C saves
    and exits 130; continue either with --resume.

    \b
    Examples:
      muser pretrain --shards shards/fma --shards shards/mtt --output runs/x --gpus 0 --steps 200
      muser pretrain --shards shards/fma --output runs/big --gpus 8 --preset base --batch-size 1024
      muser pretrain --output runs/x --resume
    """
    import json

    from rich.console import Console

    from muser.train import pretrain as run_pretrain
    from muser.train.display import summary_table

    data, model, train = _pretrain_configs(options, resume, no_duplicate_aware, preset_name, text_encoder)
    try:
        result = run_pretrain(data, model, train)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    except (RuntimeError, FileNotFoundError) as err:
        raise click.ClickException(str(err)) from err
    if result.get("steps") is not None:
        Console(stderr=True).print(summary_table(result))
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
@click.option(
    "--checkpoint",
    default="random",
    show_default=True,
    help="A model/ folder, a run folder (uses RUN/model), or `random` (random weights).",
)
@click.option(
    "--data",
    type=click.Path(path_type=str),
    default=None,
    help="Raw dataset root (sharded once into a cache) or a shard folder; default $MUSER_DATA/TASK.",
)
@click.option(
    "--protocol",
    default="all",
    show_default=True,
    help="probe | zeroshot | finetune | retrieval | all (or a comma-separated list).",
)
@click.option(
    "--fractions",
    default="1",
    show_default=True,
    callback=_fractions,
    help="Training fractions for few-shot curves, e.g. 0.01,0.05,0.1,0.5,1.",
)
@click.option("--seeds", default=3, show_default=True, type=click.IntRange(1), help="Probe seeds per fold.")
@click.option(
    "--folds",
    default=5,
    show_default=True,
    type=click.IntRange(2),
    help="Stratified K-fold when the data has no test split.",
)
@click.option(
    "--output",
    default="eval_out",
    show_default=True,
    type=click.Path(path_type=str),
    help="Folder for results.json, confusion.png and fewshot.png.",
)
@click.option(
    "--baseline",
    type=click.Choice(["mfcc"]),
    default=None,
    help="Add the MFCC mean/std + logistic regression baseline.",
)
@click.option("--preset", default="tiny", show_default=True, help="Architecture of --checkpoint random.")
@click.option("--label-task", default=None, help="Label vocabulary to score (shards task).")
@click.option(
    "--no-random-baseline", is_flag=True, help="Skip the random-weights baseline of a real checkpoint."
)
@click.option(
    "--chunk-seconds", default=3.0, show_default=True, type=float, help="Chunk length of track features."
)
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(1))
@click.option("--workers", default=0, show_default=True, type=click.IntRange(0), help="Reader workers.")
@click.option("--device", default="auto", show_default=True, help="auto | cpu | cuda")
@click.option(
    "--finetune-epochs", default=3, show_default=True, type=click.IntRange(1), help="PT+FT training epochs."
)
@click.option(
    "--finetune-lr",
    default=1e-4,
    show_default=True,
    type=click.FloatRange(0.0, min_open=True),
    help="PT+FT learning rate.",
)
@click.option(
    "--seed", default=0, show_default=True, type=int, help="Seed of folds, random weights and fine-tuning."
)
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
def eval_cmd(
    task: str,
    checkpoint: str,
    data: str | None,
    protocol: str,
    fractions: tuple[float, ...],
    seeds: int,
    folds: int,
    output: str,
    baseline: str | None,
    preset: str,
    label_task: str | None,
    no_random_baseline: bool,
    chunk_seconds: float,
    batch_size: int,
    workers: int,
    device: str,
    finetune_epochs: int,
    finetune_lr: float,
    seed: int,
    split_dir: str | None,
    cache_dir: str | None,
) -> None:
    """Evaluate a checkpoint on TASK (gtzan | mtt | fma | shards): probe, zero-shot, fine-tune, retrieval.

    Writes OUT/results.json, confusion.png and fewshot.png, with the random-weights baseline (and
    --baseline mfcc) beside every result. A raw dataset is sharded once into a cache beside OUT.

    \b
    Examples:
      muser eval gtzan --data data/gtzan --checkpoint runs/x --protocol all --baseline mfcc
      muser eval mtt --data data/mtt --checkpoint runs/x/model --protocol probe,zeroshot --seeds 1
      muser eval fma --data shards/fma --checkpoint runs/x --protocol probe --fractions 0.01,0.1,1
      muser eval shards --data shards/mine --label-task genre --checkpoint random --folds 5
    """
    from muser.config import EvalConfig
    from muser.eval import run_eval

    cfg = EvalConfig(
        task=task,
        checkpoint=checkpoint,
        data=data,
        protocol=protocol,
        fractions=fractions,
        seeds=seeds,
        folds=folds,
        output=output,
        baseline=baseline,
        preset=preset,
        label_task=label_task,
        random_baseline=not no_random_baseline,
        chunk_seconds=chunk_seconds,
        batch_size=batch_size,
        num_workers=workers,
        device=device,
        finetune_epochs=finetune_epochs,
        finetune_lr=finetune_lr,
        seed=seed,
        split_dir=split_dir,
        cache_dir=cache_dir,
    )
    try:
        result = run_eval(cfg)
    except (ValueError, RuntimeError) as err:
        raise click.ClickException(str(err)) from None
    click.echo(f"wrote {result['outputs']['results.json']}")


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


if __name__ == "__main__":
    main()
