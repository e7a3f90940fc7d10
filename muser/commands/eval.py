"""`muser eval`: every option is an EvalConfig field; muser.eval runs the protocols."""

from __future__ import annotations

from typing import Any

import click

from muser.commands.options import config_option, user_errors
from muser.config import EVAL_TASKS, PRESETS, PROBE_FEATURES, EvalConfig


def _fractions(ctx: click.Context, param: click.Parameter, value: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers in (0, 1], got {value!r}") from None
    if not out or any(not 0.0 < f <= 1.0 for f in out):
        raise click.BadParameter(f"expected comma-separated numbers in (0, 1], got {value!r}")
    return out


@click.command("eval")
@click.argument("task", type=click.Choice(EVAL_TASKS))
@config_option(
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
@config_option(
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
@config_option(
    EvalConfig,
    "--probe-features",
    click.Choice(PROBE_FEATURES),
    "What the probes read: towers (both audio towers before their projection heads) or embedding (the "
    "shared text-audio space that zero-shot, retrieval and search use).",
)
@config_option(EvalConfig, "--seeds", click.IntRange(1), "Probe seeds per fold.")
@config_option(EvalConfig, "--folds", click.IntRange(2), "Stratified K-fold when the data has no test split.")
@config_option(
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
@config_option(EvalConfig, "--preset", click.Choice(list(PRESETS)), "Architecture of --checkpoint random.")
@click.option("--label-task", default=None, help="Label vocabulary to score (shards task).")
@click.option(
    "--no-random-baseline", is_flag=True, help="Skip the random-weights baseline of a real checkpoint."
)
@config_option(EvalConfig, "--chunk-seconds", float, "Chunk length of track features.")
@config_option(EvalConfig, "--batch-size", click.IntRange(1), "Chunks per batch.")
@config_option(EvalConfig, "--workers", click.IntRange(0), "Reader workers.", name="num_workers")
@config_option(EvalConfig, "--device", str, "auto | cpu | cuda")
@config_option(EvalConfig, "--finetune-epochs", click.IntRange(1), "PT+FT training epochs.")
@config_option(EvalConfig, "--finetune-lr", click.FloatRange(0.0, min_open=True), "PT+FT learning rate.")
@config_option(EvalConfig, "--seed", int, "Seed of folds, random weights and fine-tuning.")
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
@user_errors
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
    from muser.eval.runner import run_eval

    # Every option's name is its EvalConfig field, so the options map onto the config one to one.
    cfg = EvalConfig(task=task, random_baseline=not no_random_baseline, **options)
    result = run_eval(cfg)
    click.echo(f"wrote {result['outputs']['results.json']}")
