"""Shared fixtures and the automatic skip of `gpu` tests on machines without CUDA."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Keep CPU tests predictable on small CI machines (2 cores): one intra-op thread per process.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED = Path(__file__).resolve().parent.parent / "shared"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the repository; tests that need it skip cleanly when it is absent."""
    if not SHARED.is_dir():
        pytest.skip("../shared is not present")
    return SHARED


@pytest.fixture(scope="session")
def real_audio_dir(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "real"
    if not path.is_dir():
        pytest.skip("../shared/data/real is not present")
    return path


@pytest.fixture(scope="session")
def minilm_dir(shared_dir: Path) -> Path:
    path = shared_dir / "models" / "all-MiniLM-L6-v2"
    if not (path / "config.json").is_file():
        pytest.skip("../shared/models/all-MiniLM-L6-v2 is not present")
    return path


@pytest.fixture
def one_thread():
    """Torch on one intra-op thread for the test, restored afterwards (per-worker rates; other tests keep
    the session setting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
