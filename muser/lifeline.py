"""Worker processes that end when the process that started them dies, even by SIGKILL (the OOM killer).

Forkserver workers are children of the fork server, not of the main process, and every worker holds the
fork server's "clients alive" pipe open; the server waits for the workers and the workers (PyTorch's own
watchdog) wait for the server, so after the main process dies all of them run on forever. A lifeline is
a daemon thread in the worker that watches the main process itself and exits the worker when it is gone.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (Linux), so a recycled pid is not mistaken for the original."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def is_alive(pid: int, start: str | None) -> bool:
    """Whether the process `pid` that started at `start` (from _start_time) still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    return start is None or _start_time(pid) in (start, None)


@dataclass(frozen=True)
class Lifeline:
    """Picklable: made in the main process, called in each worker (a DataLoader worker_init_fn, or a
    process pool initializer) to exit that worker within `period` seconds of the main process's death."""

    pid: int = field(default_factory=os.getpid)
    start: str | None = field(default_factory=lambda: _start_time(os.getpid()))
    period: float = 1.0

    def __call__(self, *args: Any) -> None:
        if self.pid == os.getpid():
            return  # called in the main process itself (in-process loading): nothing to watch
        threading.Thread(target=self._watch, name="muser-lifeline", daemon=True).start()

    def _watch(self) -> None:
        while is_alive(self.pid, self.start):
            time.sleep(self.period)
        os._exit(1)  # no cleanup to do: the process these results were for is gone
