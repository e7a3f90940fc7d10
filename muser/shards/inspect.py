"""What a shard folder holds (the library behind `muser inspect`): per split counts and hours, label
vocabularies, errors, one sample's metadata, and optional checksum verification."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from muser.shards import manifest as mf
from muser.shards.manifest import ShardFolder
from muser.shards.report import silent_note
from muser.shards.text import check_meta_size, load_meta


def inspect_shards(dst: str | Path, verify: bool = False, max_errors_shown: int = 5) -> dict[str, Any]:
    """A JSON-ready report of dst; `verify` re-hashes every shard (report["verify"] lists mismatches)."""
    folder = ShardFolder.open(dst)
    splits = mf.split_summary(folder.manifest)
    errors = [{k: str(rec.get(k, "")) for k in ("id", "path", "reason")} for rec in folder.errors()]
    silent = [str(key) for key in folder.manifest.get("silent", [])]  # sharded, peak below -60 dBFS
    return {
        "dst": str(dst),
        "complete": folder.complete,
        "sample_rate": folder.sample_rate,
        "codec": folder.codec,
        "sources": folder.manifest.get("sources", []),
        "splits": splits,
        "samples": folder.samples(),
        "hours": round((folder.seconds() or 0.0) / 3600, 4),
        "labels": folder.labels,
        "errors": {"count": folder.manifest.get("errors", 0), "first": errors[:max_errors_shown]},
        "silent": {"count": len(silent), "first": silent[:max_errors_shown]},
        "sample": _first_sample(folder),
        "verify": mf.verify(dst) if verify else None,
    }


def _first_sample(folder: ShardFolder) -> dict[str, Any] | None:
    """The metadata of the first readable sample of the first shard, read with plain tarfile."""
    for path in folder.urls():
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    if not member.name.endswith(".json"):
                        continue
                    try:
                        check_meta_size(member.size)  # from the header, before reading it
                        meta = load_meta(tar.extractfile(member).read())
                    except ValueError:
                        continue  # malformed or oversized metadata: show the next sample
                    return {"shard": Path(path).name, "key": member.name[: -len(".json")], "meta": meta}
        except (OSError, tarfile.TarError):
            continue  # a missing or damaged shard: --verify says which; show the next one's sample
    return None


def print_report(report: dict[str, Any], console: Any = None) -> None:
    """Render an inspect_shards report as rich tables."""
    from rich.table import Table

    from muser.console import make_console

    console = console or make_console()
    state = "complete" if report["complete"] else "INCOMPLETE (re-run `muser shard` to finish)"
    console.print(
        f"[bold]{report['dst']}[/]: {', '.join(report['sources'])}, {report['sample_rate']} Hz, "
        f"{report['codec']}, {state}"
    )
    t = Table(title="splits")
    for col in ("split", "shards", "samples", "hours"):
        t.add_column(col, justify="left" if col == "split" else "right")
    for name, s in report["splits"].items():
        t.add_row(name, str(s["shards"]), str(s["samples"]), f"{s['hours']:.3f}")
    t.add_row("total", "", str(report["samples"]), f"{report['hours']:.3f}")
    console.print(t)
    for task, vocab in report["labels"].items():
        lt = Table(title=f"labels: {task} ({vocab['type']}, {len(vocab['classes'])} classes)")
        lt.add_column("class")
        lt.add_column("samples", justify="right")
        for cls in vocab["classes"]:
            lt.add_row(cls, str(vocab["counts"].get(cls, 0)))
        console.print(lt)
    errors = report["errors"]
    console.print(f"errors: {errors['count']}")
    silent = report["silent"]
    if silent["count"]:
        console.print(f"silent tracks: {silent['count']} ({silent_note(silent['first'], silent['count'])})")
    for e in errors["first"]:
        console.print(f"  {e['id']}: {e['reason']}  [dim]{e['path']}[/]", markup=True, highlight=False)
    if report["sample"]:
        s = report["sample"]
        console.print(f"sample {s['key']} (from {s['shard']}):")
        console.print_json(json.dumps(s["meta"], ensure_ascii=False))
    if report["verify"] is not None:
        if report["verify"]:
            for p in report["verify"]:
                console.print(f"[red]mismatch[/] {p['name']}: {p['reason']}")
        else:
            n = sum(s["shards"] for s in report["splits"].values())
            console.print(f"[green]verified[/]: all {n} shards match their sha256 in the manifest")
