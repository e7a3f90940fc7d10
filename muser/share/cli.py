"""`muser export`, `muser card`, `muser push`: click commands registered on the main group by
`register(main)`; each maps its options onto one function of muser.share."""

from __future__ import annotations

import click


@click.command("export")
@click.argument("run")
@click.option(
    "--onnx", "onnx_dir", required=True, help="Output folder for audio.onnx, text.onnx, tokenizer, onnx.json."
)
@click.option("--opset", type=int, default=None, help="ONNX opset (default 17).")
@click.option("--no-check", is_flag=True, help="Skip the PyTorch-vs-onnxruntime parity check after export.")
def export_cmd(run: str, onnx_dir: str, opset: int | None, no_check: bool) -> None:
    """Export RUN (a run folder, its model/ folder or a hub id) to ONNX for use without PyTorch.

    \b
    Examples:
      muser export runs/x --onnx runs/x/onnx
      muser export org/muser-tiny --onnx muser-onnx
    """
    from muser.models.muser import MUSER
    from muser.share.onnx import OPSET, export_onnx, parity
    from muser.share.run import chunk_seconds, locate

    try:
        located = locate(run)
        model = MUSER.from_pretrained(located.model_dir)
        seconds, _ = chunk_seconds(located)
        info = export_onnx(model, onnx_dir, seconds, opset or OPSET)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
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


def register(group: click.Group) -> None:
    """Add the sharing commands to the `muser` group."""
    for command in (export_cmd,):
        group.add_command(command)
