"""Text -> audio retrieval: Recall@K and mAP when a caption may describe several tracks.

Queries are the distinct captions of the evaluated tracks; every track whose caption equals the query is
relevant (metadata captions repeat a lot: two rock songs by unknown artists read the same), so R@K is
"at least one relevant track in the top K" and AP averages precision over all relevant tracks.
"""

from __future__ import annotations

import numpy as np
import torch


def relevance_from_captions(captions: list[str]) -> tuple[list[str], np.ndarray]:
    """Distinct captions (queries, first-seen order) and the (Q, N) boolean relevance matrix."""
    queries: list[str] = []
    index: dict[str, int] = {}
    for text in captions:
        if text not in index:
            index[text] = len(queries)
            queries.append(text)
    rel = np.zeros((len(queries), len(captions)), dtype=bool)
    for j, text in enumerate(captions):
        rel[index[text], j] = True
    return queries, rel


def retrieval_metrics(
    sim: np.ndarray, relevant: np.ndarray, ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """sim: (Q, N) query-to-item similarities; relevant: (Q, N) bool, each row with at least one True.

    Returns {"R@1", "R@5", "R@10", "mAP"} as fractions in [0, 1]. Ties are broken by item index so the
    numbers are deterministic.
    """
    sim = np.asarray(sim, dtype=np.float64)
    relevant = np.asarray(relevant, dtype=bool)
    if sim.shape != relevant.shape or sim.ndim != 2:
        raise ValueError(
            f"similarities {sim.shape} and relevance {relevant.shape} must be the same (Q, N) shape"
        )
    if not relevant.any(axis=1).all():
        raise ValueError("every query needs at least one relevant item")
    order = np.argsort(-sim, axis=1, kind="stable")
    hits = np.take_along_axis(relevant, order, axis=1)  # (Q, N) relevance in ranked order
    out = {f"R@{k}": float(hits[:, :k].any(axis=1).mean()) for k in ks}
    cum = np.cumsum(hits, axis=1)
    ranks = np.arange(1, sim.shape[1] + 1)[None, :]
    precision_at_hits = np.where(hits, cum / ranks, 0.0)
    out["mAP"] = float((precision_at_hits.sum(axis=1) / hits.sum(axis=1)).mean())
    return out


def text_to_audio(text_emb: torch.Tensor, audio_emb: torch.Tensor, captions: list[str]) -> dict[str, float]:
    """text_emb: (Q, D) embeddings of the distinct captions (order of relevance_from_captions);
    audio_emb: (N, D) track embeddings; captions: the N track captions. Cosine similarity ranking."""
    queries, rel = relevance_from_captions(captions)
    if len(text_emb) != len(queries):
        raise ValueError(f"{len(text_emb)} text embeddings for {len(queries)} distinct captions")
    t = torch.nn.functional.normalize(text_emb.float(), dim=-1)
    a = torch.nn.functional.normalize(audio_emb.float(), dim=-1)
    return retrieval_metrics((t @ a.T).numpy(), rel)
