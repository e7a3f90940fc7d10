"""CatalogueFolder: the one object that knows a catalogue folder EMB on disk and its format version.

    EMB/catalogue.json        format version, checkpoint fingerprint, settings, sources, counts; written
                              first with complete: false (a killed run is recognised and resumed)
    EMB/parts/<source>/*.parquet   one committed part per embedded shard
    EMB/embeddings.parquet    every part concatenated (one row per track)
    EMB/index.faiss           the FAISS index of the audio embeddings, row for row
    EMB/.launch.json          the plan torchrun workers rebuild (only while a multi-process run is on)

`muser embed` writes it (plan, embed), `muser.Catalogue` reads it (search); both go through this object.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from muser.atomic import atomic_write_text

FORMAT_VERSION = 1  # catalogue.json's format_version; this muser reads 1..FORMAT_VERSION


class CatalogueFolder:
    INFO = "catalogue.json"
    PARTS = "parts"
    EMBEDDINGS = "embeddings.parquet"
    INDEX = "index.faiss"
    LAUNCH = ".launch.json"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @property
    def info_path(self) -> Path:
        return self.root / self.INFO

    @property
    def embeddings(self) -> Path:
        return self.root / self.EMBEDDINGS

    @property
    def index(self) -> Path:
        return self.root / self.INDEX

    @property
    def launch(self) -> Path:
        return self.root / self.LAUNCH

    def part(self, source_id: str, shard: str) -> str:
        """The part file of shard `shard` of a source, relative to EMB (as catalogue.json records it)."""
        return f"{self.PARTS}/{source_id}/{Path(shard).stem}.parquet"

    # ---- catalogue.json ---------------------------------------------------------------------------

    def read_info(self) -> dict[str, Any] | None:
        """catalogue.json, or None when EMB holds no catalogue yet; an error for a damaged or newer one."""
        path = self.info_path
        if not path.is_file():
            return None
        try:
            info = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(
                f"{path} is not valid JSON ({err}); rebuild the catalogue with --overwrite"
            ) from None
        version = info.get("format_version") if isinstance(info, dict) else None
        if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
            raise ValueError(
                f"{path} has format_version {version!r}; this muser reads up to {FORMAT_VERSION} "
                "(upgrade muser, or rebuild the catalogue with --overwrite)"
            )
        return info

    def write_info(self, info: dict[str, Any]) -> None:
        atomic_write_text(self.info_path, json.dumps(info, indent=1) + "\n")

    def read_complete(self) -> dict[str, Any]:
        """catalogue.json of a finished catalogue (for search); one sentence when EMB is not one."""
        info = self.read_info() if self.root.is_dir() else None
        if info is None:
            raise ValueError(
                f"{self.root} is not a catalogue (no catalogue.json); build one with `muser embed`"
            )
        if not info.get("complete"):
            raise ValueError(
                f"{self.root} is incomplete (a `muser embed` run did not finish); run the same command again"
            )
        if not self.embeddings.is_file():
            raise ValueError(f"{self.embeddings} is missing; rebuild the catalogue with `muser embed`")
        return info

    # ---- writing ----------------------------------------------------------------------------------

    def clear(self) -> None:
        """--overwrite: remove what `muser embed` writes, and nothing else of the folder."""
        for path in (self.info_path, self.embeddings, self.index, self.launch):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.root / self.PARTS, ignore_errors=True)

    def open_for_writing(self, overwrite: bool) -> dict[str, Any] | None:
        """Create EMB (or --overwrite it) and return the catalogue.json already there, if any. Refuses a
        file, or a folder of other files; drops the part temporaries a killed run left."""
        root = self.root
        if root.exists() and not root.is_dir():
            raise ValueError(f"--output {root} is a file; pass a folder for the catalogue")
        if root.is_dir():
            ours = {self.INFO, self.PARTS, self.EMBEDDINGS, self.INDEX}
            foreign = sorted(
                p.name for p in root.iterdir() if not p.name.startswith(".") and p.name not in ours
            )
            if foreign and not self.info_path.is_file():
                raise ValueError(
                    f"{root} holds files that are not a catalogue's ({', '.join(foreign[:3])}); "
                    "choose a new or empty folder for --output"
                )
            if overwrite:  # before reading catalogue.json: --overwrite also recovers a damaged one
                self.clear()
        existing = self.read_info() if root.is_dir() else None
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(f"{self.PARTS}/*/.*.tmp"):  # parts a killed run was writing
            stale.unlink()
        return existing
