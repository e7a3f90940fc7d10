"""The FAISS index of a catalogue's audio embeddings: exact inner product (default) or HNSW, written
atomically, and searched with an optional row mask (metadata filters) without scanning rows in Python.

Vectors are unit length, so inner product is cosine similarity. HNSW answers from a graph (approximate);
a filter that keeps few rows is answered exactly over those rows instead, since a graph search restricted
to a small subset can miss most of it.
"""

from __future__ import annotations

from pathlib import Path

import faiss
import numpy as np

from muser.atomic import atomic_write
from muser.config import INDEX_KINDS

HNSW_M = 32  # graph degree: recall vs memory (M * 8 bytes of links per vector per layer)
HNSW_EF_CONSTRUCTION = 80  # candidate list while building: recall vs build time
HNSW_EF_SEARCH = 128  # candidate list while searching (at least 2k): recall vs latency
EXACT_BELOW = 50_000  # a filtered HNSW search keeping at most this many rows scans them exactly


def new_index(kind: str, dim: int) -> faiss.Index:
    """An empty inner-product index: `flat` (exact) or `hnsw` (approximate, for large catalogues)."""
    if kind == "flat":
        return faiss.IndexFlatIP(dim)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
        return index
    raise ValueError(f"unknown index kind {kind!r}; choose one of: {', '.join(INDEX_KINDS)}")


def kind_of(index: faiss.Index) -> str:
    return "hnsw" if isinstance(index, faiss.IndexHNSW) else "flat"


def write_index(index: faiss.Index, path: Path) -> None:
    """Write through a temporary file and a rename, so a reader never sees half an index."""
    with atomic_write(path) as tmp:
        faiss.write_index(index, str(tmp))


def read_index(path: Path) -> faiss.Index:
    if not path.is_file():
        raise ValueError(f"{path} is missing; rebuild the catalogue with `muser embed`")
    try:
        return faiss.read_index(str(path))
    except RuntimeError as err:
        raise ValueError(
            f"{path} is not a readable FAISS index ({err}); rebuild it with `muser embed`"
        ) from None


def search(
    index: faiss.Index,
    q: np.ndarray,
    k: int,
    mask: np.ndarray | None = None,
    ef_search: int = HNSW_EF_SEARCH,
) -> tuple[np.ndarray, np.ndarray]:
    """q: (D,) unit query -> (scores, row ids), best first, at most k (fewer when fewer rows qualify).

    mask: (N,) bool rows allowed (None: all). ef_search: HNSW's candidate list (raised to 2k at least).
    """
    q = np.ascontiguousarray(q, dtype=np.float32).reshape(1, -1)
    n = index.ntotal
    k = min(k, n if mask is None else int(mask.sum()))
    if k <= 0:
        return np.zeros(0, np.float32), np.zeros(0, np.int64)
    params = None
    if kind_of(index) == "hnsw":
        if mask is not None and mask.sum() <= EXACT_BELOW:
            # Few rows pass the filter: scan the vectors HNSWFlat keeps (exact; the graph could miss them).
            index = faiss.downcast_index(index.storage)
        else:
            params = faiss.SearchParametersHNSW(efSearch=max(ef_search, 2 * k))
    keep_alive: list = []  # SWIG holds no Python references: the bitmap and selector must outlive search
    if mask is not None:
        bits = np.packbits(mask.astype(bool), bitorder="little")
        selector = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
        keep_alive += [bits, selector]
        params = params or faiss.SearchParameters()
        params.sel = selector
    scores, ids = index.search(q, k, params=params)
    keep_alive.clear()
    keep = ids[0] >= 0  # FAISS pads with -1 when it found fewer than k
    return scores[0][keep], ids[0][keep].astype(np.int64)
