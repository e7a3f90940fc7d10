"""`muser export`, `muser card`, `muser push`: click commands registered on the main group by
`register(main)`; each maps its options onto one function of muser.share."""

from __future__ import annotations

import click

from muser.commands.options import user_errors
from muser.config import EvalConfig


@click.command("export")
@click.argument("run")
@click.option(
    "--onnx", "onnx_dir", required=True, help="Output folder for audio.onnx, text.onnx, tokenizer, onnx.json."
)
@click.option("--opset", type=int, default=None, help="ONNX opset (default 17).")
@click.option(
    "--chunk-seconds",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help=f"Chunk length that onnx.json tells users to cut tracks into (default {EvalConfig.chunk_seconds:g}, "
    "the length `muser embed` and `muser eval` cut tracks into).",
)
@click.option("--no-check", is_flag=True, help="Skip the PyTorch-vs-onnxruntime parity check after export.")
@user_errors
def export_cmd(
    run: str, onnx_dir: str, opset: int | None, chunk_seconds: float | None, no_check: bool
) -> None:
    """Export RUN (a run folder, its model/ folder or a hub id) to ONNX for use without PyTorch.

    \b
    Examples:
      muser export runs/x --onnx runs/x/onnx
      muser export org/muser-tiny --onnx muser-onnx
    """
    from muser.models.muser import MUSER
    from muser.share.onnx import OPSET, PARITY_TOL, export_onnx, parity
    from muser.share.run import locate

    located = locate(run)
    model = MUSER.from_pretrained(located.model_dir)
    info = export_onnx(model, onnx_dir, chunk_seconds or EvalConfig.chunk_seconds, opset or OPSET)
    click.echo(
        f"wrote {onnx_dir}: audio.onnx ({info['sample_rate']} Hz, {info['chunk_seconds']:g}-s chunks), "
        f"text.onnx, tokenizer.json, onnx.json (opset {info['opset']}, dimension {info['embed_dim']})"
    )
    if no_check:
        return
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        click.echo("parity check skipped: onnxruntime is not installed (pip install 'muser[onnx]')")
        return
    rate = info["sample_rate"]
    worst = parity(
        model,
        onnx_dir,
        [(1, info["chunk_samples"]), (3, max(info["min_samples"], rate))],
        [["a calm piano piece"]],
    )
    click.echo(f"parity with PyTorch (max abs): audio {worst['audio']:.1e}, text {worst['text']:.1e}")
    if max(worst.values()) > PARITY_TOL:
        raise click.ClickException(
            f"the ONNX graphs in {onnx_dir} differ from PyTorch by more than {PARITY_TOL:g}; do not use them"
        )


def _card_options(f):
    f = click.option(
        "--eval", "eval_files", multiple=True, help="A `muser eval` results.json of this model."
    )(f)
    f = click.option("--license", default=None, help="License id for the card (left out when not given).")(f)
    return click.option("--dataset", "datasets", multiple=True, help="A hub dataset id it was trained on.")(f)


@click.command("card")
@click.argument("run")
@click.option(
    "-o", "--output", default=None, help="Where to write the card (default: README.md in the model folder)."
)
@_card_options
@user_errors
def card_cmd(
    run: str, output: str | None, eval_files: tuple[str, ...], license: str | None, datasets: tuple[str, ...]
) -> None:
    """Write the model card of RUN (README.md with the hub's front matter) without uploading.

    The card holds only what the run knows: config and parameter counts, training data from the shard
    manifests, steps, batch, loss, hardware, and `muser eval` results of this model (found under RUN, or
    given with --eval).
    """
    from muser.share.push import write_card

    path = write_card(run, output, eval_files=list(eval_files), license=license, datasets=list(datasets))
    click.echo(f"wrote {path}")


@click.command("push")
@click.argument("run")
@click.argument("repo_id")
@click.option("--private", is_flag=True, help="Create the repository as private.")
@click.option("--revision", default=None, help="Branch to commit to (created when missing; default main).")
@_card_options
@user_errors
def push_cmd(
    run: str,
    repo_id: str,
    private: bool,
    revision: str | None,
    eval_files: tuple[str, ...],
    license: str | None,
    datasets: tuple[str, ...],
) -> None:
    """Upload RUN's model folder and its generated card to the hub as REPO_ID (org/name), in one commit.

    \b
    Then anyone loads it by id: MUSER.from_pretrained("org/name"), --checkpoint org/name[@revision].
    Log in first with `hf auth login` (or set HF_TOKEN).
    """
    from muser.share.push import push

    url = push(
        run,
        repo_id,
        private=private,
        revision=revision,
        eval_files=list(eval_files),
        license=license,
        datasets=list(datasets),
    )
    click.echo(f"pushed {run} to {repo_id}: {url}")


def register(group: click.Group) -> None:
    """Add the sharing commands to the `muser` group."""
    for command in (export_cmd, card_cmd, push_cmd):
        group.add_command(command)
