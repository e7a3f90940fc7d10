"""Text features: sentences through the text tower in batches (the one batching helper every application
uses), and zero-shot classification: each class label becomes a sentence through the caption templates,
and a track is scored by the cosine similarity of its chunk-averaged audio embedding with every label
sentence.
"""

from __future__ import annotations

import numpy as np
import torch

from muser.shards.text import label_prompt


def prompts(label_task: str, classes: list[str], template: str | None = None) -> list[str]:
    """One sentence per class, e.g. "A song of blues." for the genre task."""
    return [label_prompt(label_task, c, template) for c in classes]


@torch.no_grad()
def encode_texts(model: torch.nn.Module, texts: list[str], batch_size: int = 64) -> torch.Tensor:
    """texts -> (len(texts), D) L2-normalised text embeddings, on the CPU."""
    model.eval()
    if not texts:
        return torch.zeros((0, model.config.embed_dim))
    out = [
        model.encode_text(texts[i : i + batch_size]).float().cpu() for i in range(0, len(texts), batch_size)
    ]
    return torch.nn.functional.normalize(torch.cat(out), dim=-1)


def class_scores(audio: np.ndarray, text: torch.Tensor) -> np.ndarray:
    """audio: (N, D) track embeddings (re-normalised here: a mean of unit vectors is shorter than one);
    text: (C, D) label sentence embeddings -> (N, C) cosine similarities."""
    a = torch.nn.functional.normalize(torch.from_numpy(np.asarray(audio, dtype=np.float32)), dim=-1)
    return (a @ text.T).double().numpy()
