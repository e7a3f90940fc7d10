"""`muser embed`: shard folders (or raw folders, sharded once into a cache) -> a catalogue folder EMB with
catalogue.json, embeddings.parquet, index.faiss and parts/ (one committed Parquet part per shard).

`prepare` (muser.catalogue.plan) lists the shards still to embed; `run_jobs` embeds them, in this process,
in each torchrun worker (shards dealt out by rank) or in Ray tasks (`embed_unit`, one per shard),
committing a shard's part as soon as all of its tracks are pooled; `assemble` concatenates the parts into
the Parquet file and the FAISS index. Track features are the eval features (the reader's chunks, the
length-weighted pooling of muser.features.tracks) through an inference copy of the model
(muser.models.inference), L2-normalised. A shard's forwards depend on that shard alone (`_Shard`), so its
vectors are the same bits whatever ran before, beside or after it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
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
from muser.models.inference import inference_copy
from muser.progress import TrackProgress
from muser.shards.manifest import ShardFolder

TEXT_BATCH = 256  # captions per text-tower forward

# ---- run ---------------------------------------------------------------------------------------------


@dataclass
class _Track:
    """One track's chunks as the reader delivered them (valid samples only, in offset order)."""

    meta: dict
    chunks: list[torch.Tensor] = field(default_factory=list)
    samples: int = 0
    vectors: dict[int, torch.Tensor] = field(default_factory=dict)  # chunk index -> embedding

    @property
    def complete(self) -> bool:
        expected = int(self.meta.get("num_samples") or 0)
        return bool(expected) and self.samples >= expected


class _Shard:
    """The chunks of one shard, embedded in batches that depend on the shard alone: its tracks in
    manifest order, each track's chunks in order, `batch_size` full-length chunks per forward, and the
    short last chunks of the tracks batched together at the end, padded only to the longest of them (not
    to the chunk length). Whatever the worker count, the other shards of the run or a resume, a shard's
    forwards, and so its vectors, are the same bit for bit."""

    def __init__(self, job: Job, chunk: int) -> None:
        self.job, self.chunk = job, chunk
        self.tracks: dict[str, _Track] = {}
        self.next = 0  # index into job.keys of the first track not yet queued
        self.full: list[tuple[str, int]] = []  # queued full-length chunks: (key, chunk index)
        self.tails: list[tuple[str, int]] = []  # queued short chunks

    def add(self, key: str, meta: dict, audio: torch.Tensor) -> None:
        track = self.tracks.setdefault(key, _Track(meta))
        track.chunks.append(audio)
        track.samples += int(audio.shape[0])

    def queue(self, final: bool) -> None:
        """Queue the tracks that are whole, in manifest order (at the end of the pass: every track that
        came, whole or not; the ones that never came are left out)."""
        keys = self.job.keys
        while self.next < len(keys):
            track = self.tracks.get(keys[self.next])
            if track is None or not track.complete:
                if not final:
                    return
                if track is None:
                    self.next += 1
                    continue
            for i, audio in enumerate(track.chunks):
                (self.full if audio.shape[0] == self.chunk else self.tails).append((keys[self.next], i))
            self.next += 1

    def forwards(self, batch_size: int, final: bool) -> Iterator[list[tuple[str, int]]]:
        """The batches ready to run: full ones now, the remainder and the short chunks at the end."""
        while len(self.full) >= batch_size:
            yield self.full[:batch_size]
            self.full = self.full[batch_size:]
        if final:
            rest = [self.full[i : i + batch_size] for i in range(0, len(self.full), batch_size)]
            rest += [self.tails[i : i + batch_size] for i in range(0, len(self.tails), batch_size)]
            self.full, self.tails = [], []
            yield from rest

    @property
    def done(self) -> bool:
        return self.next == len(self.job.keys) and not self.full and not self.tails

    def pooled(self) -> tuple[list[str], np.ndarray, list[dict], list[int]]:
        """(keys, (N, D) chunk averages weighted by valid samples, metadata, samples) of the tracks that
        came, in manifest order; the sum runs over the chunks in order (as ChunkPool's does)."""
        keys = [k for k in self.job.keys if k in self.tracks and self.tracks[k].chunks]
        rows = []
        for key in keys:
            track = self.tracks[key]
            total, weight = torch.zeros_like(track.vectors[0]), 0.0
            for i, audio in enumerate(track.chunks):
                total += float(audio.shape[0]) * track.vectors[i]
                weight += float(audio.shape[0])
            rows.append(total / max(weight, 1.0))
        x = torch.stack(rows).numpy().astype(np.float32) if rows else np.zeros((0, 0), np.float32)
        return keys, x, [self.tracks[k].meta for k in keys], [self.tracks[k].samples for k in keys]


def _forward(chunk_fn: feat.ChunkFn, shard: _Shard, items: list[tuple[str, int]], floor: int) -> None:
    """Embed `items` of `shard` in one forward, zero-padded to the longest of them (at least `floor`)."""
    audio = [shard.tracks[k].chunks[i] for k, i in items]
    length = torch.tensor([a.shape[0] for a in audio], dtype=torch.int64)
    batch = torch.zeros((len(audio), max(int(length.max()), floor)), dtype=torch.float32)
    for row, a in enumerate(audio):
        batch[row, : a.shape[0]] = a
    emb = feat.embed_chunks(chunk_fn, {"audio": batch, "length": length})
    for row, (k, i) in enumerate(items):
        shard.tracks[k].vectors[i] = emb[row]


def _commit(plan: Plan, shard: _Shard, model: Any) -> tuple[int, list[str]]:
    """Pool the shard's tracks, add captions and text vectors, write its part. Returns (rows, keys the
    reader could not decode)."""
    from muser.shards.text import render

    job, info, dim = shard.job, plan.info, plan.info["dimension"]
    keys, x, metas, samples = shard.pooled()
    captions = [render(m) for m in metas]
    rows: dict[str, list] = {name: [] for name in parts.schema(dim).names}
    for key, meta, caption, n in zip(keys, metas, captions, samples, strict=True):
        for name, value in parts.metadata_columns(meta).items():
            rows[name].append(value)
        rows["key"].append(key)
        rows["caption"].append(caption)
        rows["duration"].append(round(n / info["sample_rate"], 3))
        rows["split"].append(job.split)
        rows["shard"].append(str(Path(job.source) / job.shard))
        rows["member"].append(f"{key}.{job.codec}")
    audio = parts.normalise_rows(x) if keys else np.zeros((0, dim), np.float32)
    table = parts.build_part(rows, audio, encode_texts(model, captions, TEXT_BATCH).numpy(), dim)
    unreadable = [k for k in job.keys if k not in set(keys)]
    part_meta = {
        "shard_sha256": job.sha256,
        "settings": info["settings_fingerprint"],
        "unreadable": unreadable,
    }
    parts.write_part(Path(plan.config.output) / job.part, table, part_meta)
    return len(keys), unreadable


def run_jobs(plan: Plan, jobs: list[Job], model: Any, device: torch.device, label: str = "embedding") -> dict:
    """Embed the shards of `jobs`: the reader's chunks are regrouped per shard (`_Shard`: forwards that
    depend on the shard alone), run through an inference copy of the model (BatchNorm folded, FFT mel
    front end) and each shard's part committed as soon as all of its tracks are pooled (a shard with an
    unreadable track waits for the end of the pass); on the CPU each batch runs in parts across the
    cores (feat.row_parallel). Returns counts and where the time went."""
    if not jobs:
        return {"tracks": 0, "seconds": 0.0, "unreadable": 0, "data_wait_s": 0.0, "model_s": 0.0}
    model = model.to(device).eval()
    chunk_fn = feat.model_chunk_fn(inference_copy(model), device, plan.info["tower"])
    if device.type == "cpu":
        with feat.row_parallel(chunk_fn, torch.get_num_threads()) as rows:
            return _run_jobs(plan, jobs, model, rows, label)
    return _run_jobs(plan, jobs, model, chunk_fn, label)


def _run_jobs(plan: Plan, jobs: list[Job], model: Any, chunk_fn: feat.ChunkFn, label: str) -> dict:
    """run_jobs with the chunk function fixed."""
    cfg, rate = plan.config, plan.info["sample_rate"]
    chunk = max(1, round(cfg.chunk_seconds * rate))
    floor = min(chunk, rate)  # as the reader pads: a batch of very short chunks still feeds the towers
    owner = {key: j for j, job in enumerate(jobs) for key in job.keys}
    shards = [_Shard(job, chunk) for job in jobs]
    committed: set[int] = set()
    tracks, unreadable, seconds, wait, compute, whole = 0, 0, 0.0, 0.0, 0.0, 0
    folders = [ShardFolder.open(str(Path(job.source) / job.shard), sample_rate=rate) for job in jobs]
    # More workers than shards would read every shard once per worker (by-sample split) for no gain.
    workers = min(cfg.num_workers, len(jobs))
    loader = feat.eval_loader(folders, None, cfg.chunk_seconds, cfg.batch_size, workers, sample_rate=rate)

    def step(j: int, final: bool) -> None:
        nonlocal tracks, unreadable, compute
        shard = shards[j]
        shard.queue(final)
        # Its last track queued: the rest of its chunks run now, and the part is committed at once.
        last = final or shard.next == len(shard.job.keys)
        started = time.perf_counter()
        for items in shard.forwards(cfg.batch_size, last):
            _forward(chunk_fn, shard, items, floor)
        compute += time.perf_counter() - started
        if shard.done and j not in committed:
            n, bad = _commit(plan, shard, model)
            committed.add(j)
            shards[j] = _Shard(jobs[j], chunk)  # its audio is no longer needed
            tracks, unreadable = tracks + n, unreadable + len(bad)

    with TrackProgress(cfg.progress, sum(len(j.keys) for j in jobs), label) as bar:
        batches = iter(loader)
        while True:
            started = time.perf_counter()
            batch = next(batches, None)
            wait += time.perf_counter() - started
            if batch is None:
                break
            touched: dict[int, None] = {}
            for i, key in enumerate(batch["key"]):
                if key not in owner:
                    raise RuntimeError(
                        f"the reader returned {key!r}, which no manifest lists; re-shard its folder"
                    )
                j = owner[key]
                n = int(batch["length"][i])
                was = shards[j].tracks.get(key)
                shards[j].add(key, batch["meta"][i], batch["audio"][i, :n].clone())
                if (was is None or not was.complete) and shards[j].tracks[key].complete:
                    whole += 1
                    bar.advance(1, seconds + n / rate)
                touched[j] = None
                seconds += n / rate
            for j in touched:
                step(j, final=False)
        for j in range(len(jobs)):  # the rest: shards whose unreadable tracks never came
            if j not in committed:
                step(j, final=True)
        bar.advance(sum(len(j.keys) for j in jobs) - whole, seconds)  # tracks never whole
    return {
        "tracks": tracks,
        "seconds": seconds,
        "unreadable": unreadable,
        "data_wait_s": round(wait, 3),
        "model_s": round(compute, 3),
    }


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
    if cfg.ray:
        from muser.cluster import ray_module

        ray_module()  # not installed: one sentence, before any work
    if cfg.nnodes > 1 and cfg.node_rank > 0:
        return _join_nodes(cfg, started)
    plan, model = prepare(cfg)
    todo = [plan.jobs[i] for i in plan.pending]
    run_started = time.perf_counter()
    processes = max(cfg.gpus or 0, cfg.procs, 1)
    nodes = (cfg.nnodes, cfg.node_rank, cfg.master_addr, cfg.master_port)
    if cfg.nnodes > 1:
        # Node 0 runs its workers even with nothing left to do: the other nodes' workers wait for its plan.
        spec = CatalogueFolder(cfg.output).launch
        atomic_write_text(spec, json.dumps(plan_dict(plan)) + "\n")
        launch(spec, processes, nodes)
        ran = {"tracks": sum(len(j.keys) for j in todo), "seconds": sum(j.seconds for j in todo)}
        processes *= cfg.nnodes
    elif cfg.ray and todo:
        from muser.cluster import run_units

        # One Ray task per shard, run with this process's thread count (the same forwards, so the same
        # bits on the same kind of machine); a task whose process dies is retried, parts already
        # committed are kept, and a rerun embeds only the shards without a part.
        spec, threads = plan_dict(plan), torch.get_num_threads()
        units = [(spec, i, threads) for i in plan.pending]
        done = run_units(embed_unit, units, cfg.ray, num_gpus=1 if (cfg.gpus or 0) > 0 else 0)
        counts = ("tracks", "seconds", "unreadable", "data_wait_s", "model_s")
        ran = {k: sum(r[k] for r in done) for k in counts}
        processes = len(todo)
    elif processes > 1 and todo and not in_torchrun():
        spec = CatalogueFolder(cfg.output).launch
        atomic_write_text(spec, json.dumps(plan_dict(plan)) + "\n")
        launch(spec, processes, nodes)
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
        # Seconds this process waited for the reader, and spent in the model (None under torchrun).
        "data_wait_s": ran.get("data_wait_s"),
        "model_s": ran.get("model_s"),
    }


def _join_nodes(cfg: EmbedConfig, started: float) -> dict[str, Any]:
    """A node other than 0 under torchrun: start this machine's workers, which take node 0's plan (its
    rank 0 broadcasts it) and embed their share; node 0 assembles the catalogue once every rank is done."""
    from dataclasses import asdict

    from muser.catalogue.launch import launch

    if cfg.overwrite:
        raise ValueError("--overwrite is for node 0 only (it plans the catalogue); leave it off here")
    if not 0 < cfg.node_rank < cfg.nnodes:
        raise ValueError(f"--node-rank must be in [0, {cfg.nnodes}), got {cfg.node_rank}")
    Path(cfg.output).mkdir(parents=True, exist_ok=True)
    # Its own spec file: the catalogue folder is shared, node 0's spec holds the plan.
    spec = Path(cfg.output) / f".launch-node{cfg.node_rank}.json"
    atomic_write_text(spec, json.dumps({"config": asdict(cfg)}) + "\n")
    processes = max(cfg.gpus or 0, cfg.procs, 1)
    launch(spec, processes, (cfg.nnodes, cfg.node_rank, cfg.master_addr, cfg.master_port))
    return {
        "output": str(Path(cfg.output).resolve()),
        "node_rank": cfg.node_rank,
        "processes": processes,
        "elapsed_s": round(time.perf_counter() - started, 2),
        "assembled_by": "node 0",
    }


_MODELS: dict[tuple, Any] = {}  # a Ray worker process keeps its model for the next shard it is given


def embed_unit(spec: dict[str, Any], index: int, threads: int) -> dict[str, Any]:
    """One shard of a plan as a Ray task (muser.cluster): load the model (once per worker process), embed
    plan.jobs[index] and commit its part. Returns run_jobs' counts."""
    from muser.models.load import load_model

    plan = plan_from_dict(spec)
    cfg = plan.config
    torch.set_num_threads(threads)
    device = torch.device("cuda:0" if (cfg.gpus or 0) > 0 else "cpu")
    key = (cfg.checkpoint, cfg.preset, cfg.seed, str(device))
    if key not in _MODELS:
        _MODELS.clear()
        model, fp, _ = load_model(cfg.checkpoint, cfg.preset, cfg.seed, device)
        if fp != plan.info["checkpoint"]["fingerprint"]:
            raise RuntimeError("the checkpoint changed while the run started; run `muser embed` again")
        _MODELS[key] = model
    # No reader processes inside a task: the task holds one CPU, and Ray runs the parallel units.
    cfg.progress, cfg.num_workers = False, 0
    return run_jobs(plan, [plan.jobs[index]], _MODELS[key], device, label="embedding")


def run_worker(spec: dict[str, Any]) -> None:
    """One torchrun worker: this rank's share of the pending shards (dealt round-robin), then exit; the
    launching process assembles the catalogue once every worker is done."""
    from muser.distributed import dist_cleanup, dist_init
    from muser.models.load import load_model

    gpus = spec["config"].get("gpus") or 0
    rank, _, world, device = dist_init("cuda" if gpus > 0 else "cpu")
    try:
        if spec["config"].get("nnodes", 1) > 1:  # every rank takes node 0's plan (rank 0 holds it)
            import torch.distributed as dist

            box = [spec if rank == 0 else None]
            dist.broadcast_object_list(box, src=0)
            spec = box[0]
        plan = plan_from_dict(spec)
        cfg = plan.config
        model, fp, _ = load_model(cfg.checkpoint, cfg.preset, cfg.seed, device)
        if fp != plan.info["checkpoint"]["fingerprint"]:
            raise RuntimeError("the checkpoint changed while the run started; run `muser embed` again")
        mine = [plan.jobs[i] for i in plan.pending[rank::world]]
        cfg.progress = cfg.progress and rank == 0  # one bar: rank 0's share
        run_jobs(plan, mine, model, device, label=f"embedding (rank 0 of {world})")
        if world > 1:
            import torch.distributed as dist

            dist.barrier()  # node 0's launcher assembles when its torchrun returns: every rank is done
    finally:
        dist_cleanup()
