"""A uvicorn server on a free loopback port, in a thread of the test process: what the serve tests that
speak real HTTP (raw sockets, the browser) run the app under."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def threaded_server(app: Any, **options: Any) -> Iterator[int]:
    """Run `app` (uvicorn.Config options as keywords; the port is chosen here) until the block ends;
    yields the port."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    options = {"log_level": "warning", **options}
    options.pop("port", None)
    options.pop("host", None)
    srv = uvicorn.Server(uvicorn.Config(app, **options))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    try:
        yield port
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()
