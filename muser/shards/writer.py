"""Parallel, crash-safe sharding: Track records -> `{split}-{NNNNNN}.tar` shards, manifest.json, errors.jsonl.

Worker processes (muser.shards.pool) decode, resample, encode and frame each track as finished tar bytes
(muser.shards.sample); the parent takes them in track order and alone appends them to the tars, so the
bytes depend only on the input and the options (including the resampler, recorded in the manifest),
never on the worker count.
Commit protocol per shard: write NAME through muser.atomic (hashed as it is written), fsync, rename, append
the errors seen so far to errors.jsonl, then atomically replace manifest.json (which lists the shard with
its keys). A killed run leaves at most uncommitted leftovers, which the next run removes before it
continues after the last listed shard; tracks are processed one split at a time in a fixed order, so the
resumed output is the same, byte for byte, as an uninterrupted run. A full disk stops the run with one
sentence; rerunning resumes. The progress bar and summary table are muser.shards.report.
"""

from __future__ import annotations

import errno
import hashlib
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from muser import __version__
from muser.atomic import atomic_write, atomic_write_text, temp_target
from muser.config import ShardConfig, to_dict
from muser.progress import TrackProgress
from muser.shards import errorlog
from muser.shards import manifest as mf
from muser.shards.audio import CODECS, resampler_name
from muser.shards.errorlog import ERRORS
from muser.shards.pool import results, start
from muser.shards.report import summary_table
from muser.shards.sample import Sample, closed_size, tar_end
from muser.shards.sources.holdout import carve, check_fractions

# Options that change what the shards contain; a resume with any of them different is refused.
OUTPUT_OPTIONS = (
    "src",
    "source",
    "sample_rate",
    "codec",
    "max_count",
    "max_size",
    "split_dir",
    "metadata",
    "subset",
    "resampler",  # not a ShardConfig field: the audio module's choice, recorded so a resume cannot mix two
    "valid_fraction",
    "test_fraction",
)
SHOWN = 10  # silent-track ids a summary lists; manifest.json lists them all


class TooManyErrors(RuntimeError):
    """The run finished, but more than `max_errors` of the tracks failed; `summary` holds the counts."""

    def __init__(self, message: str, summary: dict[str, Any]):
        super().__init__(message)
        self.summary = summary


def write_shards(cfg: ShardConfig, progress: bool = True, listing: Any = None) -> dict[str, Any]:
    """Shard cfg.src into cfg.dst (resuming a previous run of the same options); returns a summary dict.

    listing: a SourceListing to shard instead of discovering cfg.src (for callers with their own tracks).
    Raises ValueError for bad options or a DST that holds another run, RuntimeError when DST cannot be
    written (disk full: rerunning resumes), TooManyErrors when the failed fraction exceeds cfg.max_errors
    (after everything else has been written).
    """
    _check_options(cfg)
    workers = max(1, cfg.workers or os.cpu_count() or 1)
    # The workers start first and come up while the source is listed (a second core does that work).
    # They are checked before DST is touched: when they cannot start (a script without the __main__
    # guard), the error must leave no empty manifest behind that looks like a started run.
    if cfg.ray:  # the tracks are decoded on a Ray cluster (muser.cluster), not by local workers
        from muser.cluster import ray_module

        ray_module()  # not installed: one sentence, before anything is written
    pool = None if cfg.ray else start(workers)
    try:
        if listing is None:
            from muser.shards.sources import discover

            listing = discover(cfg)
        listing = carve(listing, cfg.valid_fraction, cfg.test_fraction)
        tracks = _ordered(listing.tracks)
        if not tracks:
            raise ValueError(f"no audio tracks found in {cfg.src}; check SRC and --source")
        if pool is not None:
            pool.check()
        dst = Path(cfg.dst)
        try:
            run, todo = _open_run(dst, cfg, listing, tracks)
            started = time.perf_counter()
            with TrackProgress(progress, len(todo), "sharding") as bar:
                for track, result in results(todo, cfg, workers, pool=pool):
                    if isinstance(result, str):
                        run.error(track, result)
                    else:
                        run.add(track, result)
                    bar.advance(1, run.audio_seconds)
                run.finish()
        except OSError as err:
            raise RuntimeError(_write_error(dst, err)) from None
    finally:
        if pool is not None:
            pool.close()  # also when an error stopped the run before results() ran
    elapsed = time.perf_counter() - started
    summary = _summary(run, listing.source, len(tracks), len(tracks) - len(todo), workers, elapsed)
    summary["worker_restarts"] = pool.restarts if pool is not None else 0
    if progress:
        from muser.console import make_console

        make_console().print(summary_table(summary))
    if summary["error_fraction"] > cfg.max_errors:
        raise TooManyErrors(
            f"{summary['errors']} of {summary['tracks']} tracks failed ({summary['error_fraction']:.1%} > "
            f"--max-errors {cfg.max_errors:.1%}); see {dst / ERRORS}",
            summary,
        )
    return summary


def _open_run(dst: Path, cfg: ShardConfig, listing: Any, tracks: list) -> tuple[_ShardingRun, list]:
    """Create or resume DST: the run that writes it and the tracks still to do."""
    dst.mkdir(parents=True, exist_ok=True)
    options = _options(cfg, listing.source)
    if cfg.overwrite:
        remove_outputs(dst)
    manifest = _resume_or_start(dst, cfg, options, listing.source)
    done = mf.committed_keys(manifest) | set(manifest["error_ids"])
    todo = [t for t in tracks if t.id not in done]
    return _ShardingRun(dst, cfg, manifest, listing.label_tasks), todo


def _write_error(dst: Path, err: OSError) -> str:
    """One sentence for a failed write into DST: what, where, and that rerunning resumes."""
    where = f" ({err.filename})" if err.filename else ""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return (
            f"disk full while writing {dst}{where}; free some space and run the same command again: "
            "committed shards are kept and the run resumes after them"
        )
    return (
        f"could not write {dst}{where}: {err.strerror or err}; fix that and run the same command again "
        "to resume"
    )


# --- resume / overwrite ----------------------------------------------------------------------------------


def remove_outputs(dst: Path) -> None:
    """Delete what `muser shard` writes in dst (manifest, errors, shards, temp files) and nothing else."""
    for path in dst.iterdir():
        ours = path.name in (mf.MANIFEST, ERRORS) or mf.SHARD_RE.match(path.name) or _our_temp(path.name)
        if ours and path.is_file():
            path.unlink()


def _our_temp(name: str) -> bool:
    """A temporary file of muser.atomic left by a killed run, for a shard, the manifest or errors.jsonl."""
    target = temp_target(name)
    return target is not None and (target in (mf.MANIFEST, ERRORS) or bool(mf.SHARD_RE.match(target)))


def _resume_or_start(dst: Path, cfg: ShardConfig, options: dict, source: str) -> dict[str, Any]:
    for path in dst.iterdir():  # temp files are never committed: always safe to drop
        if _our_temp(path.name) and path.is_file():
            path.unlink()
    if not (dst / mf.MANIFEST).exists():
        strays = sorted(p.name for p in dst.iterdir() if mf.SHARD_RE.match(p.name) or p.name == ERRORS)
        if strays:
            raise ValueError(
                f"{dst} holds {', '.join(strays[:3])} but no {mf.MANIFEST}; choose an empty "
                f"DST or pass --overwrite to replace them"
            )
        manifest = mf.new_manifest(cfg.sample_rate, cfg.codec, [source], options)
        # An empty manifest before the first shard: shard files without a manifest are never ours.
        atomic_write_text(dst / ERRORS, "")
        mf.write_manifest(dst, manifest)
        return manifest
    manifest = mf.read_manifest(dst)
    old = manifest.get("options", {})
    unrecorded = [k for k in OUTPUT_OPTIONS if k not in old]
    if unrecorded:  # a pre-release format: version 0.1 reads only folders that record every option
        raise ValueError(
            f"{dst} was written by muser {manifest.get('muser_version', 'before 0.1')}, whose manifest does "
            f"not record {', '.join(unrecorded)}; this muser ({__version__}) resumes only its own format: "
            f"pass --overwrite to start over, or choose another DST"
        )
    changed = [k for k in OUTPUT_OPTIONS if old[k] != options[k]]
    if changed:
        detail = ", ".join(f"{k} {old[k]!r} -> {options[k]!r}" for k in changed)
        raise ValueError(
            f"{dst} was sharded with different options ({detail}); pass --overwrite to start "
            f"over, or choose another DST"
        )
    listed = {sh["name"] for s in manifest["splits"].values() for sh in s["shards"]}
    missing = sorted(n for n in listed if not (dst / n).is_file())
    if missing:
        raise ValueError(
            f"{dst} lost shards listed in its manifest ({', '.join(missing[:3])}); pass "
            f"--overwrite to start over"
        )
    for path in dst.iterdir():  # renamed but never listed: the run died between rename and manifest
        if mf.SHARD_RE.match(path.name) and path.name not in listed:
            path.unlink()
    # Errors are appended before the manifest that counts them; keep only the committed ones, once each
    # (and drop a line torn by a full disk or a kill mid-append).
    errorlog.keep_committed(dst, set(manifest["error_ids"]))
    manifest["options"] = options  # workers/max_errors may differ between runs; record the latest
    return manifest


def _options(cfg: ShardConfig, source: str) -> dict[str, Any]:
    opts = to_dict(cfg)
    opts.pop("ray", None)  # where the decoding ran is not a property of the shards
    for k in ("src", "split_dir", "metadata"):
        if opts[k]:
            opts[k] = str(Path(opts[k]).resolve())
    opts["dst"] = str(Path(cfg.dst).resolve())
    opts["source"] = source  # `auto` and the detected source name shard the same way
    opts["resampler"] = resampler_name()
    return opts


def _check_options(cfg: ShardConfig) -> None:
    if cfg.codec not in CODECS:
        raise ValueError(f"--codec must be one of {', '.join(CODECS)}, got {cfg.codec!r}")
    if cfg.sample_rate < 1000:
        raise ValueError(f"--sample-rate must be at least 1000 Hz, got {cfg.sample_rate}")
    if cfg.max_count < 1:
        raise ValueError(f"--max-count must be at least 1, got {cfg.max_count}")
    if cfg.max_size < 64 * 1024:
        raise ValueError(f"--max-size must be at least 64KB, got {cfg.max_size} bytes")
    if not 0.0 <= cfg.max_errors <= 1.0:
        raise ValueError(f"--max-errors is a fraction in [0, 1], got {cfg.max_errors}")
    if cfg.workers is not None and cfg.workers < 1:
        raise ValueError(f"--workers must be at least 1, got {cfg.workers}")
    if not cfg.dst:
        raise ValueError("DST (the output folder) is required")
    check_fractions(cfg.valid_fraction, cfg.test_fraction)


def _ordered(tracks: list) -> list:
    """Tracks one split at a time (train, valid, test, all, then others), source order within a split."""
    bad = [t.id for t in tracks if not mf.KEY_RE.match(t.id)]
    if bad:
        raise ValueError(f"track ids must match [A-Za-z0-9_-]+ to be shard keys; bad: {bad[:3]}")
    dup = [k for k, n in Counter(t.id for t in tracks).items() if n > 1]
    if dup:
        raise ValueError(f"track ids must be unique; repeated: {sorted(dup)[:3]}")
    rank = {s: i for i, s in enumerate(mf.SPLIT_ORDER)}
    return sorted(
        tracks, key=lambda t: (rank.get(t.split, len(rank)), t.split if t.split not in rank else "")
    )


# --- the parent: tar writing and commits -------------------------------------------------------------


@dataclass
class _Shard:
    split: str
    name: str
    out: atomic_write  # the open temporary file, renamed to name by commit()
    sha: Any  # hashlib sha256 of the bytes written so far: no second read of the shard to checksum it
    size: int = 0
    keys: list[str] = field(default_factory=list)
    seconds: float = 0.0
    labels: dict[str, Counter] = field(default_factory=dict)
    clipped: Counter = field(default_factory=Counter)  # tracks, samples
    silent: list[str] = field(default_factory=list)  # ids of the (near-)silent tracks in this shard

    def write(self, data: bytes) -> None:
        self.out.file.write(data)
        self.sha.update(data)
        self.size += len(data)


class _ShardingRun:
    """Holds the open shard and the manifest; commits shards and errors in the order of the protocol."""

    def __init__(self, dst: Path, cfg: ShardConfig, manifest: dict, label_tasks: dict[str, str]):
        self.dst, self.cfg, self.manifest = dst, cfg, manifest
        self.types = {t: v["type"] for t, v in manifest["labels"].items()} | dict(label_tasks or {})
        self.counts = {t: Counter(v["counts"]) for t, v in manifest["labels"].items()}
        self.shard: _Shard | None = None
        self.pending_errors: list[dict] = []
        self.audio_seconds = 0.0  # written by this run (for rates)
        self.written = 0

    def error(self, track: Any, reason: str) -> None:
        self.pending_errors.append(errorlog.record(track.id, track.path, reason, track.source, track.split))

    def add(self, track: Any, sample: Sample) -> None:
        s = self.shard
        if s is not None and (
            s.split != track.split
            or len(s.keys) >= self.cfg.max_count
            or closed_size(s.size + len(sample.blob)) > self.cfg.max_size
        ):
            self.commit()
            s = None
        if s is None:
            s = self.shard = self.open(track.split)
        s.write(sample.blob)
        s.keys.append(track.id)
        s.seconds += sample.seconds
        for task, value in sample.labels.items():
            s.labels.setdefault(task, Counter()).update(value if isinstance(value, list) else [value])
            self.types.setdefault(task, "multi" if isinstance(value, list) else "single")
        if sample.clipped:
            s.clipped.update(tracks=1, samples=sample.clipped)
        if sample.silent:
            s.silent.append(track.id)
        self.audio_seconds += sample.seconds
        self.written += 1

    def open(self, split: str) -> _Shard:
        index = len(self.manifest["splits"].get(split, {}).get("shards", []))
        name = mf.shard_name(split, index)
        return _Shard(split, name, atomic_write(self.dst / name, "wb"), hashlib.sha256())

    def commit(self) -> None:
        s, self.shard = self.shard, None
        s.write(tar_end(s.size))
        s.out.commit()
        for task, counter in s.labels.items():
            self.counts.setdefault(task, Counter()).update(counter)
        if s.clipped:  # counted per committed shard, so a resumed run reports the whole folder's total
            total = Counter(self.manifest.get("clipped", {})) + s.clipped
            self.manifest["clipped"] = {"tracks": total["tracks"], "samples": total["samples"]}
        if s.silent:  # the same rule: listed per committed shard, whole-folder total on resume
            self.manifest["silent"] = [*self.manifest.get("silent", []), *s.silent]
        mf.add_shard(
            self.manifest,
            s.split,
            {
                "name": s.name,
                "samples": len(s.keys),
                "seconds": round(s.seconds, 3),
                "sha256": s.sha.hexdigest(),
                "bytes": s.size,
                "keys": s.keys,
            },
        )
        self.save(complete=False)

    def save(self, complete: bool) -> None:
        if self.pending_errors:
            errorlog.append(self.dst, self.pending_errors)
            self.manifest["error_ids"].extend(r["id"] for r in self.pending_errors)
            self.pending_errors = []
        self.manifest["errors"] = len(self.manifest["error_ids"])
        self.manifest["labels"] = mf.label_vocab(self.counts, self.types)
        self.manifest["complete"] = complete
        mf.write_manifest(self.dst, self.manifest)

    def finish(self) -> None:
        if self.shard is not None:
            self.commit()
        self.save(complete=True)


# --- summary ---------------------------------------------------------------------------------------


def _summary(run: _ShardingRun, source: str, tracks: int, resumed: int, workers: int, elapsed: float) -> dict:
    m = run.manifest
    splits = mf.split_summary(m)
    return {
        "dst": str(run.dst),
        "source": source,
        "tracks": tracks,
        "resumed": resumed,
        "written": run.written,
        "errors": m["errors"],
        "error_fraction": m["errors"] / max(tracks, 1),
        "splits": splits,
        "workers": workers,
        "elapsed_s": round(elapsed, 3),
        "tracks_per_s": round((tracks - resumed) / max(elapsed, 1e-9), 3),
        "realtime_factor": round(run.audio_seconds / max(elapsed, 1e-9), 3),
        "clipped_tracks": m.get("clipped", {}).get("tracks", 0),
        "clipped_samples": m.get("clipped", {}).get("samples", 0),
        "silent_tracks": len(m.get("silent", [])),
        "silent": m.get("silent", [])[:SHOWN],
    }
