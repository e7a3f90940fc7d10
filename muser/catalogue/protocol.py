"""The HTTP protocol under `muser serve`: uvicorn's own (httptools when installed, else h11) with the one
answer it writes by itself, the 400 for a request it cannot parse, turned into the server's JSON error."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence

MALFORMED = "malformed HTTP request: its request line or a header could not be parsed"


def error_bytes(status: int, reason: str, message: str, extra: Sequence[tuple[bytes, bytes]] = ()) -> bytes:
    """A whole HTTP/1.1 response carrying the JSON error body {"error", "status"}; the connection closes."""
    body = json.dumps({"error": message, "status": status}).encode()
    head = [f"HTTP/1.1 {status} {reason}".encode()]
    head += [name + b": " + value for name, value in extra]
    head += [
        b"content-type: application/json",
        b"content-length: " + str(len(body)).encode(),
        b"x-content-type-options: nosniff",
        b"connection: close",
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def json_errors(base: type[asyncio.Protocol] | None = None) -> type[asyncio.Protocol]:
    """A uvicorn HTTP protocol class (pass it as `http=`) whose parse-error answer is a JSON body.

    base: the protocol to extend (uvicorn's H11Protocol or HttpToolsProtocol); default uvicorn's choice.
    """
    if base is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol

    class JSONErrorProtocol(base):  # type: ignore[misc, valid-type]
        # Both uvicorn protocols answer every request they cannot parse through this one method (a bad
        # request line, header or body framing, an over-long line); each writes text/plain. The parser's
        # state is dropped with the connection, so writing the bytes ourselves is safe for both.
        def send_400_response(self, msg: str) -> None:
            defaults = list(getattr(self.server_state, "default_headers", []))
            self.transport.write(error_bytes(400, "Bad Request", MALFORMED, defaults))
            self.transport.close()

    JSONErrorProtocol.__name__ = JSONErrorProtocol.__qualname__ = f"JSONError{base.__name__}"
    return JSONErrorProtocol
