"""What a shard folder holds (the library behind `muser inspect`): per split counts and hours, label
vocabularies, errors, one sample's metadata, and optional checksum verification."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

from muser.shards import manifest as mf


def inspect_shards(dst: str | Path, verify: bool = False, max_errors_shown: int = 5) -> dict[str, Any]:
    """A JSON-ready report of dst; `verify` re-hashes every shard (report["verify"] lists mismatches)."""
    dst = Path(dst)
    m = mf.read_manifest(dst)
    splits = mf.split_summary(m)
    return {
        "dst": str(dst),
        "complete": m.get("complete", False),
        "sample_rate": m["sample_rate"],
        "codec": m["codec"],
        "sources": m.get("sources", []),
        "splits": splits,
        "samples": sum(s["samples"] for s in splits.values()),
        "hours": round(sum(s["seconds"] for s in splits.values()) / 3600, 4),
        "labels": m.get("labels", {}),
        "errors": {"count": m.get("errors", 0), "first": _first_errors(dst, max_errors_shown)},
        "sample": _first_sample(dst, m),
        "verify": mf.verify(dst) if verify else None,
    }


def _first_errors(dst: Path, n: int) -> list[dict[str, str]]:
    path = dst / mf.ERRORS
    if not path.is_file():
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(out) == n:
                break
            if line.strip():
                rec = json.loads(line)
                out.append({k: rec.get(k, "") for k in ("id", "path", "reason")})
    return out


def _first_sample(dst: Path, m: dict[str, Any]) -> dict[str, Any] | None:
    """The metadata of the first sample of the first shard, read with plain tarfile."""
    for split in m["splits"].values():
        for shard in split["shards"]:
            path = dst / shard["name"]
            if not path.is_file():
                continue
            with tarfile.open(path) as tar:
                for member in tar:
                    if member.name.endswith(".json"):
                        meta = json.loads(tar.extractfile(member).read())
                        return {"shard": shard["name"], "key": member.name[: -len(".json")], "meta": meta}
    return None


def print_report(report: dict[str, Any], console: Any = None) -> None:
    """Render an inspect_shards report as rich tables."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
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
