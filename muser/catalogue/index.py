"""The FAISS index of a catalogue's audio embeddings: which index (a kind, a FAISS factory string, or an
automatic choice from the catalogue's size and a memory budget), how it is trained and filled part by
part, written atomically, opened memory-mapped, and searched one query or many at a time with an optional
row mask (metadata filters) and per-query nprobe / efSearch.

Vectors are unit length, so inner product is cosine similarity. Index kinds:
- flat: exact; one pass over every vector per query.
- hnsw: a graph over the exact vectors (approximate; memory above flat's).
- ivf: the vectors clustered into `nlist` inverted lists, `nprobe` of them scanned per query; the lists
  hold exact vectors (IVF...,Flat) or product-quantised codes (IVF...,PQ...), and a refine step (RFlat)
  re-ranks k_factor * k PQ candidates with the exact vectors, which FAISS then memory-maps from the index
  file (IO_FLAG_MMAP_IFC): the process keeps only the codes in RAM and pages in the rows it re-ranks.

An approximate index answers a filter that keeps few rows exactly over those rows instead (a graph or a
few probed lists restricted to a small subset can miss most of it).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from muser.atomic import atomic_write
from muser.config import INDEX_KINDS

HNSW_M = 32  # graph degree: recall vs memory (M * 8 bytes of links per vector per layer)
HNSW_EF_CONSTRUCTION = 80  # candidate list while building: recall vs build time
HNSW_EF_SEARCH = 128  # candidate list while searching (at least 2k): recall vs latency
EXACT_BELOW = 50_000  # a filtered approximate search keeping at most this many rows scans them exactly
FLAT_MAX_FLOATS = 1 << 24  # auto: exact search while N x D <= 16.8M floats (64 MB: ~10 ms a query on 2 cores)
MIN_BUDGET = 256 << 20  # auto's default memory budget: a quarter of the vectors, at least 256 MiB
TRAIN_PER_LIST = 40  # IVF training sample: vectors per list (FAISS warns below 39)
TRAIN_MAX = 256 * 1024  # at most this many training vectors (k-means cost grows with the sample)
REFINE_K_FACTOR = 64  # RFlat: PQ candidates re-ranked exactly per result (16 gave 0.7-0.86 recall)
MIN_NPROBE = 16
SERIAL_BELOW = 16  # approximate searches of fewer queries run FAISS on one thread (see search_batch)
PROBE_SHARE = 64  # default nprobe: nlist / 64 lists, at least MIN_NPROBE (recall >= 0.95 on clustered data)


def parse_memory(text: str | int | None) -> int | None:
    """'512M', '4G', '1.5GB', '2e9' or a number of bytes -> bytes; None or '' -> None."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m:
        raise ValueError(f"cannot read the memory size {text!r}; write e.g. 512M, 4G or 1.5GB")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[m.group(2)]
    return int(float(m.group(1)) * scale)


def default_budget(n: int, dim: int) -> int:
    """The memory an automatically chosen index may use: a quarter of the vectors, at least 256 MiB."""
    return max(n * dim * 4 // 4, MIN_BUDGET)


def _nlist(n: int) -> int:
    """Lists for n vectors: the power of two nearest 2 sqrt(n) (about 500 vectors a list at a million),
    kept below n / TRAIN_PER_LIST so the training sample has enough vectors per list."""
    target = 2 * math.sqrt(n)
    nlist = 2 ** round(math.log2(max(target, 1)))
    while nlist > 1 and nlist * TRAIN_PER_LIST > n:
        nlist //= 2
    return max(nlist, 1)


def _pq_m(dim: int, bytes_per_dim: float) -> int | None:
    """Sub-quantisers for 4-bit fast-scan PQ at about `bytes_per_dim` (m / 2 bytes a vector), dividing dim."""
    want = max(1, int(dim * bytes_per_dim * 2))
    for m in range(want, 0, -1):
        if dim % m == 0:
            return m
    return None


def auto_key(n: int, dim: int, budget: int | None = None) -> str:
    """The FAISS factory string `--index auto` builds for n vectors of `dim` within `budget` bytes of RAM.

    Small catalogues (N x D <= 16.8M) are searched exactly ("Flat"). Larger ones get an IVF with about
    2 sqrt(N) lists: exact vectors in the lists when they fit the budget ("IVFn,Flat"), else 4-bit fast-scan
    PQ codes of D/2 sub-quantisers (D/4 bytes a vector) whose best 64 k candidates are re-ranked with the
    exact vectors, which stay memory-mapped on disk ("IVFn,PQmx4fs,RFlat"); smaller codes when even those
    do not fit the budget.
    """
    if n * dim <= FLAT_MAX_FLOATS:
        return "Flat"
    budget = default_budget(n, dim) if budget is None else budget
    nlist = _nlist(n)
    centroids = nlist * dim * 4
    if n * (dim * 4 + 8) + centroids <= budget:
        return f"IVF{nlist},Flat"
    for share in (1 / 4, 1 / 8, 1 / 16):
        m = _pq_m(dim, share)
        if m is not None and n * (m / 2 + 8) + centroids <= budget:
            return f"IVF{nlist},PQ{m}x4fs,RFlat"
    smallest = n * (dim / 16 + 8) + centroids
    raise ValueError(
        f"--index-memory {budget / 2**20:.0f} MiB is too small for {n} vectors of dimension {dim}; "
        f"an IVF-PQ index needs at least {smallest / 2**20:.0f} MiB"
    )


def factory_key(kind: str, key: str | None, n: int, dim: int, budget: int | None = None) -> str:
    """The factory string a catalogue's index is built from: --index-key when given, else --index."""
    if key:
        return key
    if kind == "flat":
        return "Flat"
    if kind == "hnsw":
        return f"HNSW{HNSW_M},Flat"
    if kind == "auto":
        return auto_key(n, dim, budget)
    raise ValueError(f"unknown index kind {kind!r}; choose one of: {', '.join(INDEX_KINDS)}")


def new_index(kind: str, dim: int) -> faiss.Index:
    """An empty inner-product index from a kind (`flat`, `hnsw`) or a FAISS factory string
    ("IVF4096,PQ64x4fs,RFlat", "HNSW32,Flat", ...), with this module's default search settings."""
    key = {"flat": "Flat", "hnsw": f"HNSW{HNSW_M},Flat"}.get(kind, kind)
    if kind == "auto":
        raise ValueError("index kind 'auto' needs the catalogue size; resolve it with factory_key first")
    try:
        index = faiss.index_factory(dim, key, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1][:200]
        raise ValueError(
            f"--index-key {key!r} is not a FAISS factory string FAISS can build ({first}); "
            "e.g. Flat, HNSW32,Flat, IVF1024,Flat or IVF4096,PQ64x4fs,RFlat"
        ) from None
    hnsw = _find(index, faiss.IndexHNSW)
    if hnsw is not None:
        hnsw.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        hnsw.hnsw.efSearch = HNSW_EF_SEARCH
    ivf = _find(index, faiss.IndexIVF)
    if ivf is not None:
        ivf.nprobe = default_nprobe(ivf.nlist)  # written with the index: its default at search time
    refine = _find(index, faiss.IndexRefine)
    if refine is not None:
        refine.k_factor = REFINE_K_FACTOR
    return index


def default_nprobe(nlist: int) -> int:
    return min(nlist, max(MIN_NPROBE, nlist // PROBE_SHARE))


def _find(index: faiss.Index, cls: type) -> Any:
    """The first index of type cls in the chain index -> base_index / index (refine, pre-transform)."""
    seen = 0
    while index is not None and seen < 8:
        index = faiss.downcast_index(index)
        if isinstance(index, cls):
            return index
        if isinstance(index, faiss.IndexRefine):
            index = index.base_index
        elif isinstance(index, faiss.IndexPreTransform):
            index = index.index
        else:
            return None
        seen += 1
    return None


def kind_of(index: faiss.Index) -> str:
    """flat | hnsw | ivf (the search parameters that apply: none, efSearch, nprobe)."""
    if _find(index, faiss.IndexIVF) is not None:
        return "ivf"
    if _find(index, faiss.IndexHNSW) is not None:
        return "hnsw"
    return "flat"


def describe(index: faiss.Index) -> dict[str, Any]:
    """What an index is and its default search settings (catalogue.json, /api/info, the benchmark)."""
    out: dict[str, Any] = {"kind": kind_of(index), "type": type(faiss.downcast_index(index)).__name__}
    ivf = _find(index, faiss.IndexIVF)
    if ivf is not None:
        out.update(nlist=int(ivf.nlist), nprobe=int(ivf.nprobe), lists=type(ivf).__name__)
    hnsw = _find(index, faiss.IndexHNSW)
    if hnsw is not None:
        out.update(ef_search=int(hnsw.hnsw.efSearch))
    refine = _find(index, faiss.IndexRefine)
    if refine is not None:
        out.update(k_factor=float(refine.k_factor))
    return out


def train_size(index: faiss.Index, n: int) -> int:
    """How many catalogue vectors train `index` (0 when it needs no training)."""
    if index.is_trained:
        return 0
    ivf = _find(index, faiss.IndexIVF)
    lists = ivf.nlist if ivf is not None else 256  # PQ alone: 256 centroids per sub-quantiser
    if n < lists:
        raise ValueError(
            f"the index has {lists} lists but the catalogue only {n} tracks to train them on; "
            "choose fewer lists in --index-key (e.g. IVF{n // 40 or 1},Flat) or --index flat"
        )
    return min(n, max(TRAIN_PER_LIST * lists, 10_000), TRAIN_MAX)


def sample_rows(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Sorted rows of a uniform sample of `size` of n (fixed seed: the same catalogue trains the same)."""
    if size >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size, replace=False))


def train(index: faiss.Index, sample: np.ndarray) -> None:
    """Train the (empty) index on a sample of the catalogue; the clustering is seeded, so reproducible."""
    ivf = _find(index, faiss.IndexIVF)
    if ivf is not None:
        ivf.cp.seed = 1234
    index.train(np.ascontiguousarray(sample, dtype=np.float32))


def write_index(index: faiss.Index, path: Path) -> None:
    """Write through a temporary file and a rename, so a reader never sees half an index (and a reader
    that memory-mapped the old file keeps its own inode)."""
    with atomic_write(path) as tmp:
        faiss.write_index(index, str(tmp))


def read_index(path: Path, mmap: bool = True) -> faiss.Index:
    """Open index.faiss; mmap: map exact vectors (flat, HNSW's and the refine step's storage) from the
    file instead of reading them into memory (IO_FLAG_MMAP_IFC); pages come in as queries touch them."""
    if not path.is_file():
        raise ValueError(f"{path} is missing; rebuild the catalogue with `muser embed`")
    try:
        return faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
    except RuntimeError as err:
        raise ValueError(
            f"{path} is not a readable FAISS index ({err}); rebuild it with `muser embed`"
        ) from None


def exact_storage(index: faiss.Index) -> faiss.IndexFlat | None:
    """The exact vectors an index keeps (flat itself, HNSW's storage, the refine step's), or None."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexFlat):
        return index
    if isinstance(index, faiss.IndexHNSW):
        storage = faiss.downcast_index(index.storage)
        return storage if isinstance(storage, faiss.IndexFlat) else None
    if isinstance(index, faiss.IndexRefine):
        refine = faiss.downcast_index(index.refine_index)
        return refine if isinstance(refine, faiss.IndexFlat) else None
    return None


def _params(
    index: faiss.Index,
    sel: Any,
    nprobe: int | None,
    ef_search: int | None,
    k: int,
    share: float,
) -> Any:
    """SearchParameters for index's chain: nprobe (scaled up by 1/share for a filter keeping a share of
    the rows, so about as many kept rows are scanned), efSearch (at least 2k), the selector innermost."""
    index = faiss.downcast_index(index)
    if isinstance(index, faiss.IndexRefine):
        base = _params(index.base_index, sel, nprobe, ef_search, k, share)
        return faiss.IndexRefineSearchParameters(k_factor=float(index.k_factor), base_index_params=base)
    if isinstance(index, faiss.IndexPreTransform):
        inner = _params(index.index, sel, nprobe, ef_search, k, share)
        return faiss.SearchParametersPreTransform(index_params=inner)
    if isinstance(index, faiss.IndexIVF):
        probe = nprobe or index.nprobe
        probe = min(index.nlist, math.ceil(probe / max(share, 1e-9)))
        params = faiss.SearchParametersIVF(nprobe=probe)
    elif isinstance(index, faiss.IndexHNSW):
        params = faiss.SearchParametersHNSW(efSearch=max(ef_search or index.hnsw.efSearch, 2 * k))
    else:
        params = faiss.SearchParameters()
    if sel is not None:
        params.sel = sel
    return params


def search_batch(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    mask: np.ndarray | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """queries: (B, D) unit vectors -> (scores, row ids), each (B, k'), best first; row -1 pads a query
    that found fewer than k' = min(k, rows allowed) rows.

    mask: (N,) bool rows allowed, the same for every query (None: all). nprobe / ef_search: this call's
    IVF lists scanned / HNSW candidate list (None: the index's defaults). An approximate index answers a
    mask keeping at most EXACT_BELOW rows exactly over them (the exact vectors it stores; an IVF without
    them scans every list).
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != index.d:
        raise ValueError(f"queries must be (B, {index.d}) vectors, got shape {tuple(q.shape)}")
    n = index.ntotal
    kept = n if mask is None else int(mask.sum())
    k = min(k, kept)
    if k <= 0 or len(q) == 0:
        return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
    if nprobe is not None and nprobe < 1 or ef_search is not None and ef_search < 1:
        raise ValueError("nprobe and ef_search must be at least 1")
    target, share = index, 1.0
    if mask is not None:
        share = kept / max(n, 1)
        if kind_of(index) != "flat" and kept <= EXACT_BELOW:
            storage = exact_storage(index)
            if storage is not None:
                target = storage  # exact over the kept rows
            else:
                share = 0.0  # IVF without exact vectors: every list, so every kept row is scored
    keep_alive: list = []  # SWIG holds no Python references: the bitmap and selector must outlive search
    sel = None
    if mask is not None:
        bits = np.packbits(mask.astype(bool), bitorder="little")
        sel = faiss.IDSelectorBitmap(n, faiss.swig_ptr(bits))
        keep_alive += [bits, sel]
    params = _params(target, sel, nprobe, ef_search, k, share)
    keep_alive.append(params)
    # A few queries of an approximate index take well under a millisecond of work; splitting it over
    # OpenMP threads made them wait on each other: 50 ms instead of 0.25 ms a query on 2 busy cores.
    # The thread count is per calling thread in OpenMP, so concurrent requests do not see the change.
    serial = len(q) < SERIAL_BELOW and target is index and kind_of(index) != "flat"
    threads = faiss.omp_get_max_threads()
    if serial:
        faiss.omp_set_num_threads(1)
    try:
        scores, ids = target.search(q, k, params=params)
    finally:
        if serial:
            faiss.omp_set_num_threads(threads)
    keep_alive.clear()
    return scores, ids.astype(np.int64)


def search(
    index: faiss.Index,
    q: np.ndarray,
    k: int,
    mask: np.ndarray | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """q: (D,) unit query -> (scores, row ids), best first, at most k (fewer when fewer rows qualify).
    See search_batch for mask, nprobe and ef_search."""
    scores, ids = search_batch(index, np.reshape(q, (1, -1)), k, mask, nprobe, ef_search)
    keep = ids[0] >= 0  # FAISS pads with -1 when it found fewer than k
    return scores[0][keep], ids[0][keep]
