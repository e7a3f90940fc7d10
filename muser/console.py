"""The one rich Console every command prints through: as wide as the terminal on a terminal, and wide
enough for any table when the output goes to a log file, CI or a pipe (`| tee`)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

# Off a terminal rich falls back to 80 columns and shrinks or cuts a wider table (the eval table lost its
# last columns in logs). A log has no width, so the tables get all they need: a table renders at its
# natural width, not at the console's, so this only lifts the cap. Long plain lines are soft-wrapped
# (not broken) by whatever shows the log.
LOG_WIDTH = 1000


def make_console(stderr: bool = False) -> Console:
    """A rich Console on stdout (or stderr); wide when that stream is not a terminal."""
    # rich is imported here, not at module level: `muser --help` must not pay for it.
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # The stream itself decides, not rich's is_terminal: FORCE_COLOR (set by some CI) makes rich call a
    # pipe a terminal, and then it still measures 80 columns.
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        tty = False
    return Console(stderr=stderr) if tty else Console(stderr=stderr, width=LOG_WIDTH)
