"""manifest.json of a shard folder: building it, atomic rewrites, label vocabularies, checksum verification,
and `ShardFolder`, the one reader of it that every other module asks (splits, counts, URLs, labels, rate).

The manifest is the commit point of the writer: a shard counts as written only once a manifest that
lists it has replaced the previous one, so it also records the keys each shard holds (for resuming).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import braceexpand

from muser import __version__
from muser.atomic import atomic_write_text
from muser.config import SAMPLE_RATE
from muser.shards.errorlog import read_errors

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
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


def is_shard_folder(path: str | Path) -> bool:
    """Whether `path` holds a manifest (readable or not: ShardFolder.open says what is wrong with it)."""
    path = Path(path)
    return path.is_dir() and (path / MANIFEST).is_file()


def read_manifest(dst: str | Path) -> dict[str, Any]:
    """The validated manifest dict of the shard folder dst (what the writer resumes from)."""
    return ShardFolder.open(dst).manifest


def _load(path: Path) -> dict[str, Any]:
    """Parse and version-check one manifest file: the single place a manifest is ever read."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({err}); re-run `muser shard` with --overwrite") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("splits"), dict):
        raise ValueError(f"{path} is not a MUSER shard manifest (no format_version/splits)")
    version = manifest.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= FORMAT_VERSION:
        raise ValueError(
            f"{path} has format_version {version!r}; this muser reads up to {FORMAT_VERSION} "
            "(upgrade muser, or re-shard the folder with this version)"
        )
    for split, body in manifest["splits"].items():
        shards = body.get("shards") if isinstance(body, dict) else None
        if not isinstance(shards, list):
            raise ValueError(
                f"{path}: split {split!r} has no shard list; re-run `muser shard` with --overwrite"
            )
        for shard in shards:
            # Names are file names inside the folder: "../x.tar" or "/etc/x.tar" would reach outside it.
            name = shard.get("name") if isinstance(shard, dict) else None
            if not isinstance(name, str) or not SHARD_RE.match(name):
                raise ValueError(
                    f"{path} lists a shard named {name!r}; shard names must look like "
                    "'{split}-NNNNNN.tar' inside the folder (refusing a manifest that points elsewhere)"
                )
    return manifest


def _is_stream(item: str) -> bool:
    """A source read as plain tar streams without a manifest: a URL, a brace pattern or one .tar file."""
    return "://" in item or "{" in item or item.endswith(".tar")


@dataclass(frozen=True)
class ShardFolder:
    """One shard source as every other module sees it; built by `ShardFolder.open` only.

    kind: "folder" (a folder written by `muser shard`), "manifest" (the path of its manifest.json) or
    "urls" (shard URLs, a brace pattern or .tar paths: no manifest, so no counts, splits or labels).
    """

    source: str  # as the user gave it
    kind: str
    root: Path | None  # the shard folder (None for urls)
    manifest: dict[str, Any] = field(repr=False, default_factory=dict)  # {} for urls
    stream_urls: tuple[str, ...] = ()  # urls: the expanded shard URLs
    default_rate: int = SAMPLE_RATE  # urls: the sample rate assumed (a manifest records its own)

    @classmethod
    def open(cls, source: str | os.PathLike, sample_rate: int | None = None) -> ShardFolder:
        """Resolve `source` (folder, its manifest.json, or URLs/brace pattern) and read its manifest once.

        sample_rate: only for URL sources, which record none (default SAMPLE_RATE). Every problem is one
        ValueError naming the source: missing path, empty folder, no manifest, bad JSON, unknown
        format_version, shard names outside the folder, URL paths that do not exist.
        """
        item = os.fspath(source)
        path = Path(item)
        if path.is_dir() or (path.name == MANIFEST and path.is_file()):
            root = path if path.is_dir() else path.parent
            if not (root / MANIFEST).is_file():
                why = "the folder is empty" if not any(root.iterdir()) else f"no {MANIFEST} among its files"
                raise ValueError(
                    f"{root} is not a shard folder: {MANIFEST} is missing ({why}); write one with "
                    f"`muser shard SRC {root}`"
                )
            kind = "folder" if path.is_dir() else "manifest"
            return cls(item, kind, root, _load(root / MANIFEST))
        if not _is_stream(item):
            raise ValueError(
                f"{item} is not a folder (no such folder); pass a shard folder written by `muser shard`, "
                "or shard URLs"
            )
        urls = tuple(braceexpand.braceexpand(item))
        for url in urls:
            if "://" not in url and not Path(url).is_file():
                raise ValueError(f"shard {url} does not exist; pass a shard folder or existing .tar paths.")
        return cls(item, "urls", None, {}, urls, int(sample_rate or SAMPLE_RATE))

    # ---- what the manifest says ------------------------------------------------------------------------

    @property
    def has_manifest(self) -> bool:
        return self.kind != "urls"

    @property
    def name(self) -> str:
        """How messages name this source: the folder, or the URL pattern."""
        return str(self.root) if self.root is not None else self.source

    @property
    def sample_rate(self) -> int:
        return (
            int(self.manifest.get("sample_rate", self.default_rate))
            if self.has_manifest
            else self.default_rate
        )

    @property
    def codec(self) -> str | None:
        return self.manifest.get("codec") if self.has_manifest else None

    @property
    def complete(self) -> bool:
        """False while `muser shard` has not finished (the shards so far are readable)."""
        return bool(self.manifest.get("complete", True)) if self.has_manifest else True

    @property
    def labels(self) -> dict[str, dict[str, Any]]:
        """Label vocabularies {task: {type, classes, counts}} ({} without a manifest)."""
        return dict(self.manifest.get("labels") or {})

    @property
    def splits(self) -> list[str]:
        """The splits that hold samples, in the manifest's order (train, valid, test, all)."""
        return [s for s, body in self.manifest.get("splits", {}).items() if body.get("samples")]

    def has(self, split: str) -> bool:
        """Whether `split` has samples here (URL sources have no splits: every split reads all of them)."""
        return not self.has_manifest or split in self.splits

    def samples(self, split: str | None = None) -> int | None:
        """Samples in `split` (all splits when None); None without a manifest (unknown)."""
        if not self.has_manifest:
            return None
        return sum(int(b.get("samples", 0)) for s, b in self._bodies(split))

    def seconds(self, split: str | None = None) -> float | None:
        if not self.has_manifest:
            return None
        return float(sum(float(b.get("seconds", 0.0)) for s, b in self._bodies(split)))

    def shards(self, split: str | None = None) -> list[dict[str, Any]]:
        """The manifest entries {name, samples, seconds, sha256, ...} of `split` (all when None)."""
        return [sh for _, body in self._bodies(split) for sh in body["shards"]]

    def keys(self, split: str | None = None) -> list[str] | None:
        """The sample keys the manifest records for `split` (all when None); None when it records none
        (URL sources, folders written by other tools)."""
        entries = self.shards(split)
        if not entries or any("keys" not in sh for sh in entries):
            return None
        return [k for sh in entries for k in sh["keys"]]

    def urls(self, split: str | None = None) -> list[str]:
        """Shard paths (folders) or URLs to read for `split` (all splits when None); an error naming the
        splits that exist when a folder has no shards for `split`."""
        if not self.has_manifest:
            return list(self.stream_urls)
        entries = self.shards(split)
        if split is not None and not entries:
            have = ", ".join(self.splits) or "none"
            raise ValueError(f"{self.name} has no shards for split {split!r}; its splits are: {have}.")
        assert self.root is not None
        return [str(self.root / sh["name"]) for sh in entries]

    def choose_split(self, split: str | None) -> str:
        """The split to train on: `split` when given (it must hold samples), else train, else all.

        A folder sharded without held-out splits (a user's own music) holds only `all`; training on it
        needs no option.
        """
        if split is not None:
            if not self.has(split):
                have = ", ".join(self.splits) or "none"
                raise ValueError(f"{self.name} has no {split!r} samples (splits with samples: {have})")
            return split
        for candidate in ("train", "all"):
            if self.has(candidate):
                return candidate
        have = ", ".join(self.splits) or "none"
        raise ValueError(
            f"{self.name} has neither a 'train' nor an 'all' split (splits with samples: {have}); "
            "choose one with --split"
        )

    def fingerprint(self) -> str:
        """sha256 of the manifest's bytes: changes whenever a shard is added or rewritten."""
        if not self.has_manifest:
            return hashlib.sha256("\n".join(self.stream_urls).encode()).hexdigest()
        assert self.root is not None
        return sha256_file(self.root / MANIFEST)

    def errors(self) -> list[dict[str, Any]]:
        """The records of errors.jsonl (tracks `muser shard` could not read); [] when there are none.

        A torn or garbled line (a disk that filled mid-append) is skipped, never fatal.
        """
        return [] if self.root is None else read_errors(self.root)

    def _bodies(self, split: str | None) -> list[tuple[str, dict[str, Any]]]:
        splits = self.manifest.get("splits", {})
        if split is None:
            return list(splits.items())
        return [(split, splits[split])] if split in splits else []


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
