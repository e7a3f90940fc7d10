"""Stopping a run cleanly: SIGTERM or SIGINT sets a flag the training loop reads after each step, so the
run saves a checkpoint at a step boundary before it exits."""

from __future__ import annotations

import signal
import threading
from typing import Any


class StopSignal:
    """SIGTERM/SIGINT set a flag the loop reads after each step (a second SIGINT aborts at once)."""

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignal:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum

    def requested(self) -> bool:
        return self.signum != 0

    def __exit__(self, *exc: object) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
