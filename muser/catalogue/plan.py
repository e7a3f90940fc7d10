"""What `muser embed` will do, decided before any audio is read: the options checked against the catalogue
already in EMB (another checkpoint or other settings are refused), the sources resolved (raw folders
sharded once into a cache), keys checked unique, and the shards without a valid part listed (the plan).

catalogue.json (CatalogueFolder) is written here first (complete: false), so a killed run is recognised
and resumed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from muser import __version__
from muser.catalogue import index as index_mod
from muser.catalogue import parts
from muser.catalogue.folder import FORMAT_VERSION, CatalogueFolder
from muser.config import INDEX_KINDS, TOWERS, EmbedConfig, to_dict
from muser.shards.cache import cache_root, check_sample_rate, shard_once
from muser.shards.manifest import ShardFolder, is_shard_folder


@dataclass
class Job:
    """One shard to embed into one part file."""

    source: str  # the shard folder (absolute)
    shard: str  # shard file name inside it
    split: str
    sha256: str
    codec: str  # flac | pcm: the audio member is {key}.{codec}
    keys: list[str]  # the keys the manifest lists for the shard, in order
    seconds: float
    part: str  # the part file, relative to EMB


@dataclass
class Plan:
    config: EmbedConfig
    info: dict[str, Any]  # catalogue.json as it will be written (complete: false until assembled)
    jobs: list[Job]  # the shards of this run's sources
    pending: list[int]  # indices into jobs of the shards that have no valid part yet


# ---- prepare -----------------------------------------------------------------------------------------


def _check(cfg: EmbedConfig) -> None:
    if not cfg.sources:
        raise ValueError("no SRC given; pass one or more shard folders or folders of audio")
    if cfg.tower is not None and cfg.tower not in TOWERS:
        raise ValueError(f"--tower {cfg.tower!r} is not one of {', '.join(TOWERS)}")
    if cfg.index not in INDEX_KINDS:
        raise ValueError(f"--index {cfg.index!r} is not one of {', '.join(INDEX_KINDS)}")
    index_mod.parse_memory(cfg.index_memory)  # a size that does not parse is refused before any work
    if not cfg.chunk_seconds > 0 or cfg.batch_size < 1 or cfg.num_workers < 0:
        raise ValueError("--chunk-seconds must be > 0, --batch-size >= 1 and --workers >= 0")
    if (cfg.gpus or 0) < 0 or cfg.procs < 0 or ((cfg.gpus or 0) > 1 and cfg.procs > 1):
        raise ValueError(
            "--gpus and --procs must be >= 0, and only one of them may ask for several processes"
        )


def _resolve(cfg: EmbedConfig, root: Path, sample_rate: int) -> list[ShardFolder]:
    """Each SRC as a shard folder: a folder written by `muser shard`, or any folder of audio sharded once
    into the cache (reused by later runs and by `muser eval`)."""
    cache = cache_root(cfg.cache_dir, root)
    folders, seen = [], set()
    for src in cfg.sources:
        path = Path(src)
        if not path.is_dir():
            raise ValueError(f"SRC {src} is not a folder; pass shard folders or folders of audio")
        if is_shard_folder(path):
            folder = ShardFolder.open(path)
        else:
            # The sharding summary goes to stderr with the bars: stdout carries embed's own result.
            with contextlib.redirect_stdout(sys.stderr):
                folder = shard_once(path, cache, sample_rate, name="embed", progress=cfg.progress)
        assert folder.root is not None
        if folder.root.resolve() in seen:
            continue  # the same folder twice adds nothing
        seen.add(folder.root.resolve())
        check_sample_rate(folder.name, folder.sample_rate, sample_rate)
        if folder.keys() is None:
            raise ValueError(
                f"{folder.name}'s manifest lists no keys per shard; re-shard it with `muser shard`"
            )
        folders.append(folder)
    return folders


def _source_id(root: Path) -> str:
    """A stable, readable folder name for a source's parts: its name plus a hash of its absolute path."""
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:10]
    return f"{root.resolve().name}-{digest}"


def _jobs(folder: ShardFolder) -> list[Job]:
    assert folder.root is not None
    root, sid = folder.root.resolve(), _source_id(folder.root)
    return [
        Job(
            source=str(root),
            shard=sh["name"],
            split=split,
            sha256=sh["sha256"],
            codec=folder.codec or "flac",
            keys=list(sh["keys"]),
            seconds=float(sh.get("seconds", 0.0)),
            part=CatalogueFolder(".").part(sid, sh["name"]),
        )
        for split in folder.splits
        for sh in folder.shards(split)
    ]


def _settings(model: Any, fp: str, desc: str, cfg: EmbedConfig) -> dict[str, Any]:
    tower = cfg.tower or model.config.audio_embedding
    vectors = {
        "checkpoint": fp,
        "tower": tower,
        "chunk_seconds": cfg.chunk_seconds,
        "rate": model.config.sample_rate,
    }
    return {
        "checkpoint": {
            "spec": cfg.checkpoint,
            "path": desc,
            "fingerprint": fp,
            "preset": cfg.preset,
            "seed": cfg.seed,
        },
        "model": to_dict(model.config),
        "tower": tower,
        "chunk_seconds": cfg.chunk_seconds,
        "sample_rate": model.config.sample_rate,
        "dimension": model.config.embed_dim,
        # What the vectors depend on: a part computed under other settings is never reused.
        "settings_fingerprint": hashlib.sha256(json.dumps(vectors, sort_keys=True).encode()).hexdigest(),
    }


def _refuse_other_settings(existing: dict[str, Any], settings: dict[str, Any], root: Path) -> None:
    old, new = existing["checkpoint"]["fingerprint"], settings["checkpoint"]["fingerprint"]
    if old != new:
        raise ValueError(
            f"{root} was embedded with another checkpoint (fingerprint {old[:12]}, this one {new[:12]}); "
            "its vectors would not be comparable: pass --overwrite to rebuild it, or another --output"
        )
    for name in ("tower", "chunk_seconds", "sample_rate"):
        if existing.get(name) != settings[name]:
            raise ValueError(
                f"{root} was embedded with {name}={existing.get(name)!r}, this run asks for "
                f"{settings[name]!r}: pass --overwrite to rebuild it, or another --output"
            )


def _check_unique(sources: list[dict[str, Any]], keys_of: dict[str, list[str]]) -> None:
    """Keys must be unique over the whole catalogue (they name tracks in search results and URLs)."""
    owner: dict[str, str] = {}
    for src in sources:
        for key in keys_of[src["path"]]:
            if key in owner and owner[key] != src["path"]:
                raise ValueError(
                    f"key {key!r} is in both {owner[key]} and {src['path']}; keys must be unique in a "
                    "catalogue: embed the two folders into separate catalogues, or re-shard one of them"
                )
            owner[key] = src["path"]


def prepare(cfg: EmbedConfig) -> tuple[Plan, Any]:
    """Validate cfg against EMB, resolve the sources and list the shards still to embed.

    Returns (plan, model on the CPU). Writes EMB/catalogue.json (complete: false) before any part, so a
    killed run is recognised, and refused with one sentence when the checkpoint or settings changed.
    """
    from muser.models.load import load_model

    _check(cfg)
    emb = CatalogueFolder(cfg.output)
    existing = emb.open_for_writing(cfg.overwrite)
    root = emb.root
    model, fp, desc = load_model(cfg.checkpoint, cfg.preset, cfg.seed, torch.device("cpu"))
    settings = _settings(model, fp, desc, cfg)
    if cfg.index_key:  # a factory string FAISS cannot build is refused before any audio is read
        index_mod.new_index(cfg.index_key, settings["dimension"])
    if existing is not None:
        _refuse_other_settings(existing, settings, root)
    folders = _resolve(cfg, root, model.config.sample_rate)

    # Sources accumulate: a catalogue built from A and then given B holds A and B (in that order).
    sources = list(existing["sources"]) if existing else []
    jobs: list[Job] = []
    keys_of: dict[str, list[str]] = {}
    for folder in folders:
        assert folder.root is not None
        path = str(folder.root.resolve())
        folder_jobs = _jobs(folder)
        record = {
            "path": path,
            "fingerprint": folder.fingerprint(),
            "codec": folder.codec,
            "shards": [
                {"name": j.shard, "split": j.split, "sha256": j.sha256, "part": j.part} for j in folder_jobs
            ],
        }
        at = next((i for i, s in enumerate(sources) if s["path"] == path), None)
        if at is None:
            sources.append(record)
        else:
            sources[at] = record  # re-read: a re-sharded folder replaces its old shards
        jobs += folder_jobs
        keys_of[path] = [k for j in folder_jobs for k in j.keys]
    for src in sources:
        if src["path"] not in keys_of:  # a source of an earlier run, not given again: its parts hold its keys
            keys_of[src["path"]] = _part_keys(root, src)
    _check_unique(sources, keys_of)

    fingerprint = settings["settings_fingerprint"]
    pending = [i for i, job in enumerate(jobs) if not _valid_part(root / job.part, job.sha256, fingerprint)]
    info = {
        "format_version": FORMAT_VERSION,
        "muser_version": __version__,
        "complete": False,
        **settings,
        # The index is chosen at assembly (auto needs the row count): see embed.assemble.
        "index": {
            "requested": cfg.index_key or cfg.index,
            "memory_budget": cfg.index_memory,
            "metric": "inner_product",
            "file": CatalogueFolder.INDEX,
        },
        "files": {"embeddings": CatalogueFolder.EMBEDDINGS, "index": CatalogueFolder.INDEX},
        "sources": sources,
    }
    emb.write_info(info)
    return Plan(cfg, info, jobs, pending), model


def _valid_part(path: Path, sha256: str, fingerprint: str) -> bool:
    info = parts.part_info(path)
    return info is not None and info.get("shard_sha256") == sha256 and info.get("settings") == fingerprint


def _part_keys(root: Path, source: dict[str, Any]) -> list[str]:
    import pyarrow.parquet as pq

    out: list[str] = []
    for shard in source["shards"]:
        path = root / shard["part"]
        if path.is_file():
            out += pq.read_table(path, columns=["key"]).column("key").to_pylist()
    return out


def plan_dict(plan: Plan) -> dict[str, Any]:
    """The plan as JSON (the spec torchrun workers rebuild it from)."""
    return {
        "config": asdict(plan.config),
        "info": plan.info,
        "jobs": [asdict(j) for j in plan.jobs],
        "pending": plan.pending,
    }


def plan_from_dict(raw: dict[str, Any]) -> Plan:
    return Plan(EmbedConfig(**raw["config"]), raw["info"], [Job(**j) for j in raw["jobs"]], raw["pending"])
