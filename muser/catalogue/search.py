"""`muser.Catalogue`: a catalogue folder opened for search by text, by audio or by a track's key, with
metadata filters (genre, tag, artist, year range) computed as column masks, never row by row in Python.

Results are plain dicts: rank, score (cosine similarity), key and the track's metadata columns. Text and
audio queries need the model the catalogue was built with (loaded on first use and checked against the
recorded fingerprint); `similar` needs only the index. Many queries go through FAISS in one call
(search_vectors, search_texts); nprobe / ef_search tune an approximate index per call.
"""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from muser.catalogue import index as index_mod
from muser.catalogue import parts
from muser.catalogue.folder import CatalogueFolder
from muser.config import DEFAULT_PRESET, SearchConfig
from muser.distributed import choose_device

Year = int | tuple[int | None, int | None] | None
TEXT_BATCH = 256  # text queries per forward of the text tower


def _contains(column: pa.ChunkedArray, value: str) -> np.ndarray:
    """(N,) bool: rows whose list column holds `value` (case-insensitive), from the flattened values."""
    flat = pc.utf8_lower(pc.list_flatten(column))
    rows = pc.filter(pc.list_parent_indices(column), pc.equal(flat, value.strip().lower()))
    mask = np.zeros(len(column), dtype=bool)
    mask[rows.to_numpy()] = True
    return mask


def filter_mask(
    table: pa.Table,
    genre: str | None = None,
    tag: str | None = None,
    artist: str | None = None,
    year: Year = None,
) -> np.ndarray | None:
    """(N,) bool rows that pass every given filter, or None when no filter is given.

    genre / tag: one of the track's genres / tags (case-insensitive). artist: a case-insensitive substring
    of the artist. year: a year, or (first, last) with None for an open end; tracks without a year fail it.
    """
    if not (genre or tag or artist or year is not None):
        return None
    mask = np.ones(table.num_rows, dtype=bool)
    if genre:
        mask &= _contains(table.column("genres"), genre)
    if tag:
        mask &= _contains(table.column("tags"), tag)
    if artist:
        found = pc.match_substring(table.column("artist"), artist.strip(), ignore_case=True)
        mask &= pc.fill_null(found, False).to_numpy(zero_copy_only=False)
    if year is not None:
        first, last = (year, year) if isinstance(year, int) else year
        years = table.column("year")
        ok = pc.is_valid(years)
        if first is not None:
            ok = pc.and_(ok, pc.greater_equal(years, first))
        if last is not None:
            ok = pc.and_(ok, pc.less_equal(years, last))
        mask &= pc.fill_null(ok, False).to_numpy(zero_copy_only=False)
    return mask


class Catalogue:
    """A catalogue folder written by `muser embed`, opened for search (see Catalogue.open)."""

    def __init__(
        self,
        root: Path,
        info: dict[str, Any],
        table: pa.Table,
        index: Any,
        checkpoint: str | None,
        device: torch.device,
    ):
        self.root, self.info, self.table, self.index = root, info, table, index
        self.checkpoint, self.device = checkpoint, device
        self._model: Any = None
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path, checkpoint: str | None = None, device: str = "auto") -> Catalogue:
        """Open EMB for search. checkpoint: the model for text and audio queries (default: the one recorded
        in catalogue.json; it must have the same fingerprint). device: auto | cpu | cuda."""
        folder = CatalogueFolder(path)
        root, info = folder.root, folder.read_complete()
        # Metadata only: the vectors live in the index (and stay on disk in the Parquet file).
        columns = [n for n in parts.schema(info["dimension"]).names if n not in parts.VECTOR_COLUMNS]
        table = pq.read_table(folder.embeddings, columns=columns).combine_chunks()
        index = index_mod.read_index(folder.index)
        if index.ntotal != table.num_rows or index.d != info["dimension"]:
            raise ValueError(
                f"{root}: index.faiss holds {index.ntotal} vectors of dimension {index.d} but the catalogue "
                f"{table.num_rows} tracks of dimension {info['dimension']}; rebuild it with `muser embed`"
            )
        return cls(root, info, table, index, checkpoint, choose_device(device))

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def keys(self) -> list[str]:
        return self.table.column("key").to_pylist()

    def row_of(self, key: str) -> int | None:
        """The row of `key`, or None when the catalogue has no such track."""
        row = pc.index(self.table.column("key"), key).as_py()
        return None if row < 0 else int(row)

    def _require(self, key: str) -> int:
        row = self.row_of(key)
        if row is None:
            raise KeyError(f"{key!r} is not a track of this catalogue")
        return row

    def record(self, key: str) -> dict[str, Any]:
        """The metadata of one track (KeyError when the catalogue has no such key)."""
        return self.table.slice(self._require(key), 1).to_pylist()[0]

    def vector(self, key: str) -> np.ndarray:
        """(D,) the track's unit audio embedding: from the exact vectors the index keeps, else (an IVF
        whose lists hold codes or whose vectors FAISS cannot look up by row) from embeddings.parquet."""
        return self._vector(self._require(key))

    def _vector(self, row: int) -> np.ndarray:
        storage = index_mod.exact_storage(self.index)
        if storage is not None:
            return storage.reconstruct(row)
        import pyarrow.dataset as ds

        dataset = ds.dataset(CatalogueFolder(self.root).embeddings, format="parquet")
        table = dataset.take(pa.array([row], type=pa.int64()), columns=["audio_embedding"])
        return parts.vectors_of(table, "audio_embedding")[0].copy()

    # ---- the model (text and audio queries) ---------------------------------------------------------

    @property
    def model(self) -> Any:
        """The catalogue's model, loaded once (thread-safe) and checked against the recorded fingerprint."""
        with self._lock:
            if self._model is None:
                self._model = self._load_model()
        return self._model

    def _load_model(self) -> Any:
        from muser.models.load import load_model

        rec = self.info["checkpoint"]
        spec = self.checkpoint or (rec["spec"] if rec["spec"] == "random" else rec["path"])
        if self.checkpoint is None and spec != "random" and not Path(spec).is_dir():
            raise ValueError(
                f"the catalogue's checkpoint {spec} is gone; pass the checkpoint it was built with "
                "(--checkpoint, or Catalogue.open(..., checkpoint=))"
            )
        model, fp, _ = load_model(spec, rec.get("preset", DEFAULT_PRESET), rec.get("seed", 0), self.device)
        if fp != rec["fingerprint"]:
            raise ValueError(
                f"checkpoint {spec} (fingerprint {fp[:12]}) is not the one this catalogue was built with "
                f"({rec['fingerprint'][:12]}); its queries would not match the catalogue's vectors"
            )
        return model

    def embed_text(self, text: str) -> np.ndarray:
        """(D,) unit text embedding of a query sentence."""
        if not isinstance(text, str) or not text.strip():
            raise ValueError("the text query is empty; describe the music, e.g. 'calm piano with strings'")
        with torch.no_grad():
            q = self.model.encode_text([text.strip()]).float().cpu().numpy()
        return parts.normalise_rows(q)[0]

    def embed_audio(
        self, audio: str | Path | np.ndarray | torch.Tensor, sample_rate: int | None = None
    ) -> np.ndarray:
        """(D,) unit audio embedding of a file or a waveform, exactly as `muser embed` embeds a track.

        audio: a path (any format `muser shard` reads, resampled and downmixed), or a mono waveform (T,)
        float in [-1, 1] at `sample_rate` (default: the catalogue's rate).
        """
        from muser.catalogue.query import audio_batches
        from muser.features import tracks as feat

        rate = self.info["sample_rate"]
        batches = audio_batches(audio, rate, self.info["chunk_seconds"], sample_rate)  # reads it: first
        chunk_fn = feat.model_chunk_fn(self.model, self.device, self.info["tower"])
        return parts.normalise_rows(feat.pool_chunks(batches, chunk_fn).x)[0]

    # ---- search -------------------------------------------------------------------------------------

    def search_vector(
        self,
        q: np.ndarray,
        k: int = SearchConfig.k,
        exclude: int | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """Nearest tracks to the unit vector q (D,), best first; `exclude`: a row never returned.
        nprobe / ef_search: lists an IVF index scans / HNSW's candidate list, for this query only."""
        return self.search_vectors(np.reshape(q, (1, -1)), k, exclude, nprobe, ef_search, **filters)[0]

    def search_vectors(
        self,
        queries: np.ndarray,
        k: int = 10,
        exclude: int | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        **filters: Any,
    ) -> list[list[dict[str, Any]]]:
        """One result list per row of queries (B, D), from one FAISS call; the filters apply to all."""
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        mask = filter_mask(self.table, **filters)
        if exclude is not None:
            mask = np.ones(len(self), dtype=bool) if mask is None else mask.copy()
            mask[exclude] = False
        scores, rows = index_mod.search_batch(self.index, queries, k, mask, nprobe, ef_search)
        found = rows >= 0  # FAISS pads with -1 when it found fewer than k
        records = self.table.take(pa.array(rows[found], type=pa.int64())).to_pylist()
        out, at = [], 0
        for i in range(len(rows)):
            hits = []
            for rank, s in enumerate(scores[i][found[i]]):
                hits.append({"rank": rank + 1, "score": round(float(s), 6), **records[at]})
                at += 1
            out.append(hits)
        return out

    def embed_texts(self, texts: list[str]) -> np.ndarray:
        """(B, D) unit text embeddings of query sentences, TEXT_BATCH to a forward."""
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise ValueError("a text query is empty; describe the music, e.g. 'calm piano with strings'")
        out = []
        with torch.no_grad():
            for i in range(0, len(texts), TEXT_BATCH):
                batch = [t.strip() for t in texts[i : i + TEXT_BATCH]]
                out.append(self.model.encode_text(batch).float().cpu().numpy())
        return parts.normalise_rows(np.concatenate(out)) if out else np.zeros((0, self.index.d), np.float32)

    def search_text(self, text: str, k: int = SearchConfig.k, **options: Any) -> list[dict[str, Any]]:
        """Tracks best described by `text` (e.g. "calm piano"); filters: genre, tag, artist, year;
        nprobe / ef_search as in search_vector."""
        return self.search_vector(self.embed_text(text), k, **options)

    def search_texts(
        self, texts: list[str], k: int = SearchConfig.k, **options: Any
    ) -> list[list[dict[str, Any]]]:
        """One result list per text, embedded in batches and searched in one FAISS call."""
        return self.search_vectors(self.embed_texts(list(texts)), k, **options)

    def search_audio(
        self,
        audio: str | Path | np.ndarray | torch.Tensor,
        k: int = SearchConfig.k,
        sample_rate: int | None = None,
        **filters: Any,
    ) -> list[dict[str, Any]]:
        """Tracks that sound most like `audio` (a file path or a waveform; see embed_audio)."""
        return self.search_vector(self.embed_audio(audio, sample_rate), k, **filters)

    def similar(self, key: str, k: int = SearchConfig.k, **options: Any) -> list[dict[str, Any]]:
        """Tracks most like the catalogue track `key`, never `key` itself (KeyError for an unknown key)."""
        row = self._require(key)
        return self.search_vector(self._vector(row), k, exclude=row, **options)


def parse_years(text: str | None) -> Year:
    """'1998' -> 1998; '1990-2000', '1990-', '-2000' -> (first, last) with None for an open end."""
    if text is None or not text.strip():
        return None
    m = re.fullmatch(r"\s*(\d{1,4})?\s*(-)?\s*(\d{1,4})?\s*", text)
    if not m or not (m.group(1) or m.group(3)) or (m.group(3) and not m.group(2)):
        raise ValueError(f"cannot read years {text!r}; write 1998, 1990-2000, 1990- or -2000")
    first = int(m.group(1)) if m.group(1) else None
    if not m.group(2):
        return first
    return first, int(m.group(3)) if m.group(3) else None


def run_search(
    emb: str | Path,
    text: str | None = None,
    audio: str | Path | None = None,
    similar: str | None = None,
    k: int = SearchConfig.k,
    checkpoint: str | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    **filters: Any,
) -> dict[str, Any]:
    """One query of exactly one kind (text, an audio file, or a catalogue key) -> {"query", "kind",
    "results"}: what `muser search` prints."""
    given = [name for name, v in (("text", text), ("audio", audio), ("similar", similar)) if v]
    if len(given) != 1:
        raise ValueError("give exactly one query: a text QUERY, --audio FILE or --similar KEY")
    catalogue = Catalogue.open(emb, checkpoint=checkpoint)
    filters = {**filters, "nprobe": nprobe, "ef_search": ef_search}
    if text:
        hits = catalogue.search_text(text, k, **filters)
    elif audio:
        hits = catalogue.search_audio(audio, k, **filters)
    else:
        assert similar is not None
        if catalogue.row_of(similar) is None:
            raise ValueError(f"--similar {similar!r} is not a track of {emb}")
        hits = catalogue.similar(similar, k, **filters)
    out = {"query": text or str(audio or similar), "kind": given[0], "k": k, "results": hits}
    if similar:
        out["track"] = {f: catalogue.record(similar)[f] for f in ("key", "title", "artist")}
    return out


def read_queries(path: str | Path) -> list[str]:
    """The text queries of a file: one per line (blank lines and lines starting with # skipped)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read the queries file {path} ({err})") from None
    queries = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not queries:
        raise ValueError(f"{path} holds no query; write one text query per line")
    return queries


def run_batch(
    emb: str | Path,
    texts: list[str],
    k: int = 10,
    checkpoint: str | None = None,
    nprobe: int | None = None,
    ef_search: int | None = None,
    **filters: Any,
) -> dict[str, Any]:
    """Many text queries at once (`muser search --queries FILE`): embedded in batches, searched in one
    FAISS call. Returns {"k", "queries": [{"query", "results"}], "timing": {embed_s, search_s,
    queries_per_s}}; queries/s counts the search alone, the text tower's time is embed_s."""
    catalogue = Catalogue.open(emb, checkpoint=checkpoint)
    start = time.perf_counter()
    vectors = catalogue.embed_texts(texts)
    embedded = time.perf_counter()
    results = catalogue.search_vectors(vectors, k, nprobe=nprobe, ef_search=ef_search, **filters)
    searched = time.perf_counter()
    search_s = searched - embedded
    return {
        "k": k,
        "queries": [{"query": q, "results": r} for q, r in zip(texts, results, strict=True)],
        "timing": {
            "queries": len(texts),
            "embed_s": round(embedded - start, 4),
            "search_s": round(search_s, 4),
            "queries_per_s": round(len(texts) / search_s, 1) if search_s > 0 else None,
        },
    }
