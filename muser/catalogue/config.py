"""The options of `muser embed` (a plain dataclass, no heavy imports, so the CLI can show its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, field

TOWERS = ("waveform", "spectrogram", "both")
INDEX_KINDS = ("auto", "flat", "hnsw")


@dataclass
class EmbedConfig:
    sources: list[str] = field(default_factory=list)  # shard folders, or raw audio folders (sharded once)
    output: str = "catalogue"  # the catalogue folder EMB
    checkpoint: str = "random"  # a run folder, a model/ folder, or `random`
    chunk_seconds: float = 3.0  # chunk length of the track features (as `muser eval`)
    tower: str | None = None  # waveform | spectrogram | both; None = what the model was trained with
    index: str = "auto"  # auto (from size and --index-memory) | flat (exact inner product) | hnsw
    index_key: str | None = None  # a FAISS factory string (e.g. IVF4096,PQ64x4fs,RFlat); overrides index
    index_memory: str | None = None  # auto's RAM budget (e.g. 2G); default a quarter of the vectors, >= 256M
    batch_size: int = 32  # chunks per forward
    num_workers: int = 2  # reader processes per rank
    gpus: int | None = None  # None: one GPU when there is one, else CPU; 0: CPU; N > 1: torchrun, N GPUs
    procs: int = 0  # CPU processes under torchrun (gloo), for several processes without GPUs
    overwrite: bool = False  # delete EMB's catalogue files first and start over
    cache_dir: str | None = None  # where raw folders are sharded; default EMB/../.muser_cache
    preset: str = "tiny"  # architecture of --checkpoint random
    seed: int = 0  # seed of --checkpoint random
    progress: bool = True  # the rich progress bar on stderr
