"""MUSER: music representations learned from text metadata (tri-modal contrastive pretraining).

The public API is imported lazily so that `muser --help` starts fast and `import muser` stays cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "MUSER": "muser.models.muser",
    "make_loader": "muser.shards.reader",
    "ShardFolder": "muser.shards.manifest",
    "contrastive_loss": "muser.kernels",
    "sigmoid_loss": "muser.kernels",
    "TriModalLoss": "muser.losses",
    "Catalogue": "muser.catalogue.search",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'muser' has no attribute {name!r}")
