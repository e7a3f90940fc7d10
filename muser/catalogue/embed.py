"""`muser embed`: shard folders (or raw folders, sharded once into a cache) -> a catalogue folder EMB with
catalogue.json, embeddings.parquet, index.faiss and parts/ (one committed Parquet part per shard).

`prepare` (muser.catalogue.plan) lists the shards still to embed; `run_jobs` embeds them, in this process
or in each torchrun worker (shards dealt out by rank), committing a shard's part as soon as all of its
tracks are pooled; `assemble` concatenates the parts into the Parquet file and the FAISS index. Track
features are the eval features (muser.features.tracks: the same chunks, the same length-weighted
pooling), L2-normalised.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from muser.atomic import atomic_write_text
from muser.catalogue import index as index_mod
from muser.catalogue import parts
from muser.catalogue.folder import CatalogueFolder
from muser.catalogue.plan import EmbedConfig, Job, Plan, plan_dict, plan_from_dict, prepare
from muser.distributed import choose_device
from muser.features import tracks as feat
from muser.features.text import encode_texts
from muser.progress import TrackProgress
from muser.shards.manifest import ShardFolder

TEXT_BATCH = 256  # captions per text-tower forward

# ---- run ---------------------------------------------------------------------------------------------


def _commit(plan: Plan, job: Job, pool: feat.ChunkPool, model: Any) -> tuple[int, list[str]]:
    """Pool the shard's tracks out, add captions and text vectors, write its part. Returns (rows, keys the
    reader could not decode)."""
    from muser.shards.text import render

    info, dim = plan.info, plan.info["dimension"]
    samples = {k: pool.weights[k] for k in job.keys if k in pool}
    ts = pool.take(job.keys)  # manifest order, whatever order the reader workers delivered in
    captions = [render(m) for m in ts.meta]
    rows: dict[str, list] = {name: [] for name in parts.schema(dim).names}
    for key, meta, caption in zip(ts.keys, ts.meta, captions, strict=True):
        for name, value in parts.metadata_columns(meta).items():
            rows[name].append(value)
        rows["key"].append(key)
        rows["caption"].append(caption)
        rows["duration"].append(round(samples[key] / info["sample_rate"], 3))
        rows["split"].append(job.split)
        rows["shard"].append(str(Path(job.source) / job.shard))
        rows["member"].append(f"{key}.{job.codec}")
    audio = parts.normalise_rows(ts.x) if ts.keys else np.zeros((0, dim), np.float32)
    table = parts.build_part(rows, audio, encode_texts(model, captions, TEXT_BATCH).numpy(), dim)
    unreadable = [k for k in job.keys if k not in set(ts.keys)]
    part_meta = {
        "shard_sha256": job.sha256,
        "settings": info["settings_fingerprint"],
        "unreadable": unreadable,
    }
    parts.write_part(Path(plan.config.output) / job.part, table, part_meta)
    return len(ts.keys), unreadable


def run_jobs(plan: Plan, jobs: list[Job], model: Any, device: torch.device, label: str = "embedding") -> dict:
    """Embed the shards of `jobs` with one eval-mode loader and commit each shard's part once all of its
    tracks are pooled (a track is whole when its pooled samples reach the manifest's num_samples; a shard
    with an unreadable track waits for the end of the pass). Returns counts for the summary."""
    cfg, rate = plan.config, plan.info["sample_rate"]
    if not jobs:
        return {"tracks": 0, "seconds": 0.0, "unreadable": 0}
    model = model.to(device).eval()
    chunk_fn = feat.model_chunk_fn(model, device, plan.info["tower"])
    owner = {key: j for j, job in enumerate(jobs) for key in job.keys}
    waiting = [set(job.keys) for job in jobs]
    committed: set[int] = set()
    pool = feat.ChunkPool()
    tracks, unreadable, seconds = 0, 0, 0.0
    shards = [ShardFolder.open(str(Path(job.source) / job.shard), sample_rate=rate) for job in jobs]
    # More workers than shards would read every shard once per worker (by-sample split) for no gain.
    workers = min(cfg.num_workers, len(jobs))
    loader = feat.eval_loader(shards, None, cfg.chunk_seconds, cfg.batch_size, workers, sample_rate=rate)
    with TrackProgress(cfg.progress, sum(len(j.keys) for j in jobs), label) as bar:
        for batch in loader:
            emb = feat.embed_chunks(chunk_fn, batch)
            for i, key in enumerate(batch["key"]):
                if key not in owner:
                    raise RuntimeError(
                        f"the reader returned {key!r}, which no manifest lists; re-shard its folder"
                    )
                j = owner[key]
                pool.add(key, jobs[j].split, batch["meta"][i], emb[i], float(batch["length"][i]))
            seconds += float(batch["length"].sum()) / rate
            for key in dict.fromkeys(batch["key"]):
                j = owner[key]
                expected = int(pool.meta_of[key].get("num_samples") or 0)
                if expected and pool.weights[key] >= expected and key in waiting[j]:
                    waiting[j].discard(key)
                    bar.advance(1, seconds)
                    if not waiting[j]:
                        n, bad = _commit(plan, jobs[j], pool, model)
                        committed.add(j)
                        tracks, unreadable = tracks + n, unreadable + len(bad)
        for j, job in enumerate(jobs):  # the rest: shards whose unreadable tracks never came
            if j not in committed:
                bar.advance(len(waiting[j]), seconds)
                n, bad = _commit(plan, job, pool, model)
                tracks, unreadable = tracks + n, unreadable + len(bad)
    return {"tracks": tracks, "seconds": seconds, "unreadable": unreadable}


# ---- assemble ----------------------------------------------------------------------------------------


def _new_index(plan: Plan, paths: list[Path]) -> Any:
    """The catalogue's empty index, chosen now that the row count is known (--index auto), and trained
    when it needs it (IVF) on a seeded uniform sample of the parts' vectors, read one part at a time."""
    import pyarrow.parquet as pq

    cfg, dim = plan.config, plan.info["dimension"]
    sizes = [pq.read_metadata(p).num_rows for p in paths]
    n = sum(sizes)
    budget = index_mod.parse_memory(cfg.index_memory)
    key = index_mod.factory_key(cfg.index, cfg.index_key, n, dim, budget)
    index = index_mod.new_index(key, dim)
    plan.info["index"]["key"] = key
    size = index_mod.train_size(index, n) if n else 0
    if size:
        rows = index_mod.sample_rows(n, size)
        sample, start = [], 0
        for path, count in zip(paths, sizes, strict=True):
            mine = rows[(rows >= start) & (rows < start + count)] - start
            if len(mine):
                table = pq.read_table(path, columns=["audio_embedding"])
                sample.append(parts.vectors_of(table, "audio_embedding")[mine])
            start += count
        index_mod.train(index, np.concatenate(sample))
    return index


def assemble(plan: Plan) -> dict[str, Any]:
    """Concatenate every part of every source into embeddings.parquet, build index.faiss from the same
    pass, and mark catalogue.json complete. Returns the final catalogue.json."""
    folder, info = CatalogueFolder(plan.config.output), plan.info
    root = folder.root
    dim = info["dimension"]
    paths, shards = [], 0
    for src in info["sources"]:
        for shard in src["shards"]:
            path = root / shard["part"]
            if parts.part_info(path) is None:
                raise RuntimeError(
                    f"the part of {shard['name']} from {src['path']} is missing ({path}); run `muser embed` "
                    "with that folder again to embed it, or --overwrite to rebuild the catalogue"
                )
            paths.append(path)
            shards += 1
    index = _new_index(plan, paths)
    seen: set[str] = set()
    totals = {"seconds": 0.0}

    def add(table: Any) -> None:
        keys = table.column("key").to_pylist()
        dup = seen.intersection(keys)
        if dup:
            raise RuntimeError(
                f"key {sorted(dup)[0]!r} is in two parts; rebuild the catalogue with --overwrite"
            )
        seen.update(keys)
        totals["seconds"] += float(sum(table.column("duration").to_pylist()))
        if table.num_rows:
            index.add(np.ascontiguousarray(parts.vectors_of(table, "audio_embedding")))

    rows = parts.write_embeddings(folder.embeddings, parts.read_parts(paths), dim, on_part=add)
    if rows == 0:
        raise RuntimeError(f"no track of {', '.join(s['path'] for s in info['sources'])} could be read")
    index_mod.write_index(index, folder.index)
    info["index"].update(index_mod.describe(index))
    unreadable = [
        {"key": k, "shard": shard["name"]}
        for src in info["sources"]
        for shard in src["shards"]
        for k in (parts.part_info(root / shard["part"]) or {}).get("unreadable", [])
    ]
    info["complete"] = True
    info["counts"] = {
        "tracks": rows,
        "shards": shards,
        "sources": len(info["sources"]),
        "unreadable": len(unreadable),
        "hours": round(totals["seconds"] / 3600, 4),
    }
    info["unreadable"] = unreadable
    folder.write_info(info)
    return info


# ---- entry point -------------------------------------------------------------------------------------


def embed(cfg: EmbedConfig) -> dict[str, Any]:
    """Build or extend the catalogue cfg.output from cfg.sources (resuming a killed run).

    Returns a summary: the final catalogue.json under "catalogue", plus this run's counts and rates.
    """
    from muser.catalogue.launch import launch
    from muser.distributed import in_torchrun

    started = time.perf_counter()
    plan, model = prepare(cfg)
    todo = [plan.jobs[i] for i in plan.pending]
    run_started = time.perf_counter()
    processes = max(cfg.gpus or 0, cfg.procs, 1)
    if processes > 1 and todo and not in_torchrun():
        spec = CatalogueFolder(cfg.output).launch
        atomic_write_text(spec, json.dumps(plan_dict(plan)) + "\n")
        launch(spec, processes)
        ran = {
            "tracks": sum(len(j.keys) for j in todo),
            "seconds": sum(j.seconds for j in todo),
            "unreadable": None,
        }
    else:
        # --gpus: None picks (auto), 0 is the CPU, N >= 1 is CUDA (N > 1 went to torchrun above).
        name = {None: "auto", 0: "cpu"}.get(cfg.gpus, "cuda:0")
        ran = run_jobs(plan, todo, model, choose_device(name, f"--gpus {cfg.gpus}", "--gpus 0"))
    run_s = time.perf_counter() - run_started
    info = assemble(plan)
    elapsed = time.perf_counter() - started
    return {
        "catalogue": info,
        "output": str(Path(cfg.output).resolve()),
        "embedded_shards": len(todo),
        "reused_shards": len(plan.jobs) - len(todo),
        "embedded_tracks": ran["tracks"],
        "elapsed_s": round(elapsed, 2),
        "embed_s": round(run_s, 2),  # reading, embedding and committing parts (no model load, no assembly)
        "tracks_per_s": round(ran["tracks"] / run_s, 2) if ran["tracks"] else None,
        "audio_hours_per_s": round(ran["seconds"] / 3600 / run_s, 5) if ran["tracks"] else None,
        "processes": processes,
    }


def run_worker(spec: dict[str, Any]) -> None:
    """One torchrun worker: this rank's share of the pending shards (dealt round-robin), then exit; the
    launching process assembles the catalogue once every worker is done."""
    from muser.distributed import dist_cleanup, dist_init
    from muser.models.load import load_model

    plan = plan_from_dict(spec)
    cfg = plan.config
    rank, _, world, device = dist_init("cuda" if (cfg.gpus or 0) > 0 else "cpu")
    try:
        model, fp, _ = load_model(cfg.checkpoint, cfg.preset, cfg.seed, device)
        if fp != plan.info["checkpoint"]["fingerprint"]:
            raise RuntimeError("the checkpoint changed while the run started; run `muser embed` again")
        mine = [plan.jobs[i] for i in plan.pending[rank::world]]
        cfg.progress = cfg.progress and rank == 0  # one bar: rank 0's share
        run_jobs(plan, mine, model, device, label=f"embedding (rank 0 of {world})")
    finally:
        dist_cleanup()
