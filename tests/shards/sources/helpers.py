"""Checks every source listing must pass, shared by the per-source tests."""

from __future__ import annotations

import json
import re
from pathlib import Path

from muser.shards.sources import SourceListing

KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def check_listing(listing: SourceListing) -> None:
    ids = [t.id for t in listing.tracks]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(KEY.match(i) for i in ids), [i for i in ids if not KEY.match(i)]
    for t in listing.tracks:
        assert t.split in ("train", "valid", "test", "all")
        assert not {"duration", "sample_rate", "num_samples"} & set(t.meta)
        for key, value in t.meta.items():  # the contract: empty fields are absent, never "nan"
            assert value not in (None, "", [], {}) and "nan" != str(value).lower(), (t.id, key)
        for task, value in t.meta.get("labels", {}).items():
            kind = listing.label_tasks[task]
            assert isinstance(value, list if kind == "multi" else str)
        assert (t.error is None) == (
            t.path is not None and t.path.is_file() and t.path.stat().st_size > 0
        ) or (t.error and "known-bad" in t.error)


def broken(root: Path) -> dict:
    return json.loads((root / "BROKEN.json").read_text(encoding="utf-8"))


def source_errors(root: Path) -> set[str]:
    """Ids the source itself must flag (missing, empty, known-bad); decode-stage faults are the writer's."""
    return {e["id"] for e in broken(root)["errors"] if e["stage"] == "source"}
