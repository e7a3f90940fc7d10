"""The one gate in front of ../shared (real audio, the MiniLM encoder): every test that uses it goes through
`need_shared`, so a missing folder is a skip with its reason on a user's checkout and a failure in CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"


def need_shared(*parts: str, marker: str | None = None, root: Path | None = None) -> Path:
    """../shared/<parts> when it exists (and holds `marker`, a file inside it, when given).

    Otherwise the calling test skips with the reason, except under CI (the environment variable CI set),
    where it fails: in CI six silent skips would hide that the real-data tests never ran.
    """
    path = (root or SHARED).joinpath(*parts)
    if (path / marker).is_file() if marker else path.is_dir():
        return path
    missing = "/".join(("..", "shared", *parts, *([marker] if marker else [])))
    reason = f"{missing} is not present"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must run the tests that use real data (unset CI to skip them)")
    pytest.skip(reason)
