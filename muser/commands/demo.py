"""`muser demo`: the whole loop on the built-in corpus (muser.demo)."""

from __future__ import annotations

import click

from muser.commands.options import user_errors
from muser.config import DEMO_OUT


@click.command()
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False),
    default=DEMO_OUT,
    show_default=True,
    help="Folder for the corpus, shards, run and report (reused by a second run).",
)
@click.option("--quick", is_flag=True, help="A ~1-minute version: fewer tracks, fewer steps, one seed.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the corpus and the run.")
@user_errors
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
