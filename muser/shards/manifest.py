"""manifest.json of a shard folder: building it, atomic rewrites, reading it back, label vocabularies
and checksum verification.

The manifest is the commit point of the writer: a shard counts as written only once a manifest that
lists it has replaced the previous one, so it also records the keys each shard holds (for resuming).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from muser import __version__

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
ERRORS = "errors.jsonl"
SPLIT_ORDER = ("train", "valid", "test", "all")
SHARD_RE = re.compile(r"^(?P<split>[A-Za-z0-9_]+)-(?P<index>\d{6})\.tar$")
KEY_RE = re.compile(r"^[A-Za-z0-9_-]+$")


def shard_name(split: str, index: int) -> str:
    return f"{split}-{index:06d}.tar"


def new_manifest(sample_rate: int, codec: str, sources: list[str], options: dict[str, Any]) -> dict[str, Any]:
    """An empty, incomplete manifest for a run with these options."""
    return {
        "format_version": FORMAT_VERSION,
        "muser_version": __version__,
        "sample_rate": sample_rate,
        "codec": codec,
        "sources": sorted(sources),
        "complete": False,
        "splits": {},
        "labels": {},
        "errors": 0,
        "error_ids": [],
        "options": options,
    }


def add_shard(manifest: dict[str, Any], split: str, entry: dict[str, Any]) -> None:
    """Append a committed shard entry {name, samples, seconds, sha256, bytes, keys} and update totals."""
    splits = manifest["splits"]
    if split not in splits:
        splits[split] = {"shards": [], "samples": 0, "seconds": 0.0}
        # Keep splits in the canonical order so the JSON reads train, valid, test, all.
        rank = {s: i for i, s in enumerate(SPLIT_ORDER)}
        manifest["splits"] = dict(sorted(splits.items(), key=lambda kv: (rank.get(kv[0], 99), kv[0])))
        splits = manifest["splits"]
    s = splits[split]
    s["shards"].append(entry)
    s["samples"] += entry["samples"]
    s["seconds"] = round(s["seconds"] + entry["seconds"], 3)


def label_vocab(counts: dict[str, Counter], types: dict[str, str]) -> dict[str, Any]:
    """Per-task vocabularies {task: {type, classes (sorted), counts}} from per-task label counters."""
    return {
        task: {
            "type": types.get(task, "single"),
            "classes": sorted(counter),
            "counts": {c: counter[c] for c in sorted(counter)},
        }
        for task, counter in sorted(counts.items())
    }


def committed_keys(manifest: dict[str, Any]) -> set[str]:
    """Every key held by a shard the manifest lists."""
    return {k for s in manifest["splits"].values() for shard in s["shards"] for k in shard.get("keys", [])}


def write_manifest(dst: str | Path, manifest: dict[str, Any]) -> None:
    """Replace dst/manifest.json atomically: a reader (or a killed run) sees the old file or the new one."""
    atomic_write_text(Path(dst) / MANIFEST, json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    """Make a rename durable: the directory entry must reach the disk, not only the file's data."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(dst: str | Path) -> dict[str, Any]:
    """Load dst/manifest.json; a clear ValueError when dst is not a shard folder this version reads."""
    dst = Path(dst)
    if not dst.is_dir():
        raise ValueError(f"{dst} is not a folder; expected a shard folder written by `muser shard`")
    path = dst / MANIFEST
    if not path.is_file():
        raise ValueError(
            f"{dst} is not a shard folder: {MANIFEST} is missing (write one with `muser shard SRC {dst}`)"
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-run `muser shard` with --overwrite") from err
    if not isinstance(manifest, dict) or "splits" not in manifest or "format_version" not in manifest:
        raise ValueError(f"{path} is not a MUSER shard manifest (no format_version/splits)")
    if manifest["format_version"] > FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {manifest['format_version']}; this muser reads up to "
            f"{FORMAT_VERSION} (upgrade muser)"
        )
    return manifest


def shard_paths(dst: str | Path, split: str | None = None) -> list[Path]:
    """The shard files a manifest lists, in order (all splits, or one)."""
    dst = Path(dst)
    manifest = read_manifest(dst)
    names = [split] if split is not None else list(manifest["splits"])
    if split is not None and split not in manifest["splits"]:
        raise ValueError(f"{dst} has no split {split!r}; it has: {', '.join(manifest['splits']) or 'none'}")
    return [dst / sh["name"] for name in names for sh in manifest["splits"][name]["shards"]]


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def verify(dst: str | Path) -> list[dict[str, str]]:
    """Re-hash every listed shard; returns mismatches [{name, reason}] (empty when all is well).

    Also reports shard-named files that the manifest does not list (left by another run or copied in).
    """
    dst = Path(dst)
    manifest = read_manifest(dst)
    problems: list[dict[str, str]] = []
    listed = set()
    for split in manifest["splits"].values():
        for sh in split["shards"]:
            listed.add(sh["name"])
            path = dst / sh["name"]
            if not path.is_file():
                problems.append({"name": sh["name"], "reason": "missing"})
                continue
            size = path.stat().st_size
            if "bytes" in sh and size != sh["bytes"]:
                problems.append(
                    {"name": sh["name"], "reason": f"size {size} bytes, manifest says {sh['bytes']}"}
                )
                continue
            digest = sha256_file(path)
            if digest != sh["sha256"]:
                problems.append(
                    {
                        "name": sh["name"],
                        "reason": f"sha256 {digest[:12]}..., manifest says {sh['sha256'][:12]}...",
                    }
                )
    for path in sorted(dst.iterdir()):
        if SHARD_RE.match(path.name) and path.name not in listed:
            problems.append({"name": path.name, "reason": "not listed in the manifest"})
    return problems


def split_summary(manifest: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per split: shard count, samples, seconds and hours (what `inspect` and the writer's summary show)."""
    return {
        name: {
            "shards": len(s["shards"]),
            "samples": s["samples"],
            "seconds": s["seconds"],
            "hours": round(s["seconds"] / 3600, 4),
        }
        for name, s in manifest["splits"].items()
    }
