"""`muser shard` and `muser inspect`: options onto ShardConfig, then muser.shards."""

from __future__ import annotations

import click

from muser.commands.options import config_option, user_errors
from muser.config import CODECS, FMA_SUBSETS, SOURCES, ShardConfig


def _size(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    from muser.shards.report import parse_size

    try:
        return None if value is None else parse_size(value)
    except ValueError as err:
        raise click.BadParameter(str(err)) from err


@click.command()
@click.argument("src", type=click.Path(exists=True, file_okay=False))
@click.argument("dst", type=click.Path(file_okay=False))
@config_option(
    ShardConfig,
    "--source",
    click.Choice(["auto", *SOURCES]),
    "Dataset layout of SRC (auto detects it).",
)
@config_option(ShardConfig, "--sample-rate", int, "Resample every track to this (Hz).")
@config_option(
    ShardConfig,
    "--codec",
    click.Choice(CODECS),
    "flac: 16-bit, compact; pcm: raw int16, fastest reads.",
)
@config_option(ShardConfig, "--workers", int, "Decode processes.", shown="all cores")
@config_option(ShardConfig, "--max-count", int, "Samples per shard at most.")
@config_option(
    ShardConfig,
    "--max-size",
    str,
    "Bytes per shard at most (512MB, 1GB; powers of 1024).",
    shown=f"{ShardConfig.max_size // 1024**2}MB",
    callback=_size,
)
@config_option(
    ShardConfig, "--split-dir", click.Path(exists=True, file_okay=False), "GTZAN fault-filtered split lists."
)
@config_option(
    ShardConfig,
    "--metadata",
    click.Path(exists=True),
    "FMA fma_metadata/ folder, or a folder source's CSV/JSONL sidecar keyed by relative path "
    "(column `path`; `label_<task>` columns become label vocabularies).",
)
@config_option(ShardConfig, "--subset", click.Choice(FMA_SUBSETS), "FMA subset.")
@config_option(ShardConfig, "--max-errors", float, "Failed-track fraction above which the exit status is 2.")
@config_option(
    ShardConfig,
    "--valid-fraction",
    float,
    "For sources without splits (a folder): this fraction of tracks goes to split valid, chosen by a hash "
    "of each key, so re-sharding or adding tracks never moves one (0: all tracks stay in split `all`).",
)
@config_option(
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
@user_errors
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
    except OSError as err:  # reading SRC (writes into DST come back as RuntimeError)
        raise click.ClickException(f"cannot read {err.filename or src}: {err.strerror or err}") from None


@click.command("inspect")
@click.argument("dst", type=click.Path(exists=True, file_okay=False))
@click.option("--verify", is_flag=True, help="Re-hash every shard against the manifest (exit 1 on mismatch).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON instead of tables.")
@user_errors
def inspect_cmd(dst: str, verify: bool, as_json: bool) -> None:
    """Show what a shard folder holds: splits, hours, labels, errors, one sample's metadata.

    \b
    Example:
      muser inspect shards/fma --verify
    """
    import json

    from muser.shards.inspect import inspect_shards, print_report

    report = inspect_shards(dst, verify=verify)
    if as_json:
        click.echo(json.dumps(report, indent=1, ensure_ascii=False))
    else:
        print_report(report)
    if report["verify"]:
        raise SystemExit(1)
