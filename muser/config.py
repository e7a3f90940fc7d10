"""Run configuration: plain dataclasses for every command, named presets, and a JSON round trip.

The CLI maps its options onto these fields and hands one object to one library function, so everything
the CLI does can be called (and tested) from Python.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

T = TypeVar("T")


MODALITIES = ("audio", "spec", "text")  # the model's outputs: waveform tower, spectrogram tower, text
# The loss terms: term -> (row modality, column modality) of the model's output dict. The one table
# (muser.losses reads it); here, so the CLI can name the terms without importing torch.
LOSS_TERMS: dict[str, tuple[str, str]] = {
    "at": ("audio", "text"),
    "st": ("spec", "text"),
    "as": ("audio", "spec"),
}
LOSSES = ("softmax", "sigmoid")  # the pairwise objective of every term: CLIP's or SigLIP's
PRECISIONS = ("bf16", "fp16", "fp32")  # GPU autocast of pretraining
SAMPLE_RATE = 16000  # Hz: the rate shards are written at and the models read (a manifest records its own)
CODECS = ("flac", "pcm")  # how a shard stores audio: 16-bit FLAC or raw little-endian int16 PCM
SOURCES = ("fma", "gtzan", "mtt", "folder")  # the dataset layouts `muser shard` reads
FMA_SUBSETS = ("small", "medium", "large", "full")  # each contains the smaller ones; full = every track
EVAL_TASKS = ("gtzan", "mtt", "fma", "shards")  # `muser eval TASK` (muser.eval.tasks.TASKS describes each)
DEFAULT_PRESET = "tiny"  # the model when none is named: CPU-sized (CI, `muser demo`, `--checkpoint random`)


@dataclass
class ShardConfig:
    src: str = ""  # dataset folder as the user has it (fma_small/, GTZAN root, MTT root, any folder)
    dst: str = ""  # output folder for tar shards, manifest.json and errors.jsonl
    source: str = "auto"  # auto | fma | gtzan | mtt | folder
    sample_rate: int = SAMPLE_RATE  # every sample is resampled to this rate (Hz)
    codec: str = "flac"  # flac (16-bit, compact) | pcm (raw int16, fastest reads)
    workers: int | None = None  # decode/encode processes; None = all cores
    max_count: int = 1000  # samples per shard at most
    max_size: int = 512 * 1024**2  # bytes per shard at most
    split_dir: str | None = None  # GTZAN fault-filtered lists (train_filtered.txt, ...)
    metadata: str | None = None  # FMA fma_metadata/ folder, or a folder source's CSV/JSONL sidecar
    subset: str = "small"  # FMA subset: small | medium | large | full
    max_errors: float = 0.01  # fraction of failed tracks above which the run exits with status 2
    overwrite: bool = False  # start over instead of resuming
    valid_fraction: float = 0.0  # tracks without a split of their own go to valid by a hash of their key
    test_fraction: float = 0.0  # ... and to test (the rest to train); both 0 keeps them in split `all`
    ray: str | None = None  # decode on a Ray cluster: "auto" (the running one), an address, or "local"


@dataclass
class DataConfig:
    shards: list[str] = field(default_factory=list)  # shard folders (mixed), or shard URLs/patterns
    split: str | None = None  # split of each folder to train on; None: train, or all when it has no train
    valid_split: str = "valid"  # used by --eval-every when present
    # Random crop per sample in training. 1.5 s: on real music, at 1.5x the steps of 3-s crops (no more CPU
    # time: half-length crops train 1.85x the samples per CPU-second), it was level on the probe (+0.4 ± 3.1)
    # and ahead on zero-shot (+5.7 ± 5.4, in 5 of 6 seeds; README, Real music). At the same steps it is
    # behind (-4.2 probe, one seed): the gain is more steps per CPU-second, so the study's 30-minute budget
    # is 3,000 steps with these crops, not 2,000.
    crop_seconds: float = 1.5
    # Global batch (split across ranks). 16: on real music at the tiny preset's CPU budget, batch 32 at half
    # the steps (the same samples) was behind on the probe and on zero-shot (README, Real music); more
    # negatives only pay once a GPU makes steps cheap: pass --batch-size there.
    batch_size: int = 16
    num_workers: int = 2  # DataLoader workers per rank
    shuffle_buffer: int = 1000  # samples held for shuffling
    templates: str | None = None  # a user templates file (one template per line)
    # Probability of dropping each optional metadata field in training. Kept at 0.2 by the real-music recipe
    # study (README, Real music; 3 seeds x 2,000 steps): 0 was behind on zero-shot in 3 of 3 seeds (-2.2),
    # 0.4 level within the spread (-0.6 probe, -0.3 zero-shot).
    field_dropout: float = 0.2


@dataclass
class ModelConfig:
    preset: str = DEFAULT_PRESET  # tiny | base
    sample_rate: int = SAMPLE_RATE  # the model's input rate; audio is float32 in [-1, 1] at this rate
    embed_dim: int = 128  # shared embedding dimension after the projections W_a, W_s, W_t
    # waveform tower
    wave_channels: tuple[int, ...] = (32, 32, 64, 64, 128)  # residual stage widths after the front end
    wave_frontend_filters: int = 32  # learnable strided conv filterbank size
    wave_frontend_stride: int = 10  # hop of the front end in samples
    wave_frontend_kernel: int = 40  # filter length in samples
    # spectrogram tower
    spec_kind: str = "mel"  # mel | cqt
    n_fft: int = 1024
    hop_length: int = 256
    n_mels: int = 64  # mel bands (spec_kind=cqt: CQT bins, capped at what fits below fmax)
    fmin: float = 0.0
    fmax: float | None = None  # None = Nyquist (full band)
    trainable_filters: bool = False  # let nnAudio learn the mel/STFT kernels
    spec_channels: tuple[int, ...] = (16, 32, 64, 128)  # 2-D residual stage widths
    cqt_bins_per_octave: int = 12  # spec_kind=cqt: bins per octave from fmin (C1 when fmin is 0) to fmax
    # Time/frequency masks on the spectrogram, training mode only. Off: at the 30-minute budget (2,000 steps,
    # 3 seeds, one CPU) PT without them was ahead on the probe (+5.0 ± 2.5 points) and on zero-shot (+4.7 ±
    # 1.7), in 3 of 3 seeds on both (README, Real music); the 800-step, one-seed row that had kept them on
    # (-2.5 / -3.3) was within that row's spread. Measured on the tiny preset only; --specaugment turns it on.
    specaugment: bool = False
    specaug_masks: int = 2  # masks of each kind (frequency, time) per example
    specaug_freq_width: int = 8  # widest frequency mask in bins
    specaug_time_width: int = 20  # widest time mask in frames
    # Waveform augmentations, training mode only; off because gain ±6 dB + shift + mix <= 0.3 together was
    # well behind plain PT in the real-music recipe study (README, Real music) at the tiny budget, and one at
    # a time at 2,000 steps neither gain (3 seeds: -1.9 probe, -1.4 zero-shot) nor shift (1 seed: +1.7
    # probe, -5.8 zero-shot) lifted both.
    wave_gain_db: float = 0.0  # random gain in [-x, +x] dB per example (0 = off)
    wave_shift: bool = False  # circular time shift within each example's valid samples
    wave_mix: float = 0.0  # mix of another batch track at a weight in [0, x] (0 = off)
    # text tower
    # A transformers model dir or hub id; None = the small encoder built in code. The built-in stays the
    # default: in the recipe study all-MiniLM-L6-v2 lifted zero-shot at the same steps but cost about 2.5x the
    # CPU time per step and lost on the probe, and the built-in with that time to spare does better. Locked
    # (text_freeze_layers=6, no extra CPU) it reached 50.6 % zero-shot vs 43.3, still -2.5 on the probe; a
    # default cannot name it either way: the package neither ships nor (offline) downloads it.
    text_encoder: str | None = None
    text_hidden: int = 128  # built-in encoder width
    text_layers: int = 2  # built-in encoder depth
    text_heads: int = 2  # built-in encoder heads
    vocab_size: int = 2000  # WordPiece vocabulary trained on corpus texts (built-in encoder)
    text_max_length: int = 64  # tokens per sentence
    text_pooling: str = "mean"  # mean | cls
    text_freeze_layers: int = 0  # freeze the embeddings and this many lower layers (all: LiT, locked)
    audio_embedding: str = "both"  # what encode_audio returns: waveform | spectrogram | both


# ModelConfig fields that act in training mode only (no weights, no shapes): a resumed run may change them.
AUGMENTATION_FIELDS = (
    "specaugment",
    "specaug_masks",
    "specaug_freq_width",
    "specaug_time_width",
    "wave_gain_db",
    "wave_shift",
    "wave_mix",
)


@dataclass
class TrainConfig:
    output: str = "runs/muser"  # run folder: config.json, metrics.jsonl, last.pt, init/, model/ (trained)
    gpus: int = 0  # 0 = CPU; N > 1 re-launches under torchrun
    procs: int = 1  # CPU processes (gloo) for testing distributed code without GPUs
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    steps: int = 200  # optimiser steps (ignored when epochs is set)
    epochs: float | None = None  # passes over the training samples instead of a step count
    # Peak lr of the towers and projections. 1e-3: on real music (tiny preset, batch 16, 800 steps) 2e-3 gave
    # the same probe and 10 points less zero-shot (README, Real music).
    lr: float = 1e-3
    text_lr: float | None = None  # pretrained text encoder (default lr / 10 when pretrained)
    warmup: int = 20  # linear warmup steps before the cosine decay
    weight_decay: float = 0.05
    grad_clip: float = 1.0
    # GPU autocast: bf16 (default) | fp16 (with a loss scaler) | fp32; CPU is fp32
    precision: str = PRECISIONS[0]
    grad_accum: int = 1  # micro-batches per step; each loss sees batch_size / grad_accum negatives
    loss_terms: tuple[str, ...] = ("at", "st")  # at = L(A,T), st = L(S,T), as = L(A,S)
    # softmax: CLIP's symmetric cross-entropy | sigmoid: SigLIP's pairwise loss (behind on the probe and on
    # zero-shot in the real-music recipe study at batch 16, -4.7 / -6.4 points, 3 of 3 seeds; SigLIP's case
    # is very large batches).
    loss: str = "softmax"
    grad_checkpointing: bool = False  # recompute tower activations in backward: larger batches per GPU
    duplicate_aware: bool = True  # identical captions in a batch are positives, not negatives
    save_every: int = 100  # checkpoint period in steps
    eval_every: int = 0  # retrieval/zero-shot on the valid split every K steps (0 = never)
    log_every: int = 10
    seed: int = 0
    resume: bool = False
    sync_bn: bool = True  # several GPUs: BatchNorm statistics over the global batch (SyncBatchNorm)
    eval_tracks: int = 1000  # --eval-every reads at most this many valid tracks
    report_to: str | None = None  # trackers: tensorboard,wandb,trackio; None: tensorboard when installed


@dataclass
class EvalConfig:
    task: str = "gtzan"  # gtzan | mtt | fma | shards
    checkpoint: str = "random"  # a model/ folder, a run folder, or `random`
    data: str | None = None  # raw dataset root or a shard folder; default $MUSER_DATA/<task>
    protocol: str = "all"  # probe | zeroshot | finetune | retrieval | all
    probes: tuple[str, ...] = ("logistic", "mlp")  # probe heads: logistic | mlp | marble (MARBLE's protocol)
    # What the probes read: towers = the audio towers' pooled outputs before the projection heads
    # (MUSER.encode_towers; on real music ahead of the embedding on every checkpoint tried: README, Real
    # music) | embedding = the shared-space vectors that zero-shot, retrieval and search use. MFCC: as is.
    probe_features: str = "towers"
    fractions: tuple[float, ...] = (1.0,)  # training fractions for few-shot curves
    seeds: int = 3
    folds: int = 5  # stratified K-fold when the dataset has no split
    output: str = "eval_out"
    baseline: str | None = None  # mfcc
    chunk_seconds: float = 3.0  # chunk length for chunk-averaged track embeddings
    batch_size: int = 32
    label_task: str | None = None  # manifest label vocabulary to score (shards task; default per task)
    preset: str = DEFAULT_PRESET  # architecture of `--checkpoint random`
    random_baseline: bool = True  # also probe the same architecture with random weights (real checkpoints)
    num_workers: int = 0  # reader workers for feature extraction
    device: str = "auto"  # auto | cpu | cuda
    cache_dir: str | None = None  # shard + feature cache; default OUT/../.muser_cache
    finetune_epochs: int = 3  # PT+FT: contrastive epochs over the train split's label sentences
    finetune_lr: float = 1e-4
    seed: int = 0
    split_dir: str | None = None  # GTZAN fault-filtered lists; default: *_filtered.txt found in the data root


PROBE_FEATURES = ("towers", "embedding")  # EvalConfig.probe_features
TOWERS = ("waveform", "spectrogram", "both")  # the audio tower(s) a model embeds with (and a catalogue)
INDEX_KINDS = ("auto", "flat", "hnsw")  # the catalogue's FAISS index kinds (auto: from size and memory)


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
    preset: str = DEFAULT_PRESET  # architecture of --checkpoint random
    seed: int = 0  # seed of --checkpoint random
    progress: bool = True  # the rich progress bar on stderr
    ray: str | None = None  # run each shard as a Ray task: "auto" (the running cluster), an address, "local"
    nnodes: int = 1  # machines under torchrun (each runs the command with its --node-rank)
    node_rank: int = 0  # this machine's index; node 0 plans and assembles the catalogue
    master_addr: str = "127.0.0.1"  # node 0's address (several nodes)
    master_port: int = 29500  # node 0's port (several nodes)


@dataclass
class SearchConfig:
    k: int = 10  # results per query (`muser search --top`, the search page, the library's search methods)


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"  # loopback: only this machine; 0.0.0.0 opens the page to everyone
    port: int = 8000
    device: str = "auto"  # auto | cpu | cuda


DEMO_OUT = "demo_out"  # `muser demo`'s folder for the corpus, shards, run and report


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(asdict(cfg)))


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Build `cls` from a dict, restoring tuples and refusing unknown keys with a clear message."""
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}")
    kwargs = {}
    for name, value in data.items():
        default = known[name].default
        factory = known[name].default_factory  # type: ignore[misc]
        template = (
            default
            if default is not dataclasses.MISSING
            else (factory() if factory is not dataclasses.MISSING else None)
        )
        kwargs[name] = tuple(value) if isinstance(template, tuple) and isinstance(value, list) else value
    return cls(**kwargs)


# Named model presets. `tiny` runs a training step on CPU in well under a second (CI, `muser demo`);
# `base` is paper scale (tens of millions of parameters, a pretrained text encoder in real runs).
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(preset="tiny"),
    "base": ModelConfig(
        preset="base",
        embed_dim=512,
        wave_channels=(128, 128, 256, 256, 512, 512),
        wave_frontend_filters=128,
        spec_channels=(64, 128, 256, 512),
        n_mels=128,
        text_hidden=512,
        text_layers=6,
        text_heads=8,
        vocab_size=8000,
    ),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A copy of the named preset with field overrides; unknown names are a clear error."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    cfg = dataclasses.replace(PRESETS[name])
    return from_dict(ModelConfig, {**to_dict(cfg), **overrides})
