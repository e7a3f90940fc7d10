"""`muser serve` under a real uvicorn on a free loopback port, spoken to through raw sockets: every error,
down to requests the HTTP parser refuses, is the JSON body {"error", "status"}; for uvicorn's h11 and
httptools protocols both (httptools where installed)."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from muser import Catalogue
from muser.catalogue.serve import LOOPBACK, MAX_QUERY_STRING, create_app, server_options
from tests.catalogue.threaded_server import threaded_server


def _protocols() -> list[object]:
    from uvicorn.protocols.http.h11_impl import H11Protocol

    out: list[object] = [pytest.param(H11Protocol, id="h11")]
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        out.append(pytest.param(None, id="httptools", marks=pytest.mark.skip("httptools is not installed")))
    else:
        out.append(pytest.param(HttpToolsProtocol, id="httptools"))
    return out


@pytest.fixture(scope="module")
def cat(catalogue_dir: Path) -> Catalogue:
    return Catalogue.open(catalogue_dir, device="cpu")


@pytest.fixture(scope="module", params=_protocols())
def port(request: pytest.FixtureRequest, cat: Catalogue) -> Iterator[int]:
    """The app as `muser serve` runs it on 127.0.0.1 (loopback Host names only), in a thread."""
    app = create_app(cat, allowed_hosts=[*LOOPBACK, "127.0.0.1"])
    with threaded_server(app, **server_options("127.0.0.1", 0, request.param)) as port:
        yield port


def _exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes, read one response (to Content-Length or to the close); (status, headers, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        try:
            conn.sendall(request)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before reading all of a request it refuses
        data = b""
        while b"\r\n\r\n" not in data or len(data) < _expected(data):
            chunk = conn.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body


def _expected(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(head) + 4 + int(line.split(b":", 1)[1])
    return 1 << 62  # no length: read to the close


def _json_error(port: int, request: bytes, *statuses: int) -> dict:
    status, headers, body = _exchange(port, request)
    assert status in statuses, (status, body[:200])
    assert headers["content-type"].startswith("application/json"), (headers, body[:200])
    out = json.loads(body)
    assert out["status"] == status and isinstance(out["error"], str) and out["error"]
    return out


def _get(target: bytes, *headers: bytes, host: bytes = b"127.0.0.1") -> bytes:
    lines = [b"GET " + target + b" HTTP/1.1", b"Host: " + host, *headers, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def test_a_good_request_still_works(port, cat):
    status, headers, body = _exchange(port, _get(b"/api/info"))
    assert status == 200 and json.loads(body)["tracks"] == len(cat)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"HELLO\r\n\r\n", id="not-http"),
        pytest.param(
            b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header\r\n\r\n", id="header-no-colon"
        ),
        pytest.param(b"GET /api/in\x01fo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", id="control-char-in-path"),
        pytest.param(b"GET /api/info HTTX/1.1\r\nHost: 127.0.0.1\r\n\r\n", id="bad-protocol"),
        pytest.param(
            b"POST /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: x\r\n\r\n", id="bad-length"
        ),
    ],
)
def test_requests_the_parser_refuses_are_json_400(port, request_bytes):
    assert "malformed" in _json_error(port, request_bytes, 400)["error"]


@pytest.mark.parametrize(
    "host",
    [b"evil.example", b"127.0.0.1.evil.example:8000", b"a b", b""],
    ids=["other", "suffix", "space", "empty"],
)
def test_a_bad_host_is_json_400(port, host):
    _json_error(port, _get(b"/api/info", host=host), 400)


def test_no_host_at_all_is_json_400(port):
    _json_error(port, b"GET /api/info HTTP/1.1\r\nConnection: close\r\n\r\n", 400)


def test_loopback_hosts_with_ports_are_served(port):
    for host in (b"127.0.0.1:%d" % port, b"localhost:%d" % port, b"[::1]:%d" % port, b"LOCALHOST"):
        assert _exchange(port, _get(b"/api/info", host=host))[0] == 200, host


@pytest.mark.parametrize("size", [MAX_QUERY_STRING + 1, 20_000, 200_000])
def test_an_oversized_query_string_is_a_json_error(port, size):
    target = b"/api/search?q=" + b"x" * (size - 2)
    _json_error(port, _get(target), 400, 414)


def test_a_range_of_thousands_of_digits_is_json_416(port, cat):
    key = cat.keys[0].encode()
    out = _json_error(port, _get(b"/api/audio/" + key, b"Range: bytes=" + b"9" * 5000 + b"-"), 416)
    assert len(out["error"]) < 200
    status, headers, body = _exchange(port, _get(b"/api/audio/" + key, b"Range: bytes=0-" + b"9" * 5000))
    assert status == 206 and len(body) == int(headers["content-length"])


def test_unknown_paths_and_methods_are_json(port):
    _json_error(port, _get(b"/nothing/here"), 404)
    _json_error(port, b"DELETE /api/info HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n", 405)
