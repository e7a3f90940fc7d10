"""`muser serve`: one search page and a small JSON API in front of a catalogue (FastAPI; uvicorn runs it).

GET /                      the page (muser/catalogue/static/index.html, no build step)
GET /api/info              what the catalogue holds
GET /api/search?q=&k=      text search (filters: genre, tag, artist, year_min, year_max)
POST /api/search/batch     many text queries in one request: {"queries": [...], "k", filters}
GET /api/similar/{key}?k=  tracks like a catalogue track, never the track itself
(the search endpoints also take nprobe / ef_search: an approximate index's recall vs speed per request)
GET /api/track/{key}       one track's metadata
GET /api/audio/{key}       the track's audio from its shard (FLAC as stored, PCM as WAV), Range requests

Only catalogue keys are served and no request path reaches the file system; k and the query length are
capped; every error is a JSON body {"error", "status"}, never a traceback page. Bound to 127.0.0.1 unless
told otherwise, where it also refuses other Host names (DNS rebinding).
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
from collections.abc import Callable
from importlib import resources
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from muser.catalogue.members import RangeNotSatisfiable, locate, parse_range
from muser.catalogue.search import Catalogue
from muser.config import SearchConfig, ServeConfig
from muser.shards.manifest import KEY_RE

log = logging.getLogger(__name__)
MAX_K = 100  # results per request
MAX_QUERY = 300  # characters of a text query
MAX_FIELD = 100  # characters of a filter value
# bytes of a whole query string: a full query, every filter and k, percent-encoded, fit with room to spare
MAX_QUERY_STRING = 8192
MAX_BATCH = 1000  # text queries per POST /api/search/batch
MAX_PROBE = 65536  # nprobe / ef_search
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
HIDDEN = ("shard", "member")  # file system paths stay on the server


def _page() -> tuple[str, str]:
    """The page and its Content-Security-Policy: inline script and style allowed by their hashes only."""
    html = resources.files("muser.catalogue").joinpath("static/index.html").read_text(encoding="utf-8")

    def hashes(tag: str) -> str:
        blocks = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.S)
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks
        )

    csp = (
        f"default-src 'none'; script-src {hashes('script')}; style-src {hashes('style')}; "
        "connect-src 'self'; media-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )
    return html, csp


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "status": status}, status_code=status)


def _hostname(host: str) -> str:
    """The name part of a Host header: "127.0.0.1:8000" -> "127.0.0.1", "[::1]:8000" -> "[::1]"."""
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _track_key(key: str, catalogue: Catalogue) -> int:
    """The row of a requested key; 404 unless it is a well-formed key of this catalogue."""
    row = catalogue.row_of(key) if KEY_RE.match(key) else None
    if row is None:
        raise HTTPException(404, f"no track {key[:80]!r} in this catalogue")
    return row


def _hits(hits: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**{k: v for k, v in h.items() if k not in HIDDEN}, "audio": f"/api/audio/{h['key']}"} for h in hits
    ]


def _filters(
    genre: str | None = Query(None, max_length=MAX_FIELD),
    tag: str | None = Query(None, max_length=MAX_FIELD),
    artist: str | None = Query(None, max_length=MAX_FIELD),
    year_min: int | None = Query(None, ge=0, le=9999),
    year_max: int | None = Query(None, ge=0, le=9999),
) -> dict[str, Any]:
    """The metadata filters both search endpoints take (a FastAPI dependency: declared once)."""
    year = None if year_min is None and year_max is None else (year_min, year_max)
    return {"genre": genre, "tag": tag, "artist": artist, "year": year}


def _tuning(
    nprobe: int | None = Query(None, ge=1, le=MAX_PROBE),
    ef_search: int | None = Query(None, ge=1, le=MAX_PROBE),
) -> dict[str, Any]:
    """An approximate index's search settings for this request (None: the index's defaults)."""
    return {"nprobe": nprobe, "ef_search": ef_search}


class Batch(BaseModel):
    """POST /api/search/batch: many text queries, one set of filters and settings for all of them."""

    queries: list[Annotated[str, Field(max_length=MAX_QUERY)]] = Field(min_length=1, max_length=MAX_BATCH)
    k: int = Field(10, ge=1, le=MAX_K)
    genre: str | None = Field(None, max_length=MAX_FIELD)
    tag: str | None = Field(None, max_length=MAX_FIELD)
    artist: str | None = Field(None, max_length=MAX_FIELD)
    year_min: int | None = Field(None, ge=0, le=9999)
    year_max: int | None = Field(None, ge=0, le=9999)
    nprobe: int | None = Field(None, ge=1, le=MAX_PROBE)
    ef_search: int | None = Field(None, ge=1, le=MAX_PROBE)


# At module level: FastAPI resolves the (postponed) annotations of an endpoint in its module globals.
Filters = Annotated[dict[str, Any], Depends(_filters)]
Tuning = Annotated[dict[str, Any], Depends(_tuning)]


def create_app(catalogue: Catalogue, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The web app over an open catalogue (test it with fastapi.testclient.TestClient).

    allowed_hosts: Host header values accepted (None: any); `serve` passes the loopback names when bound
    to a loopback address.
    """
    app = FastAPI(title="muser catalogue", docs_url=None, redoc_url=None, openapi_url=None)
    html, csp = _page()
    hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}

    # Checked before routing, and answered in JSON like every other error (starlette's own host check
    # answers in plain text).
    @app.middleware("http")
    async def edge_checks(request: Request, call_next: Any) -> Response:
        if hosts is not None and _hostname(request.headers.get("host", "")).lower() not in hosts:
            return _error(400, "invalid Host header: this server answers only its own address")
        size = len(request.scope.get("query_string", b""))
        if size > MAX_QUERY_STRING:
            return _error(414, f"the query string is {size} bytes; at most {MAX_QUERY_STRING}")
        return await call_next(request)

    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        response.headers.setdefault("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'")
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return _error(422, f"{where}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("error while answering %s", request.url.path)
        return _error(500, "internal error; the server log has the details")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> HTMLResponse:
        return HTMLResponse(html, headers={"Content-Security-Policy": csp})

    @app.get("/api/info")
    def info() -> dict[str, Any]:
        i = catalogue.info
        return {
            "tracks": len(catalogue),
            "hours": i["counts"]["hours"],
            "dimension": i["dimension"],
            "tower": i["tower"],
            "index": i["index"]["kind"],
            "index_key": i["index"].get("key"),
            "max_batch": MAX_BATCH,
            "checkpoint": i["checkpoint"]["fingerprint"][:12],
            "max_k": MAX_K,
            "max_query": MAX_QUERY,
        }

    @app.get("/api/search")
    def search(
        where: Filters,
        tuning: Tuning,
        q: str = Query(..., max_length=MAX_QUERY),
        k: int = Query(SearchConfig.k, ge=1, le=MAX_K),
    ) -> dict[str, Any]:
        if not q.strip():
            raise HTTPException(400, "the query q is empty; describe the music, e.g. q=calm piano")
        hits = catalogue.search_text(q, k, **where, **tuning)
        return {"query": q, "k": k, "results": _hits(hits)}

    @app.post("/api/search/batch")
    def search_batch(batch: Batch) -> dict[str, Any]:
        empty = [i for i, q in enumerate(batch.queries) if not q.strip()]
        if empty:
            raise HTTPException(400, f"query {empty[0]} is empty; describe the music, e.g. calm piano")
        year = None if batch.year_min is None and batch.year_max is None else (batch.year_min, batch.year_max)
        where = {"genre": batch.genre, "tag": batch.tag, "artist": batch.artist, "year": year}
        results = catalogue.search_texts(
            batch.queries, batch.k, nprobe=batch.nprobe, ef_search=batch.ef_search, **where
        )
        return {
            "k": batch.k,
            "results": [
                {"query": q, "results": _hits(r)} for q, r in zip(batch.queries, results, strict=True)
            ],
        }

    @app.get("/api/similar/{key}")
    def similar(
        key: str, where: Filters, tuning: Tuning, k: int = Query(SearchConfig.k, ge=1, le=MAX_K)
    ) -> dict[str, Any]:
        _track_key(key, catalogue)
        hits = catalogue.similar(key, k, **where, **tuning)
        return {"key": key, "k": k, "results": _hits(hits)}

    @app.get("/api/track/{key}")
    def track(key: str) -> dict[str, Any]:
        _track_key(key, catalogue)
        return _hits([{"rank": 0, "score": 1.0, **catalogue.record(key)}])[0]

    @app.api_route("/api/audio/{key}", methods=["GET", "HEAD"])
    def audio(key: str, request: Request) -> Response:
        row = _track_key(key, catalogue)
        rec = catalogue.table.slice(row, 1).select(["shard", "member"]).to_pylist()[0]
        try:
            member = locate(rec["shard"], rec["member"], catalogue.info["sample_rate"])
        except FileNotFoundError as err:
            log.warning("audio of %s: %s", key, err)
            raise HTTPException(410, f"the audio of {key} is no longer where the catalogue says") from None
        headers = {"Accept-Ranges": "bytes", "Cache-Control": "private, max-age=3600"}
        try:
            span = parse_range(request.headers.get("range"), member.total)
        except RangeNotSatisfiable as err:
            return JSONResponse(
                {"error": str(err), "status": 416},
                status_code=416,
                headers={**headers, "Content-Range": f"bytes */{member.total}"},
            )
        start, end = span if span is not None else (0, member.total - 1)
        headers["Content-Length"] = str(end - start + 1)
        status = 200
        if span is not None:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{member.total}"
        if request.method == "HEAD":
            return Response(status_code=status, headers=headers, media_type=member.media_type)
        return StreamingResponse(
            member.iter_bytes(start, end), status_code=status, headers=headers, media_type=member.media_type
        )

    return app


def serve(
    emb: str,
    checkpoint: str | None = None,
    host: str = ServeConfig.host,
    port: int = ServeConfig.port,
    device: str = ServeConfig.device,
    announce: Callable[[str], None] | None = None,
) -> None:
    """Open the catalogue, load its model (so a missing checkpoint fails now, not at the first query) and
    serve the app with uvicorn until Ctrl-C. announce(url) is called once the model is loaded (loading
    takes seconds, so a URL printed earlier would not answer yet)."""
    import uvicorn

    catalogue = Catalogue.open(emb, checkpoint=checkpoint, device=device)
    _ = catalogue.model
    loopback = host in LOOPBACK or host.startswith("127.")
    if not loopback:
        log.warning(
            "serving on %s: anyone who can reach this address can search and play the catalogue", host
        )
    app = create_app(catalogue, allowed_hosts=[*LOOPBACK, host] if loopback else None)
    if announce is not None:
        announce(f"http://{host}:{port}")
    uvicorn.run(app, **server_options(host, port))


def server_options(host: str, port: int, http: type | None = None) -> dict[str, Any]:
    """The uvicorn settings `serve` runs with: its HTTP protocol answers even unparseable requests in JSON.

    http: the uvicorn protocol class to build on (tests pass each); default uvicorn's own choice."""
    from muser.catalogue.protocol import json_errors

    return {
        "host": host,
        "port": port,
        "log_level": "warning",
        "server_header": False,
        "http": json_errors(http),
    }
