"""ONNX export: audio.onnx (waveform at the model's rate -> unit embedding, the spectrogram front end
inside the graph), text.onnx (token ids + mask -> unit embedding), the tokenizer, and onnx.json (what a
user needs to feed them). Only inference is exported; see NOT_EXPORTED."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from muser import __version__
from muser.atomic import atomic_dir, atomic_write, atomic_write_text
from muser.models.muser import AUDIO_EMBEDDINGS

OPSET = 17  # onnxruntime >= 1.14 runs it; every op the towers use (STFT as conv1d, ceil-mode pools) is in it
FORMAT_VERSION = 1
PARITY_TOL = 1e-4  # max abs difference of unit embeddings PyTorch vs onnxruntime that `muser export` accepts
# What stays in PyTorch, and why a user of the ONNX files never needs it.
NOT_EXPORTED = {
    "training objective": "the contrastive/sigmoid losses and their Triton kernels are training-only",
    "SpecAugment and dropout": "training-only; identity at inference, so the graphs leave them out",
    "per-row length masking": "audio.onnx embeds whole clips: feed equal-length chunks (pad nothing), "
    "as the chunk-averaged track embedding does",
}


class AudioGraph(nn.Module):
    """The graph in audio.onnx: audio (B, T) float32 in [-1, 1] at the model's rate -> (B, D) unit
    embedding of `which` (waveform | spectrogram | both), exactly MUSER.encode_audio without `length`."""

    def __init__(self, model: nn.Module, which: str) -> None:
        super().__init__()
        self.model, self.which = model, which

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.which == "waveform":
            return m._embed_waveform(audio)
        if self.which == "spectrogram":
            return m._embed_spectrogram(audio)
        return F.normalize(m._embed_waveform(audio) + m._embed_spectrogram(audio), dim=-1)


class TextGraph(nn.Module):
    """The graph in text.onnx: input_ids, attention_mask (B, L) int64 -> (B, D) unit embedding."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model._embed_text(input_ids, attention_mask)


def export_graph(
    module: nn.Module, args: tuple, path: Path, names: list[str], axes: dict, opset: int
) -> None:
    """Trace `module` on `args` into path (written beside it, then renamed: a reader never sees half)."""
    with atomic_write(path) as tmp, warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter: it keeps batch and length dynamic through nnAudio's conv1d STFT and the
        # ceil-mode pools, in seconds; the dynamo exporter specialised the length (torch 2.14) and takes 10x.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(tmp),
            input_names=names,
            output_names=["embedding"],
            dynamic_axes={**axes, "embedding": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )


def _tokenizer_json(model: Any, max_length: int) -> str:
    """The `tokenizers` file with truncation and padding switched on, so `Tokenizer.from_file(...)
    .encode_batch(texts)` gives the ids and mask MUSER.tokenize gives, without transformers or torch."""
    backend = model.tokenizer.backend_tokenizer
    tok = type(backend).from_str(backend.to_str())
    tok.enable_truncation(max_length)
    tok.enable_padding(pad_id=model.tokenizer.pad_token_id, pad_token=model.tokenizer.pad_token)
    return tok.to_str(pretty=True)


def export_onnx(
    model: Any, out: str | Path, chunk_seconds: float, opset: int = OPSET, which: str | None = None
) -> dict[str, Any]:
    """Write audio.onnx, text.onnx, tokenizer.json (+ tokenizer/ for transformers) and onnx.json into
    `out`; returns the onnx.json record. model: a MUSER (put in eval mode on the CPU here).

    chunk_seconds: the chunk length recorded for users to cut tracks into (`muser export` passes the one
    `muser embed` and `muser eval` use); also the length of the traced example.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = model.eval().cpu()
    cfg = model.config
    which = which or cfg.audio_embedding
    if which not in AUDIO_EMBEDDINGS:
        raise ValueError(f"which must be one of {', '.join(AUDIO_EMBEDDINGS)}, not {which!r}")
    rate = cfg.sample_rate
    samples = max(model.min_samples, int(round(chunk_seconds * rate)))
    wave = torch.rand(2, samples, generator=torch.Generator().manual_seed(0)) * 2 - 1
    export_graph(
        AudioGraph(model, which),
        (wave,),
        out / "audio.onnx",
        ["audio"],
        {"audio": {0: "batch", 1: "samples"}},
        opset,
    )
    enc = model.tokenize(["a song of jazz", "calm piano with strings and a slow tempo"])
    token_axes = {0: "batch", 1: "tokens"}
    export_graph(
        TextGraph(model),
        (enc["input_ids"], enc["attention_mask"]),
        out / "text.onnx",
        ["input_ids", "attention_mask"],
        {"input_ids": token_axes, "attention_mask": token_axes},
        opset,
    )
    with atomic_dir(out / "tokenizer") as tok_dir:
        model.tokenizer.save_pretrained(tok_dir)
    atomic_write_text(out / "tokenizer.json", _tokenizer_json(model, model.text.max_length))
    info = {
        "format": "muser-onnx",
        "format_version": FORMAT_VERSION,
        "muser_version": __version__,
        "opset": opset,
        "sample_rate": rate,
        "chunk_seconds": chunk_seconds,
        "chunk_samples": int(round(chunk_seconds * rate)),
        "min_samples": model.min_samples,
        "embed_dim": cfg.embed_dim,
        "audio_embedding": which,
        "towers": {
            "audio": {
                "file": "audio.onnx",
                "inputs": {"audio": ["batch", "samples", "float32 in [-1, 1], mono"]},
                "output": {"embedding": ["batch", cfg.embed_dim, "float32, unit length"]},
            },
            "text": {
                "file": "text.onnx",
                "inputs": {
                    "input_ids": ["batch", "tokens", "int64"],
                    "attention_mask": ["batch", "tokens", "int64"],
                },
                "output": {"embedding": ["batch", cfg.embed_dim, "float32, unit length"]},
                "tokenizer": "tokenizer.json",
                "max_length": model.text.max_length,
            },
        },
        "not_exported": NOT_EXPORTED,
    }
    atomic_write_text(out / "onnx.json", json.dumps(info, indent=2) + "\n")
    return info


def parity(
    model: Any, out: str | Path, shapes: list[tuple[int, int]], texts: list[list[str]], seed: int = 0
) -> dict[str, float]:
    """Max abs difference between PyTorch and onnxruntime (CPU) on the files in `out`: random clips of
    each (batch, samples) in `shapes` and each list of sentences in `texts` -> {"audio": .., "text": ..}."""
    import onnxruntime as ort

    out = Path(out)
    info = json.loads((out / "onnx.json").read_text())
    opts = ort.SessionOptions()
    audio = ort.InferenceSession(str(out / "audio.onnx"), opts, providers=["CPUExecutionProvider"])
    text = ort.InferenceSession(str(out / "text.onnx"), opts, providers=["CPUExecutionProvider"])
    gen = torch.Generator().manual_seed(seed)
    worst = {"audio": 0.0, "text": 0.0}
    model = model.eval().cpu()
    with torch.no_grad():
        for batch, samples in shapes:
            wave = torch.rand(batch, samples, generator=gen) * 2 - 1
            ref = model.encode_audio(wave, which=info["audio_embedding"]).numpy()
            got = audio.run(None, {"audio": wave.numpy()})[0]
            worst["audio"] = max(worst["audio"], float(np.abs(ref - got).max()))
        for sentences in texts:
            enc = model.tokenize(sentences)
            ref = model.encode_text(sentences).numpy()
            feed = {k: enc[k].numpy() for k in ("input_ids", "attention_mask")}
            worst["text"] = max(worst["text"], float(np.abs(ref - text.run(None, feed)[0]).max()))
    return worst
